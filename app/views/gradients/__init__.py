"""Gradient landscape: one run's layer x step heatmap and 3D surface of gradient L2 norms, and
every run's total norm over steps (or time)."""

from __future__ import annotations

from app.plot.axes import empty_figure
from app.shell import components
from app.shell.controls import selected_runs
from app.shell.unit import Control, Panel, Section, View
from app.views.gradients import figures


RUN = Control("grun", "grad-run", "Run for the landscape", "dropdown",
              default=lambda context: context.selected[0] if context.selected else None, choices=selected_runs,
              invalid="not a selected run", props=dict(placeholder="a selected run"))


def landscape(state: dict, data, run_id: str | None = None):
    """The heatmap and the surface of one run (``run_id``, else the state's ``grun``, else the first)."""
    runs, x = state["runs"], state["x"] or "step"
    run_id = run_id or (state["grun"] if state["grun"] in runs else (runs[0] if runs else None))
    g = data.safe(lambda: data.gradients(run_id)) if run_id else None
    if g is None:
        empty = empty_figure("Gradient landscape", "select a run with gradients")
        return empty, empty
    times = (data.run_times([run_id], x) or {}).get(run_id)
    return (figures.gradient_heatmap_figure(g["steps"], g["layers"], g["norms"], run_name=run_id,
                                            color=state["colors"].get(run_id), x=x, times=times),
            figures.gradient_surface_figure(g["steps"], g["layers"], g["norms"], run_name=run_id))


def total(state: dict, data):
    """Every run's total gradient norm."""
    runs, x = state["runs"], state["x"] or "step"
    grads = {r: data.safe(lambda r=r: data.gradients(r)) for r in runs}
    totals = {r: g["total"] for r, g in grads.items() if g is not None and len(g["total"])}
    return figures.total_norm_figure(totals, colors=state["colors"], x=x, times=data.run_times(runs, x))


def report(state: dict, data) -> list:
    """Every run's total norm, and each run's heatmap (not grouped: a sweep's hundreds of runs
    are compared in the grouped views)."""
    sections = [Section("Total gradient norm", total(state, data))]
    if not state["group"]:
        sections += [Section(f"Gradients: {r}", landscape(state, data, r)[0]) for r in state["runs"]]
    return sections


def layout() -> list:
    return [components.control(RUN), components.graph("grad-heatmap"), components.graph("grad-surface"),
            components.graph("grad-total")]


VIEW = View(
    name="gradients", label="Gradient landscape", layout=layout, controls=(RUN,),
    graphs=("grad-heatmap", "grad-surface", "grad-total"),
    panels=(Panel("landscape", (("grad-heatmap-graph", "figure"), ("grad-surface-graph", "figure")),
                  ("grun", "x"), landscape),
            Panel("total", (("grad-total-graph", "figure"),), ("x",), total)),
    warm=lambda data, run_id: [lambda: data.gradients(run_id)],
    report=report,
)
