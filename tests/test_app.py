"""The app without a browser: run data, path safety, URL state, callbacks, export.

Also holds the helpers that write small real runs with scoreviz.Recorder;
the browser tests (test_app_browser.py) import them from here.
"""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
scoreviz = pytest.importorskip("scoreviz")

from app import create_app  # noqa: E402
from app.runs import RefusedRunId, RunData  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def tiny_model():
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))


def record_steps(rec, model, start, stop, momentum=0.99, seed=0, tags=("train",)):
    """Log scores, embeddings (two views, tag "train"), gradients and a loss for steps
    [start, stop) like a training loop."""
    gen = torch.Generator().manual_seed(seed + start)
    embedding_gen = torch.Generator().manual_seed(1000 + seed + start)
    decay = torch.linspace(1.0, 1.0 - 0.9 * momentum, 16)  # the smaller m, the flatter the spectrum
    for step in range(start, stop):
        z = torch.randn(32, 16, generator=embedding_gen) * decay
        rec.log_embeddings(step, z, z + 0.3 * torch.randn(32, 16, generator=embedding_gen))
        t = step / 50.0
        for tag in tags:
            shift = 0.15 if tag != "train" else 0.0
            pos = (0.2 + 0.6 * min(t, 1.0) * momentum + shift + 0.1 * torch.randn(16, generator=gen)).clamp(-1, 1)
            neg = (0.05 * torch.randn(16, 64, generator=gen) * (1 + t)).clamp(-1, 1)
            rec.log_scores(step, pos, neg, tag=tag)
        model.zero_grad()
        x = torch.randn(4, 8, generator=gen)
        loss = model(x).square().mean() * (1 + step)
        loss.backward()
        rec.log_gradients(step, model)
        rec.log_scalars(step, loss=float(loss.detach()), lr=0.03)


def make_run(root, name, steps=30, momentum=0.99, tags=("train",), seed=0):
    """A small real run below ``root`` written by scoreviz.Recorder."""
    run_dir = Path(root) / name
    with scoreviz.Recorder(run_dir, config={"moco_m": momentum, "lr": 0.03, "arch": "mlp"}, spectrum_window=5) as rec:
        record_steps(rec, tiny_model(), 0, steps, momentum=momentum, seed=seed, tags=tags)
    return run_dir


def make_foreign(root, name="foreign"):
    """A run folder whose scores.h5 is an HDF5 file scoreviz did not write."""
    import h5py

    folder = Path(root) / name
    folder.mkdir(parents=True)
    with h5py.File(folder / "scores.h5", "w") as f:
        f["something"] = np.arange(3)
    return folder


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    make_run(root, "m0.99", momentum=0.99, tags=("train", "ft"))
    make_run(root / "sweep", "m0.9", momentum=0.9, seed=1)
    make_foreign(root)
    (root / "empty").mkdir()
    (root / "empty" / "scores.h5").write_bytes(b"")
    return root


# ---- data and path safety ---------------------------------------------------------


def test_run_ids_cover_every_run_and_broken_ones_become_error_rows(runs):
    data = RunData(runs)
    assert data.run_ids() == ["empty", "foreign", "m0.99", "sweep/m0.9"]
    good = data.info("m0.99")
    assert good["steps"] == 30 and good["config"]["moco_m"] == 0.99 and good["tags"] == ["train", "ft"]
    assert "not a scoreviz run" in data.info("foreign")["error"]
    assert "empty" in data.info("empty")["error"]


@pytest.mark.parametrize("bad", ["../..", "..", "/etc", "sweep/../../x", "m0.99/../../..", "", "a\x00b"])
def test_run_ids_escaping_runs_dir_are_refused(runs, bad):
    with pytest.raises(RefusedRunId):
        RunData(runs).resolve(bad)


def test_symlink_out_of_runs_dir_is_refused(runs, tmp_path):
    outside = make_run(tmp_path, "outside", steps=3)
    link = runs / "link"
    link.symlink_to(outside, target_is_directory=True)
    try:
        with pytest.raises(RefusedRunId):
            RunData(runs).resolve("link")
    finally:
        link.unlink()


def view_state(data, query, **values):
    """The state the page gives a panel for the URL ``query`` over ``data`` (the runs drawn, their
    colours and every control's value, as the shell resolves them), with ``values`` set over it."""
    from app.shell.state import PageState
    from app.views import VIEWS

    answer = PageState(data, VIEWS, wait=60).update(query, {}, {}, True)  # the runs read in the background first
    return {**answer["values"], "runs": answer["runs"], "colors": answer["colors"], **values}


