"""The Hugging Face Trainer and sentence-transformers callbacks, and their offline examples."""

import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import scoreviz
from scoreviz import ScorevizError

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")
from scoreviz.integrations.transformers import ScorevizCallback, in_batch_scores, scores_from_outputs  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture
def offline_env(subprocess_env, tmp_path):
    """No hub: offline flags, and an empty Hugging Face cache, so a download or a cached model would fail."""
    env = dict(subprocess_env, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               HF_HOME=str(tmp_path / "hf-home"), TOKENIZERS_PARALLELISM="false")
    return env


def run_example(python, env, *args):
    start = time.perf_counter()
    out = subprocess.run([python, *map(str, args)], env=env, capture_output=True, text=True, timeout=280)
    assert out.returncode == 0, out.stderr[-4000:]
    return time.perf_counter() - start


def test_in_batch_scores_are_the_diagonal_and_the_rest():
    torch.manual_seed(0)
    a, b = torch.randn(5, 8), torch.randn(7, 8)  # 5 anchors, their 5 positives and 2 hard negatives
    pos, neg = in_batch_scores(a, b)
    full = torch.nn.functional.cosine_similarity(a[:, None], b[None], dim=-1)
    torch.testing.assert_close(pos, full.diagonal())
    assert neg.shape == (5, 6)
    torch.testing.assert_close(neg[1], torch.cat([full[1, :1], full[1, 2:]]))


def test_scores_from_outputs_finds_pos_neg_or_clip_embeddings_and_says_what_is_missing():
    pos, neg = torch.rand(4), torch.rand(4, 3)
    assert scores_from_outputs({"pos": pos, "neg": neg, "loss": torch.tensor(1.0)})[0] is not None
    from transformers.models.clip.modeling_clip import CLIPOutput

    text, image = torch.randn(4, 6), torch.randn(4, 6)
    pos, neg = scores_from_outputs(CLIPOutput(text_embeds=text, image_embeds=image))
    torch.testing.assert_close(pos, torch.nn.functional.cosine_similarity(text, image))
    assert neg.shape == (4, 3)
    with pytest.raises(ScorevizError, match="Pass scores=lambda outputs"):
        scores_from_outputs({"logits": torch.randn(4, 2), "loss": torch.tensor(0.5)})


class PairModel(torch.nn.Module):
    """A toy contrastive model in the Trainer's terms: batches of x, outputs loss, pos and neg."""

    def __init__(self):
        super().__init__()
        self.encoder = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))

    def forward(self, x):
        za = torch.nn.functional.normalize(self.encoder(x + 0.1 * torch.randn_like(x)), dim=1)
        zb = torch.nn.functional.normalize(self.encoder(x + 0.1 * torch.randn_like(x)), dim=1)
        scores = za @ zb.T
        loss = torch.nn.functional.cross_entropy(scores / 0.1, torch.arange(len(x)))
        off = ~torch.eye(len(x), dtype=torch.bool)
        return {"loss": loss, "pos": scores.diagonal(), "neg": scores[off].view(len(x), -1)}


class Points(torch.utils.data.Dataset):
    def __init__(self, n):
        self.x = torch.randn(n, 8)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i]}


@pytest.mark.slow
def test_callback_records_accumulated_steps_evaluations_and_every(tmp_path):
    torch.manual_seed(0)
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "out"), max_steps=6, per_device_train_batch_size=8, gradient_accumulation_steps=2,
        per_device_eval_batch_size=8, eval_strategy="steps", eval_steps=3, logging_steps=2, save_strategy="no",
        report_to="none", use_cpu=True, learning_rate=0.05, disable_tqdm=True)
    callback = ScorevizCallback(tmp_path / "run", every=2)
    trainer = transformers.Trainer(model=PairModel(), args=args, train_dataset=Points(200),
                                   eval_dataset=Points(20), callbacks=[callback])  # eval batches: 8, 8, 4
    trainer.train()
    run = scoreviz.open_run(tmp_path / "run")
    train = run.scores("train")
    assert list(train.index) == [2, 4, 6]  # the Trainer's step numbers, every=2
    assert (train["pos_count"] == 16).all() and (train["neg_count"] == 16 * 7).all()  # two micro-batches of 8
    evaluation = run.scores("eval")
    assert list(evaluation.index) == [3, 6]  # every evaluation, whatever `every`
    assert (evaluation["pos_count"] == 16).all()  # the short last batch (4 rows, 3 negatives each) is left out
    assert list(run.gradients().index) == [2, 4, 6]
    scalars = run.scalars()
    assert list(scalars["loss"].dropna().index) == [1, 2, 3, 4, 5, 6]  # every step, mean of its micro-batches
    assert list(scalars["lr"].dropna().index) == [1, 2, 3, 4, 5, 6]
    assert {"grad_norm", "epoch", "eval_runtime"} <= set(scalars.columns)
    assert "learning_rate" not in scalars.columns
    assert run.config["gradient_accumulation_steps"] == 2 and run.config["model"] == "PairModel"
    assert callback.recorder is None and not model_hooks(trainer.model)  # closed and detached


def model_hooks(model):
    return [h for m in model.modules() for h in m._forward_hooks.values()]


