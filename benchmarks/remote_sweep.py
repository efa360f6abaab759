"""A sweep recorded to S3 (moto's S3 server on 127.0.0.1) and read back, beside the same sweep on local disk.

    nice -n 5 python benchmarks/remote_sweep.py [--runs 200] [--steps 5000] [--part-steps 120]

Writes --runs runs of --steps steps (5 momentum values x seeds; one tag, 100-bin positive
and negative histograms, 20 layers of gradient norms, two scalars; benchmarks/app_latency.py's
rows) through scoreviz.store.publish.RemoteWriter, the writer a Recorder uses for a URL,
publishing one part every --part-steps steps (a training at 2 steps a second publishing at
the default upload interval, 60 s, publishes every 120 steps: the publishes are driven by the
step count here, so the sweep takes minutes, not days), then closing each run (its last part,
then the parts compacted into one). The same rows go to local disk with the store's writer.

Measured, per run: objects and bytes uploaded against the run's final size (its local file;
and what stays in the store), the requests the server answered (moto's server counts them,
tests/s3_server.py), and from those the requests per hour of a live run at the default
interval. Then reading, through scoreviz.store.remote.RemoteRoot (the server's view of a
URL: one listing per refresh, manifests fetched when they change, a run's parts when it is
read), each step in this process with a new cache folder (nothing fetched before):

- first page: the listing and the headers (config, tags) of the run table's first 50 rows,
  and of every run;
- curves of 50 runs (10 per momentum value; pos_mean, neg_mean, neg_sample_var), cold
  (their parts fetched into local copies and read) and warm (a refresh, then the same reads);
- requests per refresh, every finished run's header known, with 5 live runs publishing one
  part between two refreshes and their curves on screen: for the prefix of 50 finished runs
  and for the whole prefix (every finished run), to show the requests do not grow with the
  finished runs.

The local sweep beside it: its first page (find_runs and the headers), its curves cold and
warm (the files in the OS page cache either way).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from benchmarks.app_latency import BINS, write_run  # noqa: E402

MOMENTA = (0.9, 0.99, 0.995, 0.999, 0.9999)
STATS = ["pos_mean", "neg_mean", "neg_sample_var"]
FIRST_PAGE = 50
LIVE = 5
STEPS_PER_SECOND = 2.0  # the training the sweep stands for: publishes every part_steps / 2 seconds


def run_names(n_runs):
    """(folder below the prefix, momentum, seed): the first 50 runs under a/, the rest under b/."""
    return [(f"{'a' if i < FIRST_PAGE else 'b'}/m{MOMENTA[i % 5]}-s{i // 5}", MOMENTA[i % 5], i // 5)
            for i in range(n_runs)]


def write_remote(job):
    """One run through RemoteWriter, a part every part_steps steps (in a worker process); its
    upload stats and the size of its local file."""
    import s3_server
    from scoreviz.store.publish import MAX_UPLOAD_SECS, RemoteWriter

    port, url, steps, part_steps, momentum, seed = job
    os.nice(0)  # inherits the caller's niceness (run the script under nice -n 5)
    server = s3_server.S3Server(None, port)
    holder = {}

    def open_writer(config):
        holder["w"] = RemoteWriter(url, BINS, config, {"benchmark": True}, server.options(),
                                   upload_secs=MAX_UPLOAD_SECS)  # the thread never publishes: the steps do
        return holder["w"]

    write_run(None, steps, momentum, seed, tags=("train",), layers=20, chunk=part_steps,
              config={"moco_m": momentum, "seed": seed, "lr": 0.03, "arch": "resnet18"},
              open_writer=open_writer, after_chunk=lambda w: w.publish_now())
    writer = holder["w"]
    return dict(writer.stats), writer.path.stat().st_size


def stored(server, bucket, prefix):
    """{key: size} of the objects below prefix (boto3, not scoreviz's code)."""
    client = server.client()
    return {o["Key"]: o["Size"] for page in client.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=prefix) for o in page.get("Contents", [])}


def curves(read_run, run_ids):
    for run_id in run_ids:
        read_run(run_id).scores("train", columns=STATS)


