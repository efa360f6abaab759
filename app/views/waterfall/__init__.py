"""3D waterfall: the runs ordered by a config value (as in the paper's figure) x step (or time) x
one statistic; grouped, one mean line and band per group."""

from __future__ import annotations

from dash import html

from app.plot.axes import over, stat_label, with_notes
from app.plot.palette import group_colors
from app.shell import components
from app.shell.controls import band_of, tag_of
from app.shell.unit import Choices, Control, Panel, Section, View
from app.views.curves import STATS
from app.views.waterfall import figures


def _config_keys(context) -> Choices:
    return Choices(context.config_keys(), context.decided())


KEY = Control("key", "waterfall-key", "Order runs by config key", "dropdown",
              default=lambda context: next(iter(context.differing_keys()), None), choices=_config_keys,
              invalid="no selected run has this config key",
              props=dict(placeholder="e.g. moco_m (default: the first key that differs)"))
STAT = Control("wstat", "waterfall-stat", "Statistic", "dropdown", default="neg_sample_var", choices=STATS.choices,
               invalid="no selected run records this statistic", props=dict(clearable=False))


def draw(state: dict, data):
    """The waterfall of ``state`` (runs, tag, key, wstat, x, group, band)."""
    runs, tag, key, x = state["runs"], tag_of(state, data), state["key"] or "", state["x"] or "step"
    stat = state["wstat"] or "neg_sample_var"
    if state["group"] and runs:
        band, by = band_of(state), state["group"]
        curves = data.safe(lambda: data.grouped_curves(runs, tag, stat, by=by, band=band), [])
        order = f"ordered by {key}" if key in by else "in order of their values"
        notes = ["groups are drawn over steps, not time"] if x != "step" else []
        title = with_notes(f"{stat_label(stat)} {over('step')} ({tag}), {len(runs)} runs grouped by "
                           f"{', '.join(by)}, {order}", notes)
        return figures.grouped_waterfall_figure(curves, key=key, stat=stat, band=band, title=title,
                                                colors=group_colors(c.group for c in curves))
    series, order = {}, {}
    for r in runs:
        frame = data.curve_frame(r, tag, [stat])
        if stat in frame:
            series[r] = frame[stat]
            order[r] = data.light_info(r).get("config", {}).get(key) if key else None
    return figures.waterfall_figure(series, order, key=key, stat=stat, colors=state["colors"], x=x,
                                    times=data.run_times(list(series), x), tag=tag)


def report(state: dict, data) -> list:
    """The waterfall, where there are runs to compare (more than one)."""
    if len(state["runs"]) < 2:
        return []
    return [Section(f"3D waterfall ({tag_of(state, data)})", draw(state, data))]


def layout() -> list:
    return [html.Div(className="controls", children=[components.control(KEY), components.control(STAT)]),
            components.graph("waterfall")]


VIEW = View(
    name="waterfall", label="3D waterfall", layout=layout, controls=(KEY, STAT), graphs=("waterfall",),
    panels=(Panel("waterfall", (("waterfall-graph", "figure"),), ("tag", "key", "wstat", "x", "group", "band"),
                  draw),),
    report=report, report_tags="each", groups=True,
)
