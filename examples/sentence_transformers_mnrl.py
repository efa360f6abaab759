"""A tiny sentence-transformers model trained with MultipleNegativesRankingLoss, recorded by scoreviz.

    pip install -e ".[sentence-transformers]"
    python examples/sentence_transformers_mnrl.py runs/st-paraphrases
    scoreviz serve runs/

The data are generated paraphrase pairs ("the red cat sleeps" / "a crimson
feline is sleeping") with a hard negative (the same sentence with one word
changed). The model is a two-layer BERT built from a config with random weights,
with a word-level tokenizer built here, saved to a temporary folder and loaded
from there as sentence-transformers does: nothing is downloaded. Tag "train"
holds each anchor's score with its paraphrase (the positive) and with every
other candidate in the batch; "train-hard" its score with its own hard negative.
"""

import argparse
import itertools
import random
import tempfile

import torch
from datasets import Dataset
from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer, SentenceTransformerTrainingArguments
from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

from scoreviz.integrations.sentence_transformers import ScorevizCallback

# each word with a synonym used in the paraphrase
COLOURS = {"red": "crimson", "blue": "azure", "green": "emerald", "black": "dark", "white": "pale"}
ANIMALS = {"cat": "feline", "dog": "hound", "bird": "sparrow", "horse": "stallion", "fish": "trout"}
VERBS = {"sleeps": "is sleeping", "runs": "is running", "eats": "is eating", "sings": "is singing"}
PLACES = {"at home": "in the house", "outside": "out of doors", "by the river": "near the water"}
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def sentence_pairs(seed):
    """(anchor, positive, negative) rows: a sentence, its paraphrase, and the sentence with one word changed."""
    rng = random.Random(seed)
    rows = []
    for colour, animal, verb, place in itertools.product(COLOURS, ANIMALS, VERBS, PLACES):
        anchor = f"the {colour} {animal} {verb} {place}"
        positive = f"a {COLOURS[colour]} {ANIMALS[animal]} {VERBS[verb]} {PLACES[place]}"
        other = rng.choice([c for c in COLOURS if c != colour])
        rows.append({"anchor": anchor, "positive": positive, "negative": f"the {other} {animal} {verb} {place}"})
    rng.shuffle(rows)
    return rows


def word_tokenizer(rows, length):
    """A BERT-style word-level tokenizer ([CLS] words [SEP]) over the words of `rows`."""
    words = sorted({w for row in rows for text in row.values() for w in text.split()})
    vocab = {w: i for i, w in enumerate(SPECIAL + words)}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="[PAD]", unk_token="[UNK]",
                                   cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]", model_max_length=length)


def main():
    parser = argparse.ArgumentParser(description="A tiny sentence-transformers model, MNRL, recorded by scoreviz.")
    parser.add_argument("run_dir", nargs="?", default="runs/st-paraphrases")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--eval-steps", type=int, default=50, help="evaluate every N steps")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    torch.manual_seed(0)

    rows = sentence_pairs(seed=0)
    train, val = rows[:260], rows[260:]
    tokenizer = word_tokenizer(rows, length=16)
    with tempfile.TemporaryDirectory() as scratch:
        # sentence-transformers loads a transformer from a folder: save the random one there
        bert = BertModel(BertConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                    num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=16,
                                    pad_token_id=tokenizer.pad_token_id))
        bert.save_pretrained(f"{scratch}/bert")
        tokenizer.save_pretrained(f"{scratch}/bert")
        encoder = Transformer(f"{scratch}/bert", max_seq_length=16)
        model = SentenceTransformer(modules=[encoder, Pooling(encoder.get_embedding_dimension(), "mean")],
                                    device="cpu")

        loss = MultipleNegativesRankingLoss(model)
        training = SentenceTransformerTrainingArguments(
            output_dir=f"{scratch}/out", max_steps=args.steps, per_device_train_batch_size=args.batch_size,
            per_device_eval_batch_size=args.batch_size, learning_rate=1e-3, warmup_steps=10, logging_steps=10,
            eval_strategy="steps", eval_steps=args.eval_steps, save_strategy="no", report_to="none", use_cpu=True,
            seed=0, dataloader_drop_last=True)  # a short last batch would have few in-batch negatives
        trainer = SentenceTransformerTrainer(
            model=model, args=training, loss=loss, callbacks=[ScorevizCallback(args.run_dir, loss)],
            train_dataset=Dataset.from_list(train), eval_dataset=Dataset.from_list(val))
        trainer.train()
    print(f"recorded {trainer.state.global_step} steps into {args.run_dir}")


if __name__ == "__main__":
    main()
