"""The sweep scenario of benchmarks/app_latency.py: scoreviz and TensorBoard on one sweep.

    nice -n 10 python benchmarks/app_latency.py --sweep [--runs 1000] [--steps 10000] [--workers 2]

Writes N runs of S steps: 5 momentum values x N/5 seeds, one tag, 100-bin
positive and negative histograms, 20 layers of gradient norms, two scalars,
through scoreviz.store's writer, in --workers processes. The same statistics
go to TensorBoard event files (SummaryWriter.add_scalar for pos_mean, neg_mean,
neg_sample_var and loss; add_histogram_raw, add_histogram's form for counts
already binned, for the pos and neg histograms, every step).

Then, each server in its own process on 127.0.0.1, the clock starting at its
launch:

- scoreviz (`python -m app.cli_commands serve`, its header index in a new
  temporary folder): launch until the first page is served (the page shell and
  the run table's first page; the headers are read in the background), then
  selecting 50 runs (10 of each momentum; the time until the background has
  read them all), the curves of the 50 runs (3 statistics) and the same grouped
  by moco_m (5 groups, std bands), each twice, then until the background has
  read every run's header (the table lists every config); its peak RSS
  (VmHWM); then a restart on the same header index, launch until its first page;
- in this process: every run's header read in one thread (a RunData without
  the index), and app.runs.RunData.grouped_curves for the 50 runs and 3
  statistics, cold (a new RunData: nothing cached, though the OS may hold the
  files in its page cache) and warm (the same call again);
- TensorBoard (`tensorboard --logdir`, defaults): the time until its scalars
  API returns every step of neg_mean for all 50 runs, one more round of
  the 50 requests (warm), and its peak RSS (its processes summed).

Prints a markdown table. Needs about 2.9 KB per step per run for scoreviz and
3.6 KB for TensorBoard on disk; the free space is checked first.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from app.shell.page import ASK_AGAIN_MS, SELECTION_AGAIN_MS
from benchmarks.app_latency import BINS, score_rows, write_run

MOMENTA = (0.9, 0.99, 0.995, 0.999, 0.9999)
SELECTED_PER_GROUP = 10
STATS = ["pos_mean", "neg_mean", "neg_sample_var"]
# Measured: 1.4 KB per step in the file, but the store keeps disk blocks reserved past the
# end of a closed file on this file system (2.8 KB per step allocated); TensorBoard 3.6 KB.
SCOREVIZ_BYTES_PER_STEP, TENSORBOARD_BYTES_PER_STEP = 2900, 3600


def run_names(n_runs: int) -> list:
    """(name, momentum, seed) of each run: seeds within each momentum value."""
    return [(f"m{MOMENTA[i % len(MOMENTA)]}-s{i // len(MOMENTA)}", MOMENTA[i % len(MOMENTA)], i // len(MOMENTA))
            for i in range(n_runs)]


def _write_both(job):
    root, tb_root, name, momentum, seed, steps = job
    os.nice(0)  # inherits the caller's niceness (run the script under nice -n 10)
    marker = Path(root) / name / f".complete-{steps}"
    if not marker.exists():
        if (Path(root) / name / "scores.h5").exists():
            (Path(root) / name / "scores.h5").unlink()
        write_run(Path(root) / name, steps, momentum, seed, tags=("train",), layers=20,
                  config={"moco_m": momentum, "seed": seed, "lr": 0.03, "arch": "resnet18"})
        marker.touch()
    if tb_root is not None:
        write_events(Path(tb_root) / name, steps, momentum, seed)
    return name


def write_events(folder: Path, steps: int, momentum: float, seed: int):
    """The same run as TensorBoard event files (skipped when already complete)."""
    marker = folder / f".complete-{steps}"
    if marker.exists():
        return
    shutil.rmtree(folder, ignore_errors=True)
    from torch.utils.tensorboard import SummaryWriter

    rng = np.random.default_rng(seed)
    edges = np.linspace(-1, 1, BINS + 1)
    writer = SummaryWriter(str(folder), max_queue=1000, flush_secs=600)
    for start in range(0, steps, 5000):
        s = np.arange(start, min(start + 5000, steps))
        stats = score_rows(rng, s, steps, momentum)
        loss = 8 - 2 * s / steps
        for i, step in enumerate(s.tolist()):
            for name in STATS:
                writer.add_scalar(name, float(stats[name][i]), step)
            writer.add_scalar("loss", float(loss[i]), step)
            for kind in ("pos", "neg"):
                counts = stats[f"{kind}_hist"][i]
                mean, var = stats[f"{kind}_mean"][i], stats[f"{kind}_var"][i]
                n = float(counts.sum())
                writer.add_histogram_raw(f"{kind}_scores", min=float(stats[f"{kind}_min"][i]),
                                         max=float(stats[f"{kind}_max"][i]), num=n, sum=float(mean * n),
                                         sum_squares=float((var + mean ** 2) * n),
                                         bucket_limits=edges[1:].tolist(), bucket_counts=counts.tolist(),
                                         global_step=step)
    writer.close()
    marker.touch()


def generate(root: Path, tb_root, n_runs: int, steps: int, workers: int):
    from tqdm import tqdm

    jobs = [(str(root), None if tb_root is None else str(tb_root), name, m, seed, steps)
            for name, m, seed in run_names(n_runs)]
    start = time.perf_counter()
    with ProcessPoolExecutor(workers) as pool:
        for _ in tqdm(pool.map(_write_both, jobs, chunksize=4), total=len(jobs), desc="writing the sweep",
                      file=sys.stderr):
            pass
    return time.perf_counter() - start


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url, data=None, timeout=600):
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"} if data else {})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.read()


def _wait_up(url, proc, limit=600):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: the server exited with {proc.returncode}")
        try:
            _get(url, timeout=5)
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{url}: not up after {limit} s")


def peak_rss(pid: int) -> int:
    """Peak resident set size (VmHWM) of a process and its children, in bytes."""
    import psutil

    total = 0
    for proc in [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]:
        try:
            for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


class DashClient:
    """Calls a running Dash server's callbacks over HTTP, built from its /_dash-dependencies."""

    def __init__(self, base):
        self.base = base
        self.deps = json.loads(_get(base + "/_dash-dependencies"))

    def call(self, output_prefix, inputs, state=()):
        spec = next(d for d in self.deps if d["output"].lstrip(".").startswith(output_prefix))
        key = spec["output"]
        # the inputs and states not given are sent as None (a control the page has not set)
        inputs = list(inputs) + [None] * (len(spec["inputs"]) - len(inputs))
        state = list(state) + [None] * (len(spec["state"]) - len(state))
        outputs = [{"id": o.rsplit(".", 1)[0], "property": o.rsplit(".", 1)[1]} for o in key.strip(".").split("...")]
        body = {"output": key, "outputs": outputs if key.startswith("..") else outputs[0],
                "inputs": [dict(i, value=v) for i, v in zip(spec["inputs"], inputs)],
                "state": [dict(s, value=v) for s, v in zip(spec["state"], state)],
                "changedPropIds": [f"{spec['inputs'][0]['id']}.{spec['inputs'][0]['property']}"]}
        start = time.perf_counter()
        raw = _get(self.base + "/_dash-update-component", json.dumps(body).encode())
        return time.perf_counter() - start, len(raw), json.loads(raw).get("response", {})

    def state(self, search, asked=0):
        """The page's state callback (app.shell.state) for the URL ``search``, as the page calls it
        when it opens (every control at its default, ``asked`` ticks of the selection-refresh)."""
        spec = next(d for d in self.deps if d["output"].startswith("..url.search"))
        given = {"url": search, "refresh": 0, "selection-refresh": asked}
        return self.call("..url.search", [given.get(i["id"]) for i in spec["inputs"]])


