"""The server and the export under hostile input (issue 8, failures 5 (app side), 6 and 7).

The HTTP tests talk to a real `scoreviz serve` in a subprocess, bound to
127.0.0.1 on a free port, with raw http.client / socket requests, so the Host
header, the body and its declared length are exactly what a hostile page or
client would send.
"""

import http.client
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import h5py
import pytest

torch = pytest.importorskip("torch")
scoreviz = pytest.importorskip("scoreviz")

from app import create_app  # noqa: E402
from app.report import write_report  # noqa: E402
from faults import report  # noqa: E402
from test_app import make_foreign, make_run  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SECRET = "outside-secret-7f3a"  # a config value only the run outside the runs folder holds
CALLBACK = "/_dash-update-component"


# ---- broken runs -------------------------------------------------------------------


def make_absurd(root, name, every_dataset=False):
    """A real run whose datasets then declare 2e9 rows (a ~10 KB file)."""
    run_dir = make_run(root, name, steps=3)
    with h5py.File(run_dir / "scores.h5", "r+") as f:
        if every_dataset:
            for dataset in ("step", "tag", "stats", "pos_hist", "neg_hist"):
                f[f"scores/{dataset}"].resize(2_000_000_000, axis=0)
            if "committed" in f:
                f["committed"][0, 0] = 2_000_000_000
        else:
            f["scores/step"].resize((2_000_000_000,))
    return run_dir


def make_truncated(root, name):
    run_dir = make_run(root, name, steps=5)
    data = (run_dir / "scores.h5").read_bytes()
    (run_dir / "scores.h5").write_bytes(data[:3000])
    return run_dir


def make_linked_out(root, outside):
    """runs/linked/scores.h5 -> a real run's file outside the runs folder."""
    real = outside / "real"
    with scoreviz.Recorder(real, config={"secret": SECRET}) as rec:
        rec.log_scores(0, torch.full((4,), 0.5), torch.zeros(4, 8))
    (root / "linked").mkdir()
    (root / "linked" / "scores.h5").symlink_to(real / "scores.h5")
    return root / "linked"


BROKEN = {"foreign": "not a scoreviz run", "truncated": "damaged", "absurd": "",
          "absurd-all": "", "linked": "refused"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    make_run(root, "good-a", steps=40, momentum=0.99)
    make_run(root, "good-b", steps=40, momentum=0.9, seed=1)
    make_foreign(root)
    make_truncated(root, "truncated")
    make_absurd(root, "absurd")
    make_absurd(root, "absurd-all", every_dataset=True)
    make_linked_out(root, tmp_path_factory.mktemp("outside"))
    return root


# ---- a real server -----------------------------------------------------------------


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, runs_dir, env):
        self.port = free_port()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "scoreviz.cli", "serve", str(runs_dir), "--port", str(self.port),
             "--refresh", "60"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if self.request("GET", "/")[0] == 200:
                    return
            except OSError:
                if self.process.poll() is not None:
                    raise RuntimeError(self.process.stdout.read())
                time.sleep(0.2)
        raise RuntimeError("server did not start")

    def request(self, method, path, body=None, host="default", headers=None, timeout=60):
        """(status, headers, body bytes); ``host`` None sends no Host header."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            if host is not None:
                conn.putheader("Host", f"127.0.0.1:{self.port}" if host == "default" else host)
            for name, value in (headers or {}).items():
                conn.putheader(name, value)
            if body is not None:
                if not any(k.lower() == "content-length" for k in headers or {}):
                    conn.putheader("Content-Length", str(len(body)))
                if not any(k.lower() == "content-type" for k in headers or {}):
                    conn.putheader("Content-Type", "application/json")
            conn.endheaders(body)
            response = conn.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            conn.close()

    def callback(self, output, inputs, state=(), host="default"):
        body = callback_request(output, inputs, state)
        status, headers, raw = self.request("POST", CALLBACK, json.dumps(body).encode(), host=host)
        return status, headers, raw

    def rss_bytes(self):
        with open(f"/proc/{self.process.pid}/status") as f:
            line = next(line for line in f if line.startswith("VmRSS:"))
        return int(line.split()[1]) * 1024

    def stop(self):
        self.process.terminate()
        try:
            return self.process.communicate(timeout=20)[0]
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.communicate()[0]


_SPEC_APP = {}


def callback_map():
    """The callback map of an app built like the server's (ids and properties only)."""
    if not _SPEC_APP:
        _SPEC_APP["app"] = create_app(ROOT / "tests", refresh=60, warm=False)
    return _SPEC_APP["app"].callback_map


def spec(output):
    return callback_map()[output]


