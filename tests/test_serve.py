"""`scoreviz serve` as a terminal shows it: one line with the URL, request logs only with --verbose,
served by waitress; Ctrl+C stops it cleanly (issue 11, defect 8)."""

import http.client
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from test_app import make_run

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(port, path):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.getheader("Server"), response.read()
    finally:
        conn.close()


def serve_and_stop(runs_dir, env, *options, requests=12):
    """Start `scoreviz serve`, make `requests` requests, press Ctrl+C; (exit code, output lines, statuses)."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "scoreviz.cli", "serve", str(runs_dir), "--port", str(port),
                                *options], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                first = get(port, "/")
                break
            except OSError:
                assert process.poll() is None and time.monotonic() < deadline, process.stdout.read()
                time.sleep(0.2)
        answers = [first] + [get(port, path) for path in ["/_dash-layout", "/_dash-dependencies",
                                                          "/assets/style.css"] * ((requests - 1) // 3)]
    finally:
        process.send_signal(signal.SIGINT)
        output = process.communicate(timeout=30)[0]
    return process.returncode, output.splitlines(), answers


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve-runs")
    make_run(root, "a", steps=5)
    return root


def test_serve_prints_only_the_url_and_stops_on_ctrl_c(runs, subprocess_env):
    code, lines, answers = serve_and_stop(runs, subprocess_env)
    assert [status for status, _, _ in answers] == [200] * len(answers)
    assert {server for _, server, _ in answers} == {"scoreviz"}  # waitress, not Werkzeug's development server
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"scoreviz: serving {runs} on http://127.0.0.1:") and "Ctrl+C" in lines[0]
    assert code == 0


def test_verbose_logs_one_line_per_request(runs, subprocess_env):
    code, lines, answers = serve_and_stop(runs, subprocess_env, "--verbose", requests=7)
    logged = [line for line in lines if " GET " in line]
    assert len(logged) >= len(answers), lines  # the page's own callbacks are not made here
    assert any("GET /_dash-layout 200" in line for line in logged)
    assert all(line.startswith("127.0.0.1 ") and line.endswith(" ms") for line in logged)
    assert code == 0
