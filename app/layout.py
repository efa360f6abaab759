"""The page: components only. Callbacks fill them in (see callbacks.py)."""

from __future__ import annotations

from dash import dcc, html

from app import figures
from scoreviz import health

# How soon the page asks again for the run table while the headers of its rows are being read
# in the background (ms).
ASK_AGAIN_MS = 700
# How soon the page asks again for the selection after an answer that left runs still being
# read (ms). The server holds that request until they are read or for a second (see
# callbacks.SELECTION_WAIT_S), so the curves come as soon as the runs are read; and the page
# asks once per answer, never while a request is in flight (Dash would drop its answer).
SELECTION_AGAIN_MS = 100

# Views, in tab order; their values appear in the URL as ?view=...
VIEWS = [
    ("curves", "Curves"),
    ("distribution", "Distributions"),
    ("waterfall", "3D waterfall"),
    ("gradients", "Gradient landscape"),
    ("representation", "Representation"),
    ("health", "Health"),
]
# Every graph on the page: its id prefix and export file name.
GRAPHS = ["curves", "heatmap", "hist", "ft", "waterfall", "grad-heatmap", "grad-surface",
          "grad-total", "rep-curves", "spectrum", "plane", "margin"]
EXPORT_FORMATS = ["html", "png", "svg"]

GRAPH_CONFIG = {
    "displaylogo": False,
    # The camera button renders PNG in the browser itself, no server needed.
    "toImageButtonOptions": {"format": "png", "scale": 2},
}


def build(runs_dir: str, run_ids: list[str], tags: list[str], config_keys: list[str],
          refresh_s: float, stats: list[str] = ()) -> html.Div:
    """The whole page.

    ``run_ids``, ``tags``, ``config_keys`` and ``stats`` (score columns and the
    scalars of all runs) fill the pickers from the start: a dropdown drops a
    value it has no option for, and the values a URL asks for arrive before
    any callback has run.
    """
    return html.Div(className="page", children=[
        dcc.Location(id="url", refresh=False),
        dcc.Interval(id="refresh", interval=int(refresh_s * 1000), n_intervals=0),
        # the run table again within a second while the headers of its rows are being read
        dcc.Interval(id="table-refresh", interval=ASK_AGAIN_MS, n_intervals=0, disabled=True),
        # the selection again soon after an answer that left runs being read: one tick per answer
        # (the selection callback sets max_intervals one above n_intervals; 0: stopped)
        dcc.Interval(id="selection-refresh", interval=SELECTION_AGAIN_MS, n_intervals=0, max_intervals=0),
        dcc.Store(id="selection"),   # valid selected runs and their file stamps
        dcc.Store(id="table-signature"),
        dcc.Store(id="auto-runs"),   # the default runs the picker follows; None once the user picks
        dcc.Store(id="wanted-runs", data=[]),  # runs a link named that do not exist yet
        dcc.Store(id="url-applied", data=False),  # whether the controls hold the link's values yet
        header(runs_dir, refresh_s),
        controls(run_ids, tags),
        group_controls(config_keys),
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
        dcc.Tabs(id="view", value="curves", className="tabs", children=[
            dcc.Tab(label=label, value=value, children=view(value, run_ids, config_keys, stats))
            for value, label in VIEWS
        ]),
    ])


def header(runs_dir: str, refresh_s: float) -> html.Header:
    return html.Header(className="header", children=[
        html.H1("scoreviz"),
        html.Span(f"runs in {runs_dir}", className="runs-dir"),
        html.Span(id="last-refresh", className="last-refresh",
                  title=f"the page re-reads growing runs every {refresh_s:g} s"),
    ])


def default_tag(tags: list[str]) -> str | None:
    """'train' where runs have it (the Recorder's default), else the first tag."""
    return "train" if "train" in tags or not tags else tags[0]


FILTER_HELP = ("regular expression on run names, and/or config conditions: moco_m=0.99, lr<0.1, "
               "pos_alpha!=None (space-separated, all must hold)")
BAND_OPTIONS = [{"label": "std", "value": "std"}, {"label": "std error", "value": "sem"},
                {"label": "min-max", "value": "minmax"}]
X_AXIS_OPTIONS = [{"label": "step", "value": "step"}, {"label": "wall time", "value": "wall"},
                  {"label": "relative time", "value": "relative"}]


