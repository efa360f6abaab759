"""The figure defects of issue 11, each as the figure function returns it (no browser):
sparse scalars, the heatmap's colour scale, log-axis ticks, values a log axis cannot
show, the 3D gradient surface, the waterfall's labels, run colours and the x axis."""

import json

import numpy as np
import pandas as pd

from app.plot import axes
from app.plot import lines as plot_lines
from app.plot import palette as plot_palette
from app.views.distribution import figures as distribution_figures
from app.views.gradients import figures as gradient_figures
from app.views.waterfall import figures as waterfall_figures
from scoreviz import groups, health
from app.plot.palette import run_colors


def test_a_scalar_logged_once_per_epoch_is_drawn_as_points_between_dense_steps():
    # loss every step, knn_acc every 44th: the outer join leaves knn_acc NaN on 43 steps in 44
    steps = pd.Index(np.arange(1, 441), name="step")
    frame = pd.DataFrame({"loss": np.linspace(8, 4, 440)}, index=steps)
    frame["knn_acc"] = np.nan
    frame.loc[44::44, "knn_acc"] = np.arange(10) * 5.0 + 20
    fig = plot_lines.curves_figure({"run": frame}, ["loss", "knn_acc"])
    knn = [t for t in fig.data if t.yaxis == "y2"]
    assert len(knn) == 1
    assert np.isfinite(np.asarray(knn[0].y, dtype=float)).sum() == 10  # every epoch's value, none dropped
    assert "markers" in knn[0].mode  # a handful of points shows even where a line would be one dot
    assert list(knn[0].x) == list(range(44, 441, 44))


def test_heatmap_colour_scale_is_a_percentile_of_step_peaks_not_the_first_steps():
    steps, edges, counts = np.arange(200), np.linspace(-1, 1, 51), np.ones((200, 50))
    counts[:5] = 0
    counts[:5, 25] = 1000  # the first steps: every score in one bin
    fig = distribution_figures.score_heatmap_figure({"run": (steps, edges, counts)}, scale=90.0)
    assert abs(fig.layout.coloraxis.cmax - 1 / 50) < 1e-6  # the rest of the run sets the scale
    full = distribution_figures.score_heatmap_figure({"run": (steps, edges, counts)}, scale=100.0)
    assert full.layout.coloraxis.cmax > 0.9  # "max" as before, on request


def test_log_ticks_are_whole_numbers_not_leading_digits():
    values, labels = axes.log_ticks(0.013, 0.8)
    assert labels == ["0.02", "0.05", "0.1", "0.2", "0.5"]
    assert values == [float(x) for x in labels]
    values, labels = axes.log_ticks(1e-6, 10)  # many decades: one tick per decade
    assert labels == ["1e-6", "1e-5", "1e-4", "0.001", "0.01", "0.1", "1", "10"]


def test_log_y_says_how_many_values_it_cannot_draw():
    frame = pd.DataFrame({"neg_mean": [-0.2, -0.1, 0.05, 0.1, 0.2]}, index=pd.Index(range(5), name="step"))
    fig = plot_lines.curves_figure({"run": frame}, ["neg_mean"], log_y=True)
    assert "2 values ≤ 0 not drawn on a log scale" in fig.layout.annotations[0].text
    assert "&le;" not in fig.layout.annotations[0].text  # plotly.js shows that entity as it is written
    assert fig.layout.yaxis.ticktext  # labelled ticks
    linear = plot_lines.curves_figure({"run": frame}, ["neg_mean"], log_y=False)
    assert "not drawn" not in linear.layout.annotations[0].text


def test_gradient_surface_names_its_layers_and_leaves_room():
    layers = [f"encoder.layer{i}.conv{j}.weight" for i in range(1, 5) for j in range(1, 6)]
    norms = np.random.default_rng(0).random((50, len(layers))) + 0.1
    fig = gradient_figures.gradient_surface_figure(np.arange(50), layers, norms, run_name="r")
    y = fig.layout.scene.yaxis
    assert len(y.ticktext) <= 12 and all(isinstance(t, str) and not t.isdigit() for t in y.ticktext)
    assert y.ticktext[0] == "layer1.conv1.weight" and y.ticktext[-1] == "layer4.conv5.weight" and y.ticktext[-1].endswith("weight")
    assert all(len(t) <= 22 for t in y.ticktext)
    assert "layer" in json.dumps(fig.data[0].hovertemplate) or "customdata" in fig.data[0].hovertemplate


