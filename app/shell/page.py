"""The page, built from the registry of views: the shared controls, the run table, one tab per
view with its layout, and a store per panel that the shell fills and the panel draws from."""

from __future__ import annotations

from dash import dcc, html

from app.shell import components
from app.shell.controls import BAND, FILTER, GROUP, RUNS, SHARED, TAG, X, view_control

# How soon the page asks again for the run table while the headers of its rows are being read
# in the background (ms).
ASK_AGAIN_MS = 700
# How soon the page asks again for its state after an answer that left runs still being
# read (ms). The server holds that request until they are read or for a second (see
# app.shell.selection.SELECTION_WAIT_S), so the curves come as soon as the runs are read; and the
# page asks once per answer, never while a request is in flight (Dash would drop its answer).
SELECTION_AGAIN_MS = 100


def controls(views) -> list:
    """Every control of the page in the order the URL writes them: the view, the shared ones,
    then each view's."""
    out = [view_control(views), *SHARED]
    for view in views:
        out += list(view.controls)
    keys = [c.key for c in out]
    duplicates = {k for k in keys if keys.count(k) > 1}
    if duplicates:
        raise ValueError(f"URL keys declared twice: {', '.join(sorted(duplicates))}")
    return out


def store_id(view, panel) -> str:
    """The store a panel draws from."""
    return f"{view.name}-{panel.name}-state"


def property_kinds(views) -> dict:
    """{(component id, property): kind} of every property a callback of the page reads, for the
    request checks (app.server.body)."""
    kinds = {("url", "search"): "text", ("applied", "data"): "values", ("signatures", "data"): "signatures",
             ("table-signature", "data"): "text", ("table-page", "data"): "count",
             ("refresh", "n_intervals"): "count", ("table-refresh", "n_intervals"): "count",
             ("selection-refresh", "n_intervals"): "count", ("grouping-views", "data"): "texts"}
    for control in controls(views):
        kinds[(control.id, "value")] = control.kind
        if control.widget in ("dropdown", "multi"):
            kinds[(control.id, "options")] = "options"
    by_key = {c.key: c.kind for c in controls(views)}
    for view in views:
        for panel in view.panels:
            kinds[(store_id(view, panel), "data")] = ("panel", {k: by_key[k] for k in panel.keys})
    return kinds


def build(runs_dir: str, refresh_s: float, views) -> html.Div:
    """The whole page. Controls start at their defaults; the shell's state callback sets them from
    the URL (and their options, together with them: a dropdown drops a value it has no option for)."""
    every = controls(views)
    return html.Div(className="page", children=[
        dcc.Location(id="url", refresh=False),
        dcc.Interval(id="refresh", interval=int(refresh_s * 1000), n_intervals=0),
        # the run table again within a second while the headers of its rows are being read
        dcc.Interval(id="table-refresh", interval=ASK_AGAIN_MS, n_intervals=0, disabled=True),
        # the state again soon after an answer that left runs being read: one tick per answer
        # (the state callback sets max_intervals one above n_intervals; 0: stopped)
        dcc.Interval(id="selection-refresh", interval=SELECTION_AGAIN_MS, n_intervals=0, max_intervals=0),
        # the value of each control as the shell last set it: a control that differs was changed by the user
        dcc.Store(id="applied", data={c.key: components.control_value(c) for c in every}),
        dcc.Store(id="signatures", data={}),  # what each panel and option list was last sent from
        dcc.Store(id="grouping-views", data=[v.name for v in views if v.groups]),
        dcc.Store(id="table-signature"),
        *[dcc.Store(id=store_id(view, panel)) for view in views for panel in view.panels],
        header(runs_dir, refresh_s),
        html.Div(className="controls", children=[components.control(c) for c in (FILTER, RUNS, TAG, X)]),
        html.Div(id="group-bar", className="controls group-bar",
                 children=[components.control(GROUP), components.control(BAND),
                           html.Span(f"groups are drawn in: {', '.join(v.label for v in views if v.groups)}",
                                     className="hint")]),
        html.Div(id="url-notice", className="notice"),
        html.Div(id="notice", className="notice"),
        html.Details(open=True, className="run-table-box", children=[
            html.Summary(["Runs ", html.Span("click a row to show or hide the run", className="hint")]),
            html.Div(id="run-table", className="run-table-scroll"),
            html.Div(id="table-pager", className="table-pager", style={"display": "none"}, children=[
                html.Button("< previous", id="table-prev", n_clicks=0, className="export-button"),
                html.Span(id="table-page-label", className="hint"),
                html.Button("next >", id="table-next", n_clicks=0, className="export-button"),
            ]),
            dcc.Store(id="table-page", data=0),
        ]),
        dcc.Tabs(id="view", value=every[0].default, className="tabs", children=[
            dcc.Tab(label=view.label, value=view.name, children=html.Div(view.layout()))
            for view in views
        ]),
    ])


def header(runs_dir: str, refresh_s: float) -> html.Header:
    return html.Header(className="header", children=[
        html.H1("scoreviz"),
        html.Span(f"runs in {runs_dir}", className="runs-dir"),
        html.Span(id="last-refresh", className="last-refresh",
                  title=f"the page re-reads growing runs every {refresh_s:g} s"),
    ])


def warm_reads(views):
    """The reads of a selected run the background does before a figure asks: every view's
    (View.warm), in the registry's order."""
    def reads(data, run_id) -> list:
        out = []
        for view in views:
            if view.warm is not None:
                out += list(view.warm(data, run_id))
        return out
    return reads


def register(dash_app, views) -> None:
    """The page's own callback: the group-by bar shows on the views that draw groups (in the browser)."""
    from dash import ClientsideFunction, Input, Output, State

    dash_app.clientside_callback(ClientsideFunction("scoreviz", "groupBar"),
                                 Output("group-bar", "style"), Input("view", "value"), State("grouping-views", "data"))
