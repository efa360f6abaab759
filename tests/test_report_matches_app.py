"""The report is the app, offline: `scoreviz export` holds the figures the app draws for the same
runs (titles, traces, colours by run name) and the same health table, every check included."""

import json
import re

import pytest

torch = pytest.importorskip("torch")

from app import create_app  # noqa: E402
from app.report import write_report  # noqa: E402
from test_app import make_run, post_panel, post_state  # noqa: E402

RUNS = ["m0.99", "m0.9"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("report-runs")
    make_run(root, "m0.99", momentum=0.99, tags=("train", "ft"), steps=24)
    make_run(root, "m0.9", momentum=0.9, seed=1, steps=24)
    return root


def report_figures(text: str) -> list:
    """Every figure of a report page, as plotly.js receives it: {"data": [...], "layout": {...}}."""
    decoder, out = json.JSONDecoder(), []
    for match in re.finditer(r'Plotly\.newPlot\(\s*"[^"]+",\s*', text):
        data, end = decoder.raw_decode(text, match.end())
        layout, _ = decoder.raw_decode(text, text.index("{", end))
        out.append({"data": data, "layout": layout})
    return out


def title(figure) -> str:
    t = figure["layout"].get("title")
    return (t.get("text") if isinstance(t, dict) else t) or ""


def traces(figure) -> list:
    """(type, name, colours) of each trace: what a reader tells runs apart by."""
    out = []
    for trace in figure["data"]:
        colours = [c for c in (trace.get("line", {}).get("color"), trace.get("marker", {}).get("color"),
                               trace.get("fillcolor"), trace.get("color")) if isinstance(c, str)]
        out.append((trace.get("type", "scatter"), trace.get("name"), colours))
    return out


def app_figures(runs) -> tuple[dict, dict]:
    """Every figure the app draws for the runs, by title, for each view and tag (and each run of the
    gradient landscape), through the page's own callbacks; and the health table's children."""
    from app.shell.page import store_id
    from app.views import VIEWS

    dash_app = create_app(runs, refresh=60)
    client = dash_app.server.test_client()
    figures, health = {}, None
    for view in VIEWS:
        for query in [f"&tag={tag}" for tag in ("train", "ft")] + [f"&grun={r}" for r in RUNS]:
            answer = post_state(client, dash_app, "?view=" + view.name + query)  # the default runs: both
            for panel in view.panels:
                for key, props in post_panel(client, dash_app, store_id(view, panel),
                                             answer[store_id(view, panel)]["data"]).items():
                    if "figure" in props:
                        figures[title(props["figure"])] = props["figure"]
                    if key == "health-table" and "&tag=train" in query:
                        health = props["children"]
    return figures, health


def test_the_report_holds_the_figures_and_health_checks_the_app_draws(runs, tmp_path):
    from app.views import VIEWS

    out = write_report([runs / r for r in RUNS], tmp_path / "report.html")
    text = out.read_text()
    in_report = report_figures(text)
    in_app, health = app_figures(runs)
    # the report draws every view that has figures, each figure one the app draws: same title,
    # same traces, same colours (each run's by its name)
    assert len(in_report) >= 15
    for figure in in_report:
        assert title(figure) in in_app, title(figure)
        assert traces(figure) == traces(in_app[title(figure)]), title(figure)
    titles = " ".join(title(f) for f in in_report)
    for expected in ("Statistics over steps (train)", "Statistics over steps (ft)", "Negative score distribution",
                     "Score histograms at step 23 (train)", "m0.99: its tags compared", "runs ordered by moco_m",
                     "Total gradient L2 norm", "Gradient L2 norm per layer (log10) over steps: m0.9",
                     "Effective rank and std of the embeddings (train)", "Spectrum of the embeddings",
                     "Alignment and uniformity", "Hard negatives"):
        assert expected in titles, expected
    # each run in its own colour, the same in every figure
    colours = {}
    for figure in in_report:
        for _, name, found in traces(figure):
            if name in RUNS and found:
                colours.setdefault(name, set()).add(found[0])
    assert all(len(c) == 1 for c in colours.values()) and colours["m0.99"] != colours["m0.9"], colours
    # the health table: every check of the app's (the representation's too), the same verdicts
    cells = lambda html: [re.sub("<[^>]+>", "", c) for c in re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", html)]  # noqa: E731
    table = text[text.index('<table class="runs health">'):]
    table = cells(table[:table.index("</table>") + 8])
    app_cells = [c for c in re.findall(r'"children": "([^"]*)"', json.dumps(health)) if c]
    assert table[:6] == ["run", "collapse", "instability", "non-finite", "complete collapse", "dimensional collapse"]
    assert table == app_cells
    assert {v.name for v in VIEWS} <= {"curves", "distribution", "waterfall", "gradients", "representation", "health",
                                       "compare"}