def controls(run_ids: list[str], tags: list[str]) -> html.Div:
    return html.Div(className="controls", children=[
        labelled("Filter runs", dcc.Input(id="run-filter", type="text", value="", debounce=True,
                                          placeholder="e.g. moco  or  moco_m>=0.9",
                                          className="filter-input"), className="narrow-wide", title=FILTER_HELP),
        labelled("Runs shown", dcc.Dropdown(id="run-picker", options=run_ids, value=[], multi=True,
                                            searchable=True, placeholder="search and select runs")),
        labelled("Tag", dcc.Dropdown(id="tag", options=tags or ["train"], value=default_tag(tags),
                                     clearable=False),
                 className="narrow"),
        labelled("x axis", dcc.RadioItems(id="x-axis", options=X_AXIS_OPTIONS, value="step", inline=True),
                 className="narrow-wide"),
    ])


def group_controls(config_keys: list[str]) -> html.Div:
    """Group by and Band: shared by the views that draw groups (curves, the histogram overlay, the waterfall)."""
    return html.Div(className="controls", children=[
        labelled("Group by (config keys that differ)",
                 dcc.Dropdown(id="group-by", options=config_keys, value=[], multi=True,
                              placeholder="e.g. moco_m: one mean per value, seeds folded in"),
                 title="runs with the same values of these keys form a group, drawn as its mean with a band "
                       "in the curves, the histogram overlay and the 3D waterfall; every other key (seed...) "
                       "is ignored"),
        labelled("Band", dcc.RadioItems(id="band", options=BAND_OPTIONS, value="std", inline=True),
                 className="narrow-wide", title="the shaded area around a group's mean"),
    ])


def labelled(label: str, component, className: str = "", title: str | None = None) -> html.Div:
    return html.Div(className=f"control {className}".strip(), title=title,
                    children=[html.Label(label), component])


def blank_figure() -> dict:
    """The figure every graph shows until its callback answers: no axes, "no data" in its middle.

    A plain dict, not figures.empty_figure: building a plotly Figure with the plotly_white
    template validates the whole template (0.6 s on the first page of a server) and puts it,
    tens of KB, into the page once per graph."""
    return {"data": [], "layout": {"xaxis": {"visible": False}, "yaxis": {"visible": False},
                                   "annotations": [figures.message_annotation("no data")]}}


def graph(name: str, **graph_kwargs) -> html.Div:
    """A graph with its export buttons and a place for the export message."""
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


def view(name: str, run_ids: list[str], config_keys: list[str], stats: list[str] = ()) -> html.Div:
    if name == "curves":
        return html.Div([
            html.Div(className="controls", children=[
                labelled("Statistics", dcc.Dropdown(id="stats", options=list(stats or figures.DEFAULT_STATS),
                                                    value=list(figures.DEFAULT_STATS), multi=True)),
                labelled("Scale", dcc.Checklist(id="log-y", options=[{"label": "log y", "value": "log"}],
                                                value=[]), className="narrow"),
                labelled("Smoothing", dcc.Slider(id="smoothing", min=0, max=0.99, step=0.01, value=0,
                                                 marks={0: "0", 0.9: "0.9", 0.99: "0.99"}),
                         className="wide-slider"),
            ]),
            graph("curves"),
        ])
    if name == "distribution":
        return html.Div([
            html.Div(className="controls", children=[
                labelled("Heatmap of", dcc.RadioItems(id="hist-kind", value="neg", inline=True,
                                                      options=[{"label": "negatives", "value": "neg"},
                                                               {"label": "positives", "value": "pos"}]),
                         className="narrow"),
                labelled("Colour scale ends at", dcc.RadioItems(
                    id="heat-scale", value=figures.DEFAULT_HEAT_SCALE, inline=True,
                    options=[{"label": "90th percentile", "value": "90"},
                             {"label": "99th percentile", "value": "99"},
                             {"label": "max", "value": "100"}]),
                    className="narrow-wide",
                    title="of the largest fraction at each step: brighter cells saturate, so a few "
                          "concentrated early steps do not darken the rest"),
            ]),
            graph("heatmap"),
            labelled("Step", dcc.Slider(id="step-slider", min=0, max=1, value=None, step=1,
                                        allow_direct_input=True, updatemode="mouseup",
                                        tooltip={"placement": "bottom"}),
                     className="step-control"),
            graph("hist"),
            labelled("Tags of one run (raw vs transformed)",
                     dcc.Dropdown(id="ft-run", options=run_ids, value=None, placeholder="first selected run")),
            graph("ft"),
        ])
    if name == "waterfall":
        return html.Div([
            html.Div(className="controls", children=[
                labelled("Order runs by config key (keys that differ)",
                         dcc.Dropdown(id="waterfall-key", options=config_keys, value=None,
                                      placeholder="e.g. moco_m")),
                labelled("Statistic", dcc.Dropdown(id="waterfall-stat", options=list(figures.DEFAULT_STATS),
                                                   value="neg_sample_var", clearable=False)),
            ]),
            graph("waterfall"),
        ])
    if name == "gradients":
        return html.Div([
            labelled("Run for the landscape", dcc.Dropdown(id="grad-run", options=run_ids, value=None,
                                                           placeholder="first selected run")),
            graph("grad-heatmap"),
            graph("grad-surface"),
            graph("grad-total"),
        ])
    if name == "representation":
        return html.Div([
            html.P(["From Recorder.log_embeddings(step, z, z2) of the chosen tag (or each run's first tag "
                    "with embeddings): std and uniformity per step, effective rank and spectrum per window of "
                    "steps, alignment with a second view; margin and hard negatives from the logged scores."],
                   className="thresholds"),
            graph("rep-curves"),
            graph("spectrum"),
            graph("plane"),
            graph("margin"),
        ])
    if name == "health":
        return html.Div([
            html.P(["Thresholds: ", health.THRESHOLDS_TEXT, " ", health.REPRESENTATION_THRESHOLDS_TEXT],
                   className="thresholds"),
            html.Div(id="health-table"),
        ])
    raise ValueError(name)


