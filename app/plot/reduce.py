"""Reductions that bound what a figure holds: a curve to a few thousand points, a matrix of
steps to a few hundred rows, histograms to densities.

numpy and pandas only: the data access (app.runs) caches reduced data with these, and the
views' figure functions reduce again to fit a figure's budget.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from scoreviz.groups import row_at_step  # noqa: F401 - shared with the grouping of histograms

# Points per line trace after downsampling; two per bucket (its min and max).
MAX_POINTS = 2000
# Time rows per heatmap / surface; a 100k-step run becomes this many buckets.
MAX_ROWS = 400
# Cells (rows x columns, all runs together) allowed in one heatmap figure, so a
# figure stays well under 2 MB of JSON however many runs are selected.
MAX_CELLS = 160_000


def downsample_minmax(x, y, max_points: int = MAX_POINTS):
    """Reduce a curve to at most ``max_points`` points, keeping every spike.

    The curve is cut into ``max_points // 2`` equal buckets of consecutive
    points and each bucket keeps its minimum and its maximum (in their original
    order), so a single outlier anywhere survives, unlike plain striding or
    averaging. NaN points are ignored when choosing; a bucket that is all NaN
    keeps one NaN so the gap still shows. Returns ``(x, y)`` numpy arrays.
    """
    x = np.asarray(x)
    y = np.asarray(y, dtype=float)
    n = len(y)
    if n <= max_points:
        return x, y
    n_buckets = max(1, max_points // 2)
    size = math.ceil(n / n_buckets)
    n_buckets = math.ceil(n / size)
    padded = np.full(n_buckets * size, np.nan)
    padded[:n] = y
    blocks = padded.reshape(n_buckets, size)
    nan = np.isnan(blocks)
    # Padding and NaN never win: argmin sees +inf there, argmax sees -inf.
    lo = np.argmin(np.where(nan, np.inf, blocks), axis=1)
    hi = np.argmax(np.where(nan, -np.inf, blocks), axis=1)
    base = np.arange(n_buckets) * size
    keep = np.unique(np.concatenate([base + lo, base + hi]))
    keep = keep[keep < n]
    return x[keep], y[keep]


def bucket_rows(steps, values, max_rows: int = MAX_ROWS, how: str = "mean"):
    """Reduce a (steps, columns) matrix to at most ``max_rows`` rows.

    Consecutive rows are grouped into equal buckets; each bucket becomes one
    row labelled by its first step, holding the ``mean`` of the bucket (for
    densities) or its ``max`` (for norms, so a spike survives). NaN is ignored;
    a bucket that is all NaN stays NaN (a layer without gradient there).
    Returns ``(steps, values)``; float32 input stays float32.
    """
    steps = np.asarray(steps)
    values = np.asarray(values)
    if values.dtype.kind != "f":
        values = values.astype(float)
    n = len(steps)
    if n <= max_rows:
        return steps, values
    size = math.ceil(n / max_rows)
    starts = np.arange(0, n, size)
    # ufunc.reduceat works bucket by bucket in one pass without copying the
    # whole matrix, which matters for 100k steps x 150 layers.
    if how == "max":
        out = np.fmax.reduceat(values, starts, axis=0)  # fmax skips NaN
    else:
        finite = ~np.isnan(values)
        sums = np.add.reduceat(np.where(finite, values, 0), starts, axis=0)
        counts = np.add.reduceat(finite, starts, axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            out = (sums / counts).astype(values.dtype)
    return steps[starts], out


def evenly(n: int, k: int) -> np.ndarray:
    """k indices spread evenly over range(n), first and last included."""
    if n <= k:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, k).round().astype(int))


def smooth(values: pd.Series, weight: float) -> pd.Series:
    """Exponential moving average as in TensorBoard's smoothing slider.

    ``weight`` in [0, 1): 0 leaves the curve as it is, 0.99 smooths a lot.
    Done on the full-resolution series, before downsampling.
    """
    if not weight or weight <= 0:
        return values
    weight = min(float(weight), 0.999)
    return values.ewm(alpha=1.0 - weight, adjust=True, ignore_na=True).mean()


def to_density(counts) -> np.ndarray:
    """Each histogram row divided by its total, so rows of any batch size compare."""
    counts = np.asarray(counts, dtype=np.float32)  # float32 halves the work on 100k rows
    totals = counts.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, counts / totals, np.nan)


def reduce_gradients(grads: pd.DataFrame, max_rows: int = MAX_ROWS):
    """Bucket a (step x layer) gradient-norm frame to at most ``max_rows`` steps.

    Keeps the bucket maximum so a spike in one layer still shows. Returns
    ``(steps, layers, norms)`` with ``norms`` shaped (steps, layers).
    """
    values = grads.to_numpy()
    if values.dtype.kind != "f":
        values = values.astype(np.float32)
    steps, norms = bucket_rows(grads.index.to_numpy(), values, max_rows, how="max")
    return steps, list(grads.columns), norms
