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
# 32,768 scores put about 330 in a bin on average at 100 bins, a bin of the bulk
# within a few percent of its expected count (Poisson), and the distribution views
# average steps anyway; binning is the largest per-score cost of recording on
# the CPU, and twice as many scores cost twice as much.
HIST_SAMPLE_LIMIT = 1 << 15
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


def _row_moments(rows: torch.Tensor, include=None):
    """Per-row count, sum and spread (the square root of the sum of squared deviations from
    the row's mean) of the finite scores, float32, and the mask of finite scores (None when
    every score is finite). ``include``: a bool mask of the scores of this kind (None: all);
    the others are neither counted nor seen."""
    if rows.device.type == "cpu" and include is None:
        total = rows.sum(dim=1)
        # On the CPU a look costs nothing: a finite sum of the row sums means finite rows.
        if math.isfinite(total.sum()):
            width = rows.shape[1]
            spread = torch.zeros_like(total) if width == 1 else _spread(rows, total / width)
            return torch.full_like(total, width), total, spread, None
    finite = torch.isfinite(rows)
    if include is not None:
        finite &= include
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


class _Kind:
    """One kind's scores as rows, and per row (float32, all but the counts times `scale`):
    count of finite scores, count of non-finite ones, sum, spread, min and -max (a row
    without a finite score has min = -max = inf, which every minimum ignores). ``include``:
    the mask of the scores of this kind (a positives mask), None for all."""

    def __init__(self, rows: torch.Tensor, scale: float, include=None):
        count, total, spread, finite = _row_moments(rows, include)
        self.finite = finite
        if finite is None:
            self.hist_input, row_max, row_min = rows, rows.amax(dim=1), rows.amin(dim=1)
        else:
            self.hist_input = torch.where(finite, rows, float("inf"))  # outside the histogram's range
            row_max = torch.where(finite, rows, float("-inf")).amax(dim=1)
            row_min = self.hist_input.amin(dim=1)
        members = rows.shape[1] if include is None else include.sum(dim=1).float()
        self.numbers = torch.stack([count, torch.sub(members, count), total, spread, row_min, row_max.neg()])
        if scale != 1.0:  # scale > 0: float32 rounding keeps the order, so min and max stay the scaled scores'
            self.numbers[2:].mul_(scale)


def _summed(kinds):
    """(sums (k, 6): count, sum, sum of squares, nonfinite, sample variance sum, samples;
    extremes (k, 2): min, -max; the per-row numbers in float64 (k, 6, rows)) of kinds with
    the same number of rows, all at once: on the CPU and on a GPU alike the cost of these
    small tensors is the number of operations."""
    per_row = (kinds[0].numbers[None] if len(kinds) == 1 else torch.stack([k.numbers for k in kinds])).double()
    count, nonfinite, total, spread = per_row[:, :4].unbind(dim=1)
    squares = spread.square()
    safe_count = count.clamp(min=1)
    sums = torch.stack([count, total, torch.addcdiv(squares, total.square(), safe_count), nonfinite,
                        squares / safe_count, count.clamp(max=1)], dim=1).sum(dim=2)
    return sums, per_row[:, 4:].amin(dim=2), per_row


def _histogram(kind: _Kind, bins: int, scale: float, inside: bool, n_finite):
    """(counts (bins,), scores out of [-1, 1]) of one kind, whose finite scores number `n_finite`
    (its summed count); out of range is None when none are (`inside`)."""
    sample, weight = _histogram_sample(kind.hist_input)
    hist = _bin_counts(sample, bins, scale, inside)
    if weight == 1.0:
        return hist, None if inside else n_finite - hist.sum()
    if inside:
        return hist * weight, None
    in_range = kind.hist_input.abs().le(1.0 / scale).sum()  # exact, over every score
    return hist * weight, (n_finite - in_range).double()


def _inside_unit_interval(extremes) -> list:
    """Per kind, whether min >= -1 and max <= 1, looked at on the CPU only (elsewhere a look is a
    host sync, and the answer is False)."""
    if extremes.device.type != "cpu":
        return [False] * extremes.shape[0]
    return [low >= -1.0 and neg_high >= -1.0 for low, neg_high in extremes.tolist()]


