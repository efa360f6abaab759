"""A tiny CLIP trained with the Hugging Face Trainer, recorded by scoreviz's callback.

    pip install -e ".[transformers]"
    python examples/hf_trainer_clip.py runs/clip-digits
    scoreviz serve runs/

Images are scikit-learn's bundled 8x8 digits, captions are short sentences
about them ("a handwritten seven"); the model is a CLIPModel built from a small
config with random weights and the tokenizer a word-level one built here, so
nothing is downloaded. The callback finds CLIP's text and image embeddings in
the model's outputs: each caption's score with its own image is a positive, with
the other images of the batch a negative. Other captions of the same digit are
negatives too (CLIP's in-batch objective does not know classes), which the
negative histogram shows as a bump near the positives.
"""

import argparse
import random
import tempfile

import numpy as np
import torch
from sklearn.datasets import load_digits
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import CLIPConfig, CLIPModel, PreTrainedTokenizerFast, Trainer, TrainingArguments

from scoreviz.integrations.transformers import ScorevizCallback

NUMBERS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
TEMPLATES = ["a handwritten {}", "the digit {}", "a photo of a {}", "{}", "a small scan of the number {}"]
SPECIAL = ["[PAD]", "[UNK]", "[EOS]"]


def word_tokenizer(sentences, length):
    """A word-level tokenizer over the words of `sentences`, padding to `length` and ending with [EOS]."""
    words = sorted({w for s in sentences for w in s.split()})
    vocab = {w: i for i, w in enumerate(SPECIAL + words)}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.post_processor = processors.TemplateProcessing(single="$A [EOS]", special_tokens=[("[EOS]", vocab["[EOS]"])])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="[PAD]", unk_token="[UNK]",
                                   eos_token="[EOS]", model_max_length=length)


class DigitCaptions(torch.utils.data.Dataset):
    """(image, caption) pairs: each digit image with a random caption of its number."""

    def __init__(self, images, labels, tokenizer, seed):
        rng = random.Random(seed)
        captions = [rng.choice(TEMPLATES).format(NUMBERS[y]) for y in labels]
        self.tokens = tokenizer(captions, padding="max_length", truncation=True, return_tensors="pt")
        self.images = torch.tensor(images, dtype=torch.float32).view(-1, 1, 8, 8) / 16.0 - 0.5

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return {"pixel_values": self.images[i], "input_ids": self.tokens["input_ids"][i],
                "attention_mask": self.tokens["attention_mask"][i]}


def collate(examples):
    batch = {key: torch.stack([e[key] for e in examples]) for key in examples[0]}
    batch["return_loss"] = True  # CLIPModel computes its contrastive loss
    return batch


def tiny_clip(tokenizer, hidden_size=32, layers=2, patch_size=2, projection_dim=16):
    """A CLIP with random weights, built from a config for 8x8 one-channel images and `tokenizer`'s words."""
    config = CLIPConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                         num_hidden_layers=layers, num_attention_heads=2, max_position_embeddings=8,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id),
        vision_config=dict(image_size=8, patch_size=patch_size, num_channels=1, hidden_size=hidden_size,
                           intermediate_size=2 * hidden_size, num_hidden_layers=layers, num_attention_heads=2),
        projection_dim=projection_dim)
    return CLIPModel(config)


def main():
    parser = argparse.ArgumentParser(description="A tiny CLIP on digits, trained by the HF Trainer and recorded.")
    parser.add_argument("run_dir", nargs="?", default="runs/clip-digits")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--eval-steps", type=int, default=50, help="evaluate every N steps")
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    torch.manual_seed(0)

    digits = load_digits()
    order = np.random.default_rng(0).permutation(len(digits.target))
    train, val = order[:1500], order[1500:]
    tokenizer = word_tokenizer([t.format(n) for t in TEMPLATES for n in NUMBERS], length=8)
    model = tiny_clip(tokenizer)

    with tempfile.TemporaryDirectory() as scratch:  # the Trainer wants an output_dir; it saves nothing here
        training = TrainingArguments(
            output_dir=scratch, max_steps=args.steps, per_device_train_batch_size=args.batch_size,
            per_device_eval_batch_size=args.batch_size, learning_rate=2e-3, warmup_steps=20,
            logging_steps=10, eval_strategy="steps", eval_steps=args.eval_steps, save_strategy="no",
            report_to="none", use_cpu=True, seed=0, dataloader_drop_last=True, disable_tqdm=False)
        trainer = Trainer(model=model, args=training, data_collator=collate,
                          train_dataset=DigitCaptions(digits.data[train], digits.target[train], tokenizer, seed=0),
                          eval_dataset=DigitCaptions(digits.data[val], digits.target[val], tokenizer, seed=1),
                          callbacks=[ScorevizCallback(args.run_dir)])
        trainer.train()
    print(f"recorded {trainer.state.global_step} steps into {args.run_dir}")


if __name__ == "__main__":
    main()