def callback_request(output, inputs, state=()):
    """The body the browser posts for ``output`` with these input and state values; controls
    not given (a page's later additions) are posted as None, as the page does before they load."""
    s = spec(output)
    inputs = list(inputs) + [[] if i["id"].startswith("{") else None for i in s["inputs"][len(inputs):]]
    state = list(state) + [None] * (len(s["state"]) - len(state))
    outputs = [{"id": o.component_id, "property": o.component_property}
               for o in (s["output"] if isinstance(s["output"], list) else [s["output"]])]
    return {
        "output": output,
        "outputs": outputs if isinstance(s["output"], list) else outputs[0],
        "inputs": [_item(i, v) for i, v in zip(s["inputs"], inputs)],
        "state": [_item(i, v) for i, v in zip(s["state"], state)],
        "changedPropIds": [f"{s['inputs'][0]['id']}.{s['inputs'][0]['property']}"],
    }


def _item(declared, value):
    """One input as the browser posts it: a pattern-matching input (a run-table row's
    clicks) is the list of its matching components, given as is."""
    return value if declared["id"].startswith("{") else dict(declared, value=value)


def figure_key(graph):
    return next(k for k in callback_map() if k.startswith(f"{graph}.figure")
                or k.startswith(f"..{graph}.figure"))


REFRESH_KEY = next(k for k in callback_map() if "run-table.children" in k)  # the run table's callback
STATE_KEY = next(k for k in callback_map() if k.startswith("..url.search"))  # the page's state (app.shell.state)


def input_index(component_id, key=STATE_KEY):
    return [i["id"] for i in spec(key)["inputs"]].index(component_id)


def state_inputs(search="", **values):
    """The state callback's inputs: the URL, the intervals at 0, each control's value (by component
    id, ``_`` for ``-``) or None."""
    given = {"url": search, "refresh": 0, "selection-refresh": 0,
             **{k.replace("_", "-"): v for k, v in values.items()}}
    return [given.get(i["id"]) for i in spec(STATE_KEY)["inputs"]]


def panel_state(runs, **values):
    """A panel store as the shell fills it: the runs, no stamps, their colours, the values given."""
    return {"runs": runs, "stamps": {}, "colors": {}, **values}


@pytest.fixture(scope="module")
def server(runs, tmp_path_factory):
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("OMP_NUM_THREADS", "1")
    srv = Server(runs, env)
    yield srv
    srv.stop()


def assert_no_run_data(raw: bytes):
    text = raw.decode("utf-8", "replace")
    for name in ("good-a", "good-b", "moco_m", SECRET):
        assert name not in text, name


# ---- Host header -------------------------------------------------------------------


BAD_HOSTS = ["evil.example", "evil.example:{port}", "attacker.test.:{port}", "127.0.0.1.evil.example:{port}",
             "localhost.evil.example", "127.0.0.2:{port}", "0.0.0.0:{port}", "[::1", "localhost:port", "", None]


GOOD_HOSTS = ["localhost", "localhost:{port}", "LOCALHOST:{port}", "127.0.0.1", "127.0.0.1:{port}",
              "[::1]:{port}", "[::1]", "localhost.:{port}"]


@pytest.mark.slow
def test_only_loopback_host_headers_are_served(server):
    """A foreign Host (what a DNS-rebinding page sends) gets 403 and no run data; loopback names work."""
    requests = (("GET", "/", None), ("GET", "/_dash-layout", None), ("GET", "/_dash-dependencies", None),
                ("POST", CALLBACK, json.dumps(callback_request(REFRESH_KEY, [1], [None])).encode()))
    for host in BAD_HOSTS:
        host = host.format(port=server.port) if host else host
        for method, path, body in requests:
            status, headers, raw = server.request(method, path, body, host=host)
            assert status == 403, (host, path, status)
            assert_no_run_data(raw)
            assert headers["X-Frame-Options"] == "DENY"
    for host in GOOD_HOSTS:
        assert server.request("GET", "/_dash-layout", host=host.format(port=server.port))[0] == 200, host
        status, _, raw = server.callback(REFRESH_KEY, [1], [None], host=host.format(port=server.port))
        assert status == 200 and b"good-a" in raw, host  # the run table
    report("hostile request", what="a foreign or malformed Host header (DNS rebinding), on the page, "
           "the layout, the callback list and a callback", tried=len(BAD_HOSTS) * len(requests),
           result=f"403, no run data; {len(GOOD_HOSTS)} loopback forms (localhost, 127.0.0.1, [::1], any port) served")


