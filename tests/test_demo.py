"""`scoreviz demo` end to end at a tiny size: it serves at once while both runs train in the
background, Ctrl+C stops the server and the training, a re-run reuses or resumes (issue 11)."""

import json
import os
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


def children(pid):
    """Process ids whose parent is ``pid`` (Linux /proc)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(entry))
            except (OSError, ValueError, IndexError):
                pass
    return out


def recorded_steps(run_dir):
    try:
        return len(open_run(run_dir).steps())
    except ValueError:  # not there yet
        return 0


def start_demo(python, env, out, *options):
    port = free_port()
    demo = subprocess.Popen([python, "-m", "scoreviz.cli", "demo", "--out", str(out), "--port", str(port), *options],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in demo.stdout:
        lines.append(line)
        if f"http://127.0.0.1:{port}/" in line:
            break
    assert demo.poll() is None, "".join(lines)
    return demo, port, lines


def run_table(port) -> str:
    """The run table callback's answer over HTTP, as the page asks for it when it opens."""
    base = f"http://127.0.0.1:{port}"
    deps = json.loads(urllib.request.urlopen(base + "/_dash-dependencies", timeout=30).read())
    spec = next(d for d in deps if "run-table.children" in d["output"])
    outputs = [{"id": o.rsplit(".", 1)[0], "property": o.rsplit(".", 1)[1]} for o in spec["output"].strip(".").split("...")]
    body = {"output": spec["output"], "outputs": outputs, "inputs": [dict(i, value=None) for i in spec["inputs"]],
            "state": [dict(s, value=None) for s in spec["state"]], "changedPropIds": ["refresh.n_intervals"]}
    request = urllib.request.Request(base + "/_dash-update-component", json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
    return urllib.request.urlopen(request, timeout=60).read().decode()


def test_demo_serves_at_once_while_both_runs_train_and_ctrl_c_stops_both(tmp_path, python, subprocess_env):
    out = tmp_path / "demo"
    demo, port, lines = start_demo(python, subprocess_env, out, "--epochs", "30")
    try:
        assert any("in the background" in line for line in lines)
        page = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30).read().decode()
        assert "scoreviz" in page
        # Both runs are being recorded, by two training processes, while the server answers.
        deadline = time.monotonic() + 180
        while not all(recorded_steps(out / name) for name in ("baseline", "ft")):
            assert time.monotonic() < deadline, "the runs never recorded a step"
            time.sleep(0.5)
        trainers = children(demo.pid)
        assert len(trainers) == 2
        assert urllib.request.urlopen(f"http://127.0.0.1:{port}/_dash-layout", timeout=30).status == 200
        table = run_table(port)  # the run table, as the page asks for it
        assert '"data-run":"baseline"' in table and '"data-run":"ft"' in table
        assert not (out / "baseline" / "results.json").exists() or json.loads(
            (out / "baseline" / "results.json").read_text())["epoch"] < 30  # still training
    finally:
        demo.send_signal(signal.SIGINT)  # what Ctrl+C sends
        rest = demo.communicate(timeout=60)[0]
    assert demo.returncode == 0, rest
    assert "resumes" in rest
    for pid in trainers:
        assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"
    for name in ("baseline", "ft"):
        assert (out / name / "scores.h5.lock").read_text() == ""  # the record was closed, not abandoned
        assert len(open_run(out / name).scores("raw")) > 0


def test_demo_trains_to_the_end_then_reuses(tmp_path, python, subprocess_env):
    out = tmp_path / "demo"
    done = subprocess.run([python, "-m", "scoreviz.cli", "demo", "--out", str(out), "--epochs", "1", "--no-serve"],
                          env=subprocess_env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    baseline, ft = open_run(out / "baseline"), open_run(out / "ft")
    assert baseline.tags == ["raw"] and ft.tags == ["raw", "ft"]  # no "ft" copy of the raw scores in the baseline
    assert ft.config["pos_alpha"] == 2.0 and baseline.config.get("pos_alpha") is None
    assert json.loads((out / "ft" / "results.json").read_text())["epoch"] == 1

    demo, port, lines = start_demo(python, subprocess_env, out, "--epochs", "1")
    try:
        assert sum("reusing" in line for line in lines) == 2
        assert not children(demo.pid)  # nothing to train
        assert urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30).status == 200
    finally:
        demo.send_signal(signal.SIGINT)
        demo.communicate(timeout=60)
    assert demo.returncode == 0
