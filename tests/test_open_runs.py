"""scoreviz.open_runs: many runs as one long DataFrame, filtered on config values."""

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("torch")
import scoreviz  # noqa: E402

from tests.sweep_runs import write_run  # noqa: E402


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    for m in (0.9, 0.99):
        for seed in range(3):
            steps = np.arange(0, 50, 5 if seed else 10)
            write_run(root / "runs" / f"m{m}-s{seed}", {"moco_m": m, "seed": seed, "aug": ["crop", "flip"]},
                      steps, m + seed + steps / 100.0, scalars={"loss": steps * 2.0})
    write_run(root / "other" / "m0.9-s0", {"moco_m": 0.9, "seed": 9, "step": "clash"}, [0, 1], [5.0, 6.0])
    (root / "runs" / "broken").mkdir()
    (root / "runs" / "broken" / "scores.h5").write_bytes(b"not hdf5")
    return root


def test_long_frame_with_config_columns(sweep):
    with pytest.warns(UserWarning, match="broken"):
        frame = scoreviz.open_runs(sweep / "runs", ["neg_mean", "loss"])
    assert list(frame.columns[:6]) == ["run", "path", "tag", "statistic", "step", "value"]
    assert {"moco_m", "seed", "aug"} <= set(frame.columns)
    assert sorted(frame["run"].unique()) == sorted(f"m{m}-s{s}" for m in (0.9, 0.99) for s in range(3))
    one = frame[(frame["run"] == "m0.99-s2") & (frame["statistic"] == "neg_mean")]
    np.testing.assert_allclose(one["value"], 0.99 + 2 + np.arange(0, 50, 5) / 100.0)
    assert (one["moco_m"] == 0.99).all() and one["aug"].iloc[0] == ("crop", "flip")
    loss = frame[(frame["run"] == "m0.9-s0") & (frame["statistic"] == "loss")]
    assert list(loss["step"]) == list(range(0, 50, 10)) and list(loss["value"]) == [0, 20, 40, 60, 80]
    # what a notebook does with it: the mean over seeds per momentum and step
    mean = frame[frame["statistic"] == "neg_mean"].groupby(["moco_m", "step"])["value"].mean()
    assert mean.loc[(0.9, 0)] == pytest.approx(0.9 + 1)  # seeds 0, 1, 2 at step 0


@pytest.mark.parametrize("where, runs", [
    ({"moco_m": 0.99}, {"m0.99-s0", "m0.99-s1", "m0.99-s2"}),
    ({"moco_m": [0.9], "seed": lambda s: s > 0}, {"m0.9-s1", "m0.9-s2"}),
    (lambda config: config["seed"] == 0, {"m0.9-s0", "m0.99-s0"}),
    ([{"moco_m": 0.9}, lambda c: c["seed"] != 1], {"m0.9-s0", "m0.9-s2"}),
    ({"aug": ["crop", "flip"], "seed": 2}, set()),  # a list is a set of options: "aug" is never "crop" alone
    ({"aug": [("crop", "flip")], "seed": 2}, {"m0.9-s2", "m0.99-s2"}),
    ({"missing": 1}, set()),
])
@pytest.mark.filterwarnings("ignore:open_runs. skipped")
def test_where_filters_on_config(sweep, where, runs):
    frame = scoreviz.open_runs(sweep / "runs", "pos_mean", where=where)
    assert set(frame["run"]) == runs


def test_several_roots_and_globs_keep_runs_of_the_same_name_apart(sweep):
    frame = scoreviz.open_runs([sweep / "runs", str(sweep / "oth*")], "pos_mean", where={"moco_m": 0.9, "seed": [0, 9]})
    assert set(frame["run"]) == {"runs/m0.9-s0", "other/m0.9-s0"}
    assert "config.step" in frame.columns and frame["step"].dtype.kind == "i"  # a config key named step
    with pytest.raises(scoreviz.ScorevizError, match="matches no folder"):
        scoreviz.open_runs(str(sweep / "nothing-*"))


@pytest.mark.filterwarnings("ignore:open_runs. skipped")
def test_steps_and_max_points_and_errors(sweep):
    frame = scoreviz.open_runs(sweep / "runs", "neg_mean", where={"seed": 1}, steps=(10, 30), max_points=3)
    assert set(frame.groupby("run")["step"].apply(tuple)) == {(10, 25, 30)}  # 5 steps: every 3rd, the last
    with pytest.raises(scoreviz.ScorevizError, match="broken"):
        scoreviz.open_runs(sweep / "runs", "neg_mean", errors="raise")
    for bad in ({"max_points": 0}, {"steps": (0.5, None)}, {"where": "moco_m=0.9"}, {"errors": "ignore"}):
        with pytest.raises(scoreviz.ScorevizError, match="open_runs"):
            scoreviz.open_runs(sweep / "runs", "neg_mean", **bad)
    empty = scoreviz.open_runs(sweep / "runs", "no such statistic", where={"seed": 0})
    assert empty.empty and list(empty.columns[:6]) == ["run", "path", "tag", "statistic", "step", "value"]