def test_host_allow_list_follows_the_bind_address():
    from app.server import guard

    local = guard.allowed_hosts("127.0.0.1")
    assert guard.host_allowed("localhost:8050", local, any_ip=False)
    assert not guard.host_allowed("192.168.1.7:8050", local, any_ip=False)
    assert not guard.host_allowed(socket.gethostname(), local, any_ip=False) or \
        socket.gethostname().lower() in guard.LOOPBACK_NAMES
    given = guard.allowed_hosts("10.1.2.3", extra=["viz.lab.example"])
    assert guard.host_allowed("10.1.2.3:8050", given, any_ip=True)
    assert guard.host_allowed("viz.lab.example", given, any_ip=True)
    everywhere = guard.allowed_hosts("0.0.0.0")
    assert guard.host_allowed(f"{socket.gethostname()}:8050", everywhere, any_ip=True)
    assert guard.host_allowed("192.168.1.7:8050", everywhere, any_ip=True)  # an IP cannot be rebound
    assert not guard.host_allowed("evil.example:8050", everywhere, any_ip=True)


# ---- callback bodies ---------------------------------------------------------------


def _body(**changes):
    body = callback_request(STATE_KEY, state_inputs("?runs=good-a"), [None, None])
    body.update(changes)
    return json.dumps(body).encode()


def _with_value(index, value, key="inputs"):
    body = callback_request(STATE_KEY, state_inputs("?runs=good-a"), [None, None])
    body[key][index]["value"] = value
    return json.dumps(body).encode()


MALFORMED = {
    "not JSON": b"{not json",
    "not UTF-8": b'{"output": "\xff\xfe"}',
    "a JSON list": b"[1, 2, 3]",
    "a JSON string": b'"hello"',
    "empty": b"",
    "empty object": b"{}",
    "NaN constant": b'{"output": NaN}',
    "deeply nested": b"[" * 100_000 + b"]" * 100_000,
    "unknown output": _body(output="nosuch.children"),
    "output not a string": _body(output=["url.search"]),
    "outputs missing": _body(outputs=None),
    "outputs of another callback": _body(outputs=[{"id": "x", "property": "y"}] * 7),
    "inputs missing": _body(inputs=None),
    "inputs not a list": _body(inputs=5),
    "inputs too few": _body(inputs=[{"id": "refresh", "property": "n_intervals", "value": 0}]),
    "input of another component": _body(inputs=[{"id": "refresh", "property": "n_intervals", "value": 0},
                                                {"id": "tag", "property": "value", "value": "x"}]),
    "input items not objects": _body(inputs=[1, 2]),
    "state wrong": _body(state=[{"id": "applied"}]),
    "changedPropIds a string": _body(changedPropIds="refresh.n_intervals"),
    "run picker a string": _with_value(input_index("run-picker"), "good-a"),
    "run picker a number": _with_value(input_index("run-picker"), 7),
    "run picker ids not strings": _with_value(input_index("run-picker"), [1, {"a": 2}]),
    "n_intervals negative": _with_value(input_index("refresh"), -1),
    "n_intervals a string": _with_value(input_index("refresh"), "1"),
    "URL not a string": _with_value(input_index("url"), ["?runs=good-a"]),
    "smoothing a string": _with_value(input_index("smoothing"), "0.5"),
    "applied a list": _with_value(0, ["good-a"], key="state"),
    "applied values not plain": _with_value(0, {"runs": [1, {"a": 2}]}, key="state"),
    "signatures a number": _with_value(1, 3, key="state"),
    "signatures not strings": _with_value(1, {"x": {"y": 1}}, key="state"),
}


@pytest.mark.slow
def test_malformed_callback_bodies_are_400_not_500(server):
    statuses = {}
    for name, body in MALFORMED.items():
        status, headers, raw = server.request("POST", CALLBACK, body)
        statuses[name] = status
        if status == 400:
            assert "error" in json.loads(raw), name
            assert headers["X-Content-Type-Options"] == "nosniff"
    assert statuses == dict.fromkeys(MALFORMED, 400)
    report("hostile request", what="malformed callback bodies (not JSON, not UTF-8, NaN, 100,000 levels deep, "
           "unknown output, outputs/inputs/state not matching, values of the wrong type)", tried=len(MALFORMED),
           result="400 with the reason; the server answers the next request")
    # and the server still answers a well-formed one
    status, _, raw = server.request("POST", CALLBACK, _body())
    assert status == 200 and json.loads(raw)["response"]["run-picker"]["value"] == ["good-a"]