def _bin_counts(values: torch.Tensor, bins: int, scale: float, inside: bool = False) -> torch.Tensor:
    """float64 counts of values x scale in `bins` equal bins over [-1, 1], as torch.histc:
    1.0 falls in the last bin, values outside (and inf) in none. `inside`: every value x
    scale is known to be in [-1, 1].

    On the CPU the bins are computed here and counted with bincount, about twice as
    fast as histc there, and exact: the float32 scores placed in float64, where
    score x bins / 2 is exact and adding bins / 2 rounds by less than 1e-14, far less than
    any float32 score's distance from a bin edge it is not on (scores within about 1e-16 of
    0 aside), so a score on a bin edge falls in the bin it opens, as numpy.histogram puts it.
    Elsewhere histc (bincount's output size would need a host sync), whose bins can differ
    from these by rounding at an edge.
    """
    scores = values.float() * scale if scale != 1.0 else values.float()
    if values.device.type != "cpu":
        return torch.histc(scores, bins=bins, min=-1.0, max=1.0).double()
    if inside:
        return torch.bincount(_inside_bins(scores, bins).reshape(-1), minlength=bins).double()
    index = _positions(scores, bins).floor_().clamp_(-1, bins).long().add_(1)  # 0 below the range, bins + 1 at 1.0 and above
    hist = torch.bincount(index.reshape(-1), minlength=bins + 2)[1:bins + 1].double()  # (a transposed neg: a copy)
    hist[-1] += scores.eq(1.0).sum()  # 1.0 (position bins exactly) falls in the last bin
    return hist


def _positions(scores: torch.Tensor, bins: int) -> torch.Tensor:
    """float64 position of each float32 score over [-1, 1] at `bins` bins: bin i holds [i, i + 1)
    (exact as _bin_counts says)."""
    half = bins / 2
    return scores.double().mul_(half).add_(half)


def _inside_bins(scores: torch.Tensor, bins: int) -> torch.Tensor:
    """The bin (int64) of each float32 score known to be in [-1, 1]: its position is in
    [0, bins], so truncation is the floor, and 1.0 (position bins) joins the last bin."""
    return _positions(scores, bins).clamp_(max=bins - 1).long()


def _margin_sums(pos: torch.Tensor, neg_row_max) -> torch.Tensor:
    """Margin sums of one batch from per-sample float64 positives and minus hardest negatives
    (both scaled): sum over samples of (positive - hardest negative), the number of samples
    whose hardest negative beats their positive, and the number of samples counted (those
    with a finite positive and at least one finite negative)."""
    difference = pos + neg_row_max
    counted = torch.isfinite(difference)  # a non-finite positive, or no finite negative (+inf)
    margin = torch.where(counted, difference, 0.0)
    return torch.stack([margin, margin.lt(0.0).double(), counted.double()]).sum(dim=1)


def score_row(pos: torch.Tensor, neg: torch.Tensor, bins: int, scale: float = 1.0) -> torch.Tensor:
    """One float64 row of sums for a batch of scores (times `scale`), on the
    scores' device, with no host sync. Exception: on the CPU, cheap checks pick
    the all-finite fast paths. The first dimension of `neg` is the sample; a 1-D
    `neg` is one sample. `scale` turns logits back into scores without a copy.

    Each positive is a row of its own (of one score), so that with one positive per
    sample the two kinds have the same rows and are summed together, and the margin
    pairs each positive with its sample's hardest negative (recorded when `pos` has as
    many elements as `neg` has samples, left out otherwise).
    """
    rows = [_as_rows(pos.reshape(-1, 1)), _as_rows(neg)]
    if rows[1].device.type == "cpu" and rows[0].shape[0] == rows[1].shape[0] > 0 and rows[1].shape[1] > 0:
        row = _unit_scores_row(rows[0], rows[1], bins, scale)
        if row is not None:
            return row
    return _general_row(rows, bins, scale)


def masked_score_row(scores: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor, bins: int,
                     scale: float = 1.0) -> torch.Tensor:
    """score_row of the scores (samples, columns) whose positives and negatives are given by two
    bool masks of their shape (an entry in neither is left out: a self-similarity), any number
    of each per sample. The margin pairs each sample's weakest positive with its hardest
    negative (a sample counts once it has a finite one of each)."""
    rows = _as_rows(scores)
    return _general_row([rows, rows], bins, scale, [positives.reshape(rows.shape), negatives.reshape(rows.shape)])


