"""Grouping runs by config keys: means and bands checked against pandas on known runs."""

import numpy as np
import pandas as pd
import pytest

from scoreviz import ScorevizError
from scoreviz.groups import align, group_curves, group_runs, mean_histogram, step_grid, summarize

CONFIGS = {
    "m0.9-s0": {"moco_m": 0.9, "seed": 0, "lr": 0.03},
    "m0.9-s1": {"moco_m": 0.9, "seed": 1, "lr": 0.03},
    "m0.9-s2": {"moco_m": 0.9, "seed": 2, "lr": 0.03},
    "m0.99-s0": {"moco_m": 0.99, "seed": 0, "lr": 0.03},
    "m0.99-s1": {"moco_m": 0.99, "seed": 1, "lr": 0.06},
    "nokey": {"seed": 0},
}


def pandas_reference(curves, grid):
    """What a careful notebook would do: reindex on the grid, interpolate inside each run only."""
    columns = {}
    for run, s in curves.items():
        s = s.dropna()
        full = s.reindex(s.index.union(grid)).interpolate(method="index", limit_area="inside")
        columns[run] = full.reindex(grid)
    frame = pd.DataFrame(columns)
    return frame.mean(axis=1), frame.std(axis=1), frame.min(axis=1), frame.max(axis=1), frame.count(axis=1)


def test_group_runs_ignores_other_keys_and_sorts_numerically():
    groups = group_runs(CONFIGS, by=["moco_m"])
    assert [g.key for g in groups] == [(0.9,), (0.99,), (None,)]
    assert groups[0].runs == ("m0.9-s0", "m0.9-s1", "m0.9-s2")
    assert groups[0].label == "moco_m=0.9 (n=3)" and groups[2].name == "moco_m not set"
    two = group_runs(CONFIGS, by=["moco_m", "lr"])
    assert [g.runs for g in two][:3] == [("m0.9-s0", "m0.9-s1", "m0.9-s2"), ("m0.99-s0",), ("m0.99-s1",)]
    assert group_runs(CONFIGS)[0].runs == tuple(CONFIGS) and group_runs(CONFIGS)[0].name == "all runs"


def test_equal_steps_match_pandas_mean_std_min_max():
    rng = np.random.default_rng(0)
    steps = np.arange(0, 100, 5)
    curves = {r: pd.Series(rng.normal(size=len(steps)), index=steps) for r in CONFIGS}
    groups = group_runs(CONFIGS, by=["moco_m"])
    std_curves = group_curves(curves, groups, band="std")
    minmax = group_curves(curves, groups, band="minmax")
    for curve, mm in zip(std_curves, minmax):
        frame = pd.DataFrame({r: curves[r] for r in curve.group.runs})
        np.testing.assert_allclose(curve.frame["mean"], frame.mean(axis=1))
        std = frame.std(axis=1).fillna(0.0)  # one run: the band is the run itself
        np.testing.assert_allclose(curve.frame["upper"] - curve.frame["mean"], std, atol=1e-12)
        np.testing.assert_allclose(curve.frame["mean"] - curve.frame["lower"], std, atol=1e-12)
        np.testing.assert_allclose(mm.frame["lower"], frame.min(axis=1))
        np.testing.assert_allclose(mm.frame["upper"], frame.max(axis=1))
        assert (curve.frame["count"] == len(curve.group.runs)).all()
    sem = group_curves(curves, groups[:1], band="sem")[0].frame
    frame = pd.DataFrame({r: curves[r] for r in groups[0].runs})
    np.testing.assert_allclose(sem["upper"] - sem["mean"], frame.sem(axis=1))


def test_different_step_sets_missing_runs_and_nan_match_pandas():
    curves = {
        "a": pd.Series([0.0, 1.0, 2.0, 3.0], index=[0, 10, 20, 30]),
        "b": pd.Series([5.0, np.nan, 7.0], index=[5, 15, 25]),          # other steps, a NaN
        "c": pd.Series([1.0, 1.0, 1.0, 1.0, 9.0], index=[0, 10, 20, 30, 40]),  # runs longer
    }
    grid = step_grid(curves)
    assert list(grid) == [0, 5, 10, 20, 25, 30, 40]  # the NaN step 15 is not a grid step
    aligned = align(curves, grid)
    mean, std, lo, hi, count = pandas_reference(curves, grid)
    summary = summarize(aligned, "std")
    np.testing.assert_allclose(summary["mean"], mean)
    np.testing.assert_allclose(summary["upper"] - summary["mean"], std.fillna(0.0), atol=1e-12)
    np.testing.assert_array_equal(summary["count"], count)
    assert summary.loc[0, "count"] == 2 and summary.loc[40, "count"] == 1  # b starts at 5; only c reaches 40
    assert np.isnan(aligned.loc[0, "b"]) and aligned.loc[10, "b"] == pytest.approx(5.5)  # across the NaN at 15
    minmax = summarize(aligned, "minmax")
    np.testing.assert_allclose(minmax["lower"], lo)
    np.testing.assert_allclose(minmax["upper"], hi)


