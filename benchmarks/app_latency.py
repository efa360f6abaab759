"""Server-side latency of the app on large runs, and the bytes each figure sends.

    python benchmarks/app_latency.py [--runs-dir /tmp/scoreviz-bench] [--steps 100000]
    nice -n 10 python benchmarks/app_latency.py --sweep [--runs 1000] [--steps 10000]

The second is the sweep scenario (benchmarks/sweep_scenario.py): scoreviz and
TensorBoard on the same N runs x S steps, side by side.

Writes 8 runs of 100,000 recorded steps (2 tags, 100 histogram bins, 150
layers) through scoreviz.store's writer (the Recorder would take far longer to
produce that many steps; the file is the same), unless they are already there.
Then, through Flask's test client (the real Dash request path: dispatch,
callback, JSON serialisation, no browser), it times the first render and each
main callback twice: cold (the app's cache empty; the files may sit in the OS
page cache since they were just written or read) and cached (same request
again). Prints a markdown table. Targets: cached < 300 ms, cold < 1.5 s, every
figure < 2 MB.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

N_RUNS, TAGS, BINS, LAYERS = 8, ("train", "ft"), 100, 150
CHUNK = 5000


def _hist_rows(rng, mean, std, count, edges):
    """Histogram rows of normal scores with per-row mean/std, counts summing to `count`."""
    cdf = 0.5 * (1 + _erf((edges[None, :] - mean[:, None]) / (std[:, None] * np.sqrt(2))))
    probs = np.diff(cdf, axis=1)
    return np.round(probs * count).astype(np.uint32)


def _erf(x):
    # Abramowitz-Stegun 7.1.26: vectorised, good to 1e-7, keeps scipy out.
    sign = np.sign(x)
    x = np.abs(x)
    t = 1 / (1 + 0.3275911 * x)
    y = 1 - (((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t
             + 0.254829592) * t * np.exp(-x * x)
    return sign * y


def score_rows(rng, s, steps: int, momentum: float, shift: float = 0.0) -> dict:
    """Score statistics and histograms of steps ``s`` of a run of ``steps`` steps (a dict
    as StoreWriter.append_scores takes): the positive mean rises with momentum."""
    from scoreviz.store import STATS_COLUMNS

    edges = np.linspace(-1, 1, BINS + 1)
    t = s / steps
    pos_mean = 0.3 + 0.6 * t * momentum + shift + rng.normal(0, 0.01, len(s))
    neg_mean = 0.02 * np.sin(t * 20) + rng.normal(0, 0.003, len(s))
    pos_std = np.full(len(s), 0.1)
    neg_std = 0.15 * (1 - 0.5 * t) + rng.normal(0, 0.002, len(s)) ** 2
    stats = {c: np.zeros(len(s)) for c in STATS_COLUMNS}
    stats.update(pos_count=np.full(len(s), 256.0), neg_count=np.full(len(s), 256.0 * 4096),
                 pos_mean=pos_mean, neg_mean=neg_mean, pos_var=pos_std ** 2,
                 neg_var=neg_std ** 2, neg_sample_var=0.8 * neg_std ** 2,
                 pos_min=pos_mean - 3 * pos_std, pos_max=np.minimum(pos_mean + 3 * pos_std, 1),
                 neg_min=neg_mean - 4 * neg_std, neg_max=neg_mean + 4 * neg_std)
    for kind, m, sd in (("pos", pos_mean, pos_std), ("neg", neg_mean, neg_std)):
        for q, z in (("q05", -1.645), ("q25", -0.674), ("q50", 0.0), ("q75", 0.674),
                     ("q95", 1.645)):
            stats[f"{kind}_{q}"] = m + z * sd
    stats["pos_hist"] = _hist_rows(rng, pos_mean, pos_std, 256, edges)
    stats["neg_hist"] = _hist_rows(rng, neg_mean, neg_std, 256 * 4096, edges)
    return stats


def write_run(path: Path, steps: int, momentum: float, seed: int, tags=TAGS, layers: int = LAYERS,
              config=None, chunk: int = CHUNK, open_writer=None, after_chunk=None):
    """One large run: score stats and histograms for each tag, per-layer norms, scalars, written
    ``chunk`` steps at a time. ``open_writer(config)``: the writer (default a StoreWriter on
    path/scores.h5); ``after_chunk(writer)`` is called after each chunk is flushed."""
    from scoreviz.store import FILE_NAME, StoreWriter

    rng = np.random.default_rng(seed)
    names = [f"encoder.layer{i // 3}.{['conv', 'bn', 'relu'][i % 3]}" for i in range(layers)]
    config = config or {"moco_m": momentum, "lr": 0.03, "arch": "resnet18", "steps": steps}
    if open_writer is None:
        path.mkdir(parents=True, exist_ok=True)
        writer = StoreWriter(path / FILE_NAME, BINS, config, {"benchmark": True})
    else:
        writer = open_writer(config)
    try:
        for start in range(0, steps, chunk):
            s = np.arange(start, min(start + chunk, steps))
            t = s / steps
            for tag in tags:
                writer.append_scores(tag, s, score_rows(rng, s, steps, momentum, 0.1 if tag == "ft" else 0.0))
            depth = np.linspace(2, -1, layers)
            norms = (10 ** (depth[None, :] - t[:, None]) * rng.lognormal(0, 0.2, (len(s), layers)))
            writer.append_gradients(s, names, norms.astype(np.float32),
                                    np.sqrt((norms ** 2).sum(axis=1)))
            writer.append_scalars(s, ["loss", "lr"], np.stack([8 - 2 * t, np.full(len(s), 0.03)], axis=1))
            if after_chunk is not None:
                writer.flush()
                after_chunk(writer)
    finally:
        writer.close()


def ensure_runs(root: Path, steps: int) -> list[str]:
    names = [f"m{m}" for m in (0.5, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9995, 0.9999)][:N_RUNS]
    for i, name in enumerate(names):
        marker = root / name / f".complete-{steps}"
        if marker.exists():
            continue
        start = time.perf_counter()
        if (root / name / "scores.h5").exists():
            (root / name / "scores.h5").unlink()
        write_run(root / name, steps, float(name[1:]), seed=i)
        marker.touch()
        print(f"wrote {name}: {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return names


def _timed_get(dash_app, path):
    start = time.perf_counter()
    dash_app.server.test_client().get(path)
    return time.perf_counter() - start


class Client:
    """Calls Dash callbacks through the Flask test client, timing each."""

    def __init__(self, dash_app):
        self.app = dash_app
        self.client = dash_app.server.test_client()

    def call(self, output_prefix, inputs, state=(), changed=None):
        key = next(k for k in self.app.callback_map if k.startswith(output_prefix)
                   or k.lstrip(".").startswith(output_prefix))
        spec = self.app.callback_map[key]
        inputs = list(inputs) + [None] * (len(spec["inputs"]) - len(inputs))  # inputs not given: not set yet
        state = list(state) + [None] * (len(spec["state"]) - len(state))
        outputs = [{"id": o.rsplit(".", 1)[0], "property": o.rsplit(".", 1)[1]}
                   for o in key.strip(".").split("...")]
        body = {
            "output": key,
            "outputs": outputs if key.startswith("..") else outputs[0],
            "inputs": [dict(i, value=v) for i, v in zip(spec["inputs"], inputs)],
            "state": [dict(s, value=v) for s, v in zip(spec["state"], state)],
            "changedPropIds": [changed or f"{spec['inputs'][0]['id']}.{spec['inputs'][0]['property']}"],
        }
        start = time.perf_counter()
        response = self.client.post("/_dash-update-component", json=body)
        elapsed = time.perf_counter() - start
        if response.status_code != 200:
            raise RuntimeError(f"{output_prefix}: HTTP {response.status_code}: {response.get_data(as_text=True)[:500]}")
        payload = response.get_json().get("response", {})
        sizes = {f"{cid}.{prop}": len(json.dumps(value, separators=(",", ":")))
                 for cid, props in payload.items() for prop, value in props.items() if prop == "figure"}
        return elapsed, len(response.get_data()), sizes, payload

    def state(self, search):
        """The page's state callback (app.shell.state) for the URL ``search``, as the page calls it
        when it opens (every control at its default)."""
        spec = self.app.callback_map[next(k for k in self.app.callback_map if k.startswith("..url.search"))]
        given = {"url": search, "refresh": 0, "selection-refresh": 0}
        return self.call("..url.search", [given.get(i["id"]) for i in spec["inputs"]])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs-dir", default="/tmp/scoreviz-bench")
    parser.add_argument("--steps", type=int, default=None,
                        help="steps per run (default 100,000; 10,000 with --sweep)")
    parser.add_argument("--sweep", action="store_true",
                        help="the sweep scenario instead (benchmarks/sweep_scenario.py): --runs runs of "
                             "--steps steps, scoreviz and TensorBoard side by side")
    parser.add_argument("--runs", type=int, default=1000, help="runs in the sweep (default 1,000)")
    parser.add_argument("--workers", type=int, default=2, help="processes writing the sweep (default 2)")
    parser.add_argument("--no-tensorboard", action="store_true", help="sweep: measure scoreviz only")
    parser.add_argument("--keep", action="store_true", help="sweep: keep the generated runs and event files")
    args = parser.parse_args(argv)
    if args.sweep:
        from benchmarks.sweep_scenario import run_sweep

        return run_sweep(Path(args.runs_dir), args.runs, args.steps or 10_000, args.workers,
                         tensorboard=not args.no_tensorboard, keep=args.keep)
    args.steps = args.steps or 100_000
    root = Path(args.runs_dir)
    root.mkdir(parents=True, exist_ok=True)
    names = ensure_runs(root, args.steps)

    from app import create_app

    def measure(dash_app, names=names):
        c = Client(dash_app)
        start = time.perf_counter()
        sizes = sum(len(c.client.get(p).get_data()) for p in ("/", "/_dash-layout", "/_dash-dependencies"))
        out = [("page shell (/, layout, dependencies)", time.perf_counter() - start, sizes, {})]
        t, b, s, _ = c.call("run-table.children", [0, "", [], 0, 0, 0], [None, 0])
        out.append(("run list + run table (8 runs)", t, b, s))
        base = "?" + "&".join(f"runs={n}" for n in names)
        t, b, s, _ = c.state(base + "&smooth=0.6")
        out.append(("page state (URL, selection, options)", t, b, s))
        step = args.steps // 2 + 321
        for label, query, store, prefix in [
            ("curves: 8 runs x 3 statistics, smoothing 0.6", "&smooth=0.6", "curves-curves-state", "curves-graph.figure"),
            ("distribution heatmap (8 runs) + slider", "&view=distribution", "distribution-heatmap-state",
             "..heatmap-graph.figure"),
            ("histograms at a step (8 runs overlaid)", f"&view=distribution&step={step}", "distribution-hist-state",
             "hist-graph.figure"),
            ("raw vs ft (one run, 2 tags)", f"&view=distribution&step={step}&ft={names[0]}", "distribution-ft-state",
             "ft-graph.figure"),
            ("3D waterfall (8 runs by moco_m)", "&view=waterfall&key=moco_m", "waterfall-waterfall-state",
             "waterfall-graph.figure"),
            ("gradients: heatmap + surface (150 layers)", f"&view=gradients&grun={names[0]}",
             "gradients-landscape-state", "..grad-heatmap-graph.figure"),
            ("gradients: total norm (8 runs)", "&view=gradients", "gradients-total-state", "grad-total-graph.figure"),
            ("health (8 runs)", "&view=health", "health-table-state", "health-table.children"),
        ]:
            panel = c.state(base + query)[3][store]["data"]  # what the page's state gives the panel
            t, b, s, _ = c.call(prefix, [panel])
            out.append((label, t, b, s))
        return out

    # A: background reading off, nothing cached: every callback reads synchronously.
    one_run = measure(create_app(root, refresh=5, warm=False), names=names[:1])
    no_warm = create_app(root, refresh=5, warm=False)
    cold = measure(no_warm)
    cached = measure(no_warm)
    # B: the default (scoreviz serve): runs are read in the background once
    # found. Before a run is read the table lists it from its header and the
    # figures leave it out, so callbacks answer at once; the page draws each
    # run at the refresh after its read finished.
    start = time.perf_counter()
    warmed_app = create_app(root, refresh=5)
    fresh = measure(warmed_app)
    page_t, list_t = fresh[0][1], fresh[1][1]
    drawn_at_once = len(Client(warmed_app).state("?" + "&".join(f"runs={n}" for n in names))[3]
                        ["curves-curves-state"]["data"]["runs"])
    while not warmed_app.scoreviz_data.warm_idle():
        time.sleep(0.05)
    warm_up = time.perf_counter() - start
    after_warm = measure(warmed_app)

    print(f"\n{len(names)} runs x {args.steps:,} steps, {len(TAGS)} tags, {BINS} bins, {LAYERS} layers "
          f"in {root}\n")
    first = lambda rows: sum(r[1] for r in rows[:4])  # noqa: E731 - shell, run list, state, curves
    print(f"first render (page shell + run list + page state + curves): {first(cold):.2f} s with nothing "
          f"read in advance; {first(after_warm) * 1000:.0f} ms after the background warm-up "
          f"({warm_up:.1f} s from start for all {len(names)} runs)")
    print(f"fresh server with background reading (the default): page shell + run list "
          f"{(page_t + list_t) * 1000:.0f} ms; worst callback {max(r[1] for r in fresh[1:]) * 1000:.0f} ms "
          f"with {drawn_at_once} of {len(names)} runs drawn at once, the rest drawn as their background "
          f"reads finish (all {len(names)} read {warm_up:.1f} s after start, "
          f"{warm_up / len(names):.1f} s per run)\n")
    print("Synchronous reads (background reading off), and the default after its background reads:\n")
    print("| request (8 runs selected) | cold, 1 run selected (s) | cold (s) | first call after warm-up (ms) "
          "| cached (ms) | response bytes | largest figure (bytes) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    worst = {"cold": 0.0, "warm": 0.0, "cached": 0.0, "fig": 0}
    for (name, t_cold, size, figs), (_, t_warm, _, _), (_, t_cached, _, _), (_, t_one, _, _) in zip(
            cold, after_warm, cached, one_run):
        largest = max(figs.values()) if figs else 0
        if not name.startswith("page"):
            worst.update(cold=max(worst["cold"], t_cold), warm=max(worst["warm"], t_warm),
                         cached=max(worst["cached"], t_cached))
        worst["fig"] = max(worst["fig"], largest)
        print(f"| {name} | {t_one:.2f} | {t_cold:.2f} | {t_warm * 1000:.0f} | {t_cached * 1000:.0f} | {size:,} | "
              f"{f'{largest:,}' if largest else '-'} |")
    worst_one = max(r[1] for r in one_run[1:])
    print(f"\nworst callback: cold {worst['cold']:.2f} s (one run selected: {worst_one:.2f} s), after warm-up {worst['warm'] * 1000:.0f} ms, "
          f"cached {worst['cached'] * 1000:.0f} ms; largest figure {worst['fig'] / 1e6:.2f} MB")
    print(f"targets: cached < 300 ms: {'met' if worst['cached'] < 0.3 else 'NOT met'}; "
          f"cold < 1.5 s: {'met' if worst['cold'] < 1.5 else 'NOT met'} "
          f"(after warm-up: {'met' if worst['warm'] < 1.5 else 'NOT met'}); "
          f"figures < 2 MB: {'met' if worst['fig'] < 2e6 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