# ---- tables (components built from plain data) ------------------------------


def run_table(table: dict, shown=(), colors=None) -> html.Table:
    """The run table from :func:`figures.run_table` data.

    Differing config columns are marked in the header, the odd values out in
    the cells; rows of the runs ``shown`` are marked and carry their colour
    (``colors``); every row is clickable (it shows or hides its run).
    """
    colors = colors or {}
    head = html.Tr([html.Th(c, className="differs" if table["differs"].get(c) else None,
                            title="differs between runs" if table["differs"].get(c) else None)
                    for c in table["columns"]])
    body = []
    for row in table["rows"]:
        row_id = {"type": "run-row", "index": row["id"]}
        if row["error"]:
            body.append(html.Tr(id=row_id, n_clicks=0, className="error-row", **{"data-run": row["id"]}, children=[
                html.Td(row["cells"][0]),
                html.Td(f"error: {row['error']}", colSpan=len(table["columns"]) - 1),
            ]))
            continue
        on = row["id"] in shown
        swatch = html.Span(className="swatch", style={"background": colors.get(row["id"], "transparent")})
        cells = [html.Td([swatch, row["cells"][0]])]
        for value, marked in zip(row["cells"][1:], row["marks"][1:]):
            cells.append(html.Td(value, className="differs" if marked else None))
        body.append(html.Tr(cells, id=row_id, n_clicks=0, className="run-row shown" if on else "run-row",
                            title="click to hide this run" if on else "click to show this run",
                            **{"data-run": row["id"]}))
    return html.Table(className="runs", children=[html.Thead(head), html.Tbody(body)])


def empty_folder_hint(runs_dir: str, refresh_s: float) -> html.Div:
    """What to do when RUNS_DIR holds no run yet."""
    return html.Div(className="empty-hint", children=[
        html.P(f"No runs below {runs_dir} yet: a run is a folder with a scores.h5 that "
               f"scoreviz.Recorder writes. This page looks for new ones every {refresh_s:g} s."),
        html.Pre(f'rec = scoreviz.Recorder("{runs_dir}/my-run")     # in your training loop\n'
                 f"scoreviz train --run-dir {runs_dir}/moco           # or the bundled MoCo trainer\n"
                 f"scoreviz demo --out {runs_dir}                   # or the demo's two runs"),
    ])


def health_table(results: dict) -> html.Table:
    """``results`` maps run name to a list of health.Flag (or an error string); one column per check."""
    checks = next((([f.check for f in flags]) for flags in results.values() if not isinstance(flags, str)),
                  ["collapse", "instability", "non-finite"])
    rows = []
    for name, flags in results.items():
        if isinstance(flags, str):
            rows.append(html.Tr([html.Td(name), html.Td(flags, colSpan=len(checks))],
                                className="error-row"))
            continue
        cells = [html.Td(name)]
        for flag in flags:
            if flag.fired:
                cells.append(html.Td(flag.text(), className="flagged"))
            else:  # passed (after a warm-up, perhaps), or not checked for want of data ("no embeddings")
                cells.append(html.Td(flag.text(), className="ok" if not flag.detail else "unchecked"))
        rows.append(html.Tr(cells))
    if not rows:
        return html.P("select runs to check them")
    return html.Table(className="runs health", children=[
        html.Thead(html.Tr([html.Th("run")] + [html.Th(c) for c in checks])),
        html.Tbody(rows),
    ])
