"""The export buttons under every graph: the figure as a standalone HTML file (plotly.js inside),
or as PNG/SVG where kaleido and a local Chromium are there (app.shell.images)."""

from __future__ import annotations

import plotly.io as pio
from dash import Input, Output, State, ctx, dcc, no_update

from app.shell import images
from app.shell.components import EXPORT_FORMATS


def register(dash_app, name: str) -> None:
    """The export callback of graph ``NAME-graph``."""
    @dash_app.callback(
        Output(f"{name}-download", "data"), Output(f"{name}-export-message", "children"),
        *[Input(f"{name}-export-{fmt}", "n_clicks") for fmt in EXPORT_FORMATS],
        State(f"{name}-graph", "figure"),
        prevent_initial_call=True,
    )
    def export_figure(*args):
        figure = args[-1]
        fmt = str(ctx.triggered_id).rsplit("-", 1)[-1]
        if not figure or not figure.get("data"):
            return no_update, "nothing to export yet"
        if fmt == "html":
            html_text = pio.to_html(figure, include_plotlyjs=True, full_html=True, validate=False)
            return dcc.send_string(html_text, f"scoreviz-{name}.html"), ""
        try:
            image = images.to_image(figure, fmt)
        except Exception as err:  # noqa: BLE001 - the message is shown to the user as is
            return no_update, str(err)
        return dcc.send_bytes(image, f"scoreviz-{name}.{fmt}"), ""
