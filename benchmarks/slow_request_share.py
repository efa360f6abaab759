"""Does one slow request delay the others by more than its share? A probe's latency beside slow requests.

    nice -n 5 python benchmarks/slow_request_share.py [--runs-dir /tmp/scoreviz-bench] [--steps 50000]
        [--seconds 20]

Serves the 8 large runs of benchmarks/app_latency.py (written there unless already there) with
`scoreviz serve`'s defaults in a subprocess, over real HTTP. A probe asks for the page every
0.1 s on a new connection, alone and then beside clients that each send a slow request again
and again, as soon as the last is answered: the curves figure of the 8 runs (about half a second
of server work each, every time: the figure is rebuilt per request), or a filter that froze the
server before issue 25 (`(.|.)*#`), typed into the run filter. Prints a markdown table: each
request's own time, the probe's median, 95th percentile and slowest answer, and the probe's
median over its median alone. A request holding the server's one Python lock (the GIL) for its
whole length, as Python's `re` did, delays the probe by all of it; one that shares it delays the
probe in proportion to the requests running beside it (k slow clients: k + 1 share the lock).
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlencode

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from app_latency import ensure_runs  # noqa: E402
from http_probe import Probe, Server, callback_body, post_timed, responses  # noqa: E402


def curves_body(server, names):
    """The body the page posts for the curves figure of ``names``, as the page's state gives it."""
    [from_url] = server.callbacks_reading("url", "search")
    search = "?" + urlencode([("runs", n) for n in names] + [("view", "curves")])
    for _ in range(600):  # the runs are read in the background first
        status, raw, _ = post_timed(server, callback_body(from_url, {"url.search": search}), timeout=120)
        if status == 200 and b"in the background" not in raw:
            break
        time.sleep(0.5)
    given = responses(raw)
    for dependency in server.dependencies:
        inputs = [f"{i['id']}.{i['property']}" for i in dependency["inputs"]]
        if "curves-graph.figure" in dependency["output"] and all(i in given for i in inputs):
            return callback_body(dependency, {i: given[i] for i in inputs})
    raise RuntimeError("no curves panel in the page's answer")


def filter_body(server):
    """A filter that backtracks in Python's re, typed into the run filter (its first callback)."""
    return callback_body(server.callbacks_reading("run-filter")[0], {"run-filter.value": "(.|.)*#"})


def beside(server, body, clients: int, seconds: float):
    """The probe's latencies while ``clients`` threads post ``body`` back to back; and the posts' own."""
    stop, own = threading.Event(), []

    def client():
        while not stop.is_set():
            status, _, took = post_timed(server, body, timeout=120)
            if status != 200:
                raise RuntimeError(f"the slow request was answered {status}")
            own.append(took)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    time.sleep(1.0)  # the clients under way before the probe starts
    with Probe(server) as probe:
        time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join(120)
    return probe, own


def row(what, probe, own, alone_median):
    lat = np.asarray(probe.latencies) * 1000
    own_text = f"{np.median(own) * 1000:,.0f} ms ({len(own)} sent)" if own else "-"
    ratio = np.median(lat) / alone_median if alone_median else 1.0
    failed = f", {len(probe.failures)} failed" if probe.failures else ""
    return (f"| {what} | {own_text} | {np.median(lat):,.1f} ms | {np.percentile(lat, 95):,.1f} ms | "
            f"{lat.max():,.1f} ms ({len(lat)} probes{failed}) | {ratio:.1f}x |")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs-dir", default="/tmp/scoreviz-bench", help="where the runs are (written if missing)")
    parser.add_argument("--steps", type=int, default=50_000, help="recorded steps a run (default 50,000)")
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds the probe runs in each case")
    args = parser.parse_args(argv)
    root = Path(args.runs_dir) / f"steps{args.steps}"
    names = ensure_runs(root, args.steps)
    server = Server(root)
    try:
        slow = curves_body(server, names)
        hostile = filter_body(server)
        lines = ["| beside the probe | its own time (median) | probe median | probe 95th pct | probe slowest "
                 "| probe median / alone |", "|---|---:|---:|---:|---:|---:|"]
        probe, _ = beside(server, slow, 0, args.seconds)
        alone = float(np.median(probe.latencies) * 1000)
        lines.append(row("nothing (the probe alone)", probe, [], alone))
        for clients in (1, 2, 4):
            probe, own = beside(server, slow, clients, args.seconds)
            lines.append(row(f"{clients} client(s) drawing the curves of 8 runs x {args.steps:,} steps, "
                             f"back to back", probe, own, alone))
        probe, own = beside(server, hostile, 1, args.seconds)
        lines.append(row("1 client typing the filter (.|.)*#, back to back", probe, own, alone))
    finally:
        server.stop()
    print("\n".join(lines))


if __name__ == "__main__":
    main()