@pytest.mark.slow
def test_callback_values_of_a_wrong_type_are_400_and_odd_ones_never_500(server):
    curves = figure_key("curves-graph")
    good = panel_state(["good-a"], tag="train", stats=["pos_mean"], log=[], smooth=0, x="step", group=[], band="std")
    assert server.callback(curves, [good])[0] == 200
    for change in ({"runs": "good-a"}, {"stats": "pos_mean"}, {"smooth": "smooth"}, {"smooth": 1e400},
                   {"smooth": True}, {"tag": ["train"]}, {"colors": {"good-a": 5}}, {"group": {"a": 1}}):
        body = json.dumps(callback_request(curves, [dict(good, **change)])).replace("Infinity", "1e400").encode()
        assert server.request("POST", CALLBACK, body)[0] == 400, change
    assert server.callback(curves, [["good-a"]])[0] == 400  # a store that is not an object
    # Values of the right type that the page never sends: unknown runs, views, tags, kinds, steps.
    odd = ["../../etc", "good-a", "nosuch", "linked", "absurd"]
    cases = [
        (curves, [panel_state(odd, tag="no-tag", stats=["nonsense", "loss", ""], log=["x"], smooth=0.99, x="nonsense",
                              group=[], band="nonsense")]),
        (curves, [panel_state(odd)]),  # every key missing: the defaults
        (curves, [panel_state(odd, tag="train", group=["moco_m", ""], band="x", stats=["pos_mean"])]),
        (figure_key("hist-graph"), [panel_state(odd, tag="train", step=2 ** 53)]),
        (figure_key("hist-graph"), [panel_state(odd, tag="", step=-5.5, group=["nope"])]),
        (figure_key("ft-graph"), [panel_state(odd, ft="linked", step=None)]),
        (figure_key("waterfall-graph"), [panel_state(odd, tag="train", key="no-key", wstat="no-stat")]),
        (figure_key("grad-heatmap-graph"), [panel_state(odd, grun="absurd", x="wall")]),
        (figure_key("heatmap-graph"), [panel_state(odd, tag="train", kind="sideways", hscale="7")]),
        (next(k for k in callback_map() if k.startswith("health-table.children")), [panel_state(odd, tag="nope")]),
        (STATE_KEY, state_inputs("?runs=&runs=.&runs=/&runs=" + "a" * 5000 + "&runs=good-a/../good-b", refresh=10 ** 12),
         [{"runs": ["x", ""]}, {"x": "y"}]),
        (STATE_KEY, state_inputs("?runs=../../x&smooth=nan&view=%00&step=1e309")),
    ]
    for case in cases:
        output, inputs = case[0], case[1]
        state = case[2] if len(case) > 2 else [None] * len(spec(output)["state"])
        status, _, raw = server.callback(output, inputs, state)
        assert status in (200, 204), (output[:60], str(inputs)[:200], status, raw[:300])
        assert SECRET.encode() not in raw
    report("hostile request", what="figure callbacks with values of the wrong type, then of the right type but "
           "never sent by the page (unknown runs, tags, views, kinds, steps of 2**53)", tried=9 + len(cases),
           result="400 for the wrong types; 200 for the others, unknown runs left out")


def test_a_callback_the_browser_computes_is_refused(runs):
    dash_app = create_app(runs, refresh=60, warm=False)
    key = next(k for k, s in dash_app.callback_map.items() if "callback" not in s)
    body = callback_request(key, ["curves", ["curves"]]) if key in callback_map() else None
    response = dash_app.server.test_client().post(CALLBACK, data=json.dumps(body), content_type="application/json")
    assert response.status_code == 400 and "computed in the browser" in response.get_json()["error"]


def test_every_callback_input_and_state_has_a_declared_type(tmp_path):
    from app.server import body
    from app.shell.page import property_kinds
    from app.views import VIEWS

    dash_app = create_app(tmp_path, refresh=60, warm=False)
    kinds = property_kinds(VIEWS)
    assert dash_app.server.wsgi_app.kinds == kinds  # what the guard checks requests against
    for output, s in dash_app.callback_map.items():
        for item in s["inputs"] + s["state"]:
            assert body.property_type(kinds, item["id"], item["property"]), (output, item)


# ---- request size ------------------------------------------------------------------