def test_a_run_missing_the_statistic_is_listed_not_counted():
    curves = {"m0.9-s0": pd.Series([1.0, 2.0], index=[0, 1]), "m0.9-s1": pd.Series(dtype=float),
              "m0.9-s2": pd.Series([3.0, 4.0], index=[0, 1])}
    [curve] = group_curves(curves, group_runs({r: CONFIGS[r] for r in curves}, ["moco_m"]))
    assert curve.runs == ("m0.9-s0", "m0.9-s2") and curve.missing == ("m0.9-s1",)
    assert list(curve.frame["mean"]) == [2.0, 3.0] and curve.group.label == "moco_m=0.9 (n=3)"
    nothing = group_curves({"m0.9-s0": None}, group_runs({"m0.9-s0": {}}, ["moco_m"]))
    assert nothing == []


def test_max_points_thins_the_shared_grid():
    curves = {"a": pd.Series(np.arange(1000.0), index=np.arange(1000)),
              "b": pd.Series(np.arange(1000.0) * 2, index=np.arange(1000))}
    [curve] = group_curves(curves, group_runs({"a": {}, "b": {}}), max_points=100)
    assert len(curve.frame) <= 100 and curve.frame.index[-1] == 999
    np.testing.assert_allclose(curve.frame["mean"], curve.frame.index * 1.5)


def test_mean_histogram_weighs_each_run_equally():
    edges = np.linspace(-1, 1, 5)
    hist = mean_histogram({"a": (edges, [0, 4, 0, 0]), "b": (edges, [0, 0, 0, 400]), "empty": (edges, [0, 0, 0, 0])})
    width = 0.5
    np.testing.assert_allclose(hist.mean, [0, 0.5 / width, 0, 0.5 / width])
    np.testing.assert_allclose(hist.std, pd.DataFrame([[0, 2, 0, 0], [0, 0, 0, 2]]).std().to_numpy())
    assert hist.runs == ("a", "b")
    assert (hist.mean * width).sum() == pytest.approx(1.0)
    with pytest.raises(ScorevizError, match="cannot average"):
        mean_histogram({"a": (edges, [1, 1, 1, 1]), "b": (np.linspace(-1, 1, 3), [1, 1])})


def test_mean_histogram_bands_match_pandas_over_the_runs_densities():
    edges = np.linspace(-1, 1, 5)
    counts = {"a": [1, 3, 0, 0], "b": [0, 2, 2, 0], "c": [0, 0, 1, 9]}
    hist = mean_histogram({r: (edges, c) for r, c in counts.items()})
    frame = pd.DataFrame({r: np.asarray(c, float) / np.sum(c) / 0.5 for r, c in counts.items()}).T  # runs x bins
    std = frame.std().to_numpy()
    for band, (lower, upper) in {"std": (frame.mean() - std, frame.mean() + std),
                                 "sem": (frame.mean() - std / np.sqrt(3), frame.mean() + std / np.sqrt(3)),
                                 "minmax": (frame.min(), frame.max())}.items():
        got = hist.band(band)
        np.testing.assert_allclose(got[0], np.asarray(lower), err_msg=band)
        np.testing.assert_allclose(got[1], np.asarray(upper), err_msg=band)
    with pytest.raises(ScorevizError, match="band"):
        hist.band("iqr")


def test_unknown_band_is_refused():
    with pytest.raises(ScorevizError, match="band"):
        summarize(pd.DataFrame({"a": [1.0]}), "iqr")


def test_groups_past_most_are_drawn_as_one_group_and_keys_are_bounded():
    """Issue 25: a view draws at most MAX_GROUPS groups, the rest summarised as one; at most MAX_KEYS keys."""
    from scoreviz.groups import MAX_KEYS, OTHERS, group_runs

    configs = {f"run{i}": {"seed": i, "m": 0.9} for i in range(30)}
    groups = group_runs(configs, ["seed"], most=20)
    assert len(groups) == 20 and [g.key for g in groups[:19]] == [(i,) for i in range(19)]
    rest = groups[-1]
    assert rest.key == (OTHERS,) and rest.folded == 11 and rest.name == "11 other groups"
    assert rest.runs == tuple(f"run{i}" for i in range(19, 30)) and rest.values == ["11 others"]
    assert len(group_runs(configs, ["seed"])) == 30 and len(group_runs(configs, ["m"], most=20)) == 1
    with pytest.raises(ScorevizError, match=f"at most {MAX_KEYS} config keys"):
        group_runs(configs, [f"k{i}" for i in range(MAX_KEYS + 1)])