def post_callback(client, dash_app, output_key, inputs, state=(), changed=None):
    """Call one callback through Dash's HTTP endpoint, as the browser does."""
    spec = dash_app.callback_map[output_key]
    inputs = list(inputs) + [None] * (len(spec["inputs"]) - len(inputs))  # inputs not given: not set yet
    outputs = [{"id": o.split(".")[0], "property": o.split(".")[1]}
               for o in output_key.strip(".").split("...")]
    body = {
        "output": output_key,
        "outputs": outputs if output_key.startswith("..") else outputs[0],
        "inputs": [v if i["id"].startswith("{") else dict(i, value=v) for i, v in zip(spec["inputs"], inputs)],
        "state": [dict(s, value=v) for s, v in zip(spec["state"], state)],
        "changedPropIds": [changed or f"{spec['inputs'][-1]['id']}.{spec['inputs'][-1]['property']}"],
    }
    return client.post("/_dash-update-component", json=body)


def state_key(dash_app):
    """The key of the page's state callback (app.shell.state)."""
    return next(k for k in dash_app.callback_map if k.startswith("..url.search"))


def post_state(client, dash_app, search, values=None, applied=None, changed="url.search"):
    """Call the state callback as the browser does: the URL ``search``, the controls' ``values``
    (by component id; the others None) and the ``applied`` values. Returns the response's outputs."""
    key = state_key(dash_app)
    spec = dash_app.callback_map[key]
    given = {"url": search, "refresh": 0, "selection-refresh": 0, **(values or {})}
    inputs = [dict(i, value=given.get(i["id"])) for i in spec["inputs"]]
    state = [dict(s, value=applied if s["id"] == "applied" else None) for s in spec["state"]]
    outputs = [{"id": o.rsplit(".", 1)[0], "property": o.rsplit(".", 1)[1]} for o in key.strip(".").split("...")]
    body = {"output": key, "outputs": outputs, "inputs": inputs, "state": state, "changedPropIds": [changed]}
    response = client.post("/_dash-update-component", json=body)
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    return response.get_json()["response"]


def post_panel(client, dash_app, store, state):
    """Call the callback that draws from the panel store ``store`` with ``state``, as the browser
    does; returns the response's outputs."""
    key = next(k for k, spec in dash_app.callback_map.items() if [i["id"] for i in spec["inputs"]] == [store])
    response = post_callback(client, dash_app, key, [state], changed=f"{store}.data")
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    return response.get_json()["response"]


def test_requests_for_run_ids_outside_runs_dir_are_refused(runs):
    dash_app = create_app(runs, refresh=60)
    client = dash_app.server.test_client()
    out = post_state(client, dash_app, "?runs=../..&runs=/etc/passwd&runs=sweep/../../..&runs=m0.99")
    assert out["run-picker"]["value"] == ["m0.99"]
    notice = json.dumps(out["url-notice"]["children"])
    assert notice.count("refused") == 3 and "/etc/passwd" in notice
    assert out["url"]["search"] == "?runs=m0.99"  # rewritten without them
    drawn = out["curves-curves-state"]["data"]["runs"]
    assert drawn in (["m0.99"], [])  # [] while it is still being read


def test_curves_panel_returns_one_trace_per_run_and_statistic(runs):
    dash_app = create_app(runs, refresh=60)
    client = dash_app.server.test_client()
    data = dash_app.scoreviz_data
    key = next(k for k in dash_app.callback_map if k.startswith("curves-graph"))
    state = view_state(data, "?runs=m0.99&runs=sweep/m0.9&stats=pos_mean&stats=loss")
    response = post_callback(client, dash_app, key, [state], changed="curves-curves-state.data")
    fig = response.get_json()["response"]["curves-graph"]["figure"]
    assert [t["name"] for t in fig["data"]] == ["m0.99", "m0.99", "sweep/m0.9", "sweep/m0.9"]
    # grouped by moco_m (0.99 and 0.9): a band and a mean per group and statistic
    response = post_callback(client, dash_app, key, [dict(state, group=["moco_m"], band="minmax")],
                             changed="curves-curves-state.data")
    fig = response.get_json()["response"]["curves-graph"]["figure"]
    assert [t["name"] for t in fig["data"]] == ["moco_m=0.9 (n=1) band", "moco_m=0.9 (n=1)"] * 2 + \
        ["moco_m=0.99 (n=1) band", "moco_m=0.99 (n=1)"] * 2


