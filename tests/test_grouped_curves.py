"""The grouped Curves view: runs grouped by config keys, one mean line and band per group.

The figure as plot_lines.grouped_curves_figure returns it (no browser), the colours of
groups, and the Dash callback with real runs (tests/test_app_browser.py opens it in
Chromium)."""

import numpy as np
import pandas as pd
import pytest

from app.plot import lines as plot_lines
from app.plot import palette as plot_palette
from scoreviz import groups


def sweep_curves():
    """Two momenta x two seeds (and a third seed of 0.99 that stops early), neg_mean known."""
    steps = np.arange(0, 50, 5)
    configs, curves = {}, {}
    for m, offset in ((0.9, 0.0), (0.99, 1.0)):
        for seed in (0, 1):
            run = f"m{m}-s{seed}"
            configs[run] = {"moco_m": m, "seed": seed, "lr": 0.03}
            curves[run] = pd.Series(offset + seed * 0.5 + steps / 100.0, index=steps)
    configs["m0.99-s2"] = {"moco_m": 0.99, "seed": 2, "lr": 0.03}
    curves["m0.99-s2"] = pd.Series(1.0 + 1.0 + steps[:4] / 100.0, index=steps[:4])
    return configs, curves


def grouped(band="std", by=("moco_m",)):
    configs, curves = sweep_curves()
    return groups.group_curves(curves, groups.group_runs(configs, by), band=band)


def test_one_mean_line_and_one_band_per_group_named_with_its_run_count():
    fig = plot_lines.grouped_curves_figure({"neg_mean": grouped()}, ["neg_mean"], colors={})
    lines = [t for t in fig.data if not t.name.endswith(" band")]
    bands = [t for t in fig.data if t.name.endswith(" band")]
    assert [t.name for t in lines] == ["moco_m=0.9 (n=2)", "moco_m=0.99 (n=3)"]  # seeds folded in
    assert [t.showlegend for t in lines] == [True, True]
    assert [t.name for t in bands] == ["moco_m=0.9 (n=2) band", "moco_m=0.99 (n=3) band"]
    assert all(t.fill == "toself" and not t.showlegend for t in bands)
    # the mean of the two seeds of 0.9 at every step: offset 0 and 0.5, + step / 100
    mean = np.asarray(lines[0].y, dtype=float)
    assert np.allclose(mean, 0.25 + np.arange(0, 50, 5) / 100.0, atol=1e-6)
    # its band: mean -+ sample std of (0, 0.5) = 0.3536, traced up then back down
    band_y = np.asarray(bands[0].y, dtype=float)
    spread = np.std([0.0, 0.5], ddof=1)
    assert np.allclose(band_y[:10], mean + spread, atol=1e-5)
    assert np.allclose(band_y[10:], (mean - spread)[::-1], atol=1e-5)
    assert list(np.asarray(lines[1].customdata)) == [3, 3, 3, 3, 2, 2, 2, 2, 2, 2]  # the short seed stops
    assert "std" in fig.layout.legend.title.text


def test_a_minmax_band_spans_the_lowest_and_highest_run():
    fig = plot_lines.grouped_curves_figure({"neg_mean": grouped("minmax")}, ["neg_mean"], band="minmax")
    band = np.asarray(next(t for t in fig.data if t.name == "moco_m=0.99 (n=3) band").y, dtype=float)
    steps = np.arange(0, 50, 5) / 100.0
    assert np.allclose(band[:4], 2.0 + steps[:4], atol=1e-6)  # the early-stopping seed 2 is the top
    assert np.allclose(band[4:10], 1.5 + steps[4:], atol=1e-6)
    assert np.allclose(band[10:][::-1], 1.0 + steps, atol=1e-6)  # seed 0 the bottom
    assert "min" in fig.layout.legend.title.text


def test_each_group_has_its_colour_for_line_and_band_in_every_subplot():
    curves = {"neg_mean": grouped(), "pos_mean": grouped()}
    palette = plot_palette.group_colors(gc.group for gc in curves["neg_mean"])
    fig = plot_lines.grouped_curves_figure(curves, ["neg_mean", "pos_mean"], colors=palette)
    assert len(fig.data) == 8  # 2 statistics x 2 groups x (band + mean)
    for trace in fig.data:
        group = trace.name.split(" (n=")[0]
        if trace.name.endswith(" band"):
            red, green, blue = (int(palette[group][i:i + 2], 16) for i in (1, 3, 5))
            assert trace.fillcolor == f"rgba({red},{green},{blue},0.2)"
        else:
            assert trace.line.color == palette[group]
    assert sum(bool(t.showlegend) for t in fig.data) == 2  # one legend entry per group
    assert len(set(palette.values())) == 2


