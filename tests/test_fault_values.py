"""Fault suite: every bad value is refused at the call, and nothing it could do reaches the file.

After each refused call the Recorder still works, and the run's streams stay aligned:
each row is read back at its own step.
"""

import contextlib
import math

import numpy as np
import pytest
import torch

from faults import report
from scoreviz import Recorder, ScorevizError, open_run

LONG = "x" * 257
SURROGATE = "loss\udc80"
META = torch.empty(4, device="meta")
SPARSE = torch.eye(3).to_sparse()

BAD_CALLS = {
    "step 2**63": (lambda r: r.log_scores(2 ** 63, torch.rand(2), torch.rand(2, 3)), "below 2\\*\\*63"),
    "step -1": (lambda r: r.log_scalars(-1, loss=1.0), "non-negative integer"),
    "step 1.5": (lambda r: r.log_gradients(1.5, torch.nn.Linear(2, 2)), "non-negative integer"),
    "step True": (lambda r: r.log_scalars(True, loss=1.0), "non-negative integer"),
    "step float tensor": (lambda r: r.log_scalars(torch.tensor(1.0), loss=1.0), "non-negative integer"),
    "step uint64 max": (lambda r: r.log_scalars(np.uint64(2 ** 64 - 1), loss=1.0), "below 2\\*\\*63"),
    "pos on meta": (lambda r: r.log_scores(0, META, torch.rand(2, 3)), "meta device"),
    "neg on meta": (lambda r: r.log_scores(0, torch.rand(2), META.reshape(2, 2)), "meta device"),
    "logits on meta": (lambda r: r.log_logits(0, torch.empty(2, 5, device="meta"), 0.07), "meta device"),
    "sparse neg": (lambda r: r.log_scores(0, torch.rand(3), SPARSE), "sparse"),
    "object array": (lambda r: r.log_scores(0, np.array([object()]), None), "floating-point"),
    "complex scores": (lambda r: r.log_scores(0, torch.rand(2, dtype=torch.complex64), None), "floating-point"),
    "tag too long": (lambda r: r.log_scores(0, torch.rand(2), None, tag=LONG), "257 bytes long"),
    "tag lone surrogate": (lambda r: r.log_scores(0, torch.rand(2), None, tag="raw\udc80"), "lone surrogate"),
    "tag with NUL": (lambda r: r.log_scores(0, torch.rand(2), None, tag="a\x00b"), "NUL"),
    "tag not a string": (lambda r: r.log_scores(0, torch.rand(2), None, tag=3), "non-empty string"),
    "scalar name too long": (lambda r: r.log_scalars(0, **{LONG: 1.0}), "257 bytes long"),
    "scalar name lone surrogate": (lambda r: r.log_scalars(0, **{SURROGATE: 1.0}), "lone surrogate"),
    "scalar on meta": (lambda r: r.log_scalars(0, loss=torch.tensor(1.0, device="meta")), "single real number"),
    "scalar complex": (lambda r: r.log_scalars(0, loss=torch.tensor(1 + 1j)), "single real number"),
    "scalar too large": (lambda r: r.log_scalars(0, loss=10 ** 400), "too large"),
    "scalar a string": (lambda r: r.log_scalars(0, loss="1.0"), "must be a number"),
    "temperature inf": (lambda r: r.log_logits(0, torch.rand(2, 5), math.inf), "positive finite"),
    "temperature nan": (lambda r: r.log_logits(0, torch.rand(2, 5), math.nan), "positive finite"),
    "square logits without positives=": (lambda r: r.log_logits(0, torch.rand(4, 4), 0.1), "are square"),
    "a positives mask not bool": (lambda r: r.log_logits(0, torch.rand(4, 5), 0.1, positives=torch.ones(4, 5)),
                                  "must be a bool tensor"),
    "model not a module": (lambda r: r.log_gradients(0, [torch.zeros(2)]), "torch.nn.Module"),
    "embeddings on meta": (lambda r: r.log_embeddings(0, torch.empty(4, 8, device="meta")), "meta device"),
    "second view on meta": (lambda r: r.log_embeddings(0, torch.rand(4, 8), META.reshape(1, 4)), "meta device"),
    "embeddings 1-D": (lambda r: r.log_embeddings(0, torch.rand(8)), "shape \\(batch, dim\\)"),
    "embeddings 3-D": (lambda r: r.log_embeddings(0, torch.rand(2, 3, 4)), "flatten the extra dimensions"),
    "embeddings dim 0": (lambda r: r.log_embeddings(0, torch.rand(4, 0)), "dim >= 1, got \\(4, 0\\)"),
    "embeddings integer": (lambda r: r.log_embeddings(0, torch.ones(4, 3, dtype=torch.int64)), "floating-point embeddings"),
    "embeddings sparse": (lambda r: r.log_embeddings(0, SPARSE), "sparse"),
    "embeddings a list": (lambda r: r.log_embeddings(0, [[1.0, 2.0]]), "torch.Tensor \\(or numpy array\\) of embeddings"),
    "second view of another shape": (lambda r: r.log_embeddings(0, torch.rand(4, 8), torch.rand(4, 7)),
                                     "z2 must have the shape of z \\(4, 8\\)"),
    "embeddings wider than a spectrum": (lambda r: r.log_embeddings(0, torch.rand(2, 4097)), "above 4096"),
    "embeddings of another dim for a tag": (lambda r: [r.log_embeddings(0, torch.rand(5, d), tag="dims") for d in (4, 5)],
                                            "tag 'dims' has dim 4 in this run, got dim 5"),
    "embeddings tag too long": (lambda r: r.log_embeddings(0, torch.rand(2, 2), tag=LONG), "257 bytes long"),
    "embeddings step -1": (lambda r: r.log_embeddings(-1, torch.rand(2, 2)), "non-negative integer"),
}


