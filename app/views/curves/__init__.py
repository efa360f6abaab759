"""Curves: statistics over steps (or time), one trace per run; grouped, each group's mean and band.

Its report section: the same figure for every tag, and, grouped, a table of each group's final
values (mean over its runs, with the band).
"""

from __future__ import annotations

from dash import html

from app.plot.axes import DEFAULT_STATS, SCORE_COLUMNS, over
from app.plot.lines import curves_figure, grouped_curves_figure
from app.plot.palette import group_colors
from app.shell import components
from app.shell.controls import band_of, tag_of
from app.shell.unit import Choices, Control, Panel, Section, View
from app.views.curves import groups


def _statistics(context) -> Choices:
    """The score columns, and the scalars the selected runs logged."""
    return Choices(list(SCORE_COLUMNS) + [s for s in context.union("scalars") if s not in SCORE_COLUMNS],
                   context.decided())


def _smoothing(value, _context):
    return None if 0 <= value <= 0.99 else "smoothing is from 0 to 0.99"


STATS = Control("stats", "stats", "Statistics", "multi", default=list(DEFAULT_STATS), choices=_statistics,
                invalid="no selected run records this statistic")
LOG = Control("log", "log-y", "Scale", "checklist", default=[], choices=(("log", "log y"),), width="narrow",
              invalid="log is the only scale to ask for")
SMOOTH = Control("smooth", "smoothing", "Smoothing", "slider", default=0, check=_smoothing, width="wide-slider",
                 props=dict(min=0, max=0.99, step=0.01, marks={0: "0", 0.9: "0.9", 0.99: "0.99"}))


def draw(state: dict, data):
    """The curves figure of ``state`` (runs, tag, stats, log, smooth, x, group, band)."""
    runs, tag, stats = state["runs"], tag_of(state, data), list(state["stats"] or [])
    style = dict(log_y="log" in (state["log"] or []), smoothing=state["smooth"] or 0.0, x=state["x"] or "step")
    if state["group"] and runs:
        band = band_of(state)
        curves = {c: data.safe(lambda c=c: data.grouped_curves(runs, tag, c, by=state["group"], band=band), [])
                  for c in stats}
        shown = {gc.group.name: gc.group for column in curves.values() for gc in column}.values()
        title = f"Statistics {over('step')} ({tag}), {len(runs)} runs grouped by {', '.join(state['group'])}"
        return grouped_curves_figure(curves, stats, band=band, title=title, colors=group_colors(shown), **style)
    frames = {r: data.curve_frame(r, tag, stats) for r in runs}
    return curves_figure(frames, stats, title=f"Statistics {over(style['x'])} ({tag})", colors=state["colors"],
                         times=data.run_times(runs, style["x"]), **style)


def report(state: dict, data) -> list:
    """The curves of ``state``; grouped, the table of each group's final values too."""
    sections = [Section(f"Statistics ({tag_of(state, data)})", draw(state, data))]
    if state["group"]:
        sections.append(groups.section(state, data))
    return sections


def layout() -> list:
    return [html.Div(className="controls", children=[components.control(c) for c in (STATS, LOG, SMOOTH)]),
            components.graph("curves")]


VIEW = View(
    name="curves", label="Curves", layout=layout, controls=(STATS, LOG, SMOOTH), graphs=("curves",),
    panels=(Panel("curves", (("curves-graph", "figure"),), ("tag", "stats", "log", "smooth", "x", "group", "band"),
                  draw),),
    warm=lambda data, run_id: [lambda: data.scalars(run_id)],
    report=report, report_tags="each", groups=True,
)