def test_waterfall_labels_every_run_and_its_legend_does_not_repeat_the_name():
    series = {name: pd.Series(np.linspace(0, 1, 30), index=np.arange(30)) for name in ("baseline", "ft")}
    fig = waterfall_figures.waterfall_figure(series, {"baseline": None, "ft": None}, key="")
    assert list(fig.layout.scene.yaxis.ticktext) == ["baseline", "ft"]  # both depths labelled
    assert [t.name for t in fig.data] == ["baseline", "ft"]  # never "baseline (baseline)"
    # a key both runs share: the value alone would not say which run is which
    fig = waterfall_figures.waterfall_figure(series, {"baseline": 0.99, "ft": 0.99}, key="moco_m")
    ticks = list(fig.layout.scene.yaxis.ticktext)
    assert len(set(ticks)) == 2 and "baseline" in ticks[0] and "ft" in ticks[1]


def test_waterfall_colours_follow_the_run_not_its_depth():
    series = {name: pd.Series([1.0, 2.0], index=[0, 1]) for name in ("a", "b", "c")}
    palette = run_colors(series)
    by_m = waterfall_figures.waterfall_figure(series, {"a": 3, "b": 1, "c": 2}, key="m", colors=palette)
    by_name = waterfall_figures.waterfall_figure(series, {}, key="", colors=palette)
    colour = lambda fig: {t.name.split(" ")[0]: t.line.color for t in fig.data}  # noqa: E731
    assert colour(by_m) == colour(by_name) == palette


def test_run_colours_depend_on_the_runs_not_their_order():
    runs = ["baseline", "ft", "sweep/m0.9", "sweep/m0.99", "sweep/m0.999"]
    first = run_colors(runs)
    assert run_colors(list(reversed(runs))) == first
    assert len(set(first.values())) == len(runs)  # up to len(PALETTE) runs: all distinct
    # the same run keeps its colour when shown alone (no collision to resolve)
    assert run_colors(["ft"])["ft"] == plot_palette.PALETTE[plot_palette.slot("ft")]


def test_x_axis_wall_and_relative_time_and_old_files_without_times():
    frame = pd.DataFrame({"loss": [3.0, 2.0, 1.0]}, index=pd.Index([1, 2, 3], name="step"))
    times = {"new": pd.Series([1000.0, 1060.0, 1300.0], index=[1, 2, 3]),
             "old": pd.Series([np.nan] * 3, index=[1, 2, 3])}
    rel = plot_lines.curves_figure({"new": frame, "old": frame}, ["loss"], x="relative", times=times)
    (trace,) = rel.data
    assert trace.name == "new" and list(trace.x) == [0.0, 1.0, 5.0]  # minutes: the run is 300 s long
    assert rel.layout.xaxis.title.text == "relative time (min)"
    assert "old: no wall times" in rel.layout.title.text  # said, not silently dropped
    wall = plot_lines.curves_figure({"new": frame}, ["loss"], x="wall", times=times)
    assert wall.layout.xaxis.type == "date"
    steps = plot_lines.curves_figure({"new": frame, "old": frame}, ["loss"], x="step", times=times)
    assert [t.name for t in steps.data] == ["new", "old"]  # step: old files draw as before


# ---- health flags: an end step, and the warm-up of every MoCo run is not a collapse --------


def collapse_frame(n, alike):
    """Scores over steps 1..n; pos and neg means near 1 on the steps in ``alike``."""
    steps = pd.Index(np.arange(1, n + 1), name="step")
    frame = pd.DataFrame({"pos_mean": 0.6, "neg_mean": 0.05, "neg_sample_var": 0.01}, index=steps)
    frame.loc[frame.index.isin(alike), ["pos_mean", "neg_mean", "neg_sample_var"]] = [0.97, 0.95, 1e-5]
    return frame


