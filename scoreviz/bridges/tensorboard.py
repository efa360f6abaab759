"""Export scoreviz runs as TensorBoard event files.

    scoreviz export runs/a runs/b --format tensorboard --out tb/
    tensorboard --logdir tb/

Every run becomes a folder `OUT/<run>/` with one event file, in which:

    scores/<tag>/pos, scores/<tag>/neg   histograms (add_histogram_raw): our [-1, 1]
                                          bins and counts, with min, max, count, sum
                                          and sum of squares of every finite score
    scores/<tag>/<statistic>              every statistic of Run.scores() as a scalar
                                          (pos_mean, neg_var, neg_sample_var, ...)
    embeddings/<tag>/<statistic>          every column of Run.embeddings() as a scalar
                                          (std, uniformity, alignment, rank, ...; the
                                          spectrum itself is not exported)
    gradients/<layer>, gradients/(total)  gradient L2 norms
    scalars/<name>                        every logged scalar
    scoreviz/run                          text: the run's name, bins, tags, layers, config and env, as JSON

These names are the contract `scoreviz import-tensorboard` reads back.
"""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from scoreviz.bridges import open_runs, require, run_labels
from scoreviz.bridges.export import output_folder
from scoreviz.errors import ScorevizError
from scoreviz.store.schema import KINDS

MARKER_TAG = "scoreviz/run"
TOTAL_LAYER = "(total)"


def histogram_tag(tag: str, kind: str) -> str:
    return f"scores/{tag}/{kind}"


def statistic_tag(tag: str, column: str) -> str:
    return f"scores/{tag}/{column}"


def embedding_tag(tag: str, column: str) -> str:
    return f"embeddings/{tag}/{column}"


def gradient_tag(layer: str) -> str:
    return f"gradients/{layer}"


def scalar_tag(name: str) -> str:
    return f"scalars/{name}"


def marker_text(info: dict) -> str:
    """The run's description as JSON, indented four spaces so TensorBoard's text
    dashboard shows it as a code block."""
    return textwrap.indent(json.dumps(info, indent=2, default=str), "    ")


def read_marker_text(text: str) -> dict:
    return json.loads(textwrap.dedent(text))


def histogram_buckets(counts, edges):
    """TensorBoard buckets for our histogram: (bucket_limits, bucket_counts), or None if empty.

    TensorBoard keeps only each bucket's right edge; its first bucket starts at
    the histogram's min and its last ends at its max. So, as torch's own
    make_histogram does, the non-empty range of bins is framed by an empty
    bucket on each side, and every bin in between keeps its exact edges. This
    also gives W&B's converter (which needs three buckets and extrapolates the
    outer edges) our exact bins.
    """
    counts = np.asarray(counts)
    nonzero = np.flatnonzero(counts)
    if not nonzero.size:
        return None
    first, last = int(nonzero[0]), int(nonzero[-1]) + 1
    width = edges[1] - edges[0]
    # right edges: edges[first] (the empty left frame), each kept bin's right edge, one empty bin to the right
    limits = np.append(edges[first:last + 1], edges[last] + width)
    bucket_counts = np.concatenate([[0], counts[first:last], [0]])
    return limits.astype(np.float64), bucket_counts.astype(np.float64)


