"""Score statistics computed on the device the scores live on.

`score_row` turns one batch of positive and negative scores into a single
float64 vector (a "row") without synchronising the device with the host. Rows
hold sums, not means, so that rows from several ranks add up under
torch.distributed; `summarize` turns a (reduced) row into the statistics that
are stored, on the host.

Row layout: for each kind in (pos, neg) its count, sum, sum of squares,
non-finite count, out-of-range count and histogram counts (bins); then the sum
over samples of each sample's own negative variance and the number of samples;
then the margin sums (the sum over samples of positive minus hardest negative,
the number of samples whose hardest negative beats their positive, and the
number of samples counted); all of these are summed over ranks. Last, for each
kind, min and -max (both reduced with MIN).

The margin needs one positive per sample: it is recorded when `pos` has as
many elements as `neg` has samples (rows), and left out (NaN) otherwise.
"""

from __future__ import annotations

import math
import random

import numpy as np
import torch

from scoreviz.store.schema import KINDS, STAT_NAMES  # noqa: F401  (the file's column names)

QUANTILES = (0.05, 0.25, 0.50, 0.75, 0.95)

# Above this many scores the histogram is built from a subsample of about this
# size (exact moments, min and max still use every score): the same block of
# consecutive columns from every sample, starting at a uniformly random column
# and wrapping around, so every score has the same chance to be in it and the
# bin proportions are unbiased. Counts are scaled back up so that a histogram
# sums to the number of in-range scores, up to rounding. The offsets come from a
# private host RNG: recording never draws from torch's random number generators.
HIST_SAMPLE_LIMIT = 1 << 16
_offsets = random.Random(0)

# Scores are centred in blocks of about this many elements, small enough to stay in cache.
_CENTRE_BLOCK = 1 << 18

_SUMS = 5  # count, sum, sumsq, nonfinite, out_of_range
_MARGIN_SUMS = 3  # sum of (pos - hardest neg), samples whose hardest neg beats pos, samples


class RowLayout:
    """Where each number sits in a row, for a given number of histogram bins."""

    def __init__(self, bins: int):
        self.bins = bins
        self.kind_sums = _SUMS + bins            # summed part of one kind
        # + neg per-sample variance sum and sample count, + the margin sums
        self.sum_width = 2 * self.kind_sums + 2 + _MARGIN_SUMS
        self.width = self.sum_width + 4          # + min, -max for each kind

    def sums(self, row, kind):
        start = KINDS.index(kind) * self.kind_sums
        return row[..., start:start + self.kind_sums]

    def extremes(self, row, kind):
        start = self.sum_width + 2 * KINDS.index(kind)
        return row[..., start:start + 2]

    def sample_var(self, row):
        return row[..., 2 * self.kind_sums:2 * self.kind_sums + 2]

    def margin(self, row):
        return row[..., 2 * self.kind_sums + 2:self.sum_width]


def _as_rows(x: torch.Tensor) -> torch.Tensor:
    """Scores as (samples, scores per sample) float32: the first dimension is the sample."""
    x = x.detach().float()
    if x.numel() == 0:  # no scores: (0, 0), whatever shape they came in
        return x.reshape(0, 0)
    return x.reshape(x.shape[0], -1) if x.dim() > 1 else x.reshape(1, -1)


def _row_moments(rows: torch.Tensor):
    """Per-row count, sum and spread (the square root of the sum of squared deviations from
    the row's mean) of the finite scores, float32, and the mask of finite scores (None when
    every score is finite)."""
    if rows.device.type == "cpu":
        total = rows.sum(dim=1)
        # On the CPU a look costs nothing: a finite sum of the row sums means finite rows.
        if math.isfinite(total.sum()):
            width = rows.shape[1]
            return torch.full_like(total, width), total, _spread(rows, total / width), None
    finite = torch.isfinite(rows)
    count = finite.sum(dim=1).float()
    total = torch.where(finite, rows, 0.0).sum(dim=1)
    deviations = torch.where(finite, rows - (total / count.clamp(min=1))[:, None], 0.0)
    return count, total, torch.linalg.vector_norm(deviations, dim=1), finite