@pytest.mark.slow
def test_a_50_mb_body_is_refused_before_it_is_read(server):
    """The server answers 413 having received 64 KiB of a declared 50 MB body: it never waited for the rest."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall((f"POST {CALLBACK} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
                      "Content-Type: application/json\r\nContent-Length: 52428800\r\n\r\n").encode())
        sock.sendall(b"[" * 65536)
        start = time.monotonic()
        reply = sock.recv(4096).decode("latin-1")
        seconds = time.monotonic() - start
        assert seconds < 5
    assert reply.startswith("HTTP/1.1 413"), reply[:200]
    assert "nosniff" in reply
    assert server.request("GET", "/")[0] == 200  # still serving
    report("hostile request", what="a callback declaring a 50 MB body, of which 64 KiB is sent", tried=1,
           result=f"413 after {seconds * 1000:.0f} ms, before the body arrives; the server keeps serving")


@pytest.mark.slow
def test_a_chunked_body_over_the_limit_is_refused(server):
    from app.server import guard

    chunk = b"x" * (1 << 20)
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall((f"POST {CALLBACK} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
                      "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n").encode())
        try:
            for _ in range(guard.MAX_BODY // len(chunk) + 4):
                sock.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
        except OSError:
            pass  # the server may stop reading once it has refused
        reply = sock.recv(4096).decode("latin-1")
    assert reply.startswith("HTTP/1.1 413"), reply[:200]
    report("hostile request", what="a chunked callback body (no length declared) growing past 16 MiB", tried=1,
           result="413 once 16 MiB have arrived; never parsed")


# ---- response headers --------------------------------------------------------------


@pytest.mark.slow
def test_security_headers_on_page_assets_callbacks_and_refusals(server):
    responses = {
        "page": server.request("GET", "/"),
        "asset": server.request("GET", "/assets/style.css"),
        "layout": server.request("GET", "/_dash-layout"),
        "callback": server.callback(REFRESH_KEY, [1], [None]),
        "bad callback": server.request("POST", CALLBACK, b"{"),
        "foreign host": server.request("GET", "/", host="evil.example"),
    }
    for name, (status, headers, _) in responses.items():
        assert headers.get("X-Content-Type-Options") == "nosniff", name
        assert headers.get("X-Frame-Options") == "DENY", name
        csp = headers.get("Content-Security-Policy", "")
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp, name
        assert "'unsafe-eval'" not in csp and "script-src 'self' 'sha256-" in csp, name
    assert responses["callback"][0] == 200
    report("hostile request", what="response headers on the page, an asset, the layout, a callback, a 400 and "
           "a 403", tried=len(responses), result="every one has nosniff, X-Frame-Options DENY and the CSP")


# ---- symlinks and broken runs --------------------------------------------------------


@pytest.mark.slow
def test_scores_file_linked_out_of_the_runs_folder_is_refused(server):
    status, _, raw = server.callback(REFRESH_KEY, [1], [None])
    assert status == 200 and SECRET.encode() not in raw
    table = json.loads(raw)["response"]["run-table"]["children"]
    assert "refused" in json.dumps(_row(table, "linked"))
    status, _, raw = server.callback(STATE_KEY, state_inputs("?runs=linked&runs=good-a"), [None, None])
    answer = json.loads(raw)["response"]
    assert "refused" in json.dumps(answer["notice"]) and "linked" not in answer["curves-curves-state"]["data"]["runs"]
    assert SECRET.encode() not in raw
    # a forged panel state naming it gets no trace of it
    for graph, inputs in (("curves-graph", [panel_state(["linked"], tag="train", stats=["pos_mean"])]),
                          ("waterfall-graph", [panel_state(["linked"], tag="train", key="secret", wstat="pos_mean")])):
        status, _, raw = server.callback(figure_key(graph), inputs)
        assert status == 200 and json.loads(raw)["response"][graph]["figure"]["data"] == []
        assert SECRET.encode() not in raw
    assert SECRET.encode() not in server.request("GET", "/_dash-layout")[2]
    report("hostile request", what="a run whose scores.h5 links to a file outside the runs folder: run table, "
           "selection, forged selections of two figures, the layout", tried=5,
           result="an error row saying refused; none of its data in any response")


def test_run_data_refuses_a_linked_out_scores_file(runs, tmp_path):
    from app.runs import RefusedRunId, RunData

    data = RunData(runs, warm=False)
    assert "linked" in data.run_ids()
    with pytest.raises(RefusedRunId, match="outside the runs folder"):
        data.scores_file("linked")
    with pytest.raises(RefusedRunId):
        data.stamp("linked")
    assert "refused" in data.info("linked")["error"]
    with pytest.raises(RefusedRunId):
        data.scores("linked", "train")
    # a link to a file inside the runs folder is fine
    make_run(tmp_path / "inside", "real", steps=4)
    (tmp_path / "inside" / "alias").mkdir()
    (tmp_path / "inside" / "alias" / "scores.h5").symlink_to(tmp_path / "inside" / "real" / "scores.h5")
    assert RunData(tmp_path / "inside", warm=False).info("alias")["steps"] == 4


def _row(table, run_id):
    rows = table["props"]["children"][1]["props"]["children"]
    return next(r for r in rows if r["props"].get("data-run") == run_id)


@pytest.mark.slow
def test_broken_runs_beside_good_ones_leave_the_good_figures_whole(server):
    rss_before = server.rss_bytes()
    status, _, raw = server.callback(REFRESH_KEY, [2], [None])
    assert status == 200
    table = json.loads(raw)["response"]["run-table"]["children"]
    for name, reason in BROKEN.items():
        row = _row(table, name)
        assert "error-row" in row["props"]["className"], name
        assert reason in json.dumps(row), (name, row)
    for good in ("good-a", "good-b"):
        assert "error" not in _row(table, good)["props"]["className"]

    picked = ["good-a", *BROKEN, "good-b"]
    search = "?" + "&".join(f"runs={r}" for r in picked)
    deadline = time.monotonic() + 60
    while True:  # runs are read in the background; the state draws them once read
        status, _, raw = server.callback(STATE_KEY, state_inputs(search), [None, None])
        assert status == 200
        answer = json.loads(raw)["response"]
        if "reading" not in json.dumps(answer["notice"]) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert answer["curves-curves-state"]["data"]["runs"] == ["good-a", "good-b"]
    assert answer["run-picker"]["value"] == picked  # selected, not drawn: each says why
    notice = json.dumps(answer["notice"])
    assert all(f"{name}: " in notice for name in BROKEN), notice

    # A forged panel state with the broken runs in it, as if they broke after being picked.
    views = {
        "curves-graph": panel_state(picked, tag="train", stats=["pos_mean", "neg_mean"], x="step"),
        "heatmap-graph": panel_state(picked, tag="train", kind="neg", hscale="90"),
        "hist-graph": panel_state(picked, tag="train"),
        "waterfall-graph": panel_state(picked, tag="train", key="moco_m", wstat="neg_sample_var"),
        "grad-total-graph": panel_state(picked, x="relative"),
    }
    for graph, forged in views.items():
        status, _, raw = server.callback(figure_key(graph), [forged])
        assert status == 200, (graph, raw[:300])
        names = {t.get("name", "").split(" ")[0] for t in json.loads(raw)["response"][graph]["figure"]["data"]}
        if graph != "heatmap-graph":  # (its traces are named by axis)
            assert {"good-a", "good-b"} <= names, (graph, names)
        # nothing of a run that cannot be read; an absurd run's gradients, which can, may be drawn
        assert not names & {"foreign", "truncated", "linked"}, (graph, names)
    status, _, raw = server.callback(next(k for k in callback_map() if k.startswith("health-table.children")),
                                     [panel_state(picked, tag="train")])
    assert status == 200 and b"good-a" in raw
    grown = server.rss_bytes() - rss_before
    assert grown < 300 * 2 ** 20  # no 2e9-row read
    report("hostile request", what="damaged, foreign, 2e9-row and linked-out runs selected beside two good "
           "ones, every view", tried=len(BROKEN),
           result=f"each an error row with its reason; every figure 200 with the good runs' traces; "
                  f"server memory {grown / 2 ** 20:+.0f} MB")


# ---- the command line: serve ---------------------------------------------------------


def scoreviz_cli(env, *args, timeout=120):
    return subprocess.run([sys.executable, "-m", "scoreviz.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("args", [("--port", "99999"), ("--port", "-1"), ("--port", "0"),
                                  ("--refresh", "nan"), ("--refresh", "inf"), ("--refresh", "-1"),
                                  ("--refresh", "0"), ("--refresh", "1e300")])
def test_bad_port_and_refresh_are_one_line_errors(args, capsys, tmp_path):
    from scoreviz.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["serve", str(tmp_path), *args])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("scoreviz serve: error: argument ") and args[0] in err


def test_port_in_use_and_debug_on_a_public_host_are_one_line_errors(tmp_path, subprocess_env):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        out = scoreviz_cli(subprocess_env, "serve", str(tmp_path), "--port", port)
        assert out.returncode == 1
        assert out.stderr.count("\n") == 1 and out.stderr.startswith("scoreviz: error: ")
        assert "already in use" in out.stderr and port in out.stderr
        # The warning for a public address comes first, then the port's error: nothing was bound.
        out = scoreviz_cli(subprocess_env, "serve", str(tmp_path), "--host", "0.0.0.0", "--port", port)
        warning, error = out.stderr.splitlines()
        assert out.returncode == 1 and warning.startswith("scoreviz: warning: --host 0.0.0.0 is not a loopback")
        assert error.startswith("scoreviz: error: ") and "already in use" in error
    out = scoreviz_cli(subprocess_env, "serve", str(tmp_path), "--host", "0.0.0.0", "--debug")
    assert out.returncode == 1
    assert out.stderr.count("\n") == 1 and out.stderr.startswith("scoreviz: error: --debug with --host 0.0.0.0 refused")


@pytest.mark.parametrize("host,public", [("127.0.0.1", False), ("localhost", False), ("::1", False),
                                         ("[::1]", False), ("127.0.0.5", False), ("0.0.0.0", True),
                                         ("::", True), ("192.168.1.7", True)])
def test_non_loopback_hosts_get_a_warning(host, public):
    from app.server import binding

    warning = binding.public_warning(host, 8050)
    assert (warning is not None) == public
    if public:
        assert host in warning and "ssh -L 8050:127.0.0.1:8050" in warning


def test_debug_is_refused_on_a_public_host_before_anything_binds():
    from app.server import binding

    with pytest.raises(scoreviz.ScorevizError, match="--debug with --host 0.0.0.0 refused"):
        binding.check("0.0.0.0", 8050, debug=True)
    with pytest.raises(scoreviz.ScorevizError, match="1 to 65535"):
        binding.check("127.0.0.1", 70000)


def test_refresh_and_port_types():
    from scoreviz import app_options as cli_commands

    assert cli_commands.port_number("8050") == 8050 and cli_commands.refresh_seconds("2.5") == 2.5
    for text in ("nan", "inf", "-inf", "0", "0.1", "1e9", "x"):
        with pytest.raises(Exception):
            cli_commands.refresh_seconds(text)


# ---- export ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def export_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("export-runs")
    make_run(root, "train-only", steps=20, tags=("train",))
    make_run(root, "ft-only", steps=20, tags=("ft", "eval"), momentum=0.9)
    make_foreign(root)
    make_truncated(root, "truncated")
    make_absurd(root, "absurd-all", every_dataset=True)
    return root


def test_runs_with_different_tags_export_together(export_runs, tmp_path):
    out = write_report([export_runs / "train-only", export_runs / "ft-only"], tmp_path / "r.html")
    text = out.read_text()
    for title in ("Statistics over steps (train)", "Statistics over steps (ft)", "Statistics over steps (eval)"):
        assert title in text
    # health: each run under the report's tag where it has it, else under its own (said so)
    assert "<td>train-only</td>" in text and "<td>ft-only (ft)</td>" in text


def _unwritable(tmp_path):
    if os.geteuid() == 0:
        return Path("/proc/scoreviz-report.html")  # not writable even for root
    folder = tmp_path / "read-only"
    folder.mkdir(mode=0o500)
    return folder / "r.html"


@pytest.mark.parametrize("case", ["folder", "missing folder", "parent is a file", "unwritable", "exists"])
def test_bad_out_is_a_scoreviz_error(export_runs, tmp_path, case):
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "old.html").write_text("keep me")
    out = {"folder": tmp_path, "missing folder": tmp_path / "no" / "r.html",
           "parent is a file": tmp_path / "a-file" / "r.html", "unwritable": _unwritable(tmp_path),
           "exists": tmp_path / "old.html"}[case]
    with pytest.raises(scoreviz.ScorevizError, match="--out"):
        write_report([export_runs / "train-only"], out)
    assert (tmp_path / "old.html").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) in (["a-file", "old.html"],
                                                          ["a-file", "old.html", "read-only"])


def test_force_overwrites(export_runs, tmp_path):
    out = tmp_path / "old.html"
    out.write_text("keep me")
    write_report([export_runs / "train-only"], out, force=True)
    assert "train-only" in out.read_text() and list(tmp_path.iterdir()) == [out]


@pytest.mark.slow
def test_export_command_errors_are_one_line(export_runs, tmp_path, subprocess_env):
    (tmp_path / "old.html").write_text("keep me")
    good = str(export_runs / "train-only")
    cases = [([good, str(export_runs / broken)], tmp_path / f"{broken}.html")
             for broken in ("foreign", "truncated", "absurd-all", "missing")]
    cases += [
        ([good], tmp_path),
        ([good], tmp_path / "no" / "c.html"),
        ([good], tmp_path / "old.html"),
    ]
    for run_dirs, out in cases:
        done = scoreviz_cli(subprocess_env, "export", *run_dirs, "--out", str(out))
        assert done.returncode == 1, done.stderr
        assert done.stderr.count("\n") == 1 and done.stderr.startswith("scoreviz: error: "), done.stderr
        assert (Path(run_dirs[-1]).name if len(run_dirs) > 1 else "--out") in done.stderr
    assert (tmp_path / "old.html").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.html"]  # nothing half-written
    done = scoreviz_cli(subprocess_env, "export", good, str(export_runs / "ft-only"),
                        "--out", str(tmp_path / "old.html"), "--force")
    assert done.returncode == 0, done.stderr
    assert "ft-only" in (tmp_path / "old.html").read_text()


# ---- fuzz: values of the right type, chosen at random --------------------------------


STRINGS = ["", "train", "ft", "good-a", "good-b", "linked", "absurd", "foreign", "../..", "/etc/passwd",
           "pos", "neg", "curves", "distribution", "waterfall", "gradients", "health", "moco_m", "loss",
           "pos_mean", "neg_sample_var", "log", "?runs=good-a&view=health", "\u2603", "a" * 300, "%00", "."]


def random_value(rng, component_id, prop):
    from app.server import body
    from app.shell.page import property_kinds
    from app.views import VIEWS

    kind = property_kinds(VIEWS).get((component_id, prop)) or body.BY_PROPERTY.get(prop)
    if rng.random() < 0.1:
        return None
    plain = lambda: rng.choice([rng.choice(STRINGS), rng.choice([0, 7, 0.5, 2 ** 53]),  # noqa: E731
                                [rng.choice(STRINGS) for _ in range(rng.randrange(3))]])
    if isinstance(kind, tuple):  # a panel's store: the kinds of its keys
        runs = [rng.choice(STRINGS) for _ in range(rng.randrange(5))]
        values = {key: random_kind(rng, key_kind) for key, key_kind in kind[1].items() if rng.random() < 0.8}
        return {"runs": runs, "stamps": {r: [1, 2] for r in runs}, "colors": {r: "#123456" for r in runs[:1]}, **values}
    if kind == "values":
        return {rng.choice(["runs", "tag", "stats", "view", "step", "nonsense"]): plain() for _ in range(rng.randrange(4))}
    if kind == "signatures":
        return {rng.choice(STRINGS): rng.choice(STRINGS) for _ in range(rng.randrange(3))}
    return random_kind(rng, kind)


def random_kind(rng, kind):
    """A random value of one of app.server.body's kinds."""
    if kind == "text":
        return rng.choice(STRINGS)
    if kind == "texts":
        return [rng.choice(STRINGS) for _ in range(rng.randrange(4))]
    if kind == "number":
        return rng.choice([0, 1, -1, 0.5, 0.99, 7, 39, 10 ** 6, -(2 ** 53), 2 ** 53, 1e-300])
    if kind == "count":
        return rng.choice([0, 1, 2, 10 ** 9])
    if kind == "flag":
        return rng.choice([True, False])
    if kind == "options":
        return [rng.choice([rng.choice(STRINGS), {"label": "x", "value": rng.choice(STRINGS)}])
                for _ in range(rng.randrange(4))]
    if kind == "figure":
        return rng.choice([{"data": [{"type": "scatter", "x": [0, 1], "y": [1, 2]}], "layout": {}},
                           {"data": []}, {"data": [{"type": "nonsense", "x": "y"}], "layout": {"title": 5}}])
    raise AssertionError(kind)


