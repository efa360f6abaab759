"""The grouped waterfall, the grouped histogram overlay and the table of groups.

Figures as app.group_figures returns them, checked against means computed here with
numpy/pandas on known runs; then the Dash callbacks on real HDF5 runs written by the
store writer (tests/sweep_runs.py), whose every value is known."""

import numpy as np
import pandas as pd
import pytest

from app.plot import palette as plot_palette
from app.views.curves import groups as group_tables
from app.views.distribution import figures as distribution_figures
from app.views.waterfall import figures as waterfall_figures
from scoreviz import groups
from sweep_runs import BINS, write_run

EDGES = np.linspace(-1, 1, BINS + 1)


def sweep_curves():
    """moco_m 0.9 x seeds 0, 1, 2 and moco_m 0.5 x seeds 0, 1: run value = m * 10 + seed + step / 10."""
    steps = np.arange(0, 40, 4)
    configs, curves = {}, {}
    for m, seeds in ((0.9, (0, 1, 2)), (0.5, (0, 1))):
        for seed in seeds:
            run = f"m{m}-s{seed}"
            configs[run] = {"moco_m": m, "seed": seed}
            curves[run] = pd.Series(m * 10 + seed + steps / 10.0, index=steps)
    return configs, curves


# ---- waterfall -----------------------------------------------------------------


def test_the_grouped_waterfall_draws_each_groups_mean_at_its_own_depth_ordered_by_the_key():
    configs, curves = sweep_curves()
    grouped = groups.group_curves(curves, groups.group_runs(configs, ["moco_m"]), band="std")
    fig = waterfall_figures.grouped_waterfall_figure(grouped, key="moco_m", stat="neg_mean",
                                                 colors=plot_palette.group_colors(c.group for c in grouped))
    lines = [t for t in fig.data if t.type == "scatter3d"]
    assert [t.name for t in lines] == ["moco_m=0.5 (n=2)", "moco_m=0.9 (n=3)"]
    long = pd.DataFrame([{"run": r, "m": configs[r]["moco_m"], "step": s, "value": v}
                         for r, series in curves.items() for s, v in series.items()])
    expected = long.groupby(["m", "step"])["value"].agg(["mean", "std"])
    for depth, (line, m) in enumerate(zip(lines, (0.5, 0.9))):
        assert set(np.asarray(line.y)) == {depth}
        np.testing.assert_allclose(np.asarray(line.z, float), expected.loc[m]["mean"].to_numpy(), rtol=1e-6)
        assert list(line.customdata) == [2 if m == 0.5 else 3] * 10  # runs behind each point
    ribbons = [t for t in fig.data if t.type == "mesh3d"]
    assert [t.name for t in ribbons] == ["moco_m=0.5 (n=2) band", "moco_m=0.9 (n=3) band"]
    # the ribbon of 0.9 spans mean -+ sample std (pandas) at every step: bottom row then top row
    z = np.asarray(ribbons[1].z, float)
    std = expected.loc[0.9]["std"].to_numpy()
    np.testing.assert_allclose(z[:10], expected.loc[0.9]["mean"] - std, rtol=1e-5)
    np.testing.assert_allclose(z[10:], expected.loc[0.9]["mean"] + std, rtol=1e-5)
    assert len(ribbons[1].i) == 2 * 9  # two triangles between neighbouring steps
    assert list(fig.layout.scene.yaxis.ticktext) == ["moco_m=0.5", "moco_m=0.9"]
    palette = plot_palette.group_colors(c.group for c in grouped)
    assert [t.line.color for t in lines] == [palette["moco_m=0.5"], palette["moco_m=0.9"]]
    assert [t.color for t in ribbons] == [palette["moco_m=0.5"], palette["moco_m=0.9"]]


def test_groups_of_several_keys_are_ordered_by_the_waterfall_key_numerically():
    configs = {f"r{i}": {"m": m, "arch": a} for i, (m, a) in enumerate(
        [(0.99, "a"), (0.5, "b"), (0.9, "a"), (None, "a")])}
    curves = {r: pd.Series([1.0, 2.0], index=[0, 1]) for r in configs}
    grouped = groups.group_curves(curves, groups.group_runs(configs, ["arch", "m"]))
    fig = waterfall_figures.grouped_waterfall_figure(grouped, key="m")
    assert list(fig.layout.scene.yaxis.ticktext) == ["arch=b, m=0.5", "arch=a, m=0.9", "arch=a, m=0.99",
                                                     "arch=a, m not set"]
    # without the key among the groups' keys: the groups' own order
    fig = waterfall_figures.grouped_waterfall_figure(grouped, key="lr")
    assert list(fig.layout.scene.yaxis.ticktext)[:2] == ["arch=a, m=0.9", "arch=a, m=0.99"]