def _launch(root: Path, cache: Path):
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]), SCOREVIZ_CACHE_DIR=str(cache))
    launched = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "app.cli_commands", "serve", str(root), "--port", str(port)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return f"http://127.0.0.1:{port}", proc, launched


def _first_page(base, proc, launched, out):
    """Launch until the page shell and the run table's first page are served: what a browser opening
    the app waits for before it shows the runs."""
    _wait_up(base + "/_dash-dependencies", proc)  # answered without reading any run
    out["up"] = time.perf_counter() - launched
    start = time.perf_counter()  # the page shell: the runs found on disk, the headers read so far
    page_bytes = sum(len(_get(base + p)) for p in ("/", "/_dash-layout", "/_dash-dependencies"))
    out["page"], out["page_bytes"] = time.perf_counter() - start, page_bytes
    client = DashClient(base)
    out["table"], out["table_bytes"], payload = client.call("run-table.children", [0, "", []])
    out["first_page"] = time.perf_counter() - launched

    def until_complete():
        # the table's rows show their names at once, their config once the background has read
        # their headers; the page asks again every ASK_AGAIN_MS until then, as here, while the
        # researcher goes on (the caller joins this thread)
        answer = payload
        while not answer.get("table-refresh", {}).get("disabled", True):
            time.sleep(ASK_AGAIN_MS / 1000)
            _, _, answer = client.call("run-table.children", [0, "", []])
        out["complete"] = time.perf_counter() - launched

    client.table_poll = threading.Thread(target=until_complete)
    client.table_poll.start()
    return client