def test_random_type_correct_requests_never_give_500(runs):
    """Never a 500 for values of the types the page sends: 600 random callback requests."""
    import random

    dash_app = create_app(runs, refresh=60, warm=False)
    client = dash_app.server.test_client()
    rng = random.Random(8)
    # (the export callbacks start Chromium for PNG/SVG: tested with odd figures separately;
    # a callback the browser computes is refused, tested below)
    keys = [k for k, s in dash_app.callback_map.items() if "download" not in k and "callback" in s]
    failures = []
    for i in range(600):
        output = keys[i % len(keys)]
        s = dash_app.callback_map[output]
        body = callback_request(output, [random_value(rng, **_ip(x)) for x in s["inputs"]],
                                [random_value(rng, **_ip(x)) for x in s["state"]])
        body["changedPropIds"] = [f"{x['id']}.{x['property']}" for x in rng.sample(s["inputs"], 1)]
        response = client.post(CALLBACK, data=json.dumps(body), content_type="application/json")
        if response.status_code not in (200, 204):
            failures.append((output[:60], body["inputs"], response.status_code))
        assert SECRET.encode() not in response.data
    assert failures == []
    report("hostile request", what="random callback requests with values of the types the page sends",
           tried=600, result="no 500")


def _ip(item):
    return {"component_id": item["id"], "prop": item["property"]}