def chosen(names):
    """10 runs of each momentum value (or all there are)."""
    picked = []
    for m in MOMENTA:
        picked += [name for name, mm, _ in names if mm == m][:10]
    return picked


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=200, help="runs in the sweep (default 200)")
    parser.add_argument("--steps", type=int, default=5000, help="steps per run (default 5000)")
    parser.add_argument("--part-steps", type=int, default=120,
                        help="steps between two publishes (default 120: 60 s at 2 steps a second)")
    parser.add_argument("--workers", type=int, default=2, help="processes writing runs at once (default 2)")
    parser.add_argument("--keep", type=Path, default=None, help="folder for the local sweep and caches "
                                                                 "(default: a temporary one, removed)")
    args = parser.parse_args(argv)

    import s3_server
    from tqdm import tqdm

    from scoreviz import find_runs, open_run
    from scoreviz.store.publish import DEFAULT_UPLOAD_SECS
    from scoreviz.store.remote import RemoteRoot

    work = args.keep or Path(tempfile.mkdtemp(prefix="remote-sweep-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ["SCOREVIZ_CACHE_DIR"] = str(work / "writers")
    load = os.getloadavg()
    server = s3_server.start()
    bucket = "sv-sweep"
    server.make_bucket(bucket)
    url = f"s3://{bucket}/sweep"
    names = run_names(args.runs)
    try:
        started = time.monotonic()
        server.counts(reset=True)
        jobs = [(server.port, f"{url}/{name}", args.steps, args.part_steps, m, seed) for name, m, seed in names]
        with ProcessPoolExecutor(args.workers) as pool:
            uploads = list(tqdm(pool.map(write_remote, jobs), total=len(jobs), desc="remote sweep", unit="run"))
        write_requests = server.counts(reset=True)
        remote_write_s = time.monotonic() - started
        started = time.monotonic()
        for name, m, seed in tqdm(names, desc="local sweep", unit="run"):
            write_run(work / "local" / name, args.steps, m, seed, tags=("train",), layers=20,
                      config={"moco_m": m, "seed": seed, "lr": 0.03, "arch": "resnet18"})
        local_write_s = time.monotonic() - started
        final = stored(server, bucket, "sweep/")

        # ---- reading: a new cache folder, nothing fetched before
        os.environ["SCOREVIZ_CACHE_DIR"] = str(work / "reader")
        shutil.rmtree(work / "reader", ignore_errors=True)
        options = server.options()
        server.counts(reset=True)
        t0 = time.perf_counter()
        root = RemoteRoot(url, options)
        ids = root.refresh()
        root.manifests(ids[:FIRST_PAGE])
        first_page_s = time.perf_counter() - t0
        first_page_requests = server.counts(reset=True)
        t0 = time.perf_counter()
        root.manifests(ids)
        all_headers_s = first_page_s + time.perf_counter() - t0
        server.counts(reset=True)
        selected = chosen(names)

        def read_remote(run_id):
            return open_run(root.sync(run_id))

        t0 = time.perf_counter()
        curves(read_remote, selected)
        cold_s = time.perf_counter() - t0
        cold_requests = server.counts(reset=True)
        t0 = time.perf_counter()
        root.refresh()
        curves(read_remote, selected)
        warm_s = time.perf_counter() - t0
        warm_requests = server.counts(reset=True)

        # ---- requests per refresh with live runs, for 50 finished runs and for all of them
        per_refresh = {}
        live = []
        from scoreviz.store.publish import RemoteWriter

        for i in range(LIVE):
            writer = RemoteWriter(f"{url}/a/live-{i}", BINS, {"moco_m": 0.99, "seed": 100 + i}, {}, options,
                                  upload_secs=3600)
            live.append(writer)
        step = [0]

        def publish_live():
            s = np.arange(step[0], step[0] + args.part_steps)
            step[0] += args.part_steps
            for writer in live:
                writer.append_scalars(s, ["loss"], np.ones((len(s), 1)))
                writer.flush()
                writer.publish_now()

        for label, prefix in (("50 finished", f"{url}/a"), (f"{args.runs} finished", url)):
            view = RemoteRoot(prefix, options)
            live_ids = [i for i in view.refresh() if "live-" in i]
            view.manifests(view.refresh())  # every header known
            for run_id in live_ids:
                view.sync(run_id)
            rounds = []
            for _ in range(3):
                publish_live()
                server.counts(reset=True)
                ids_now = view.refresh()
                view.manifests(ids_now)  # the run table: headers that changed
                for run_id in live_ids:  # the live runs' curves on screen
                    view.sync(run_id)
                rounds.append(server.counts(reset=True))
            per_refresh[label] = (len(ids_now), rounds)
        for writer in live:
            writer.close(compact=False)

        # ---- the local sweep beside it
        local_root = work / "local"
        t0 = time.perf_counter()
        local_ids = find_runs(local_root)
        for folder in local_ids[:FIRST_PAGE]:
            open_run(folder, header=True)
        local_first_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        curves(lambda r: open_run(local_root / r), selected)
        local_cold_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        curves(lambda r: open_run(local_root / r), selected)
        local_warm_s = time.perf_counter() - t0
    finally:
        server.stop()

    n = len(uploads)
    parts = np.mean([u[0]["parts"] for u in uploads])
    manifests = np.mean([u[0]["manifests"] for u in uploads])
    uploaded = np.mean([u[0]["bytes"] for u in uploads])
    local_size = np.mean([u[1] for u in uploads])
    final_size = sum(final.values()) / n
    requests = {k: write_requests.get(k, 0) / n for k in ("PUT", "DELETE", "POST", "LIST", "GET", "HEAD")}
    publishes = -(-args.steps // args.part_steps)
    per_publish = (requests["PUT"] + requests["DELETE"] + requests["POST"]) / (publishes + 1)
    hourly = per_publish * 3600 / DEFAULT_UPLOAD_SECS
    mib = 1 << 20
    print(f"\nsweep: {n} runs x {args.steps:,} steps (5 momentum values; 1 tag, {BINS} bins, 20 layers, 2 scalars), "
          f"a part every {args.part_steps} steps ({args.part_steps / STEPS_PER_SECOND:.0f} s at "
          f"{STEPS_PER_SECOND:g} steps/s, the default upload interval), moto's S3 server on 127.0.0.1; "
          f"written in {remote_write_s:.0f} s (S3) and {local_write_s:.0f} s (local disk); "
          f"load average before it {load[0]:.1f}\n")
    print("| per run | S3 | local disk |")
    print("|---|---:|---:|")
    print(f"| objects uploaded: parts (incl. the compacted one) + manifests | {parts:.1f} + {manifests:.1f} | - |")
    print(f"| bytes uploaded | {uploaded / mib:.2f} MiB | - |")
    print(f"| final size: the run's local file / what stays in the store | {local_size / mib:.2f} MiB / "
          f"{final_size / mib:.2f} MiB ({len(final) / n:.0f} objects) | {local_size / mib:.2f} MiB |")
    print(f"| uploaded / final size (local file; what stays in the store) | {uploaded / local_size:.2f}; "
          f"{uploaded / final_size:.2f} | - |")
    print(f"| requests to write it: PUT / DELETE / multi-delete POST / LIST / GET | {requests['PUT']:.1f} / "
          f"{requests['DELETE']:.1f} / {requests['POST']:.1f} / {requests['LIST']:.1f} / {requests['GET']:.1f} | - |")
    print(f"| requests per hour of a live run (upload interval {DEFAULT_UPLOAD_SECS:.0f} s) | {hourly:.0f} "
          f"({per_publish:.1f} per publish) | - |")
    print()
    print("| reading (a new cache: nothing fetched before) | S3 | local disk |")
    print("|---|---:|---:|")
    print(f"| first page: list the runs, headers of the first {FIRST_PAGE} rows | {first_page_s * 1000:,.0f} ms "
          f"({sum(first_page_requests.values())} requests) | {local_first_s * 1000:,.0f} ms |")
    print(f"| every run's header ({n} runs) | {all_headers_s * 1000:,.0f} ms | - |")
    print(f"| curves of {len(selected)} runs, {len(STATS)} statistics: cold | {cold_s * 1000:,.0f} ms "
          f"({sum(cold_requests.values())} requests: {dict(cold_requests)}) | {local_cold_s * 1000:,.0f} ms |")
    print(f"| the same, warm (a refresh, then the reads) | {warm_s * 1000:,.0f} ms "
          f"({sum(warm_requests.values())} requests: {dict(warm_requests)}) | {local_warm_s * 1000:,.0f} ms |")
    for label, (count, rounds) in per_refresh.items():
        totals = [sum(r.values()) for r in rounds]
        print(f"| requests per refresh, {count} runs ({label} + {LIVE} live, each one part newer, their curves "
              f"on screen) | {min(totals)}-{max(totals)} ({dict(rounds[-1])}) | 0 |")
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