def test_the_start_of_training_all_alike_then_left_is_warm_up_not_collapse():
    # the demo's FT run: all alike from step 9 (the random queue replaced) to step 108, then it trains
    flag = health.check_collapse(collapse_frame(4400, range(9, 109)))
    assert not flag.fired and flag.warmup == (9, 108)
    assert "warm-up" in flag.text() and "9-108" in flag.text()


def test_a_collapse_that_lasts_is_flagged_however_early_it_began():
    flag = health.check_collapse(collapse_frame(400, range(9, 401)))
    assert flag.fired and (flag.step, flag.end, flag.last) == (9, None, 400)
    assert flag.text() == "from step 9: pos and neg means near 1; still at the last step (400)"


def test_a_collapse_after_the_warm_up_has_an_end_step():
    flag = health.check_collapse(collapse_frame(5000, list(range(9, 50)) + list(range(3000, 3200))))
    assert flag.fired and (flag.step, flag.end) == (3000, 3199) and flag.warmup == (9, 49)
    assert flag.text() == "steps 3000-3199: pos and neg means near 1; ended"


# ---- the smaller defects of issue 21, each as the figure function returns it ----------------


def test_log_ticks_label_a_range_within_one_decade_with_at_least_three_numbers():
    for lo, hi in ((0.3, 0.8), (0.012, 0.018), (4.1, 4.6), (120, 170)):
        values, labels = axes.log_ticks(lo, hi)
        assert len(labels) >= 3 and len(set(labels)) == len(labels), (lo, hi, labels)
        assert all(lo / 1.05 <= v <= hi * 1.05 for v in values) and values == sorted(values)
    assert axes.log_ticks(0.013, 0.8)[1] == ["0.02", "0.05", "0.1", "0.2", "0.5"]  # wider ranges as before


def test_every_subplot_has_its_x_tick_labels_and_a_time_axis_is_named_in_the_title():
    frame = pd.DataFrame({"loss": [3.0, 2.0, 1.0], "lr": [0.1, 0.1, 0.1]}, index=pd.Index([1, 2, 3], name="step"))
    times = {"a": pd.Series([1000.0, 1060.0, 1300.0], index=[1, 2, 3])}
    fig = plot_lines.curves_figure({"a": frame}, ["loss", "lr"], x="wall", times=times,
                                   title=f"Statistics {axes.over('wall')}")
    assert fig.layout.xaxis.showticklabels and fig.layout.xaxis2.showticklabels  # not the bottom one only
    assert "over wall time" in fig.layout.title.text and "steps" not in fig.layout.title.text
    assert axes.over("step") == "over steps" and axes.over("relative") == "over relative time"
    heat = distribution_figures.score_heatmap_figure({"a": (np.arange(3), np.linspace(-1, 1, 5), np.ones((3, 4))),
                                                      "b": (np.arange(3), np.linspace(-1, 1, 5), np.ones((3, 4)))},
                                                     x="relative", times={"a": times["a"].set_axis([0, 1, 2]),
                                                                          "b": times["a"].set_axis([0, 1, 2])})
    assert "over relative time" in heat.layout.title.text and heat.layout.xaxis.showticklabels


def test_no_run_or_group_is_drawn_in_black_or_grey():
    assert not {c for c in plot_palette.PALETTE if len({c[1:3], c[3:5], c[5:7]}) == 1}  # no grey, no black
    colors = plot_palette.group_colors(groups.group_runs({f"r{m}": {"moco_m": m} for m in range(12)}, ["moco_m"]))
    assert set(colors.values()) <= set(plot_palette.PALETTE)