def measure_scoreviz(root: Path, selected: list) -> dict:
    """The server started twice: first with an empty header index (the sweep never served
    before), then again (a restart: the index the first start wrote)."""
    import tempfile

    cache = Path(tempfile.mkdtemp(prefix="scoreviz-bench-cache-"))
    base, proc, launched = _launch(root, cache)
    out = {}
    try:
        client = _first_page(base, proc, launched, out)
        start = time.perf_counter()  # 50 runs picked at once, as a researcher would
        asked = 0
        search = "?" + "&".join(f"runs={r}" for r in selected) + "".join(f"&stats={s}" for s in STATS)
        while True:  # the selected runs are read in the background; the answer waits a second at most
            t, _, payload = client.state(search, asked)
            out.setdefault("select", t)
            if "reading" not in json.dumps(payload.get("notice", {})):
                break
            # as the page asks again (selection-refresh, one tick per answer) while runs are being read
            asked = payload["selection-refresh"]["max_intervals"]
            time.sleep(SELECTION_AGAIN_MS / 1000)
        out["read50"] = time.perf_counter() - start
        curves = payload["curves-curves-state"]["data"]
        assert len(curves["runs"]) == len(selected)
        out["curves_cold"], out["curves_bytes"], _ = client.call("curves-graph.figure", [curves])
        out["to_curves"] = time.perf_counter() - launched  # the first time the 50 runs' curves are served
        out["curves_warm"], _, _ = client.call("curves-graph.figure", [curves])
        client.table_poll.join()
        grouped = dict(curves, group=["moco_m"], band="std")  # the Curves view grouped by moco_m, std bands
        out["grouped_cold"], _, _ = client.call("curves-graph.figure", [grouped])
        out["grouped_warm"], _, _ = client.call("curves-graph.figure", [grouped])
        out["table_warm"], _, _ = client.call("run-table.children", [0, "", []])
        while True:  # the background reads every header; the table says how many are left
            _, _, payload = client.call("run-table.children", [0, "", []], [None, 0])
            if "reading" not in str(payload.get("last-refresh", {}).get("children", "")):
                break
            time.sleep(1.0)  # a page refreshes every 5 s; background reads wait while it asks
        out["all_headers"] = time.perf_counter() - launched
        out["rss"] = peak_rss(proc.pid)
    finally:
        proc.terminate()
        proc.wait(30)
    base, proc, launched = _launch(root, cache)
    try:
        restart = {}
        _first_page(base, proc, launched, restart).table_poll.join()
        out["restart"] = restart
    finally:
        proc.terminate()
        proc.wait(30)
        shutil.rmtree(cache, ignore_errors=True)
    return out


