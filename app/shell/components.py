"""Components every view builds its layout from: a control's component, a labelled control, a
graph with its export buttons."""

from __future__ import annotations

from dash import dcc, html

from app.plot.axes import message_annotation
from app.shell.unit import Context, Control

EXPORT_FORMATS = ["html", "png", "svg"]
GRAPH_CONFIG = {
    "displaylogo": False,
    # The camera button renders PNG in the browser itself, no server needed.
    "toImageButtonOptions": {"format": "png", "scale": 2},
}


def labelled(label: str, component, className: str = "", title: str | None = None) -> html.Div:
    """A control with its label above it."""
    return html.Div(className=f"control {className}".strip(), title=title,
                    children=[html.Label(label), component])


def initial_options(control: Control) -> list:
    """A dropdown's options before the page knows its runs: the choices that need none (the score
    columns of a statistics picker), the default included (a dropdown drops a value it has no
    option for)."""
    choices = control.choices_for(Context())
    values = list(choices.values) if choices else []
    default = control.default_for(Context())
    for value in default if isinstance(default, list) else [default]:
        if value is not None and value not in values:
            values.append(value)
    labels = choices.labels if choices else {}
    return [{"label": str(labels.get(v, v)), "value": v} for v in values]


def control(control: Control) -> html.Div:
    """The labelled component of ``control``, at its default (the shell sets it from the URL)."""
    value = control_value(control)
    props = dict(control.props)
    if control.widget in ("dropdown", "multi"):
        component = dcc.Dropdown(id=control.id, options=initial_options(control), value=value,
                                 multi=control.widget == "multi", **props)
    elif control.widget in ("radio", "checklist"):
        options = [{"label": label, "value": v} for v, label in control.choices]
        cls = dcc.RadioItems if control.widget == "radio" else dcc.Checklist
        component = cls(id=control.id, options=options, value=value, inline=True, **props)
    elif control.widget == "slider":
        component = dcc.Slider(id=control.id, value=value, **props)
    elif control.widget == "text":
        component = dcc.Input(id=control.id, type="text", value=value, debounce=True, **props)
    else:
        raise ValueError(f"{control.key}: the page builds a {control.widget} itself")
    return labelled(control.label, component, control.width, control.title)


def blank_figure() -> dict:
    """The figure every graph shows until its callback answers: no axes, "no data" in its middle.

    A plain dict, not an empty plotly Figure: building one with the plotly_white template
    validates the whole template (0.6 s on the first page of a server) and puts it, tens of KB,
    into the page once per graph."""
    return {"data": [], "layout": {"xaxis": {"visible": False}, "yaxis": {"visible": False},
                                   "annotations": [message_annotation("no data")]}}


def graph(name: str, **graph_kwargs) -> html.Div:
    """A graph (id ``NAME-graph``) with its export buttons and a place for the export message."""
    buttons = [html.Button(fmt.upper(), id=f"{name}-export-{fmt}", n_clicks=0,
                           className="export-button", title=f"download as {fmt.upper()}")
               for fmt in EXPORT_FORMATS]
    return html.Div(className="graph-box", children=[
        dcc.Loading(dcc.Graph(id=f"{name}-graph", config=GRAPH_CONFIG,
                              figure=blank_figure(), **graph_kwargs),
                    delay_show=400),
        html.Div(className="export-bar", children=[html.Span("export:")] + buttons + [
            html.Span(id=f"{name}-export-message", className="export-message")]),
        dcc.Download(id=f"{name}-download"),
    ])


def note(text) -> html.P:
    """A line of explanation above a view's figures."""
    return html.P(text, className="thresholds")


def control_value(control: Control):
    """The value ``control``'s component starts with (its default before any run is known)."""
    value = control.default_for(Context())
    if control.widget == "text":
        return value or ""
    return value