def test_the_other_groups_have_a_colour_no_group_drawn_has():
    """Past MAX_GROUPS, the rest are drawn as one group, "N other groups": its colour is its own
    (every colour of the palette is used about three times by the 19 groups beside it), not grey."""
    configs = {f"r{m}": {"moco_m": m} for m in range(30)}
    drawn = groups.group_runs(configs, ["moco_m"], most=groups.MAX_GROUPS)
    colors = plot_palette.group_colors(drawn)
    others = drawn[-1]
    assert others.name == "11 other groups" and colors[others.name] == plot_palette.OTHERS_COLOR
    assert plot_palette.OTHERS_COLOR not in [colors[g.name] for g in drawn[:-1]] + list(plot_palette.PALETTE)
    assert len({plot_palette.OTHERS_COLOR[i:i + 2] for i in (1, 3, 5)}) == 3  # not a grey
    curve = pd.DataFrame({"mean": [1.0, 2.0], "lower": [0.5, 1.5], "upper": [1.5, 2.5], "count": [1, 1]},
                         index=[0, 1])
    fig = waterfall_figures.grouped_waterfall_figure([groups.GroupCurve(g, curve, g.runs) for g in drawn],
                                                     stat="neg_mean", colors=colors)
    drawn_in = {t.name: t.line.color for t in fig.data if t.type == "scatter3d"}
    assert drawn_in["11 other groups (n=11)"] == plot_palette.OTHERS_COLOR
    assert plot_palette.OTHERS_COLOR not in {c for name, c in drawn_in.items() if "other" not in name}


def test_a_waterfall_with_many_legend_entries_lists_them_in_a_column_at_the_right():
    """A row of 21 entries above the scene wrapped over the title and ran past the right edge (the
    last entry of each line cut); a few stay in one row above the scene."""
    curve = pd.DataFrame({"mean": [1.0, 2.0], "lower": [0.5, 1.5], "upper": [1.5, 2.5], "count": [1, 1]},
                         index=[0, 1])
    for n, orientation in ((2, "h"), (waterfall_figures.LEGEND_ROW, "h"), (30, "v")):
        drawn = groups.group_runs({f"r{m}": {"moco_m": m} for m in range(n)}, ["moco_m"], most=groups.MAX_GROUPS)
        fig = waterfall_figures.grouped_waterfall_figure([groups.GroupCurve(g, curve, g.runs) for g in drawn],
                                                         key="moco_m", stat="neg_mean")
        legend = fig.layout.legend
        assert legend.orientation == orientation, n
        if orientation == "v":  # outside the plot area, beside the scene, never over the title
            assert legend.x >= 1 and legend.xanchor == "left" and legend.y <= 1 and legend.yanchor == "top"
    series = {f"r{i}": pd.Series([1.0, 2.0], index=[0, 1]) for i in range(12)}
    fig = waterfall_figures.waterfall_figure(series, {f"r{i}": float(i) for i in range(12)}, key="m")
    assert fig.layout.legend.orientation == "v"


def test_a_run_without_the_key_is_not_set_never_key_equals_nothing():
    series = {name: pd.Series([1.0, 2.0], index=[0, 1]) for name in ("a", "b")}
    fig = waterfall_figures.waterfall_figure(series, {"a": 2.0, "b": None}, key="pos_alpha")
    assert [t.name for t in fig.data] == ["a (pos_alpha=2)", "b (pos_alpha not set)"]
    assert list(fig.layout.scene.yaxis.ticktext) == ["2", "not set"]


def test_a_runs_tags_are_drawn_in_shades_of_the_runs_colour():
    pair = {"pos": (np.arange(3), np.linspace(-1, 1, 5), np.ones((3, 4))),
            "neg": (np.arange(3), np.linspace(-1, 1, 5), np.ones((3, 4)))}
    fig = distribution_figures.raw_vs_ft_figure({"train": pair, "ft": pair}, 2, "run", color="#1f77b4")
    colours = {t.name: t.line.color for t in fig.data}
    assert colours["train pos"] == colours["train neg"] == "#1f77b4" and colours["ft pos"] != "#1f77b4"
    assert fig.layout.title.font.color == "#1f77b4"
    red, green, blue = (int(colours["ft pos"][i:i + 2], 16) for i in (1, 3, 5))
    assert blue > red and blue > green  # a darker blue, not another hue


def test_statistics_with_units_say_them():
    assert axes.stat_label("knn_acc") == "kNN accuracy (%)" and axes.stat_label("lr") == "learning rate"
