"""Several run folders at once: `scoreviz serve runs/ other/` and globs, ids kept apart,
nothing served from outside the folders given."""

import json
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest

pytest.importorskip("torch")
from app.runs import RefusedRunId, RunData  # noqa: E402
from scoreviz.cli import build_parser  # noqa: E402

from tests.sweep_runs import write_run  # noqa: E402
from tests.test_server_faults import free_port  # noqa: E402


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    base = tmp_path_factory.mktemp("roots")
    write_run(base / "runs" / "a", {"where": "runs"}, [0, 1], [0.0, 1.0])
    write_run(base / "runs" / "b", {"where": "runs"}, [0, 1], [0.0, 1.0])
    write_run(base / "other" / "a", {"where": "other"}, [0, 1, 2], [0.0, 1.0, 2.0])
    write_run(base / "private" / "secret", {"where": "private"}, [0], [0.0])  # beside, not given
    (base / "other" / "leak").mkdir()
    (base / "other" / "leak" / "scores.h5").symlink_to(base / "private" / "secret" / "scores.h5")
    return base


def test_serve_takes_several_folders():
    assert build_parser().parse_args(["serve", "runs/", "other/", "--port", "9000"]).runs_dir == ["runs/", "other/"]
    assert build_parser().parse_args(["serve", "runs/"]).runs_dir == ["runs/"]


def test_two_folders_holding_runs_of_the_same_name(roots):
    data = RunData([roots / "runs", roots / "other"], warm=False)
    assert data.run_ids() == ["other/a", "other/leak", "runs/a", "runs/b"]
    assert data.info("runs/a")["config"] == {"where": "runs"} and data.info("other/a")["steps"] == 3
    assert RunData(roots / "runs", warm=False).run_ids() == ["a", "b"]  # one folder: ids as before


def test_a_glob_names_the_folders(roots):
    data = RunData(str(roots / "[or]*"), warm=False)  # other, runs; not private
    assert data.run_ids() == ["other/a", "other/leak", "runs/a", "runs/b"]
    with pytest.raises(ValueError, match="matches no folder"):
        RunData(str(roots / "nothing*"), warm=False)


@pytest.mark.parametrize("bad", ["private/secret", "../roots0", "runs/../private/secret", "/etc", "runs/../.."])
def test_nothing_outside_the_folders_given(roots, bad):
    with pytest.raises(RefusedRunId):
        RunData([roots / "runs", roots / "other"], warm=False).scores_file(bad)


def test_a_link_out_of_the_folders_is_refused(roots):
    data = RunData([roots / "runs", roots / "other"], warm=False)
    with pytest.raises(RefusedRunId, match="link"):
        data.scores_file("other/leak")
    assert "refused" in data.info("other/leak")["error"]


def _call(base, deps, output_prefix, inputs, state):
    """One callback of a running server over HTTP, as the browser sends it."""
    spec = next(d for d in deps if d["output"].lstrip(".").startswith(output_prefix))
    inputs = list(inputs) + [None] * (len(spec["inputs"]) - len(inputs))  # inputs not given: not set yet
    outputs = [{"id": o.rsplit(".", 1)[0], "property": o.rsplit(".", 1)[1]}
               for o in spec["output"].strip(".").split("...")]
    body = {"output": spec["output"], "outputs": outputs if spec["output"].startswith("..") else outputs[0],
            "inputs": [dict(i, value=v) for i, v in zip(spec["inputs"], inputs)],
            "state": [dict(s, value=v) for s, v in zip(spec["state"], state)],
            "changedPropIds": [f"{spec['inputs'][-1]['id']}.{spec['inputs'][-1]['property']}"]}
    request = urllib.request.Request(base + "/_dash-update-component", json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())["response"]


@pytest.mark.slow
def test_a_server_of_two_folders(roots, subprocess_env):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "scoreviz.cli", "serve", str(roots / "runs"),
                               str(roots / "other"), "--port", str(port), "--refresh", "60"],
                              env=subprocess_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                layout = urllib.request.urlopen(base + "/_dash-layout", timeout=10).read().decode()
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, "the server did not start"
                time.sleep(0.2)
        assert "secret" not in layout
        deps = json.loads(urllib.request.urlopen(base + "/_dash-dependencies", timeout=10).read())
        picked = ["runs/a", "other/a", "private/secret", "runs/../private/secret", "other/leak"]
        spec = next(d for d in deps if d["output"].startswith("..url.search"))
        given = {"url": "?" + "&".join(f"runs={r}" for r in picked), "refresh": 0, "selection-refresh": 0}
        answer = _call(base, deps, "url.search", [given.get(i["id"]) for i in spec["inputs"]], [None, None])
        # the picker lists the runs of the folders given
        assert [o["value"] for o in answer["run-picker"]["options"]] == ["other/a", "other/leak", "runs/a", "runs/b"]
        # a run outside them is dropped from the URL, said so; one whose file links out is not drawn, said so
        assert answer["run-picker"]["value"] == ["runs/a", "other/a", "other/leak"]
        dropped = json.dumps(answer["url-notice"])
        assert dropped.count("refused") == 2 and "private/secret" in dropped
        assert "other/leak: " in json.dumps(answer["notice"]) and "refused" in json.dumps(answer["notice"])
        assert sorted(answer["curves-curves-state"]["data"]["runs"]) in (["other/a", "runs/a"], [])
        assert "secret" not in json.dumps(answer["run-picker"])
    finally:
        server.terminate()
        server.wait(30)