def export_tensorboard(run_dirs, out_dir, overwrite: bool = False) -> list[Path]:
    """Write each run as event files under `out_dir/<run>/`; returns those folders.

    A folder that already holds event files is an error unless `overwrite`,
    which deletes its event files first (TensorBoard would merge old and new).
    """
    tb_writer = require("torch.utils.tensorboard", "tensorboard", "scoreviz export --format tensorboard")
    summary_module = require("torch.utils.tensorboard.summary", "tensorboard", "scoreviz export --format tensorboard")
    runs = open_runs(run_dirs)
    out_dir = output_folder(out_dir, what="TensorBoard event files")
    # a run's own folder is never a target: replacing its old event files would delete the run's
    targets = [output_folder(out_dir / label, [run.path for run in runs], "TensorBoard event files")
               for label in run_labels(runs)]
    for target in targets:
        old = sorted(target.glob("*tfevents*")) if target.is_dir() else []
        if old and not overwrite:
            raise ScorevizError(f"{target}: already holds TensorBoard event files ({old[0].name}); "
                                "TensorBoard would mix them with the new ones: remove them or choose another --out")
        for path in old:
            path.unlink() if path.is_file() else shutil.rmtree(path)
    for run, target in zip(runs, targets):
        writer = tb_writer.SummaryWriter(log_dir=str(target), max_queue=1000, flush_secs=30)
        try:
            _write_run(run, writer, summary_module)
        finally:
            writer.close()
    return targets


def _write_run(run, writer, summary_module):
    """One event per step and stream: its histograms and statistics as the values of one Summary
    (as TensorFlow's merged summaries), which TensorBoard and W&B read like separate events
    and which writes far faster than an event per value."""
    Summary = summary_module.Summary
    info = {"name": run.name, "bins": run.bins, "tags": run.tags, "layers": run.layers, "config": run.config,
            "env": run.env}
    writer.add_text(MARKER_TAG, marker_text(info), global_step=0)
    frames = {tag: run.scores(tag) for tag in run.tags}
    grads = run.gradients()
    grads[TOTAL_LAYER] = run.total_gradient_norm()
    scalars = run.scalars()
    embeddings = [(frame, [embedding_tag(tag, c) for c in frame.columns])
                  for tag, frame in ((t, run.embeddings(t)) for t in run.embedding_tags)]
    total = sum(len(f) for f in frames.values()) + len(grads) + len(scalars) + sum(len(f) for f, _ in embeddings)

    def add(step, values):
        if values:
            writer.file_writer.add_summary(Summary(value=values), int(step))

    def scalar_values(names, row):
        return [Summary.Value(tag=name, simple_value=v) for name, v in zip(names, row.tolist()) if np.isfinite(v)]

    with tqdm(total=total, desc=f"tensorboard: {run.name}", unit="step", leave=False) as bar:
        for tag, frame in frames.items():
            hists = {kind: run.histograms(tag, kind) for kind in KINDS}
            names = [statistic_tag(tag, c) for c in frame.columns]
            columns = {c: i for i, c in enumerate(frame.columns)}
            table = frame.to_numpy(np.float64)
            for i, step in enumerate(frame.index):
                values = []
                for kind in KINDS:
                    steps, edges, counts = hists[kind]
                    assert steps[i] == step  # scores() and histograms() keep the same rows
                    stats = {s: table[i, columns[f"{kind}_{s}"]] for s in ("count", "mean", "var", "min", "max")}
                    values += _histogram_value(summary_module, histogram_tag(tag, kind), stats, counts[i], edges)
                add(step, values + scalar_values(names, table[i]))
                bar.update()
        for frame, names in [(grads, [gradient_tag(c) for c in grads.columns]),
                             (scalars, [scalar_tag(c) for c in scalars.columns])] + embeddings:
            table = frame.to_numpy(np.float64)
            for i, step in enumerate(frame.index):
                add(step, scalar_values(names, table[i]))
                bar.update()


def _histogram_value(summary_module, tb_tag, stats, counts, edges) -> list:
    """[the Summary value add_histogram_raw would write], or [] where nothing lies in [-1, 1]."""
    buckets = histogram_buckets(counts, edges)
    count, mean = stats["count"], stats["mean"]
    if buckets is None or not count > 0:
        return []  # the statistics still go out as scalars
    summary = summary_module.histogram_raw(
        tb_tag, min=float(stats["min"]), max=float(stats["max"]), num=float(count), sum=float(mean * count),
        sum_squares=float((stats["var"] + mean * mean) * count),
        bucket_limits=buckets[0].tolist(), bucket_counts=buckets[1].tolist())
    return list(summary.value)