def _general_row(rows, bins: int, scale: float, include=(None, None)) -> torch.Tensor:
    """score_row of [positives as (P, 1) rows, negatives as (samples, negatives per sample) rows],
    for scores of any value on any device; ``include``: per kind, the mask of its scores in its
    rows (None: all)."""
    device = rows[1].device
    kinds = [_Kind(r, scale, inc) if r.numel() else None for r, inc in zip(rows, include)]
    if kinds[0] is not None and kinds[1] is not None and rows[0].shape[0] == rows[1].shape[0]:
        sums, extremes, per_row = _summed(kinds)
        margin = _margin_sums(per_row[0, 4], per_row[1, 5])  # a positive's row min: itself, inf if not finite
    else:
        parts = [_summed([k]) if k is not None else _no_scores(device) for k in kinds]
        sums, extremes = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
        margin = torch.zeros(_MARGIN_SUMS, dtype=torch.float64, device=device)
    inside = _inside_unit_interval(extremes)
    hists, out_of_range = [], []
    for kind, kind_inside, n_finite in zip(kinds, inside, sums[:, 0]):
        hist, outside = _histogram(kind, bins, scale, kind_inside and kind.finite is None, n_finite) \
            if kind is not None else (torch.zeros(bins, dtype=torch.float64, device=device), None)
        hists.append(hist)
        out_of_range.append(outside)
    if all(o is None for o in out_of_range):
        out_of_range = torch.zeros(2, 1, dtype=torch.float64, device=device)
    else:
        out_of_range = torch.stack([sums.new_zeros(()) if o is None else o.double() for o in out_of_range])[:, None]
    heads = torch.cat([sums[:, :4], out_of_range, torch.stack(hists)], dim=1)  # each kind's summed part
    return torch.cat([heads.view(-1), sums[1, 4:], margin, extremes.view(-1)])


def _unit_scores_row(pos: torch.Tensor, neg: torch.Tensor, bins: int, scale: float):
    """score_row on the CPU for one positive per sample (pos (R, 1), neg (R, W)) when every
    score is finite and in [-1, 1], the common case (MoCo's logits, in-batch logits); None when
    it is not. The same row as _general_row at a fraction of its cost, which at these sizes is
    the number of torch operations more than the arithmetic: torch makes the passes over the
    scores (per-sample extremes, sums and spreads, one bincount for both kinds), and the
    per-sample numbers, free to read as numpy arrays on the CPU, are summed in numpy, whose
    calls cost a fraction of a torch operation's on a few hundred numbers."""
    scale32 = np.float32(scale)  # the scaled numbers are float32, rounded as torch rounds
    positive, lowest, hardest = torch.stack([pos[:, 0], neg.amin(dim=1), neg.amax(dim=1)]).numpy() * scale32
    pos_min, pos_max, neg_min, neg_max = positive.min(), positive.max(), lowest.min(), hardest.max()
    if not (-1.0 <= pos_min and -1.0 <= neg_min and pos_max <= 1.0 and neg_max <= 1.0):  # NaN fails too
        return None  # before the other passes: a tag of unbounded scores meets this every step
    samples, width = neg.shape
    total = neg.sum(dim=1)
    row_sum, spread = (torch.stack([total, _spread(neg, total / width)]).numpy() * scale32).astype(np.float64)
    positive, hardest64 = positive.astype(np.float64), hardest.astype(np.float64)
    spread_squares = (spread * spread).sum()
    counts = _unit_bin_counts(pos, neg, bins, scale)
    layout = RowLayout(bins)
    row = np.zeros(layout.width)
    pos_part, neg_part = row[:layout.kind_sums], row[layout.kind_sums:2 * layout.kind_sums]
    pos_part[:3] = samples, positive.sum(), (positive * positive).sum()  # then nonfinite, out of range: 0
    pos_part[_SUMS:] = counts[bins:]
    neg_part[:3] = samples * width, row_sum.sum(), spread_squares + (row_sum * row_sum).sum() / width
    neg_part[_SUMS:] = counts[:bins]
    row[2 * layout.kind_sums:] = (spread_squares / width, samples,  # the sample variance sum, samples
                                  (positive - hardest64).sum(), np.count_nonzero(positive < hardest), samples,  # margin
                                  pos_min, -pos_max, neg_min, -neg_max)
    return torch.from_numpy(row)


def _unit_bin_counts(pos: torch.Tensor, neg: torch.Tensor, bins: int, scale: float) -> np.ndarray:
    """float64 counts of the negatives (bins) then of the positives (bins), of scores known to be
    in [-1, 1], on the CPU, in one bincount: the positives, column 0 of the copy, count in
    bins..2 bins. Binned as _bin_counts; a subsampled histogram is weighted back up."""
    sample, weight = _histogram_sample(neg)
    scores = torch.cat([pos, sample], dim=1)
    if scale != 1.0:
        scores.mul_(scale)
    index = _inside_bins(scores, bins)
    index[:, 0] += bins
    counts = torch.bincount(index.view(-1), minlength=2 * bins).numpy().astype(np.float64)
    counts[:bins] *= weight
    return counts


def _no_scores(device):
    """_summed of a kind without scores: zero sums, extremes (inf, inf) that every MIN reduction ignores."""
    return (torch.zeros(1, 6, dtype=torch.float64, device=device),  # fills, no copy from the host
            torch.full((1, 2), float("inf"), dtype=torch.float64, device=device))


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