def embeddings(step):
    """A batch of embeddings that only this step logs."""
    return torch.randn(6, 4, generator=torch.Generator().manual_seed(int(step)))


def std_of_normalised(z):
    x = z.double() / z.double().norm(dim=1, keepdim=True)
    return x.std(dim=0).mean().item()


def test_every_bad_value_is_refused_at_the_call_and_the_run_stays_aligned(tmp_path):
    model = torch.nn.Linear(3, 2)
    with Recorder(tmp_path) as rec:
        for step, (name, (call, message)) in enumerate(BAD_CALLS.items()):
            with pytest.raises(ScorevizError, match=message):
                call(rec)
            # a good row after every refused call, each at its own step
            rec.log_scores(step, torch.full((4,), step / 100), torch.full((4, 3), -step / 100))
            for p in model.parameters():
                p.grad = torch.full_like(p, float(step))
            rec.log_gradients(step, model)
            rec.log_scalars(step, at=float(step))
            rec.log_embeddings(step, embeddings(step))
    run = open_run(tmp_path)
    steps = np.arange(len(BAD_CALLS))
    scores = run.scores("train")
    assert list(scores.index) == list(steps)
    np.testing.assert_allclose(scores["pos_mean"], steps / 100, atol=1e-6)
    np.testing.assert_allclose(run.scalars()["at"], steps)
    np.testing.assert_allclose(run.gradients()["(root)"], steps * np.sqrt(8), rtol=1e-5)
    frame = run.embeddings("train")
    assert list(frame.index) == list(steps)
    np.testing.assert_allclose(frame["std"], [std_of_normalised(embeddings(s)) for s in steps], rtol=1e-6)
    assert run.tags == ["train"] and list(run.scalars().columns) == ["at"]
    assert run.embedding_tags == ["train", "dims"] and list(run.embeddings("dims").index) == [0]
    report("bad values at the call", cases=len(BAD_CALLS), refused=len(BAD_CALLS), rows_misaligned=0)


@pytest.mark.parametrize("settings, message", [
    ({"flush_secs": math.inf}, "flush_secs"),
    ({"flush_secs": 0}, "flush_secs"),
    ({"flush_secs": -1}, "flush_secs"),
    ({"flush_secs": math.nan}, "flush_secs"),
    ({"flush_secs": "1"}, "flush_secs"),
    ({"bins": 0}, "bins"),
    ({"bins": 10 ** 6}, "bins must be at most 4096"),
    ({"every": 2.5}, "every"),
    ({"spectrum_window": -1}, "spectrum_window must be a non-negative integer"),
    ({"spectrum_window": 2.5}, "spectrum_window"),
    ({"spectrum_window": True}, "spectrum_window"),
    ({"spectrum_window": "50"}, "spectrum_window"),
    ({"config": {"self": None, "loop": []}}, None),  # fine: made circular below
])
def test_bad_settings_are_refused_before_anything_is_created(tmp_path, settings, message):
    if message is None:
        settings["config"]["loop"].append(settings["config"])
        message = "config cannot be stored as JSON"
    with pytest.raises(ScorevizError, match=message):
        Recorder(tmp_path / "run", **settings)
    assert not (tmp_path / "run").exists()


