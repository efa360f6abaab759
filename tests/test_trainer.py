"""The MoCo(+FT) trainer on digits: short runs, records, checkpoints, resume."""

import argparse
import json

import pytest
import torch

import scoreviz
from scoreviz.errors import ScorevizError
from scoreviz.trainer import train

pytestmark = pytest.mark.slow

TINY = ["--batch-size", "32", "--moco-k", "128", "--steps-per-epoch", "2", "--knn-k", "20", "--quiet"]


def parse(*argv):
    return train.add_arguments(argparse.ArgumentParser()).parse_args(list(argv))


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("ft", [False, True])
def test_two_step_run(tmp_path, version, ft):
    run_dir = tmp_path / "run"
    ft_args = ["--pos-alpha", "2.0", "--neg-alpha", "1.6", "--ft-start-epoch", "0"] if ft else []
    model = train.main(parse("--run-dir", str(run_dir), "--moco-version", str(version), "--epochs", "1", *TINY, *ft_args))

    assert isinstance(model.encoder_q.head, torch.nn.Sequential) == (version == 2)  # MLP head for v2
    assert model.T == (0.07 if version == 1 else 0.2)
    assert int(model.queue_ptr) == 2 * 32  # two batches enqueued
    run = scoreviz.open_run(run_dir)
    # A baseline records no "ft" tag: it would be its "raw" scores again (issue 11, defect 5).
    assert run.tags == (["raw", "ft"] if ft else ["raw"])
    raw = run.scores("raw")
    assert list(raw.index) == [1, 2]
    # the query and key projections: alignment of unit vectors is 2 - 2 x their positive score
    assert run.embedding_tags == ["raw"] and (run.embeddings("raw")["dim"] == 128).all()
    assert (run.embeddings("raw")["alignment"] - (2 - 2 * raw["pos_mean"])).abs().max() < 1e-5
    if ft:
        after = run.scores("ft")
        assert list(after.index) == [1, 2]
        # Positive extrapolation makes every positive harder.
        assert (after["pos_mean"] < raw["pos_mean"]).all()
    scalars = run.scalars()
    assert {"loss", "lr", "knn_acc"} <= set(scalars.columns)
    assert scalars["loss"].dropna().between(0, 50).all()
    assert scalars["knn_acc"].dropna().index.tolist() == [0, 2]  # random init, then after the epoch
    grads = run.gradients()
    assert list(grads.index) == [1, 2] and (grads > 0).all().all()
    assert any(str(c).startswith("backbone.") for c in grads.columns) and any(str(c).startswith("head") for c in grads.columns)
    results = json.loads((run_dir / "results.json").read_text())
    assert results["step"] == 2 and 0 <= results["knn_acc_final"] <= 100
    assert (run_dir / "checkpoint.pt").is_file()


def _interrupt_after(monkeypatch, epochs_done):
    real = train.train_one_epoch
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        if calls["n"] == epochs_done:
            raise KeyboardInterrupt  # the job is killed at the start of this epoch
        calls["n"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(train, "train_one_epoch", flaky)


def test_resume_is_bit_identical(tmp_path, monkeypatch):
    # FT starts in the epoch after the interruption: the resumed run must start it as the straight one did
    common = ["--epochs", "3", *TINY, "--pos-alpha", "2.0", "--neg-alpha", "1.6", "--per-dim", "both", "--seed", "3",
              "--ft-start-epoch", "1"]
    straight = train.main(parse("--run-dir", str(tmp_path / "a"), *common))

    with monkeypatch.context() as m:
        _interrupt_after(m, 1)
        with pytest.raises(KeyboardInterrupt):
            train.main(parse("--run-dir", str(tmp_path / "b"), *common))
    assert torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=False)["epoch"] == 1
    resumed = train.main(parse("--run-dir", str(tmp_path / "b"), "--resume"))

    a, b = straight.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    ca = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=False)
    cb = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=False)
    assert ca["step"] == cb["step"] == 6
    for sa, sb in zip(ca["optimizer"]["state"].values(), cb["optimizer"]["state"].values()):
        assert torch.equal(sa["momentum_buffer"], sb["momentum_buffer"])
    assert torch.equal(ca["rng"][0]["cpu"], cb["rng"][0]["cpu"])
    # The record continues too: the resumed run's scores match the straight run's.
    ra, rb = scoreviz.open_run(tmp_path / "a").scores("ft"), scoreviz.open_run(tmp_path / "b").scores("ft")
    assert list(rb.index) == [1, 2, 3, 4, 5, 6]
    assert ra["pos_mean"].equals(rb["pos_mean"]) and ra["neg_var"].equals(rb["neg_var"])


def test_ft_start_epoch(tmp_path):
    run_dir = tmp_path / "run"
    train.main(parse("--run-dir", str(run_dir), "--epochs", "2", *TINY, "--pos-alpha", "2.0", "--ft-start-epoch", "1"))
    run = scoreviz.open_run(run_dir)
    raw, after = run.scores("raw"), run.scores("ft")
    assert raw.loc[[1, 2], "pos_mean"].equals(after.loc[[1, 2], "pos_mean"])  # epoch 0: no FT yet
    assert (after.loc[[3, 4], "pos_mean"] < raw.loc[[3, 4], "pos_mean"]).all()
    # The digits' default start (epoch 10) after a 1-epoch run's end: said, not silent
    with pytest.warns(UserWarning, match="--ft-start-epoch 10 is not before .* trains without feature transformation"):
        train.main(parse("--run-dir", str(tmp_path / "short"), "--epochs", "1", *TINY, "--pos-alpha", "2.0"))


def test_bad_options_raise_scoreviz_error(tmp_path):
    with pytest.raises(ScorevizError, match="--moco-k"):
        train.main(parse("--run-dir", str(tmp_path / "x"), "--batch-size", "32", "--moco-k", "50"))
    with pytest.raises(ScorevizError, match="checkpoint"):
        train.main(parse("--run-dir", str(tmp_path / "nothing"), "--resume"))
    with pytest.raises(ScorevizError, match="--data"):
        train.main(parse("--dataset", "cifar10", "--run-dir", str(tmp_path / "y")))
    with pytest.raises(ScorevizError, match="data_batch_1"):
        train.main(parse("--dataset", "cifar10", "--data", str(tmp_path), "--run-dir", str(tmp_path / "y")))
    assert not (tmp_path / "y").exists()  # nothing is created for a run that cannot start


def test_default_run_dir_names_method_and_ft(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    train.main(parse("--epochs", "1", *TINY, "--neg-alpha", "1.6", "--per-dim", "neg", "--moco-version", "1"))
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert run_dir.name.startswith("moco-v1-digits-neg1.6-dimneg-")
    assert (run_dir / "scores.h5").is_file()