def test_any_failure_reading_one_run_stays_with_that_run(runs, monkeypatch):
    """MemoryError, OSError or a bug while reading one run: that run's traces are missing, the others draw."""
    import scoreviz.run

    real_scores = scoreviz.run.Run.scores
    failures = {}

    def scores(self, tag="train"):
        if self.name == "good-b":
            raise failures["good-b"]
        return real_scores(self, tag)

    monkeypatch.setattr(scoreviz.run.Run, "scores", scores)
    for failure in (MemoryError(), OSError(5, "Input/output error"), RuntimeError("a bug")):
        failures["good-b"] = failure
        dash_app = create_app(runs, refresh=60, warm=False)
        client = dash_app.server.test_client()
        body = callback_request(figure_key("curves-graph"), [panel_state(["good-a", "good-b"], tag="train",
                                                                         stats=["pos_mean"], x="step")])
        response = client.post(CALLBACK, data=json.dumps(body), content_type="application/json")
        assert response.status_code == 200, failure
        names = [t["name"] for t in response.get_json()["response"]["curves-graph"]["figure"]["data"]]
        assert names == ["good-a"], failure
        with pytest.raises(scoreviz.ScorevizError, match="good-b"):  # said plainly, as a bad file is
            dash_app.scoreviz_data.scores("good-b", "train")
