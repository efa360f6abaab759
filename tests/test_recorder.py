"""The Recorder end to end: training loop -> Recorder -> HDF5 -> open_run -> pandas."""

import argparse
import inspect
import subprocess
import textwrap
import time
import warnings

import numpy as np
import pytest
import torch

import scoreviz
from scoreviz import Recorder, ScorevizError, open_run


def scores(seed, batch=8, negatives=32):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, generator=g), 0.2 * torch.randn(batch, negatives, generator=g)


class TwoLayers(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = torch.nn.Linear(4, 8)
        self.head = torch.nn.Linear(8, 2)

    def forward(self, x):
        return self.head(torch.relu(self.encoder(x)))


def test_a_recorded_run_reads_back_as_frames(tmp_path):
    model = TwoLayers()
    with Recorder(tmp_path / "run", config={"m": 0.99, "method": "moco"}) as rec:
        for step in range(5):
            pos, neg = scores(step)
            rec.log_scores(step, pos, neg)
            rec.log_scores(step, pos * 0.9, neg, tag="ft")
            model.zero_grad()
            model(torch.randn(3, 4)).pow(2).sum().backward()
            rec.log_gradients(step, model)
            rec.log_scalars(step, loss=torch.tensor(2.0 - step / 10), lr=0.03)
    run = open_run(tmp_path / "run")
    assert run.name == "run"
    assert run.config == {"m": 0.99, "method": "moco"}
    assert run.tags == ["train", "ft"]
    assert run.layers == ["encoder", "head"]
    frame = run.scores("train")
    assert list(frame.index) == [0, 1, 2, 3, 4]
    pos, neg = scores(4)
    assert frame.loc[4, "pos_mean"] == pytest.approx(pos.mean().item(), rel=1e-6)
    assert frame.loc[4, "neg_var"] == pytest.approx(neg.var(correction=0).item(), rel=1e-5)
    assert frame.loc[4, "neg_sample_var"] == pytest.approx(neg.var(dim=1, correction=0).mean().item(), rel=1e-5)
    assert run.scores("ft").loc[4, "pos_mean"] == pytest.approx(0.9 * pos.mean().item(), rel=1e-6)
    steps, edges, counts = run.histograms("train", "neg")
    assert list(steps) == [0, 1, 2, 3, 4] and edges.shape == (101,) and counts.shape == (5, 100)
    assert counts[4].sum() == 8 * 32
    # gradient norms: per module over its own parameters, and all together
    grads = run.gradients()
    expected = {name: torch.cat([p.grad.reshape(-1) for p in m.parameters()]).norm().item()
                for name, m in [("encoder", model.encoder), ("head", model.head)]}
    assert grads.loc[4].to_dict() == pytest.approx(expected, rel=1e-5)
    total = torch.cat([p.grad.reshape(-1) for p in model.parameters()]).norm().item()
    assert run.total_gradient_norm().loc[4] == pytest.approx(total, rel=1e-5)
    assert run.scalars().loc[4].to_dict() == pytest.approx({"loss": 1.6, "lr": 0.03})
    assert list(run.steps()) == [0, 1, 2, 3, 4]
    summary = run.summary()
    assert (summary["steps"], summary["first_step"], summary["last_step"]) == (5, 0, 4)
    assert run.env["torch"] == torch.__version__ and "hostname" in run.env and "argv" in run.env


def test_logits_are_turned_back_into_scores(tmp_path):
    pos, neg = scores(0)
    logits = torch.cat([pos[:, None], neg], dim=1) / 0.07
    with Recorder(tmp_path) as rec:
        rec.log_logits(3, logits, 0.07, tag="train")
    frame = open_run(tmp_path).scores("train")
    assert frame.loc[3, "pos_mean"] == pytest.approx(pos.mean().item(), rel=1e-5)
    assert frame.loc[3, "neg_count"] == neg.numel()


def test_log_logits_diagonal_takes_in_batch_positives(tmp_path):
    """(B, B) in-batch logits: row i's positive is column i, the rest of the row its negatives
    (issue 11, defect 2: the default reading took column 0 as every row's positive)."""
    gen = torch.Generator().manual_seed(0)
    z1 = torch.nn.functional.normalize(torch.randn(6, 8, generator=gen), dim=1)
    z2 = torch.nn.functional.normalize(z1 + 0.3 * torch.randn(6, 8, generator=gen), dim=1)
    cos = z1 @ z2.T
    off = cos[~torch.eye(6, dtype=torch.bool)].view(6, 5)
    with Recorder(tmp_path / "diag") as rec:
        rec.log_logits(0, cos / 0.1, 0.1, positives="diagonal")
        rec.log_logits(1, (cos / 0.1).T.contiguous().T, 0.1, positives="diagonal")  # a non-contiguous view
    with Recorder(tmp_path / "reference") as rec:
        rec.log_scores(0, cos.diagonal(), off)
        rec.log_scores(1, cos.diagonal(), off)
    got, want = open_run(tmp_path / "diag").scores(), open_run(tmp_path / "reference").scores()
    columns = ["pos_count", "pos_mean", "pos_var", "neg_count", "neg_mean", "neg_var", "neg_sample_var"]
    np.testing.assert_allclose(got[columns].to_numpy(), want[columns].to_numpy(), rtol=1e-5, atol=1e-7)
    assert got.loc[0, "pos_count"] == 6 and got.loc[0, "neg_count"] == 30
    assert got.loc[0, "pos_mean"] == pytest.approx(cos.diagonal().mean().item(), rel=1e-5)


@pytest.mark.parametrize("logits, positives, message", [
    (torch.rand(5, 4), "diagonal", r"shape \(batch, batch\)"),
    (torch.rand(1, 1), "diagonal", "batch >= 2"),
    (torch.rand(4, 4), "column0", "positives must be 'first'"),
    (torch.rand(4), "first", r"\(batch, 1 \+ negatives\)"),
    (torch.rand(5, 5), "ntxent", r"\(2B, 2B\)"),
    (torch.rand(4, 4), torch.ones(4, 4), "must be a bool tensor"),
    (torch.rand(4, 4), torch.ones(4, 5, dtype=torch.bool), "the logits' shape"),
])
def test_log_logits_positives_are_checked(tmp_path, logits, positives, message):
    with Recorder(tmp_path) as rec:
        with pytest.raises(ScorevizError, match=message):
            rec.log_logits(0, logits, 0.1, positives=positives)


def test_every_records_only_every_nth_step_but_all_scalars(tmp_path):
    model = TwoLayers()
    model(torch.randn(2, 4)).sum().backward()
    with Recorder(tmp_path, every=3) as rec:
        for step in range(10):
            rec.log_scores(step, *scores(step))
            rec.log_gradients(step, model)
            rec.log_scalars(step, loss=1.0)
    run = open_run(tmp_path)
    assert list(run.scores("train").index) == [0, 3, 6, 9]
    assert list(run.gradients().index) == [0, 3, 6, 9]
    assert list(run.scalars().index) == list(range(10))


def test_streams_that_appear_late_are_recorded(tmp_path):
    model = TwoLayers()
    with Recorder(tmp_path) as rec:
        for step in range(4):
            model.zero_grad(set_to_none=True)
            out = model.encoder(torch.randn(2, 4)) if step < 2 else model(torch.randn(2, 4))
            out.sum().backward()
            rec.log_gradients(step, model)
            rec.log_scores(step, *scores(step))
            if step >= 2:
                rec.log_scores(step, *scores(step), tag="late")
                rec.log_scalars(step, knn_acc=0.5)
            rec.log_scalars(step, loss=1.0)
            rec.flush()  # so the late streams arrive in a file that already has rows
    run = open_run(tmp_path)
    assert run.tags == ["train", "late"] and list(run.scores("late").index) == [2, 3]
    grads = run.gradients()
    assert list(grads.columns) == ["encoder", "head"]
    assert grads["head"].isna().tolist() == [True, True, False, False]
    scalars = run.scalars()
    assert scalars["knn_acc"].isna().tolist() == [True, True, False, False]


def test_a_resumed_run_appends_and_a_repeated_step_keeps_the_later_row(tmp_path):
    with Recorder(tmp_path) as rec:
        for step in range(5):
            rec.log_scores(step, *scores(step))
    with Recorder(tmp_path) as rec:  # resumed from a checkpoint at step 3
        for step in range(3, 7):
            rec.log_scores(step, *scores(100 + step))
    frame = open_run(tmp_path).scores("train")
    assert list(frame.index) == list(range(7))
    assert frame.loc[4, "pos_mean"] == pytest.approx(scores(104)[0].mean().item(), rel=1e-6)


def test_a_logged_step_is_on_disk_within_flush_secs_without_close(tmp_path):
    default = inspect.signature(Recorder).parameters["flush_secs"].default
    assert default <= 5.0  # the app's refresh interval
    rec = Recorder(tmp_path)
    rec.log_scores(0, *scores(0))
    start = time.monotonic()
    while time.monotonic() - start < default + 1.0:
        if "train" in open_run(tmp_path).tags:
            break
        time.sleep(0.05)
    assert list(open_run(tmp_path).scores("train").index) == [0]
    rec.close()


def test_the_context_manager_flushes_when_the_loop_raises(tmp_path):
    with pytest.raises(RuntimeError, match="diverged"):
        with Recorder(tmp_path, flush_secs=60) as rec:
            rec.log_scores(0, *scores(0))
            raise RuntimeError("diverged")
    assert list(open_run(tmp_path).scores("train").index) == [0]


def test_a_script_that_never_closes_is_flushed_at_exit(tmp_path, python, subprocess_env):
    script = textwrap.dedent(f"""
        import torch, scoreviz
        rec = scoreviz.Recorder({str(tmp_path)!r}, flush_secs=60)
        for step in range(7):
            rec.log_scores(step, torch.rand(4), torch.rand(4, 9))
    """)
    subprocess.run([python, "-c", script], check=True, env=subprocess_env, timeout=120)
    assert len(open_run(tmp_path).scores("train")) == 7


def test_scores_outside_the_unit_interval_warn_once_naming_logits(tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with Recorder(tmp_path) as rec:
            for step in range(3):
                pos, neg = scores(step)
                rec.log_scores(step, pos / 0.07, neg / 0.07)  # the usual mistake
    messages = [str(w.message) for w in caught if "outside [-1, 1]" in str(w.message)]
    assert len(messages) == 1 and "log_logits" in messages[0]
    assert open_run(tmp_path).scores("train")["pos_out_of_range"].gt(0).all()


def test_non_finite_scores_are_not_fatal(tmp_path):
    pos, neg = scores(0)
    neg[0, 0] = float("nan")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with Recorder(tmp_path) as rec:
            rec.log_scores(0, pos, neg)
            rec.log_scores(1, *scores(1))
    frame = open_run(tmp_path).scores("train")
    assert frame["neg_nonfinite"].tolist() == [1, 0]
    assert np.isfinite(frame["neg_mean"]).all()
    assert any("non-finite" in str(w.message) for w in caught)


@pytest.mark.parametrize("call, message", [
    (lambda r: r.log_scores(0, [0.5], torch.rand(2, 3)), "pos must be a torch.Tensor"),
    (lambda r: r.log_scores(0, torch.rand(2), torch.ones(2, 3, dtype=torch.long)), "floating-point"),
    (lambda r: r.log_scores(-1, torch.rand(2), torch.rand(2, 3)), "non-negative integer"),
    (lambda r: r.log_scores(1.5, torch.rand(2), torch.rand(2, 3)), "non-negative integer"),
    (lambda r: r.log_scores(0, torch.rand(2), torch.rand(2, 3), tag=""), "tag"),
    (lambda r: r.log_logits(0, torch.rand(5), 0.07), r"shape \(batch, 1 \+ negatives\)"),
    (lambda r: r.log_logits(0, torch.rand(2, 5), 0), "temperature"),
    (lambda r: r.log_gradients(0, "model"), "torch.nn.Module"),
    (lambda r: r.log_scalars(0, loss="low"), "loss must be a number"),
    (lambda r: r.log_scalars(0, loss=torch.ones(3)), "single real number"),
])
def test_wrong_arguments_fail_at_the_call_site(tmp_path, call, message):
    with Recorder(tmp_path) as rec:
        with pytest.raises(ScorevizError, match=message):
            call(rec)


def test_bad_recorder_settings_and_use_after_close(tmp_path):
    with pytest.raises(ScorevizError, match="every"):
        Recorder(tmp_path, every=0)
    with pytest.raises(ScorevizError, match="config"):
        Recorder(tmp_path, config=[1, 2])
    rec = Recorder(tmp_path, config=argparse.Namespace(lr=0.1, arch=object()))
    rec.close()
    rec.close()  # idempotent
    with pytest.raises(ScorevizError, match="closed"):
        rec.log_scalars(0, loss=1.0)
    config = open_run(tmp_path).config
    assert config["lr"] == 0.1 and config["arch"].startswith("<object")


def test_wrapped_models_record_the_inner_layer_names(tmp_path):
    class Wrapper(torch.nn.Module):  # what DistributedDataParallel and torch.compile look like
        def __init__(self, inner):
            super().__init__()
            self.module = inner

    model = Wrapper(TwoLayers())
    model.module(torch.randn(2, 4)).sum().backward()
    with Recorder(tmp_path) as rec:
        rec.log_gradients(0, model)
    assert open_run(tmp_path).layers == ["encoder", "head"]


def test_public_api_names():
    for name in ("Recorder", "open_run", "ScorevizError", "__version__", "find_runs"):
        assert hasattr(scoreviz, name)
    for name in ("log_scores", "log_logits", "log_gradients", "log_scalars", "close", "flush"):
        assert callable(getattr(Recorder, name))


def test_a_closed_run_gives_back_the_space_it_reserved(tmp_path):
    """The writer reserves room past the end of its file while it writes (store/space.py);
    once closed, the file occupies about its own size on disk, not that plus the reservation."""
    import os

    with Recorder(tmp_path, flush_secs=0.05) as rec:
        for step in range(1000):
            rec.log_scores(step, torch.rand(64), torch.rand(64, 512))
            if step % 100 == 0:
                rec.flush()
    st = os.stat(tmp_path / "scores.h5")
    assert st.st_blocks * 512 <= st.st_size + (256 << 10), (st.st_size, st.st_blocks * 512)