def test_empty_and_missing_negatives_are_recorded(tmp_path):
    with Recorder(tmp_path) as rec:
        rec.log_scores(0, torch.rand(4), torch.empty(0, 16))  # no negatives this step
        rec.log_scores(1, torch.rand(4))                       # none at all (BYOL, SimSiam)
        rec.log_scores(2, torch.rand(4), None)
        rec.log_scores(3, torch.empty(0), torch.rand(4, 8))   # no positives
    scores = open_run(tmp_path).scores("train")
    assert list(scores["neg_count"]) == [0, 0, 0, 32] and list(scores["pos_count"]) == [4, 4, 4, 0]
    assert scores["neg_mean"][:3].isna().all() and scores["pos_mean"][:3].notna().all()


def test_layer_names_too_long_for_the_file_are_shortened_and_kept_apart(tmp_path):
    model = torch.nn.Sequential()
    for i in range(2):
        model.add_module("block" * 60 + str(i), torch.nn.Linear(2, 2))
    model(torch.rand(1, 2)).sum().backward()
    with Recorder(tmp_path) as rec:
        rec.log_gradients(0, model)
    layers = open_run(tmp_path).layers
    assert len(layers) == 2 and len(set(layers)) == 2
    assert all(len(name.encode()) <= 256 and name.startswith("blockblock") for name in layers)


def test_a_write_that_fails_half_way_leaves_the_streams_aligned(tmp_path):
    """An I/O error in the middle of a flush (after some datasets took their rows): the rows of
    that flush are not part of the run, the rows before are, and the run resumes aligned."""
    with Recorder(tmp_path) as rec:
        for step in range(10):
            rec.log_scores(step, torch.full((4,), step / 100), torch.rand(4, 3))
        rec.flush()
        appender = rec._store._rows
        stats = appender.ds["scores"]["stats"]

        class FailingWrites:  # takes the resize, fails the write: like EIO from the disk
            def __getattr__(self, name):
                return getattr(stats.id, name)

            def write(self, *args, **kwargs):
                raise OSError(5, "Input/output error")

        class Failing:
            id = FailingWrites()

            def __getattr__(self, name):
                return getattr(stats, name)

        appender.ds["scores"]["stats"] = Failing()
        for step in range(10, 20):
            rec.log_scores(step, torch.full((4,), step / 100), torch.rand(4, 3))
        with pytest.raises(ScorevizError, match=r"scores\.h5: writing the run failed: Input/output error "
                                                r"\(errno 5, EIO\)\. The rows flushed before are safe \(10 scores"):
            rec.flush()
        with pytest.raises(ScorevizError, match="Input/output error"):
            rec.close()
    assert list(open_run(tmp_path).scores("train").index) == list(range(10))
    with Recorder(tmp_path) as rec:  # resumes after the 10 good rows
        for step in range(10, 15):
            rec.log_scores(step, torch.full((4,), step / 100), torch.rand(4, 3))
    scores = open_run(tmp_path).scores("train")
    assert list(scores.index) == list(range(15))
    np.testing.assert_allclose(scores["pos_mean"], np.arange(15) / 100, atol=1e-6)


def test_non_finite_embeddings_are_counted_not_refused_and_the_rows_stay_aligned(tmp_path):
    """Refusing NaN embeddings at the call would need a host sync (a look at the values); like
    non-finite scores, such samples are counted and left out, and every row stays at its step."""
    with Recorder(tmp_path, spectrum_window=2) as rec:
        for step in range(4):
            z = embeddings(step)
            z[0, 0] = float("nan")
            if step == 2:
                z[:] = float("inf")  # a whole batch: nothing left to measure that step
            with pytest.warns(RuntimeWarning, match="non-finite") if step == 0 else contextlib.nullcontext():
                rec.log_embeddings(step, z)
                rec.flush()
    frame = open_run(tmp_path).embeddings()
    assert list(frame.index) == [0, 1, 2, 3] and frame["nonfinite"].tolist() == [1, 1, 6, 1]
    np.testing.assert_allclose(frame["std"].drop(2), [std_of_normalised(embeddings(s)[1:]) for s in (0, 1, 3)],
                               rtol=1e-6)
    assert np.isnan(frame.loc[2, "std"]) and np.isnan(frame.loc[2, "uniformity"])
    assert frame["rank"].dropna().index.tolist() == [1, 3]