def _spread(rows, mean):
    """Per row, the L2 norm of the deviations from the mean. Centring first keeps float32
    exact enough when the variance is tiny next to the mean (collapse)."""
    step = max(1, _CENTRE_BLOCK // rows.shape[1])
    if step >= rows.shape[0]:  # one block (a MoCo batch's negatives): no loop, fewer operations
        return torch.linalg.vector_norm(rows - mean[:, None], dim=1)
    out = torch.empty_like(mean)
    for start in range(0, rows.shape[0], step):
        out[start:start + step] = torch.linalg.vector_norm(rows[start:start + step] - mean[start:start + step, None], dim=1)
    return out


def _histogram_sample(values: torch.Tensor):
    """The scores to bin, as (samples, columns), and how many scores each stands for."""
    width = values.shape[1]
    if values.numel() <= HIST_SAMPLE_LIMIT:
        return values, 1.0
    columns = max(1, HIST_SAMPLE_LIMIT // values.shape[0])
    start = _offsets.randrange(width)
    block = values[:, start:start + columns]
    if start + columns > width:  # wrap around
        block = torch.cat([block, values[:, :start + columns - width]], dim=1)
    return block, width / columns


def _kind_stats(x: torch.Tensor, bins: int, scale: float = 1.0):
    """Sums, histogram and extremes of one tensor of scores times `scale`, all on its device.

    Returns (sums, extremes (min, -max), (sample variance sum, sample count), minus the
    largest finite score of each row (+inf for a row without one; None when there are no
    scores)), the last three float64. On the CPU and on a GPU alike the cost of these small
    tensors is the number of operations: per-row numbers are stacked once, go to float64
    once and are summed in one reduction.
    """
    rows = _as_rows(x)
    n = rows.numel()
    if not n:
        return _no_scores(rows, bins)
    count, total, spread, finite = _row_moments(rows)
    if finite is None:
        hist_input, row_max, row_min = rows, rows.amax(dim=1), rows.amin(dim=1)
    else:
        hist_input = torch.where(finite, rows, float("inf"))  # outside the histogram's range
        row_max = torch.where(finite, rows, float("-inf")).amax(dim=1)
        row_min = hist_input.amin(dim=1)
    per_row = torch.stack([count, total, spread, row_min, row_max.neg()])
    if scale != 1.0:  # scale > 0: float32 rounding keeps the order, so these are the extremes of the scaled scores
        per_row[1:].mul_(scale)
    count, total, spread, row_min, neg_row_max = per_row.double().unbind()
    extremes = torch.stack([row_min, neg_row_max]).amin(dim=1)  # min, -max: a row without scores has inf, inf
    squares = spread.square()
    safe_count = count.clamp(min=1)
    per_row = torch.stack([count, total, torch.addcdiv(squares, total.square(), safe_count), torch.rsub(count, rows.shape[1]),
                           squares / safe_count, count.clamp(max=1)])
    n_finite, total, sumsq, nonfinite, var_sum, samples = per_row.sum(dim=1).unbind()
    # On the CPU, with every score finite and in [-1, 1], the histogram takes its fast path
    # and nothing is out of range.
    inside = finite is None and _inside_unit_interval(extremes)
    sample, weight = _histogram_sample(hist_input)
    hist = _bin_counts(sample, bins, scale, inside)
    if inside:
        out_of_range = torch.zeros_like(n_finite)
    elif weight == 1.0:
        out_of_range = n_finite - hist.sum()
    else:
        hist = hist * weight
        out_of_range = n_finite - hist_input.abs().le(1.0 / scale).sum().double()  # exact, over every score
    sums = torch.cat([torch.stack([n_finite, total, sumsq, nonfinite, out_of_range]), hist])
    return sums, extremes, torch.stack([var_sum, samples]), neg_row_max


def _inside_unit_interval(extremes) -> bool:
    """Whether min >= -1 and max <= 1, looked at on the CPU only (elsewhere a look is a host sync)."""
    if extremes.device.type != "cpu":
        return False
    low, neg_high = extremes.tolist()
    return low >= -1.0 and neg_high >= -1.0


def _no_scores(rows, bins):
    """_kind_stats of an empty tensor: zero sums, extremes (inf, inf) that every MIN reduction ignores."""
    zeros = torch.zeros(_SUMS + bins, dtype=torch.float64, device=rows.device)  # a fill, no copy from the host
    return zeros, torch.full((2,), float("inf"), dtype=torch.float64, device=rows.device), zeros[:2], None


def _bin_counts(values: torch.Tensor, bins: int, scale: float, inside: bool = False) -> torch.Tensor:
    """float64 counts of values x scale in `bins` equal bins over [-1, 1], as torch.histc:
    1.0 falls in the last bin, values outside (and inf) in none. `inside`: every value x
    scale is known to be in [-1, 1].

    On the CPU the bins are computed here and counted with bincount, about twice as
    fast as histc there, and exact: the float32 scores placed in float64, where
    score x bins / 2 + bins / 2 has no rounding (for scores not within about 1e-7 of 0),
    so a score on a bin edge falls in the bin it opens, as numpy.histogram puts it.
    Elsewhere histc (bincount's output size would need a host sync), whose bins can differ
    from these by rounding at an edge.
    """
    scores = values.float() * scale if scale != 1.0 else values.float()
    if values.device.type != "cpu":
        return torch.histc(scores, bins=bins, min=-1.0, max=1.0).double()
    half = bins / 2
    position = scores.double().mul_(half).add_(half)  # bin i holds [i, i + 1)
    if inside:  # position in [0, bins]: truncation is the floor, and 1.0 (position bins) joins the last bin
        return torch.bincount(position.clamp_(max=bins - 1).long().view(-1), minlength=bins).double()
    index = position.floor_().clamp_(-1, bins).long().add_(1)  # 0 below the range, bins + 1 at 1.0 and above
    hist = torch.bincount(index.view(-1), minlength=bins + 2)[1:bins + 1].double()
    hist[-1] += scores.eq(1.0).sum()  # 1.0 (position bins exactly) falls in the last bin
    return hist


def _margin_sums(pos: torch.Tensor, neg_rows: int, neg_row_max, scale: float) -> torch.Tensor:
    """Margin sums of one batch: sum over samples of (positive - hardest negative), the number
    of samples whose hardest negative beats their positive, and the number of samples counted
    (those with a finite positive and at least one finite negative). ``neg_row_max``: minus
    each sample's hardest negative, scaled, float64. Zeros when the scores do not come one
    positive per sample."""
    pos = pos.reshape(-1)
    if neg_row_max is None or pos.numel() != neg_rows:
        device = pos.device if neg_row_max is None else neg_row_max.device
        return torch.zeros(_MARGIN_SUMS, dtype=torch.float64, device=device)
    pos = pos.to(neg_row_max.device).float()
    difference = neg_row_max + (pos * scale if scale != 1.0 else pos)  # pos - hardest, both rounded alike: ties stay ties
    counted = torch.isfinite(difference)  # a non-finite positive, or no finite negative (+inf)
    margin = torch.where(counted, difference, 0.0)
    return torch.stack([margin, margin.lt(0.0).double(), counted.double()]).sum(dim=1)


def score_row(pos: torch.Tensor, neg: torch.Tensor, bins: int, scale: float = 1.0) -> torch.Tensor:
    """One float64 row of sums for a batch of scores (times `scale`), on the
    scores' device, with no host sync. Exception: on the CPU, cheap checks pick
    the all-finite fast path. The first dimension of `neg` is the sample; a 1-D
    `neg` is one sample. `scale` turns logits back into scores without a copy.
    """
    pos_sums, pos_ext, _, _ = _kind_stats(pos.reshape(-1), bins, scale)
    neg_sums, neg_ext, sample_var, neg_row_max = _kind_stats(neg, bins, scale)
    neg_rows = 0 if neg.numel() == 0 else (neg.shape[0] if neg.dim() > 1 else 1)
    margin = _margin_sums(pos, neg_rows, neg_row_max, scale)
    return torch.cat([pos_sums, neg_sums, sample_var, margin, pos_ext, neg_ext])


def histogram_quantiles(counts: np.ndarray, quantiles=QUANTILES) -> np.ndarray:
    """Quantiles over [-1, 1] from histogram counts, linear within a bin.

    counts: (..., bins). Returns (..., len(quantiles)); NaN where a histogram is empty.
    """
    counts = np.asarray(counts, dtype=np.float64)
    flat = counts.reshape(-1, counts.shape[-1])
    out = np.empty((flat.shape[0], len(quantiles)))
    for start in range(0, flat.shape[0], _QUANTILE_BLOCK):
        out[start:start + _QUANTILE_BLOCK] = _block_quantiles(flat[start:start + _QUANTILE_BLOCK], quantiles)
    return out.reshape(counts.shape[:-1] + (len(quantiles),))


_QUANTILE_BLOCK = 4096  # histograms at once: a (block, quantiles, bins) comparison


def _block_quantiles(counts, quantiles):
    """histogram_quantiles of (n, bins) counts, every quantile at once."""
    bins = counts.shape[-1]
    cum = np.cumsum(counts, axis=-1)
    total = cum[:, -1:]
    target = total * np.asarray(quantiles, dtype=np.float64)  # (n, quantiles)
    # per quantile, the first bin whose cumulative count reaches the target, past the empty bins in front
    below = (cum[:, None, :] < target[:, :, None]) | (cum[:, None, :] == 0)
    b = np.minimum(below.sum(axis=-1), bins - 1)
    inside = np.take_along_axis(counts, b, axis=-1)
    before = np.take_along_axis(cum, b, axis=-1) - inside
    frac = np.divide(target - before, inside, out=np.zeros_like(target), where=inside > 0)
    value = -1.0 + 2.0 * (b + np.clip(frac, 0.0, 1.0)) / bins
    return np.where(total > 0, value, np.nan)


def summarize(rows: np.ndarray, layout: RowLayout) -> dict:
    """Stored statistics from reduced rows (n_rows, width), on the host.

    Returns {"pos_mean": array, ..., "neg_sample_var": array, "margin": array, "hard_frac": array,
    "pos_hist": (n, bins), ...}.
    Variances are population variances (ddof=0); quantiles come from the histogram.
    """
    rows = np.asarray(rows, dtype=np.float64)
    out = {}
    with np.errstate(invalid="ignore", divide="ignore"):
        for kind in KINDS:
            sums = layout.sums(rows, kind)
            count, total, sumsq, nonfinite, out_of_range = (sums[:, i] for i in range(_SUMS))
            hist = sums[:, _SUMS:]
            mean = np.where(count > 0, total / count, np.nan)
            var = np.maximum(sumsq / count - mean * mean, 0.0)
            lo, neg_hi = layout.extremes(rows, kind).T
            quants = histogram_quantiles(hist)
            values = [count, mean, var, np.where(count > 0, lo, np.nan), np.where(count > 0, -neg_hi, np.nan)]
            values += [quants[:, i] for i in range(len(QUANTILES))] + [nonfinite, out_of_range]
            out.update({f"{kind}_{name}": v for name, v in zip(STAT_NAMES, values)})
            out[f"{kind}_hist"] = np.rint(hist).astype(np.uint32)
        var_sum, samples = layout.sample_var(rows).T
        out["neg_sample_var"] = np.where(samples > 0, var_sum / samples, np.nan)
        margin_sum, beaten, counted = layout.margin(rows).T
        out["margin"] = np.where(counted > 0, margin_sum / counted, np.nan)
        out["hard_frac"] = np.where(counted > 0, beaten / counted, np.nan)
    return out
