"""Compare at a step: for the selected runs at one step, each kind's score distribution as overlaid
CDFs with quantile markers, and each run's distance to a reference run (1-Wasserstein and
Kolmogorov-Smirnov between the recorded histograms); grouped, the groups' mean histograms."""

from __future__ import annotations

from dash import html

from app.plot.palette import group_colors
from app.shell import components
from app.shell.controls import groups_of, selected_runs, step_slider, tag_of
from app.shell.unit import Control, Panel, Section, View
from app.views.compare import figures

AT = step_slider("at", "compare-at", "Step")
REFERENCE = Control("ref", "compare-ref", "Reference run", "dropdown",
                    default=lambda context: context.selected[0] if context.selected else None,
                    choices=selected_runs, invalid="not a selected run", props=dict(clearable=False))


def compare(state: dict, data) -> tuple:
    """The CDF figure and the distance table at the state's step, and the step slider's range."""
    runs, tag = state["runs"], tag_of(state, data)
    hists = {r: data.snapshots(r, tag) for r in runs}
    recorded = [pair[k][0] for pair in hists.values() for k in pair if len(pair[k][0])]
    last = max((int(s[-1]) for s in recorded), default=0)
    step = int(state["at"]) if state["at"] is not None else last
    reference = state["ref"] if state["ref"] in runs else (runs[0] if runs else None)
    if state["group"]:
        groups = groups_of(state, data)
        cdfs = figures.groups_at_step(hists, groups, step)
        colors = group_colors(g for g in groups if g.name in cdfs)
        reference = next((g.name for g in groups if reference in g.runs), None)
        what = f"{len(cdfs)} groups by {', '.join(state['group'])} (their mean histograms)"
    else:
        cdfs, colors, what = figures.at_step(hists, step), state["colors"], f"{len(runs)} runs"
    title = f"Score distributions at step {step} ({tag}), {what}: cumulative, markers at the 5/25/50/75/95% quantiles"
    fig = figures.cdf_figure(cdfs, reference=reference, colors=colors, title=title)
    table = (figures.distance_table(figures.distance_rows(cdfs, reference), reference, colors) if reference in cdfs
             else html.P("select runs with histograms at this step"))
    if not recorded:
        return fig, table, 0, 1, {}
    lo = int(min(s[0] for s in recorded))
    return fig, table, lo, last, {m: str(m) for m in (lo, (lo + last) // 2, last)}


def report(state: dict, data) -> list:
    """The CDFs and the distances at the last step (or the state's), to the reference (the first run)."""
    fig, table, *_ = compare(state, data)
    tag = tag_of(state, data)
    return [Section(f"Compare at a step ({tag})", fig), Section(f"Distances to the reference ({tag})", table)]


def layout() -> list:
    return [
        components.note("Each run's score distribution at one step as a cumulative distribution, and its distance "
                        "to the reference run: W1, the area between the two (in cosine score), and KS, their "
                        "largest gap (a fraction of scores), from the recorded histograms."),
        html.Div(className="controls", children=[components.control(REFERENCE), components.control(AT)]),
        components.graph("compare"),
        html.Div(id="compare-table"),
    ]


VIEW = View(
    name="compare", label="Compare at a step", layout=layout, controls=(AT, REFERENCE), graphs=("compare",),
    panels=(Panel("cdfs", (("compare-graph", "figure"), ("compare-table", "children"), ("compare-at", "min"),
                           ("compare-at", "max"), ("compare-at", "marks")), ("tag", "at", "ref", "group"), compare),),
    warm=lambda data, run_id: [lambda tag=tag: data.snapshots(run_id, tag)
                               for tag in data.light_info(run_id).get("tags", [])],
    report=report, report_tags="each", groups=True,
)
