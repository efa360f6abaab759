"""`scoreviz demo` end to end at a tiny size: train, record, serve, fetch the page; re-run reuses."""

import signal
import socket
import subprocess
import time
import urllib.request

import pytest

from scoreviz import open_run

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_demo_trains_two_runs_and_serves_them(tmp_path, python, subprocess_env):
    port = free_port()
    demo = subprocess.Popen([python, "-m", "scoreviz.cli", "demo", "--out", str(tmp_path / "demo"),
                             "--minutes", "0.02", "--port", str(port)],
                            env=subprocess_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        for line in demo.stdout:
            lines.append(line)
            if f"http://127.0.0.1:{port}/?runs=baseline&runs=ft" in line:
                break
        assert demo.poll() is None, "".join(lines)
        page = None
        for _ in range(50):  # the server starts right after the line
            try:
                page = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).read().decode()
                break
            except OSError:
                time.sleep(0.2)
        assert page is not None and "scoreviz" in page
        selected = urllib.request.urlopen(f"http://127.0.0.1:{port}/?runs=baseline&runs=ft", timeout=5)
        assert selected.status == 200
        layout = urllib.request.urlopen(f"http://127.0.0.1:{port}/_dash-layout", timeout=5).read().decode()
        assert "runs" in layout
    finally:
        demo.send_signal(signal.SIGINT)
        demo.wait(timeout=30)
    for name in ("baseline", "ft"):
        run = open_run(tmp_path / "demo" / name)
        assert run.tags == ["raw", "ft"] and len(run.scores("raw")) > 0
    assert open_run(tmp_path / "demo" / "ft").config["pos_alpha"] == 2.0

    again = subprocess.run([python, "-m", "scoreviz.cli", "demo", "--out", str(tmp_path / "demo"),
                            "--minutes", "0.02", "--no-serve"], env=subprocess_env, capture_output=True,
                           text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("reusing") == 2