def measure_grouped_path(root: Path, selected: list) -> dict:
    from app.runs import RunData

    data = RunData(root, warm=False, index=False)
    out = {}
    start = time.perf_counter()
    ids = data.run_ids()
    assert not [r for r in ids if data.light_info(r).get("error")]
    out["headers"] = time.perf_counter() - start  # what the first page reads: every run's header
    for label in ("cold", "warm"):
        start = time.perf_counter()
        for stat in STATS:
            curves = data.grouped_curves(selected, "train", stat, by=["moco_m"], band="std")
        out[label] = time.perf_counter() - start
    out["groups"] = [c.group.label for c in curves]
    return out


def measure_tensorboard(tb_root: Path, selected: list, steps: int) -> dict:
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    exe = Path(sys.executable).with_name("tensorboard")
    launched = time.perf_counter()
    proc = subprocess.Popen([str(exe), "--logdir", str(tb_root), "--host", "127.0.0.1", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    out = {}
    try:
        _wait_up(base + "/data/runs", proc)
        out["up"] = time.perf_counter() - launched
        done = set()
        while len(done) < len(selected):  # until every selected run's neg_mean reaches the last step
            for name in selected:
                if name in done:
                    continue
                try:
                    points = json.loads(_get(f"{base}/data/plugin/scalars/scalars?run={name}&tag=neg_mean"))
                except OSError:
                    points = []
                if points and points[-1][1] == steps - 1:
                    done.add(name)
                    out.setdefault("first", time.perf_counter() - launched)
            if len(done) < len(selected):
                time.sleep(0.2)
                if time.perf_counter() - launched > 3600:
                    out["timeout"] = True
                    break
        out["all50"] = time.perf_counter() - launched
        start = time.perf_counter()
        for name in selected:
            _get(f"{base}/data/plugin/scalars/scalars?run={name}&tag=neg_mean")
        out["warm50"] = time.perf_counter() - start
        out["rss"] = peak_rss(proc.pid)
    finally:
        for child in _children(proc.pid):
            child.terminate()
        proc.terminate()
        proc.wait(30)
    return out


def _children(pid):
    import psutil

    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def _disk_check(root: Path, n_runs: int, steps: int, tensorboard: bool):
    need = n_runs * steps * (SCOREVIZ_BYTES_PER_STEP + (TENSORBOARD_BYTES_PER_STEP if tensorboard else 0))
    root.mkdir(parents=True, exist_ok=True)
    need -= sum(p.stat().st_blocks * 512 for p in root.rglob("*") if p.is_file())  # a kept sweep is reused
    free = shutil.disk_usage(root).free
    print(f"the sweep needs about {need / 1e9:.1f} GB; {free / 1e9:.1f} GB free", file=sys.stderr)
    if need > free - 5e9:
        raise SystemExit(f"not enough disk for {n_runs} x {steps} steps (needs {need / 1e9:.1f} GB, leaving 5 GB "
                         f"free); try fewer --runs or --steps")


def run_sweep(root: Path, n_runs: int, steps: int, workers: int, tensorboard: bool = True,
              keep: bool = False) -> int:
    root = root / f"sweep-{n_runs}x{steps}"
    runs_root, tb_root = root / "scoreviz", (root / "tensorboard" if tensorboard else None)
    if n_runs < len(MOMENTA) * SELECTED_PER_GROUP:
        raise SystemExit(f"--runs must be at least {len(MOMENTA) * SELECTED_PER_GROUP} (50 runs are compared)")
    _disk_check(root, n_runs, steps, tensorboard)
    try:
        written = generate(runs_root, tb_root, n_runs, steps, workers)
        names = [name for name, _, _ in run_names(n_runs)]
        selected = names[:len(MOMENTA) * SELECTED_PER_GROUP]  # 10 seeds of each momentum
        sv = measure_scoreviz(runs_root, selected)
        grouped = measure_grouped_path(runs_root, selected)
        tb = measure_tensorboard(tb_root, selected, steps) if tensorboard else None
        sizes = _du(runs_root), (_du(tb_root) if tensorboard else 0)
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
    report(n_runs, steps, workers, written, sizes, sv, grouped, tb)
    return 0


def _du(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def report(n_runs, steps, workers, written, sizes, sv, grouped, tb):
    ms = lambda t: f"{t * 1000:,.0f} ms"  # noqa: E731
    s = lambda t: f"{t:.2f} s"  # noqa: E731
    na = "-"
    print(f"\nsweep: {n_runs:,} runs x {steps:,} steps ({len(MOMENTA)} momentum values x {n_runs // len(MOMENTA)} "
          f"seeds; 1 tag, {BINS} bins, 20 layers), "
          f"{f'written in {written:.0f} s by {workers} processes' if written > 5 else 'kept from an earlier run'}; on disk: "
          f"scoreviz {sizes[0] / 1e9:.2f} GB, TensorBoard {sizes[1] / 1e9:.2f} GB\n")
    print("| measurement (50 runs compared: 10 seeds x 5 momentum values) | scoreviz | TensorBoard |")
    print("|---|---:|---:|")
    restart = sv["restart"]
    rows = [
        ("launch until the first page is served (page shell + run table's first page), first start / restart",
         f"{s(sv['first_page'])} / {s(restart['first_page'])}", s(tb["up"]) if tb else na),
        ("of which: server up (imports, no run read), first start / restart",
         f"{s(sv['up'])} / {s(restart['up'])}", na),
        ("page shell (/, layout, dependencies) once the server is up, first start / restart",
         f"{ms(sv['page'])} / {ms(restart['page'])}", na),
        (f"run table (first page of 50 rows, their names) + picker ({n_runs:,} runs), first start / restart / later",
         f"{ms(sv['table'])} / {ms(restart['table'])} / {ms(sv['table_warm'])}", na),
        ("launch until the run table's first page shows every row's config (the page asks again every "
         f"{ASK_AGAIN_MS / 1000:g} s), first start / restart", f"{s(sv['complete'])} / {s(restart['complete'])}", na),
        ("launch until every run's header is read (background, first start: the table lists every config)",
         s(sv["all_headers"]), na),
        (f"every run's header read in one thread ({n_runs:,} runs, cold, in the benchmark's process)",
         ms(grouped["headers"]), na),
        ("50 runs selected: read in the background (until none pending)", s(sv["read50"]), na),
        ("curves of the 50 runs, 3 statistics, one trace per run: cold / warm",
         f"{ms(sv['curves_cold'])} / {ms(sv['curves_warm'])}", na),
        ("grouped curves, 50 runs in 5 groups, 3 statistics, the app's Curves view: first / again",
         f"{ms(sv['grouped_cold'])} / {ms(sv['grouped_warm'])}", na),
        ("grouped curves, the same, server data path in a new process (nothing cached): cold / warm",
         f"{ms(grouped['cold'])} / {ms(grouped['warm'])}", na),
        ("launch until the 50 runs' curves are served (every step)", s(sv["to_curves"]),
         s(tb["all50"]) + (" (gave up)" if tb and tb.get("timeout") else "") if tb else na),
        ("scalars of the 50 runs again (warm)", na, ms(tb["warm50"]) if tb else na),
        ("peak RSS of the server", f"{sv['rss'] / 2**20:,.0f} MiB", f"{tb['rss'] / 2**20:,.0f} MiB" if tb else na),
    ]
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print(f"\ngroups: {', '.join(grouped['groups'])}")
    targets = [("first page < 2 s (launch to page shell + run table, first start)", sv["first_page"] < 2),
               ("first page < 2 s on a restart", restart["first_page"] < 2),
               ("grouped curves cold < 1.5 s (data path, nothing cached)", grouped["cold"] < 1.5),
               ("grouped curves warm < 300 ms (the app's view, again)", sv["grouped_warm"] < 0.3),
               ("peak server RSS < 1.5 GB", sv["rss"] < 1.5e9)]
    if tb:
        targets.append(("faster than TensorBoard (launch to the 50 runs' curves)", sv["to_curves"] < tb["all50"]))
    print("targets: " + "; ".join(f"{name}: {'met' if ok else 'NOT met'}" for name, ok in targets))
