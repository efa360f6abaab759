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

import errno
import glob
import os
import shutil
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
    The run is written whole or not at all: into a hidden temporary folder beside it
    (`.<name>.<pid>.importing`, its file named scores.h5 only once complete), renamed into
    place when complete (or, where the folder
    exists already, its file linked into it), so an interrupted import leaves no half run
    and no empty folder behind, and an existing run is never touched. A temporary folder
    left by a killed import is removed by the next one.
    """
    run_dir = Path(run_dir)
    path = run_dir / FILE_NAME
    if path.exists() or path.is_symlink():
        raise ScorevizError(f"{path}: a run is already there; remove it or choose another --out")
    try:
        run_dir.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ScorevizError(f"{run_dir.parent}: cannot create the folder ({err.strerror or err})") from None
    _remove_abandoned(run_dir)
    temporary = run_dir.parent / f".{run_dir.name}.{os.getpid()}{_TEMPORARY}"  # this process's own
    shutil.rmtree(temporary, ignore_errors=True)  # left by a killed import that had this process id
    try:
        temporary.mkdir()
    except OSError as err:
        raise ScorevizError(f"{temporary}: cannot create the run's temporary folder ({err.strerror or err})") from None
    try:
        partial = temporary / _PARTIAL  # not named scores.h5 while it is written: no run list shows it
        writer = StoreWriter(partial, bins, config, env)
        try:
            for tag, (steps, stats) in scores.items():
                if len(steps):
                    writer.append_scores(tag, steps, stats)
            if gradients is not None and len(gradients[0]):
                writer.append_gradients(*gradients)
            if scalars is not None and len(scalars[0]):
                writer.append_scalars(*scalars)
        finally:
            writer.close()
        lock_path(partial).unlink(missing_ok=True)  # this writer's lock, released by close()
        os.rename(partial, temporary / FILE_NAME)
        _move_into_place(temporary, run_dir)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    return path


_TEMPORARY = ".importing"
_PARTIAL = f".{FILE_NAME}.partial"


def _move_into_place(temporary: Path, run_dir: Path):
    """Rename the complete run folder into place; where a folder is there already (one
    holding other files), link its scores.h5 into it instead. Either fails, and leaves
    everything as it was, when a run appeared there meanwhile."""
    appeared = ScorevizError(f"{run_dir / FILE_NAME}: a run appeared there while this one was imported; "
                             "remove it or choose another --out")
    try:
        os.rename(temporary, run_dir)  # replaces nothing but an empty folder
        return
    except OSError as err:
        if not run_dir.is_dir() or err.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise ScorevizError(f"{run_dir}: cannot move the imported run into place ({err.strerror or err})") from None
    try:
        os.link(temporary / FILE_NAME, run_dir / FILE_NAME)  # unlike a rename, fails if a run appeared there
    except FileExistsError:
        raise appeared from None
    except OSError:  # a file system without hard links
        if (run_dir / FILE_NAME).exists():
            raise appeared from None
        os.replace(temporary / FILE_NAME, run_dir / FILE_NAME)


def _remove_abandoned(run_dir: Path):
    """Remove the temporary folders that killed imports of `run_dir` left (their process is gone)."""
    for folder in run_dir.parent.glob(f".{glob.escape(run_dir.name)}.*{_TEMPORARY}"):
        pid = folder.name[len(run_dir.name) + 2:-len(_TEMPORARY)]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process
        return True
    return True
