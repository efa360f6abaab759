"""Write a new run from statistics computed elsewhere (an importer's only way into the store).

The Recorder computes statistics from raw scores; an importer only has summaries
(counts, sums, extremes, a histogram). `score_stats` puts those into the
Recorder's own row layout and turns them into stored statistics with the same
`stats.summarize`, so an imported run holds exactly the columns a recorded one does.
`write_precomputed_run` writes them through `store.StoreWriter`: the constructor
(path, bins, config, env), `append_scores`, `append_gradients`, `append_scalars`
and `close`. That is the whole store API the bridges use.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scoreviz.errors import ScorevizError
from scoreviz.stats import KINDS, RowLayout, summarize
from scoreviz.store import FILE_NAME, StoreWriter
from scoreviz.store.lock import lock_path


@dataclass
class KindSummary:
    """What is known of one kind (pos or neg) of scores at one step.

    `hist` holds whole counts over the run's [-1, 1] bins; `out_of_range` the
    finite scores outside [-1, 1]; NaN where a source does not know a number
    (e.g. non-finite counts, which TensorBoard histograms do not keep).
    """

    count: float
    total: float
    sum_squares: float
    minimum: float
    maximum: float
    hist: np.ndarray
    nonfinite: float = np.nan
    out_of_range: float = np.nan


def score_stats(bins: int, rows: list[dict], sample_var=None, margin=None, hard_frac=None) -> dict:
    """Stored statistics (as StoreWriter.append_scores takes them) of rows of
    {kind: KindSummary or None}; None is a kind with no scores at that step.

    `sample_var`: per row, the mean over samples of each sample's negative
    variance, or NaN where unknown (it cannot be derived from a histogram).
    `margin`, `hard_frac`: per row, the mean margin and the fraction of hard samples,
    or NaN where unknown (stored as one sample's sums, so they read back unchanged).
    """
    layout = RowLayout(bins)
    table = np.zeros((len(rows), layout.width))
    for i, row in enumerate(rows):
        for kind in KINDS:
            summary = row.get(kind)
            extremes = layout.extremes(table[i], kind)
            if summary is None:
                extremes[:] = np.inf  # min = +inf, -max = +inf: no scores
                continue
            if len(summary.hist) != bins:
                raise ValueError(f"score_stats: a {kind} histogram has {len(summary.hist)} bins, expected {bins}")
            layout.sums(table[i], kind)[:] = [summary.count, summary.total, summary.sum_squares,
                                              summary.nonfinite, summary.out_of_range, *summary.hist]
            extremes[:] = [summary.minimum, -summary.maximum]
        value = np.nan if sample_var is None else sample_var[i]
        layout.sample_var(table[i])[:] = (value, 1.0) if np.isfinite(value) else (0.0, 0.0)
        pair = (np.nan if margin is None else margin[i], np.nan if hard_frac is None else hard_frac[i])
        layout.margin(table[i])[:] = (*pair, 1.0) if np.isfinite(pair).all() else (0.0, 0.0, 0.0)
    return summarize(table, layout)


def write_precomputed_run(run_dir, *, bins: int, config: dict, env: dict, scores: dict,
                          gradients=None, scalars=None) -> Path:
    """Write a new run folder from precomputed rows; returns its scores.h5 path.

    scores: {tag: (steps, stats)} with stats from `score_stats`.
    gradients: (steps, layer names, norms (n, layers), totals (n,)) or None.
    scalars: (steps, names, values (n, names)) or None.
    The file is written under a hidden temporary name and linked into place when
    complete, so an interrupted import leaves no half run behind (at most a hidden
    `.scores.h5.<pid>.partial`), and an existing run is never touched.
    """
    run_dir = Path(run_dir)
    path = run_dir / FILE_NAME
    if path.exists():
        raise ScorevizError(f"{path}: a run is already there; remove it or choose another --out")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ScorevizError(f"{run_dir}: cannot create the run folder ({err})") from None
    partial = run_dir / f".{FILE_NAME}.{os.getpid()}.partial"  # this process's own: two imports never share one
    partial.unlink(missing_ok=True)  # left by a killed import that had this process id
    writer = StoreWriter(partial, bins, config, env)
    try:
        for tag, (steps, stats) in scores.items():
            if len(steps):
                writer.append_scores(tag, steps, stats)
        if gradients is not None and len(gradients[0]):
            writer.append_gradients(*gradients)
        if scalars is not None and len(scalars[0]):
            writer.append_scalars(*scalars)
    except BaseException:
        writer.close()
        partial.unlink(missing_ok=True)
        lock_path(partial).unlink(missing_ok=True)
        raise
    writer.close()
    try:
        os.link(partial, path)  # unlike a rename, fails if a run appeared there meanwhile
    except FileExistsError:
        raise ScorevizError(f"{path}: a run appeared there while this one was imported; "
                            f"remove it or choose another --out") from None
    except OSError:  # a file system without hard links
        if path.exists():
            raise ScorevizError(f"{path}: a run appeared there while this one was imported") from None
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
        lock_path(partial).unlink(missing_ok=True)  # this process's own writer lock, released by close()
    return path
