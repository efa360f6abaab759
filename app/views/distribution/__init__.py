"""Distributions: each run's step x score heatmap, every run's positive and negative histograms at
one step (grouped: each group's mean histogram and band), and one run's tags compared at that step."""

from __future__ import annotations

from dash import html

from app.plot.axes import empty_figure, over
from app.plot.palette import group_colors
from app.shell import components
from app.shell.controls import band_of, groups_of, selected_runs, step_slider, tag_of
from app.shell.unit import Control, Panel, Section, View
from app.views.distribution import figures
from scoreviz.groups import mean_histograms_at_step


def first_with_tags(runs, tags_of) -> str | None:
    """The first of ``runs`` that recorded more than one tag (what a raw-vs-transformed panel is
    for), else the first run."""
    return next((r for r in runs if len(tags_of(r)) > 1), runs[0] if runs else None)


KIND = Control("kind", "hist-kind", "Heatmap of", "radio", default="neg",
               choices=(("neg", "negatives"), ("pos", "positives")), invalid="the kind is neg or pos", width="narrow")
SCALE = Control("hscale", "heat-scale", "Colour scale ends at", "radio", default=figures.DEFAULT_HEAT_SCALE,
                choices=(("90", "90th percentile"), ("99", "99th percentile"), ("100", "max")),
                invalid="the colour scale ends at 90, 99 or 100", width="narrow-wide",
                title="of the largest fraction at each step: brighter cells saturate, so a few "
                      "concentrated early steps do not darken the rest")
STEP = step_slider("step", "step-slider")
FT_RUN = Control("ft", "ft-run", "Tags of one run (raw vs transformed)", "dropdown",
                 default=lambda context: first_with_tags(
                     context.selected, lambda r: context.headers.get(r, {}).get("tags", [])),
                 choices=selected_runs, invalid="not a selected run", props=dict(placeholder="a selected run"))


def heatmap(state: dict, data):
    """The heatmap of every run, and the step slider's range and marks (its recorded steps)."""
    runs, tag, x = state["runs"], tag_of(state, data), state["x"] or "step"
    kind = state["kind"] if state["kind"] in ("pos", "neg") else "neg"
    views = {r: data.safe(lambda r=r: data.histograms(r, tag, kind)) for r in runs}
    scale = figures.HEAT_SCALES.get(state["hscale"], figures.HEAT_SCALES[figures.DEFAULT_HEAT_SCALE])
    title = f"{'Positive' if kind == 'pos' else 'Negative'} score distribution {over(x)} ({tag})"
    fig = figures.score_heatmap_figure({r: v["heat"] for r, v in views.items() if v}, kind=kind, scale=scale,
                                       title=title, colors=state["colors"], x=x, times=data.run_times(runs, x))
    recorded = [v["snap"][0] for v in views.values() if v and len(v["snap"][0])]
    if not recorded:
        return fig, 0, 1, {}
    lo, hi = int(min(s[0] for s in recorded)), int(max(s[-1] for s in recorded))
    return fig, lo, hi, {m: str(m) for m in (lo, (lo + hi) // 2, hi)}


def _last_step(hists: dict) -> int:
    steps = [int(v[0][-1]) for pair in hists.values() for v in pair.values() if len(v[0])]
    return max(steps) if steps else 0


def histograms(state: dict, data, last_only: bool = False):
    """Every run's histograms at the state's step (its last recorded step without one); grouped,
    each group's mean histogram with its band. ``last_only`` reads two rows a run (a report at
    the last step)."""
    runs, tag = state["runs"], tag_of(state, data)
    hists = {r: data.last_histograms(r, tag) if last_only else data.snapshots(r, tag) for r in runs}
    step = state["step"] if state["step"] is not None else _last_step(hists)
    step = int(step)
    if state["group"] and hists:
        band = band_of(state)
        title = f"Mean score histograms at step {step} ({tag}), {len(hists)} runs grouped by " \
                f"{', '.join(state['group'])}"
        try:
            means = mean_histograms_at_step(hists, groups_of(state, data, hists), step)
        except ValueError as err:  # ScorevizError: runs of a group binned differently
            return empty_figure(title, str(err))
        return figures.grouped_histograms_figure(means, step, band=band, title=title,
                                                 colors=group_colors(g for g, _, _ in means))
    return figures.histograms_at_step_figure(hists, step, title=f"Score histograms at step {step} ({tag})",
                                             colors=state["colors"])


def tags_of_one_run(state: dict, data):
    """One run's histograms at the step, one line per tag (the state's ``ft`` run, else the first
    run drawn that recorded more than one tag)."""
    runs = state["runs"]
    run_id = state["ft"] if state["ft"] in runs else first_with_tags(
        runs, lambda r: data.light_info(r).get("tags", []))
    if run_id is None:
        return empty_figure("Tags of one run", "select runs")
    by_tag = {t: data.snapshots(run_id, t) for t in data.light_info(run_id).get("tags", [])}
    step = int(state["step"]) if state["step"] is not None else _last_step(by_tag)
    return figures.raw_vs_ft_figure(by_tag, step, run_id, color=state["colors"].get(run_id))


def report(state: dict, data) -> list:
    """The heatmap, the histograms at the last step and one run's tags; grouped, the groups'
    mean histograms at each run's last step only (two rows read a run: a sweep reads quickly)."""
    tag = tag_of(state, data)
    if state["group"]:
        return [Section(f"Mean histograms at the last step ({tag})", histograms(state, data, last_only=True))]
    sections = [Section(f"Score distribution ({tag})", heatmap(state, data)[0]),
                Section(f"Histograms at the last step ({tag})", histograms(state, data))]
    run_id = state["ft"] if state["ft"] in state["runs"] else None
    tags = data.light_info(run_id).get("tags", []) if run_id is not None else []
    if len(tags) > 1 and tag == tags[0]:  # once, not for every tag: it draws all of them
        sections.append(Section(f"Tags of {run_id}", tags_of_one_run(state, data)))
    return sections


def layout() -> list:
    return [
        html.Div(className="controls", children=[components.control(KIND), components.control(SCALE)]),
        components.graph("heatmap"),
        components.control(STEP),
        components.graph("hist"),
        components.control(FT_RUN),
        components.graph("ft"),
    ]


VIEW = View(
    name="distribution", label="Distributions", layout=layout, controls=(KIND, SCALE, STEP, FT_RUN),
    graphs=("heatmap", "hist", "ft"),
    panels=(
        Panel("heatmap", (("heatmap-graph", "figure"), ("step-slider", "min"), ("step-slider", "max"),
                          ("step-slider", "marks")), ("tag", "kind", "hscale", "x"), heatmap),
        Panel("hist", (("hist-graph", "figure"),), ("tag", "step", "group", "band"), histograms),
        Panel("ft", (("ft-graph", "figure"),), ("ft", "step"), tags_of_one_run),
    ),
    warm=lambda data, run_id: [lambda tag=tag, kind=kind: data.histograms(run_id, tag, kind)
                               for tag in data.light_info(run_id).get("tags", []) for kind in ("pos", "neg")],
    report=report, report_tags="each", groups=True,
)
