"""Health: every health check of scoreviz.health for each run (collapse, instability, non-finite
values from its scores; complete and dimensional collapse from its embeddings), with the step
where each finding starts."""

from __future__ import annotations

from dash import html

from app.shell import components
from app.shell.controls import default_tag, tag_of
from app.shell.unit import Panel, Section, View
from scoreviz import health


def run_flags(data, run_id: str, tag) -> tuple[str, list]:
    """(label, flags) of one run: the score checks under ``tag`` where the run has it, else under
    its own main tag (then the label says which), and the representation checks of its embeddings
    under ``tag`` (or its first embedding tag)."""
    tags = data.light_info(run_id).get("tags", [])
    score_tag = tag if tag in tags else default_tag(tags)
    label = run_id if score_tag == tag or not tags else f"{run_id} ({score_tag})"
    scores = data.memo(run_id, ("health", score_tag), lambda: health.run_health(
        data.scores(run_id, score_tag) if score_tag in tags else None, data.scalars(run_id),
        data.gradients(run_id)["total"]))
    etag = data.embedding_tag(run_id, tag)
    embedded = data.memo(run_id, ("representation-health", etag), lambda: health.representation_health(
        data.embeddings(run_id, etag) if etag is not None else None))
    return label, scores + embedded


def results(state: dict, data) -> dict:
    """{label: flags, or the error of a run that cannot be read} of every run drawn."""
    tag, out = tag_of(state, data), {}
    for run_id in state["runs"]:
        try:
            label, flags = run_flags(data, run_id, tag)
        except ValueError as err:
            label, flags = run_id, str(err)
        out[label] = flags
    return out


def table(checked: dict) -> html.Table | html.P:
    """``checked`` maps a run's label to its flags (or an error string): one column per check."""
    checks = next(([f.check for f in flags] for flags in checked.values() if not isinstance(flags, str)), [])
    rows = []
    for name, flags in checked.items():
        if isinstance(flags, str):
            rows.append(html.Tr([html.Td(name), html.Td(flags, colSpan=max(1, len(checks)))], className="error-row"))
            continue
        cells = [html.Td(name)]
        for flag in flags:
            if flag.fired:  # an alarm in red; a notice (fires on healthy runs too) in amber
                cells.append(html.Td(flag.text(), className="flagged" if flag.severity == health.ALARM else "notice"))
            else:  # passed (after a warm-up, perhaps), or not checked for want of data ("no embeddings")
                cells.append(html.Td(flag.text(), className="ok" if not flag.detail else "unchecked"))
        rows.append(html.Tr(cells))
    if not rows:
        return html.P("select runs to check them")
    return html.Table(className="runs health", children=[
        html.Thead(html.Tr([html.Th("run")] + [html.Th(c) for c in checks])), html.Tbody(rows)])


def thresholds() -> html.P:
    return components.note(["Thresholds: ", health.THRESHOLDS_TEXT, " ", health.REPRESENTATION_THRESHOLDS_TEXT])


def draw(state: dict, data):
    return table(results(state, data))


def report(state: dict, data) -> list:
    """The same table, with the thresholds."""
    return [Section("Health", html.Div([table(results(state, data)), thresholds()]))]


def warm(data, run_id) -> list:
    return [lambda tag=tag: run_flags(data, run_id, tag) for tag in data.light_info(run_id).get("tags", [])]


VIEW = View(
    name="health", label="Health", layout=lambda: [thresholds(), html.Div(id="health-table")],
    panels=(Panel("table", (("health-table", "children"),), ("tag",), draw),),
    warm=warm, report=report,
)
