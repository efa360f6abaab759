"""Export runs as long Parquet tables, for pandas, pyarrow, Dask, DuckDB, Polars.

    scoreviz export runs/a runs/b --format parquet --out tables/

writes one file per stream into OUT, every run in the same file (column `run`):

    scores.parquet      run, tag, step, kind, statistic, value     Run.scores(tag)
    histograms.parquet  run, tag, step, kind, bin, bin_left, bin_right, count   Run.histograms(tag, kind)
    gradients.parquet   run, step, layer, value                    Run.gradients(); layer "(total)": Run.total_gradient_norm()
    scalars.parquet     run, step, name, value                     Run.scalars()
    embeddings.parquet  run, tag, step, statistic, value           Run.embeddings(tag)
    spectrum.parquet    run, tag, step, index, eigenvalue          Run.spectrum(tag), index 0 the largest
    configs.parquet     run, section, key, value                   Run.config (section "config") and Run.env ("env"); value is JSON text

Every cell of those frames is one row, NaN included, so a pivot gives the frame back:
    scores[scores.run == "a"].pivot_table(index="step", columns=["kind", "statistic"], values="value")
`kind` is pos or neg; `statistic` is the column name without its kind (mean, var,
q05, ...; neg_sample_var is kind neg, statistic sample_var); margin and hard_frac,
which compare each sample's positive with its negatives, have kind `pair`. Histogram bins are
equal-width over [-1, 1]: bin i is [bin_left, bin_right), the last one closed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from scoreviz.bridges import open_runs, require, run_labels
from scoreviz.bridges.export import output_file, output_folder
from scoreviz.bridges.tensorboard import TOTAL_LAYER
from scoreviz.store.schema import KINDS

TABLES = ("scores", "histograms", "gradients", "scalars", "embeddings", "spectrum", "configs")
PAIR_KIND = "pair"  # the kind of the statistics of both kinds at once (margin, hard_frac)
_ROWS_PER_BATCH = 1 << 20


def _schemas(pa):
    text, step = pa.string(), pa.int64()
    return {
        "scores": pa.schema([("run", text), ("tag", text), ("step", step), ("kind", text),
                             ("statistic", text), ("value", pa.float64())]),
        "histograms": pa.schema([("run", text), ("tag", text), ("step", step), ("kind", text), ("bin", pa.int32()),
                                 ("bin_left", pa.float64()), ("bin_right", pa.float64()), ("count", pa.int64())]),
        "gradients": pa.schema([("run", text), ("step", step), ("layer", text), ("value", pa.float64())]),
        "scalars": pa.schema([("run", text), ("step", step), ("name", text), ("value", pa.float64())]),
        "embeddings": pa.schema([("run", text), ("tag", text), ("step", step), ("statistic", text),
                                 ("value", pa.float64())]),
        "spectrum": pa.schema([("run", text), ("tag", text), ("step", step), ("index", pa.int32()),
                               ("eigenvalue", pa.float64())]),
        "configs": pa.schema([("run", text), ("section", text), ("key", text), ("value", text)]),
    }


def export_parquet(run_dirs, out_dir, overwrite: bool = False) -> list[Path]:
    """Write the runs' streams as Parquet tables into `out_dir`; returns the files.

    Existing tables of these names are an error unless `overwrite`. Each file is
    written under a temporary name and renamed when complete.
    """
    pa = require("pyarrow", "parquet", "scoreviz export --format parquet")
    pq = require("pyarrow.parquet", "parquet", "scoreviz export --format parquet")
    runs = open_runs(run_dirs)
    out_dir = output_folder(out_dir, what="the Parquet tables")
    paths = {name: out_dir / f"{name}.parquet" for name in TABLES}
    if out_dir.is_dir():  # each table a new path or (overwrite) a regular file, never a run's file
        for path in paths.values():
            output_file(path, overwrite, reads=run_dirs)
    out_dir.mkdir(parents=True, exist_ok=True)
    schemas = _schemas(pa)
    partial = {name: path.with_name(f".{path.name}.{os.getpid()}.partial") for name, path in paths.items()}
    writers = {name: pq.ParquetWriter(partial[name], schemas[name]) for name in TABLES}
    try:
        for label, run in tqdm(list(zip(run_labels(runs), runs)), desc="parquet", unit="run", disable=len(runs) < 2):
            for name, columns in _run_batches(run, label, pa):
                writers[name].write_table(pa.table(columns, schema=schemas[name]))
    except BaseException:
        for name, writer in writers.items():
            writer.close()
            partial[name].unlink(missing_ok=True)
        raise
    for name, writer in writers.items():
        writer.close()
        os.replace(partial[name], paths[name])
    return list(paths.values())


def _run_batches(run, label, pa):
    """(table name, {column: array}) batches of one run."""
    def const(value, n):
        return pa.repeat(pa.scalar(value, pa.string()), n)

    for tag in run.tags:
        frame = run.scores(tag)
        steps = frame.index.to_numpy(np.int64)
        for column in frame.columns:
            kind, _, statistic = column.partition("_")
            if kind not in KINDS:
                kind, statistic = PAIR_KIND, column
            yield "scores", {"run": const(label, len(steps)), "tag": const(tag, len(steps)), "step": steps,
                             "kind": const(kind, len(steps)), "statistic": const(statistic, len(steps)),
                             "value": frame[column].to_numpy(np.float64)}
        for kind in KINDS:
            hist_steps, edges, counts = run.histograms(tag, kind)
            bins = counts.shape[1]
            block = max(1, _ROWS_PER_BATCH // max(bins, 1))
            for start in range(0, len(hist_steps), block):
                part = counts[start:start + block]
                n = part.size
                yield "histograms", {
                    "run": const(label, n), "tag": const(tag, n),
                    "step": np.repeat(hist_steps[start:start + block].astype(np.int64), bins),
                    "kind": const(kind, n), "bin": np.tile(np.arange(bins, dtype=np.int32), len(part)),
                    "bin_left": np.tile(edges[:-1], len(part)), "bin_right": np.tile(edges[1:], len(part)),
                    "count": part.reshape(-1).astype(np.int64)}
    for tag in run.embedding_tags:
        frame = run.embeddings(tag)
        yield "embeddings", {**_long(frame, label, "statistic", const), "tag": const(tag, frame.size)}
        steps, eigenvalues = run.spectrum(tag)
        n, width = eigenvalues.size, (eigenvalues.shape[1] if eigenvalues.size else 0)
        yield "spectrum", {"run": const(label, n), "tag": const(tag, n),
                           "step": np.repeat(steps.astype(np.int64), width),
                           "index": np.tile(np.arange(width, dtype=np.int32), len(steps)),
                           "eigenvalue": eigenvalues.reshape(-1).astype(np.float64)}
    grads = run.gradients()
    grads[TOTAL_LAYER] = run.total_gradient_norm()
    yield "gradients", _long(grads, label, "layer", const)
    yield "scalars", _long(run.scalars(), label, "name", const)
    items = [("config", k, v) for k, v in run.config.items()] + [("env", k, v) for k, v in run.env.items()]
    yield "configs", {"run": const(label, len(items)), "section": pa.array([i[0] for i in items], pa.string()),
                      "key": pa.array([i[1] for i in items], pa.string()),
                      "value": pa.array([json.dumps(i[2], default=str) for i in items], pa.string())}


def _long(frame, label, name_column, const):
    """A wide frame (index step, one column per name) as long columns, one row per cell."""
    steps = frame.index.to_numpy(np.int64)
    names = [str(c) for c in frame.columns]
    n = len(steps) * len(names)
    return {"run": const(label, n), "step": np.tile(steps, len(names)),
            name_column: _repeat_each(names, len(steps)), "value": frame.to_numpy(np.float64).T.reshape(-1)}


def _repeat_each(names, times):
    return np.repeat(np.array(names, dtype=object), times) if names else np.array([], dtype=object)
