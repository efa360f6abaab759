"""A real `scoreviz serve` over real HTTP for the fault suite and the benchmarks: the server in a
subprocess, the bodies the page posts (callbacks found in the server's own /_dash-dependencies
by the components they read), and a probe that asks for a cheap page again and again beside
whatever else is sent, keeping its answers' latencies."""

import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CALLBACK = "/_dash-update-component"
LAUNCH = r'''
import json, sys
from app import serve
serve(sys.argv[1], port=int(sys.argv[2]), refresh=60, **json.loads(sys.argv[3]))
'''


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`app.serve` in a subprocess on 127.0.0.1 (with ``limits``, or none: the defaults); ``prelude``:
    Python run in that process first."""

    def __init__(self, runs_dir, limits=None, prelude=""):
        self.port = free_port()
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
                   OMP_NUM_THREADS="1")
        self.process = subprocess.Popen([sys.executable, "-c", prelude + LAUNCH, str(runs_dir), str(self.port),
                                         json.dumps(limits or {})], env=env, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if self.get("/")[0] == 200:
                    break
            except OSError:
                if self.process.poll() is not None:
                    raise RuntimeError(self.process.stdout.read()) from None
                time.sleep(0.2)
        else:
            raise RuntimeError("the server did not start")
        # the callbacks the server answers (not those the browser computes itself)
        self.dependencies = [d for d in json.loads(self.get("/_dash-dependencies")[1])
                             if not d.get("clientside_function")]

    def connection(self, timeout):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def get(self, path, timeout=30):
        conn = self.connection(timeout)
        try:
            conn.request("GET", path, headers={"Host": f"127.0.0.1:{self.port}"})
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def post(self, body: bytes, timeout=60):
        conn = self.connection(timeout)
        try:
            conn.request("POST", CALLBACK, body=body, headers={"Host": f"127.0.0.1:{self.port}",
                                                               "Content-Type": "application/json"})
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def callbacks_reading(self, component, prop="value"):
        """The callbacks that take ``component.prop`` as an input."""
        return [d for d in self.dependencies
                if any(i["id"] == component and i["property"] == prop for i in d["inputs"])]

    def stop(self):
        self.process.kill()
        self.process.wait(timeout=20)


def callback_body(dependency, values: dict) -> bytes:
    """The body the page posts for ``dependency``, the inputs and state named in ``values``
    (``"component.prop"``) given, every other one None (as before the page has set it)."""
    def item(declared):
        if declared["id"].startswith("{"):  # a pattern-matching input: the list of its components
            return []
        return dict(declared, value=values.get(f"{declared['id']}.{declared['property']}"))

    output = dependency["output"]
    outputs = [dict(zip(("id", "property"), part.rsplit(".", 1))) for part in output.strip(".").split("...")]
    first = dependency["inputs"][0]
    return json.dumps({
        "output": output, "outputs": outputs if output.startswith("..") else outputs[0],
        "inputs": [item(i) for i in dependency["inputs"]], "state": [item(s) for s in dependency["state"]],
        "changedPropIds": [f"{first['id']}.{first['property']}"]}).encode()


class Probe:
    """Asks the server for its page every 0.1 s on a new connection; the slowest answer, and when
    each answer came (time.monotonic())."""

    def __init__(self, server, path="/"):
        self.server, self.path = server, path
        self.latencies, self.answered_at, self.failures = [], [], []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            start = time.monotonic()
            try:
                status, _ = self.server.get(self.path, timeout=30)
                if status != 200:
                    self.failures.append(status)
                else:
                    self.answered_at.append(time.monotonic())
            except OSError as err:
                self.failures.append(repr(err))
            self.latencies.append(time.monotonic() - start)
            self._stop.wait(0.1)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(60)

    @property
    def slowest(self):
        return max(self.latencies, default=float("inf"))


def post_timed(server, body, timeout=60):
    start = time.monotonic()
    try:
        status, raw = server.post(body, timeout=timeout)
    except OSError as err:  # no answer within the timeout
        status, raw = repr(err), b""
    return status, raw, time.monotonic() - start



def responses(raw):
    """{"component.prop": value} of a callback's answer."""
    answer = json.loads(raw).get("response", {})
    return {f"{component}.{prop}": value for component, props in answer.items() for prop, value in props.items()}
