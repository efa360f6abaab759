"""`scoreviz serve` never imports torch: reading runs and serving the page needs h5py, pandas and
Dash only, and torch alone took 2.5 to 4 s of a server's start (issue 12, first page < 2 s).
Checked in a fresh interpreter, through the serve path's own modules and real requests."""

import subprocess

import numpy as np

from tests.sweep_runs import write_run

SERVE_PATH = """
import sys
from scoreviz.cli import build_parser
from app import cli_commands, create_app
from app.server import serving
import scoreviz

args = build_parser().parse_args(["serve", sys.argv[1]])
assert args.command == "serve"
dash_app = create_app(sys.argv[1], refresh=60, warm=False)
client = dash_app.server.test_client()
assert client.get("/").status_code == 200 and client.get("/_dash-layout").status_code == 200
key = next(k for k in dash_app.callback_map if "run-table.children" in k)
spec = dash_app.callback_map[key]
outputs = [{"id": o.rsplit(".", 1)[0], "property": o.rsplit(".", 1)[1]} for o in key.strip(".").split("...")]
body = {"output": key, "outputs": outputs,
        "inputs": [dict(i, value=None) for i in spec["inputs"]],
        "state": [dict(s, value=None) for s in spec["state"]],
        "changedPropIds": ["refresh.n_intervals"]}
response = client.post("/_dash-update-component", json=body)
assert response.status_code == 200 and "a-run" in response.get_data(as_text=True), response.get_data(as_text=True)
run = scoreviz.open_run(sys.argv[1] + "/a-run")
assert len(run.scores("train", max_points=10)) == 10 and scoreviz.open_runs(sys.argv[1], "neg_mean").shape[0]
print(sorted(m for m in ("torch", "scoreviz.stats", "scoreviz.embeddings", "scoreviz.recorder") if m in sys.modules))
"""


def test_serving_and_reading_runs_never_imports_torch(tmp_path, python, subprocess_env):
    steps = np.arange(50)
    write_run(tmp_path / "a-run", {"moco_m": 0.99}, steps, np.sin(steps), scalars={"loss": steps * 1.0})
    out = subprocess.run([python, "-c", SERVE_PATH, str(tmp_path)], env=subprocess_env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout + out.stderr


EXIT_WHILE_READING = """
import sys
import h5py
import numpy as np
from app.runs import background as app_data

with h5py.File(sys.argv[2], "w") as f:
    f["flags"] = np.array([True, False])  # reading a bool needs h5py's converters, gone after its exit handler
real_stop = app_data._stop_all


def stop_and_read():  # what the background reader may still be doing when the interpreter exits
    real_stop()
    with h5py.File(sys.argv[2], "r") as f:
        print("read at exit:", f["flags"][:].tolist(), flush=True)


app_data._stop_all = stop_and_read
from app import create_app

dash_app = create_app(sys.argv[1], refresh=60)
client = dash_app.server.test_client()
key = next(k for k in dash_app.callback_map if "run-table.children" in k)
spec = dash_app.callback_map[key]
outputs = [{"id": o.rsplit(".", 1)[0], "property": o.rsplit(".", 1)[1]} for o in key.strip(".").split("...")]
body = {"output": key, "outputs": outputs, "inputs": [dict(i, value=None) for i in spec["inputs"]],
        "state": [dict(s, value=None) for s in spec["state"]], "changedPropIds": ["refresh.n_intervals"]}
assert client.post("/_dash-update-component", json=body).status_code == 200  # the background starts reading
"""


def test_the_background_reader_stops_before_h5py_tears_down_at_exit(tmp_path, python, subprocess_env):
    """h5py's own exit handler used to run first, while the background reader could be inside h5py:
    a crash (SIGSEGV) or "Failed to find converter" lines at exit. Checked by reading a bool
    dataset where the reader stops: it reads only while h5py is whole."""
    steps = np.arange(50)
    for i in range(20):
        write_run(tmp_path / "runs" / f"run{i:02d}", {"seed": i}, steps, np.sin(steps + i))
    out = subprocess.run([python, "-c", EXIT_WHILE_READING, str(tmp_path / "runs"), str(tmp_path / "flags.h5")],
                         env=subprocess_env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "read at exit: [True, False]" in out.stdout and "converter" not in out.stderr, out.stdout + out.stderr