@pytest.mark.slow
def test_callback_error_for_outputs_without_scores(tmp_path):
    class Classifier(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(8, 2)

        def forward(self, x):
            logits = self.linear(x)
            return {"loss": logits.square().mean(), "logits": logits}

    args = transformers.TrainingArguments(output_dir=str(tmp_path / "out"), max_steps=2, report_to="none",
                                          use_cpu=True, save_strategy="no", disable_tqdm=True)
    trainer = transformers.Trainer(model=Classifier(), args=args, train_dataset=Points(32),
                                   callbacks=[ScorevizCallback(tmp_path / "run")])
    with pytest.raises(ScorevizError, match="cannot find scores"):
        trainer.train()


@pytest.mark.slow
def test_hf_trainer_clip_example_runs_offline(tmp_path, python, offline_env):
    seconds = run_example(python, offline_env, EXAMPLES / "hf_trainer_clip.py", tmp_path / "clip",
                          "--steps", 40, "--eval-steps", 20)
    print(f"hf_trainer_clip.py, 40 steps: {seconds:.1f} s")
    run = scoreviz.open_run(tmp_path / "clip")
    assert run.tags == ["train", "eval"]
    train = run.scores("train")
    assert list(train.index) == list(range(1, 41))
    assert (train["pos_count"] == 64).all() and (train["neg_count"] == 64 * 63).all()
    assert list(run.scores("eval").index) == [20, 40]
    margin = train["pos_mean"] - train["neg_mean"]
    assert margin.iloc[-5:].mean() > margin.iloc[:5].mean() + 0.05  # CLIP learns to tell its pairs apart
    assert {"loss", "lr", "eval_loss"} <= set(run.scalars().columns)
    assert len(run.layers) > 10 and run.config["model"] == "CLIPModel"
    assert not (tmp_path / "hf-home" / "hub").exists()  # nothing fetched into the (empty) cache


@pytest.mark.slow
def test_sentence_transformers_example_runs_offline(tmp_path, python, offline_env):
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("datasets")
    seconds = run_example(python, offline_env, EXAMPLES / "sentence_transformers_mnrl.py", tmp_path / "st",
                          "--steps", 30, "--eval-steps", 15)
    print(f"sentence_transformers_mnrl.py, 30 steps: {seconds:.1f} s")
    run = scoreviz.open_run(tmp_path / "st")
    assert run.tags == ["train", "train-hard", "eval", "eval-hard"]
    train, hard = run.scores("train"), run.scores("train-hard")
    assert list(train.index) == list(range(1, 31))
    # 32 anchors; candidates: 32 positives and 32 hard negatives, one of them each anchor's own positive
    assert (train["pos_count"] == 32).all() and (train["neg_count"] == 32 * 63).all()
    assert (hard["neg_count"] == 32).all()
    np.testing.assert_array_equal(hard["pos_mean"], train["pos_mean"])
    embeddings = run.embeddings("train")  # the anchors and their positives
    assert list(embeddings.index) == list(range(1, 31))
    assert embeddings[["std", "uniformity", "alignment"]].notna().all().all()
    assert list(run.embeddings("eval").index) == [15, 30]
    assert list(run.scores("eval").index) == [15, 30]
    margin = train["pos_mean"] - train["neg_mean"]
    assert margin.iloc[-5:].mean() > margin.iloc[:5].mean() + 0.05
    assert run.config["loss"] == "MultipleNegativesRankingLoss" and run.config["loss.scale"] == 20.0
    assert {"loss", "lr", "eval_loss"} <= set(run.scalars().columns)
    assert not (tmp_path / "hf-home" / "hub").exists()


def test_sentence_transformers_callback_wants_an_mnrl_loss(tmp_path):
    pytest.importorskip("sentence_transformers")
    from scoreviz.integrations.sentence_transformers import ScorevizCallback as STCallback

    with pytest.raises(ScorevizError, match="MultipleNegativesRankingLoss"):
        STCallback(tmp_path / "run", torch.nn.MSELoss())


DDP_SCRIPT = '''
import gc
import sys
import torch
import transformers
sys.path.insert(0, {tests!r})
from test_integrations_transformers import PairModel, Points
from scoreviz.integrations.transformers import ScorevizCallback
torch.manual_seed(0)
args = transformers.TrainingArguments(
    output_dir={out!r}, max_steps=4, per_device_train_batch_size=8, per_device_eval_batch_size=8,
    eval_strategy="steps", eval_steps=2, save_strategy="no", report_to="none", use_cpu=True, ddp_backend="gloo",
    disable_tqdm=True)
trainer = transformers.Trainer(model=PairModel(), args=args, train_dataset=Points(64), eval_dataset=Points(32),
                               callbacks=[ScorevizCallback({run!r})])
trainer.train()
# The Trainer leaves the process group open; a gloo process that exits with it open can abort at exit
# (SIGABRT from a worker thread, pytorch/pytorch#190489). Closing it was not enough: CI saw rank 1
# abort once more ("terminate called without an active exception") while its DDP model, which holds
# the reducer's gloo work, was still alive. So: both ranks done, the model dropped, then the group.
torch.distributed.barrier()
del trainer
gc.collect()
torch.distributed.destroy_process_group()
'''


@pytest.mark.slow
def test_callback_under_torchrun_records_the_global_batch(tmp_path, python, subprocess_env):
    script = tmp_path / "train.py"
    script.write_text(DDP_SCRIPT.format(tests=str(Path(__file__).parent), out=str(tmp_path / "out"),
                                        run=str(tmp_path / "run")))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = subprocess.run([python, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr",
                          "127.0.0.1", "--master_port", str(port), str(script)],
                         env=subprocess_env, capture_output=True, text=True, timeout=280)
    assert out.returncode == 0, out.stderr[-4000:]
    run = scoreviz.open_run(tmp_path / "run")
    assert run.env["world_size"] == 2
    train = run.scores("train")
    assert list(train.index) == [1, 2, 3, 4] and (train["pos_count"] == 2 * 8).all()  # both ranks' batches
    assert (run.scores("eval")["pos_count"] == 32).all()  # the whole eval set, split over the ranks
    assert list(run.gradients().index) == [1, 2, 3, 4]