def test_a_waterfall_with_nothing_to_draw_says_so():
    fig = waterfall_figures.grouped_waterfall_figure([], key="m")
    assert "select runs" in fig.layout.annotations[0].text


# ---- histograms ----------------------------------------------------------------


def known_histograms():
    """Per run {"pos": (steps, edges, counts), "neg": ...} with counts that differ by run and step."""
    rng = np.random.default_rng(0)
    steps = np.array([0, 10, 20])
    out = {}
    for run in ("a0", "a1", "a2", "b0", "b1"):
        out[run] = {kind: (steps, EDGES, rng.integers(0, 50, size=(3, BINS)).astype(np.uint32))
                    for kind in ("pos", "neg")}
    out["b1"]["neg"] = (np.array([0, 10]), EDGES, out["b1"]["neg"][2][:2])  # stopped before step 20
    return out


def test_the_grouped_overlay_draws_each_groups_mean_fraction_and_its_band():
    hists = known_histograms()
    configs = {r: {"m": r[0], "seed": int(r[1])} for r in hists}
    means = groups.mean_histograms_at_step(hists, groups.group_runs(configs, ["m"]), step=25)
    fig = distribution_figures.grouped_histograms_figure(means, 25, band="std")
    lines = {t.name: t for t in fig.data if not t.name.endswith(" band")}
    bands = {t.name[:-len(" band")]: t for t in fig.data if t.name.endswith(" band")}
    assert list(lines) == ["m=a pos (n=3)", "m=a neg (n=3)", "m=b pos (n=2)", "m=b neg (n=2)"]
    assert set(bands) == set(lines)
    for group, runs in (("a", ["a0", "a1", "a2"]), ("b", ["b0", "b1"])):
        for kind in ("pos", "neg"):
            # each run's fraction per bin at its last step <= 25 (b1's negatives: step 10), then over runs
            rows = pd.DataFrame([hists[r][kind][2][-1] / hists[r][kind][2][-1].sum() for r in runs])
            name = f"m={group} {kind} (n={len(runs)})"
            np.testing.assert_allclose(np.asarray(lines[name].y, float), rows.mean().to_numpy(), rtol=1e-5)
            y = np.asarray(bands[name].y, float)
            np.testing.assert_allclose(y[:BINS], (rows.mean() + rows.std()).to_numpy(), rtol=1e-5)
            np.testing.assert_allclose(y[BINS:][::-1], (rows.mean() - rows.std()).clip(lower=0).to_numpy(),
                                       rtol=1e-5, atol=1e-7)
    assert lines["m=a neg (n=3)"].line.dash == "dash" and lines["m=a pos (n=3)"].line.dash == "solid"
    assert fig.layout.yaxis.title.text == "mean fraction of scores"


def test_the_overlay_band_follows_the_band_setting():
    hists = known_histograms()
    configs = {r: {"m": r[0]} for r in hists}
    means = groups.mean_histograms_at_step(hists, groups.group_runs(configs, ["m"]), step=0)
    fig = distribution_figures.grouped_histograms_figure(means, 0, band="minmax")
    band = np.asarray(next(t for t in fig.data if t.name == "m=a pos (n=3) band").y, float)
    rows = pd.DataFrame([hists[r]["pos"][2][0] / hists[r]["pos"][2][0].sum() for r in ("a0", "a1", "a2")])
    np.testing.assert_allclose(band[:BINS], rows.max().to_numpy(), rtol=1e-5)
    np.testing.assert_allclose(band[BINS:][::-1], rows.min().to_numpy(), rtol=1e-5)
    assert "min" in fig.layout.legend.title.text


def test_a_group_without_negatives_draws_its_positives_only():
    hists = {"a": {"pos": (np.array([0]), EDGES, np.ones((1, BINS), np.uint32)),
                   "neg": (np.array([0]), EDGES, np.zeros((1, BINS), np.uint32))}}
    means = groups.mean_histograms_at_step(hists, groups.group_runs({"a": {}}, []), step=0)
    fig = distribution_figures.grouped_histograms_figure(means, 0)
    assert [t.name for t in fig.data if not t.name.endswith(" band")] == ["all runs pos (n=1)"]