def test_page_references_nothing_outside_the_server(runs):
    dash_app = create_app(runs, refresh=60)
    client = dash_app.server.test_client()
    page = client.get("/").get_data(as_text=True)
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)
    for path in re.findall(r"""src=["']([^"']+)""", page):
        assert client.get(path).status_code == 200, path
    css = client.get("/assets/style.css").get_data(as_text=True)
    assert "http" not in css and "@import" not in css


def test_url_round_trip():
    from app.shell import page, url
    from app.views import VIEWS

    controls = page.controls(VIEWS)
    values = {"runs": ["a", "sweep/b"], "tag": "ft", "view": "gradients", "log": ["log"], "smooth": 0.9, "step": 17}
    query = url.encode(values, controls)
    assert url.parse(query, controls) == (values, [])
    assert url.parse("?runs=&smooth=abc&nonsense=1", controls) == (
        {"runs": []}, ["smooth=abc (not a number)", "nonsense=1 (not a setting of this page)"])


# ---- export -----------------------------------------------------------------------


def test_write_report_standalone(runs, tmp_path):
    from app.report import write_report

    out = write_report([runs / "m0.99", runs / "sweep" / "m0.9"], tmp_path / "report.html")
    text = out.read_text()
    assert "m0.99" in text and "m0.9" in text
    assert not re.search(r"""<script[^>]+src=["']?https?:""", text)  # plotly.js inlined
    assert text.count("Plotly.newPlot") >= 5


def test_scoreviz_export_command(runs, tmp_path):
    """`scoreviz export` through the CLI when it is wired, else through app.cli_commands."""
    out = tmp_path / "cli-report.html"
    cli = ROOT / "scoreviz" / "cli.py"
    has_export = cli.exists() and "export" in cli.read_text()
    if has_export:
        cmd = [sys.executable, "-m", "scoreviz.cli", "export", str(runs / "m0.99"),
               str(runs / "sweep" / "m0.9"), "--out", str(out)]
    else:
        cmd = [sys.executable, "-m", "app.cli_commands", "export", str(runs / "m0.99"),
               str(runs / "sweep" / "m0.9"), "--out", str(out)]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    text = out.read_text()
    assert out.stat().st_size > 1_000_000  # plotly.js is inside
    assert "m0.99" in text and "m0.9<" in text


def test_export_refuses_a_broken_run_with_its_reason(runs, tmp_path):
    from app.report import write_report

    with pytest.raises(scoreviz.ScorevizError, match="not a scoreviz run"):
        write_report([runs / "foreign"], tmp_path / "r.html")


def test_figure_export_html_and_png_or_a_clear_reason(runs):
    from app.shell import images

    dash_app = create_app(runs, refresh=60)
    client = dash_app.server.test_client()
    key = next(k for k in dash_app.callback_map if "curves-download.data" in k)
    figure = {"data": [{"type": "scatter", "x": [0, 1], "y": [1, 2], "name": "m0.99"}], "layout": {}}
    out = post_callback(client, dash_app, key, [1, 0, 0], [figure],
                        changed="curves-export-html.n_clicks").get_json()["response"]
    download = out["curves-download"]["data"]
    assert download["filename"] == "scoreviz-curves.html"
    assert "m0.99" in download["content"] and "<script" in download["content"]
    assert not re.search(r"""<script[^>]+src=["']?https?:""", download["content"])

    body_png = post_callback(client, dash_app, key, [0, 1, 0], [figure],
                             changed="curves-export-png.n_clicks").get_json()
    reason = images.unavailable_reason()
    if reason:
        message = body_png["response"]["curves-export-message"]["children"]
        assert "PNG/SVG export is unavailable" in message and message == reason
    else:
        assert body_png["response"]["curves-download"]["data"]["filename"] == "scoreviz-curves.png"


@pytest.mark.slow
def test_scoreviz_serve_binds_localhost_with_debug_off(runs):
    import socket
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "scoreviz.cli", "serve", str(runs), "--port", str(port),
                               "--refresh", "2"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)
    try:
        page = None
        for _ in range(100):
            try:
                page = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2).read().decode()
                break
            except OSError:
                if server.poll() is not None:
                    break
                import time

                time.sleep(0.2)
        assert page and "scoreviz" in page, server.stdout.read() if server.poll() is not None else ""
        config = json.loads(re.search(r'<script id="_dash-config" type="application/json">(.*?)</script>',
                                      page, re.S).group(1))
        assert config["ui"] is False  # Dash dev tools (debug mode) off
        assert not config.get("hot_reload")
    finally:
        server.terminate()
        output = server.communicate(timeout=20)[0]
    assert f"http://127.0.0.1:{port}/" in output
