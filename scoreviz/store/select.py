"""Which rows of a stream to read, and reading only those rows and columns.

A view seldom needs every row of a run: a curve of 10,000 steps drawn 1,000
pixels wide needs at most a few thousand points, and a step range needs the
rows in it. These helpers pick the rows from the step column alone (a few
bytes per row) and then read the picked rows and columns as HDF5 hyperslabs,
so the bytes read and held grow with the points shown, not with the run.

Downsampling is strided: every k-th recorded step, the first and last always
kept. It is the one selection that HDF5 can read without reading the rest: a
min/max-preserving selection must look at every row to find the spikes, which
costs as much I/O as reading the whole curve. Views that must not miss a spike
(the health check, the app's own min/max downsampling of a selected run) read
full resolution instead.
"""

from __future__ import annotations

import numpy as np

from scoreviz.errors import ScorevizError

# Rows further apart than this are read as separate blocks (one HDF5 chunk of rows).
_GAP = 256
# Rows read at once when every k-th row is kept (_every).
_BLOCK_ROWS = 1 << 14


def last_of_each_step(steps) -> np.ndarray:
    """Indices of the last row of each step, in step order (a resumed run's later row wins)."""
    steps = np.asarray(steps)
    order = np.argsort(steps, kind="stable")
    last = np.ones(len(order), dtype=bool)
    last[:-1] = steps[order][1:] != steps[order][:-1]
    return order[last]


def check_step_range(step_range, path):
    """(first, last) inclusive, either end None; ScorevizError for anything else."""
    if step_range is None:
        return None, None
    try:
        first, last = step_range
    except (TypeError, ValueError):
        raise ScorevizError(f"{path}: steps must be (first, last), got {step_range!r:.60}") from None
    for end in (first, last):
        if end is not None and not isinstance(end, (int, np.integer)):
            raise ScorevizError(f"{path}: steps must be whole numbers or None, got {step_range!r:.60}")
    return first, last


def check_max_points(max_points, path):
    if max_points is None:
        return None
    if isinstance(max_points, bool) or not isinstance(max_points, (int, np.integer)) or max_points < 2:
        raise ScorevizError(f"{path}: max_points must be a whole number of at least 2, got {max_points!r:.40}")
    return int(max_points)


def pick_rows(row_steps, rows, step_range=(None, None), max_points=None) -> np.ndarray:
    """The rows (sorted) whose step lies in ``step_range`` (inclusive ends, None for open)
    and, with ``max_points``, among at most that many distinct steps: every k-th step
    (k = ceil(steps / max_points)) plus the last. Every row of a chosen step is kept, so
    callers resolve repeated steps as they would for a full read.

    ``row_steps`` are the steps of ``rows`` (same length).
    """
    rows = np.asarray(rows, dtype=np.int64)
    row_steps = np.asarray(row_steps)
    first, last = step_range
    inside = np.ones(len(rows), dtype=bool)
    if first is not None:
        inside &= row_steps >= first
    if last is not None:
        inside &= row_steps <= last
    rows, row_steps = rows[inside], row_steps[inside]
    if max_points is not None:
        unique = np.unique(row_steps)
        if len(unique) > max_points:
            stride = -(-len(unique) // (max_points - 1))  # leaves room for the last step
            chosen = np.union1d(unique[::stride], unique[-1:])
            keep = np.isin(row_steps, chosen)
            rows = rows[keep]
    return np.sort(rows)


def read_rows(ds, rows, columns=None) -> np.ndarray:
    """``ds[rows][:, columns]`` reading only those rows and columns.

    ``rows`` sorted ascending. Evenly spaced rows are one strided hyperslab;
    otherwise the rows are read in blocks of nearby rows (one block per cluster,
    a new block where two picked rows are more than an HDF5 chunk apart).
    ``columns``: column indices of a 2-D dataset (any order), None for all.
    """
    rows = np.asarray(rows, dtype=np.int64)
    if columns is None or ds.ndim == 1:
        col_sel, reorder, width = slice(None), None, ds.shape[1:]
    else:
        wanted = np.asarray(columns, dtype=np.int64)
        unique = np.unique(wanted)
        col_sel, reorder, width = unique.tolist(), np.searchsorted(unique, wanted), (len(unique),)
    if len(rows) == 0 or width == (0,):
        out = np.empty((len(rows),) + width, dtype=ds.dtype)
    else:
        out = _read_selected(ds, rows, col_sel)
    return out if reorder is None else out[:, reorder]


def _read_selected(ds, rows, col_sel):
    index = (lambda r: (r, col_sel)) if ds.ndim == 2 else (lambda r: r)
    gaps = np.diff(rows)
    if len(rows) == 1:
        return ds[index(slice(rows[0], rows[0] + 1))]
    if (gaps == gaps[0]).all() and gaps[0] > 0:
        return _every(ds, index, rows[0], rows[-1] + 1, int(gaps[0]))
    if (gaps[:-1] == gaps[0]).all() and gaps[0] > 0 and gaps[-1] > 0:  # every k-th row, then the last
        head = _every(ds, index, rows[0], rows[-2] + 1, int(gaps[0]))
        return np.concatenate([head, ds[index(slice(rows[-1], rows[-1] + 1))]])
    parts = []
    starts = np.concatenate([[0], np.flatnonzero(gaps > _GAP) + 1])
    ends = np.concatenate([starts[1:], [len(rows)]])
    for a, b in zip(starts, ends):
        block = ds[index(slice(rows[a], rows[b - 1] + 1))]
        parts.append(block[rows[a:b] - rows[a]])
    return np.concatenate(parts)


def _every(ds, index, start, stop, step):
    """Rows start:stop:step of ds, read as contiguous blocks of at most about _BLOCK_ROWS rows and
    strided in memory: HDF5's own strided selection took 15x longer (5.5 ms against 0.36 ms for
    every 5th row of 10,000 x 27), and the blocks bound the memory a long run's read takes."""
    if step == 1:
        return ds[index(slice(start, stop))]
    block = max(1, _BLOCK_ROWS // step) * step  # a multiple of step: each block starts on a kept row
    return np.concatenate([ds[index(slice(a, min(a + block, stop)))][::step] for a in range(start, stop, block)])