# ---- table of groups -----------------------------------------------------------


def test_the_group_table_gives_each_groups_final_mean_and_band_against_pandas():
    configs, curves = sweep_curves()
    del curves["m0.5-s1"]  # a run without the statistic still counts in the group's runs
    group_list = groups.group_runs(configs, ["moco_m"])
    finals = {"neg_mean": group_tables.final_values(curves)}
    table = group_tables.group_table(group_list, finals, band="std")
    assert table["columns"] == ["moco_m", "runs", "neg_mean"]
    last = pd.Series({r: s.iloc[-1] for r, s in curves.items()})
    nine = last[[r for r in last.index if r.startswith("m0.9")]]
    assert table["rows"][1][:2] == ["0.9", "3"]
    assert table["rows"][1][2] == f"{nine.mean():.4g} \u00b1 {nine.std():.2g}"
    assert table["rows"][0][2].endswith("(1 of 2 runs)")
    minmax = group_tables.group_table(group_list, finals, band="minmax")
    assert minmax["rows"][1][2] == f"{nine.mean():.4g} [{nine.min():.4g}, {nine.max():.4g}]"


# ---- callbacks on real runs ----------------------------------------------------


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
    """moco_m 0.9 and 0.99 x seeds 0, 1 with known values; histograms in bins that differ by seed."""
    root = tmp_path_factory.mktemp("grouped-views")
    steps = np.arange(0, 30, 3)
    for m in (0.9, 0.99):
        for seed in (0, 1):
            write_run(root / f"m{m}-s{seed}", {"moco_m": m, "seed": seed}, steps, m + seed * 0.1 + steps / 100,
                      hist_bin=(np.arange(len(steps)) + seed * 3 + int(m * 100) % 7) % BINS)
    return root


def test_the_waterfall_and_overlay_draw_groups_from_real_runs(sweep_dir):
    from app.runs import RunData
    from app.views import distribution, waterfall
    from test_app import view_state

    data = RunData(sweep_dir, warm=False)
    runs = data.run_ids()
    fig = waterfall.draw(view_state(data, "?view=waterfall&group=moco_m&key=moco_m&wstat=neg_mean"), data)
    lines = [t for t in fig.data if t.type == "scatter3d"]
    assert [t.name for t in lines] == ["moco_m=0.9 (n=2)", "moco_m=0.99 (n=2)"]
    expected = pd.concat([data.scores(r, "train")["neg_mean"] for r in runs if r.startswith("m0.9-")],
                         axis=1).mean(axis=1)
    np.testing.assert_allclose(np.asarray(lines[0].z, float), expected.loc[np.asarray(lines[0].x)], rtol=1e-5)
    assert "grouped by moco_m" in fig.layout.title.text

    fig = distribution.histograms(view_state(data, "?view=distribution&group=moco_m&band=minmax&step=27"), data)
    line = next(t for t in fig.data if t.name == "moco_m=0.99 neg (n=2)")
    # every run puts all its negatives of a step in one bin: the mean is half in each seed's bin
    expected = np.zeros(BINS)
    for seed in (0, 1):
        expected[(9 + seed * 3 + 99 % 7) % BINS] += 0.5
    np.testing.assert_allclose(np.asarray(line.y, float), expected, atol=1e-6)
    assert "min" in fig.layout.legend.title.text
    # the same group has the same colour in the waterfall and the overlay
    assert line.line.color == lines[1].line.color


def test_the_views_that_draw_groups_draw_from_group_and_band_so_a_grouped_url_restores_them():
    """A panel draws from the URL keys it declares: those of the views that draw groups include both."""
    from app.shell import page
    from app.views import VIEWS

    grouping = [v for v in VIEWS if v.groups]
    assert {v.name for v in grouping} >= {"curves", "distribution", "waterfall", "compare"}
    for view in grouping:
        assert any("group" in panel.keys for panel in view.panels), view.name
        if view.name != "compare":  # (it compares the groups' mean histograms: no band to draw)
            assert any({"group", "band"} <= set(panel.keys) for panel in view.panels), view.name
    controls = {c.key: c for c in page.controls(VIEWS)}
    assert (controls["group"].id, controls["group"].many) == ("group-by", True) and controls["band"].id == "band"