def test_group_colours_come_from_the_name_not_the_count_or_order():
    def named(key, *values):
        return [groups.Group((key,), (v,), ()) for v in values]

    first = plot_palette.group_colors(named("moco_m", 0.9, 0.99))
    assert plot_palette.group_colors(named("moco_m", 0.99, 0.9)) == first
    # a "/" in a value is part of the name (a run's colour uses only its folder's name)
    assert set(plot_palette.group_colors(named("data", "a/x", "b/x")).values()).__len__() == 2


def test_a_time_axis_is_refused_in_the_title_and_missing_runs_are_named():
    configs, curves = sweep_curves()
    curves["m0.9-s1"] = None  # a run without the statistic
    fig = plot_lines.grouped_curves_figure(
        {"neg_mean": groups.group_curves(curves, groups.group_runs(configs, ["moco_m"]))}, ["neg_mean"], x="wall")
    assert "over steps" in fig.layout.title.text
    assert "moco_m=0.9: 1 of 2 runs without neg_mean" in fig.layout.title.text
    assert fig.layout.xaxis.title.text == "step"


def test_smoothing_smooths_the_mean_and_the_band_edges():
    noisy = {f"r{i}": pd.Series(np.resize([0.0, 1.0], 40) + i, index=np.arange(40)) for i in range(2)}
    curves = groups.group_curves(noisy, groups.group_runs({r: {} for r in noisy}))
    raw = plot_lines.grouped_curves_figure({"neg_mean": curves}, ["neg_mean"])
    smoothed = plot_lines.grouped_curves_figure({"neg_mean": curves}, ["neg_mean"], smoothing=0.9)
    for fig in (raw, smoothed):
        assert [t.name for t in fig.data] == ["all runs (n=2) band", "all runs (n=2)"]
    assert np.std(np.diff(np.asarray(smoothed.data[1].y, dtype=float))) < \
        np.std(np.diff(np.asarray(raw.data[1].y, dtype=float))) / 5


def test_nothing_to_draw_is_an_empty_figure_with_a_message():
    fig = plot_lines.grouped_curves_figure({"neg_mean": []}, ["neg_mean"])
    assert fig.layout.annotations[0].text == "select runs and statistics"


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
    from test_app import make_run

    root = tmp_path_factory.mktemp("sweep")
    for m in (0.9, 0.99):
        for seed in (0, 1):
            make_run(root, f"m{m}-s{seed}", momentum=m, seed=seed, steps=20)
    return root


def test_the_curves_view_draws_groups_when_group_by_is_set(sweep_dir):
    from app.runs import RunData
    from app.views import curves
    from test_app import view_state

    data = RunData(sweep_dir, warm=False)
    runs = data.run_ids()
    state = view_state(data, "?stats=neg_mean&stats=pos_mean&group=moco_m&band=minmax")
    assert state["runs"] == runs
    fig = curves.draw(state, data)
    names = [t.name for t in fig.data if not t.name.endswith(" band")]
    assert names == ["moco_m=0.9 (n=2)"] * 2 + ["moco_m=0.99 (n=2)"] * 2  # group by group, each statistic
    assert "grouped by moco_m" in fig.layout.title.text
    # the mean line against pandas over the runs' own curves
    frames = [data.scores(r, "train")["neg_mean"] for r in runs if r.startswith("m0.9-")]
    expected = pd.concat(frames, axis=1).mean(axis=1)
    line = fig.data[1]
    assert np.allclose(np.asarray(line.y, dtype=float), expected.loc[np.asarray(line.x)].to_numpy(), atol=1e-5)
    # a band name the view does not know (a forged store) falls back to std
    fig = curves.draw(dict(state, band="nonsense", stats=["neg_mean"]), data)
    assert "std" in fig.layout.legend.title.text


def test_group_and_band_round_trip_through_the_url():
    from app.shell import page, url
    from app.views import VIEWS

    controls = page.controls(VIEWS)
    query = url.encode({"group": ["moco_m", "alpha"], "band": "minmax"}, controls)
    assert query == "?group=moco_m&group=alpha&band=minmax"
    assert url.parse(query, controls) == ({"group": ["moco_m", "alpha"], "band": "minmax"}, [])
