"""Embedding statistics: per step on the device, the spectrum per window on the host.

Every statistic is of the l2-normalised embeddings x = z / ||z||:

- ``std``: the mean over dimensions of the per-dimension standard deviation over
  the batch (ddof 1, as lightly's ``std_of_l2_normalized`` and SimSiam's Fig. 2):
  0 when every sample maps to one point, about 1/sqrt(dim) when spread out;
- ``uniformity``: log E exp(-t ||x_i - x_j||^2) over the pairs i != j of the
  batch, t = 2 (Wang & Isola 2020); from 0 (one point) down to about -4 (-2t)
  for spread out embeddings;
- ``alignment``: E ||x_i - x2_i||^2 between two views, when the second is given;
- the spectrum: the eigenvalues of the second moment of the centred embeddings
  over a window of steps, largest first, and ``rank``, RankMe's effective rank
  (Garrido et al. 2023): exp of the entropy of the singular values (the square
  roots of those eigenvalues) normalised to sum to 1.

A sample with a non-finite value (in either view) is left out of every statistic
and counted in ``nonfinite``.

Rows hold sums so that ranks add up under torch.distributed (see the Recorder):
``embedding_sums`` is the per-rank row, all-reduced with SUM, and the writer
thread turns reduced rows into statistics (``summarize_embeddings``).
Uniformity is over pairs, which do not add up over ranks: each rank scores its
own samples against the samples of every rank (gathered), so the pair sums do.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
from threadpoolctl import ThreadpoolController

from scoreviz import signals
from scoreviz.store.schema import EMBEDDING_COLUMNS, SPECTRUM_COLUMNS
UNIFORMITY_T = 2.0
# Largest dim whose spectrum is accumulated: its dim x dim float64 matrix (128 MiB here) lives
# on the embeddings' device for a whole window.
MAX_SPECTRUM_DIM = 4096
# Below this total variance (trace of the centred second moment) unit vectors are one point to
# float32 precision (rounding alone leaves about 1e-14): the rank is 0 rather than the effective
# rank of rounding noise, which is isotropic and would look like a full rank.
TRACE_FLOOR = 1e-12
_PAIR_BLOCK = 1024  # rows of the pairwise distance matrix computed at once
# Uniformity over all pairs costs batch^2: 8.2 s on the training thread for 20,000 x 16 on a CPU.
# Above this many samples in the (global) batch it is taken over the pairs of an evenly spaced
# sample of at most this many (every k-th row: no random draw, and a batch sorted by class is
# still covered evenly); docs/health.md gives the error measured against all pairs.
UNIFORMITY_SAMPLES = 4096
# The CPU fast path normalises in float32: below this norm a row's squares may have lost
# precision to underflow (float32's smallest normal number is 1.2e-38); such rows take the
# float64 path, which scales each row first.
_FAST_PATH_MIN_NORM = 1e-15


def normalised(z: torch.Tensor, z2: torch.Tensor = None):
    """(x, x2 or None, valid): l2-normalised views, zero where a sample is left out, and the
    mask of samples kept (finite in every view); float64.

    On the CPU, where a look at the values costs no device sync, valid is None when every
    sample is kept: the fast path, both views normalised together in float32 (its rounding,
    about 6e-8, stays far below anything the statistics resolve; every sum over them is
    taken in float64).

    Any finite values are normalised right, however large or small (1e300 in float64,
    1e-30 in float32): each row is divided by its largest magnitude first, so its squares
    neither overflow (a norm of inf made the row zero) nor underflow (a norm of 0 left it
    tiny). A row of zeros stays zero, as F.normalize leaves it."""
    if z.device.type == "cpu":
        views = z.detach().float() if z2 is None else torch.stack([z.detach().float(), z2.detach().float()])
        norms = torch.linalg.vector_norm(views, dim=-1, keepdim=True)
        # A finite sum of the norms: every value finite, none too large for float32's squares (or for
        # float32 at all); the smallest norm far above where the squares underflow.
        if math.isfinite(norms.sum()) and norms.min() > _FAST_PATH_MIN_NORM:
            unit = views / norms
            return (unit, None, None) if z2 is None else (unit[0], unit[1], None)
    z = z.detach().double()
    valid = torch.isfinite(z).all(dim=1)
    if z2 is not None:
        z2 = z2.detach().to(z.device).double()
        valid &= torch.isfinite(z2).all(dim=1)
    keep = valid[:, None]
    x = torch.where(keep, _unit(torch.where(keep, z, 0.0)), 0.0)
    x2 = None if z2 is None else torch.where(keep, _unit(torch.where(keep, z2, 0.0)), 0.0)
    return x, x2, valid


def _unit(z):
    """Rows (finite, float64) divided by their L2 norm (zero rows stay zero, as F.normalize leaves
    them), each scaled by its largest magnitude first so that its squares can neither overflow nor
    underflow."""
    largest = z.abs().amax(dim=1, keepdim=True)
    z = z / torch.where(largest > 0, largest, 1.0)
    return z / torch.linalg.vector_norm(z, dim=1, keepdim=True).clamp_(min=1e-300)


def uniformity_stride(global_batch: int) -> int:
    """Uniformity is taken over the pairs of every stride-th sample of the (global) batch: 1 up
    to UNIFORMITY_SAMPLES samples, then the smallest stride leaving at most that many."""
    return max(1, -(-global_batch // UNIFORMITY_SAMPLES))


def embedding_sums(x, x2, valid, batch: int, gathered=None, offset: int = 0, stride: int = 1) -> torch.Tensor:
    """The summed row of one batch (float64, on x's device, no host sync): samples kept, samples
    left out, uniformity pairs, alignment pairs (samples kept with a second view), sum of x (dim),
    sum of x^2 (dim), the uniformity pair sum and the alignment sum. ``valid`` None: every
    sample kept (on the CPU only, where the counts are known on the host).

    Uniformity pairs the samples x[::stride] (see uniformity_stride); ``gathered`` is (every
    rank's x[::stride] as float32, their valid mask) under torch.distributed, where this rank's
    sampled rows start at ``offset``; else None.
    """
    x32 = x.float()  # x itself on the fast path
    f64 = torch.float64
    sample = x32[::stride]
    if valid is None and gathered is None:  # one process, every sample kept: the counts are host numbers
        n, m = x.shape[0], sample.shape[0]
        counts = torch.tensor([n, batch - n, m * (m - 1), n if x2 is not None else 0], dtype=f64)
        pair_sum = _unit_pair_sum(sample)
    else:
        if valid is None:
            valid = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
        others, others_valid = gathered if gathered is not None else (sample, valid[::stride])
        pair_sum, pairs = _pair_sums(sample, valid[::stride], others, others_valid, offset)
        samples = valid.sum().double()
        counts = torch.stack([samples, batch - samples, pairs, samples if x2 is not None else torch.zeros_like(samples)])
    if x2 is not None:  # rows left out are zero in both views
        align = torch.sub(x32, x2.float()).square_().sum(dtype=f64)
    else:
        align = pair_sum.new_zeros(())
    x = x.to(f64)  # squared in float64: std subtracts the squared mean from the mean square
    return torch.cat([counts, x.sum(dim=0), x.square().sum(dim=0), torch.stack([pair_sum.double(), align])])


def _unit_pair_sum(x) -> torch.Tensor:
    """sum over ordered pairs i != j of exp(-t ||x_i - x_j||^2) of the rows of x, every one kept.

    exp(-t ||x_i - x_j||^2) = a_i a_j exp(2t x_i.x_j) with a_i = exp(-t ||x_i||^2): a^T E a with
    E = exp(2t G), its diagonal zeroed (rather than subtracting those n terms, each 1, from a sum
    that may be far smaller than n); _PAIR_BLOCK rows of E at a time, summed in float64."""
    a = x.square().sum(dim=1).mul_(-UNIFORMITY_T).exp_()
    total = torch.zeros((), dtype=torch.float64, device=x.device)
    for start in range(0, x.shape[0], _PAIR_BLOCK):
        pairs = (x[start:start + _PAIR_BLOCK] @ x.T).mul_(2.0 * UNIFORMITY_T).exp_()
        pairs.diagonal(offset=start).zero_()  # the block's own rows: entries (i, start + i)
        total += torch.dot(a[start:start + _PAIR_BLOCK], pairs @ a).double()
    return total


def _pair_sums(x, valid, others, others_valid, offset) -> torch.Tensor:
    """(sum over ordered pairs (i in x, j in others, i != j, both kept) of exp(-t ||x_i - x_j||^2),
    the number of such pairs) as a float64 tensor; rows in blocks so a large batch needs little
    memory. valid None: every sample of x and others kept (others is x)."""
    n = x.shape[0]
    if valid is None:
        valid = others_valid = torch.ones(n, dtype=torch.bool, device=x.device)
    total = torch.zeros(2, dtype=torch.float64, device=x.device)
    sq_others = others.square().sum(dim=1)
    columns = torch.arange(others.shape[0], device=x.device)
    for start in range(0, n, _PAIR_BLOCK):
        block = x[start:start + _PAIR_BLOCK]
        sq = block.square().sum(dim=1)
        dist2 = (sq[:, None] + sq_others[None, :] - 2.0 * block @ others.T).clamp(min=0.0)
        rows = torch.arange(start, start + block.shape[0], device=x.device) + offset
        use = valid[start:start + _PAIR_BLOCK, None] & others_valid[None, :] & (columns[None, :] != rows[:, None])
        total += torch.stack([torch.where(use, torch.exp(-UNIFORMITY_T * dist2), 0.0).sum(dtype=torch.float64),
                              use.sum().double()])
    return total


def batch_mean(sums: torch.Tensor) -> torch.Tensor:
    """The mean of the kept normalised embeddings, from (reduced) sums (zeros when none were kept)."""
    dim = (sums.shape[0] - 6) // 2
    return sums[4:4 + dim] / sums[0].clamp(min=1)


def summarize_embeddings(rows: np.ndarray) -> dict:
    """{column: array} for EMBEDDING_COLUMNS from (reduced) rows of ``embedding_sums`` (n, 2 dim + 6),
    on the host. std uses ddof 1 (as torch.std and lightly's std_of_l2_normalized)."""
    rows = np.asarray(rows, dtype=np.float64)
    rows = rows.reshape(-1, rows.shape[-1])
    dim = (rows.shape[1] - 6) // 2
    samples, nonfinite, pairs, align_count = rows[:, :4].T
    total, squares = rows[:, 4:4 + dim], rows[:, 4 + dim:4 + 2 * dim]
    pair_sum, align_sum = rows[:, -2:].T
    with np.errstate(invalid="ignore", divide="ignore"):
        n = samples[:, None]
        var = np.maximum((squares - total * total / n) / (n - 1), 0.0)
        std = np.where(samples > 1, np.sqrt(var).mean(axis=1), np.nan)
        uniformity = np.where(pairs > 0, np.log(pair_sum / np.where(pairs > 0, pairs, 1)), np.nan)
        alignment = np.where(align_count > 0, align_sum / np.where(align_count > 0, align_count, 1), np.nan)
    return {"samples": samples, "nonfinite": nonfinite, "dim": np.full(len(rows), float(dim)), "std": std,
            "uniformity": uniformity, "alignment": alignment}


class SpectrumWindow:
    """The sums behind one spectrum window of a tag: the second moment of the centred
    embeddings and, for calls with a second view, the scatter of the pairs' means and of their
    differences (LiDAR's, see scoreviz.signals), summed over a window of steps.

    Sums are taken about a reference point, the mean of the window's first batch, so
    that the centred second moment (S / n - m m^T of the shifted embeddings) keeps its
    precision when the embeddings are nearly one point (a collapse), and in float64:
    RankMe takes square roots of the eigenvalues, so a float32 product's error of about
    1e-7 in each eigenvalue would become 3e-4 in each singular value (a rank-1 embedding
    in 64 dimensions measured 1.055 instead of 1; TF32 would be worse). Held in flat
    buffers, so ranks add each up with a single all-reduce: float64 (dim x dim, then dim,
    then the sample count and the pair count), and LiDAR's sums (float32 on the CPU, see
    _add_pairs), made once a call brings a second view.
    """

    def __init__(self, dim: int, device):
        self.dim = dim
        self.buffer = torch.zeros(dim * dim + dim + 2, dtype=torch.float64, device=device)
        self.square = self.buffer[:dim * dim].view(dim, dim)
        self.total = self.buffer[dim * dim:dim * dim + dim]
        self.count = self.buffer[-2:-1]
        self.pair_count = self.buffer[-1:]
        self.pairs = None
        self._twice_reference = None  # in the pairs' dtype, made with them
        self._pair_rows = None  # _add_pairs' [s, 1] and [d, 1], reused while the batch size holds
        self.reference = None
        self.calls = 0
        self.last_step = None
        self.dropped = 0  # windows of the tag dropped before this one (set when it is handed to the writer)

    @property
    def nbytes(self) -> int:
        return self.buffer.nbytes + (0 if self.pairs is None else self.pairs.nbytes)

    def add(self, x: torch.Tensor, valid, reference: torch.Tensor, x2: torch.Tensor = None):
        """Add one batch (valid None: every sample kept) and its second view (or None);
        ``reference`` (the batch's mean over all ranks) is used by the window's first call."""
        if self.reference is None:
            self.reference = reference.to(torch.float64)  # so y, and the sums, are float64
        y = x - self.reference
        if valid is not None:  # (x in float32 on the fast path: y, with the float64 reference, is float64)
            y = torch.where(valid[:, None], y, 0.0)
        self.square.addmm_(y.T, y)
        self.total.add_(y.sum(dim=0))
        kept = x.shape[0] if valid is None else valid.sum()
        self.count.add_(kept)
        if x2 is not None:
            self._add_pairs(x, x2, valid)
            self.pair_count.add_(kept)
        self.calls += 1

    def _add_pairs(self, x, x2, valid):
        """LiDAR's sums of one batch with its second view, of s = x + x2 - 2r (twice the pair's
        mean about the reference) and d = x - x2: the sums of s s^T and d d^T and of s, all from
        one batched product of [s, 1] and [d, 1] (the column of ones gives the sum of s, in the
        product's last row). In float32 on the CPU: its rounding (about 1e-7 of each entry a call,
        1e-6 over a window) stays far below LiDAR's regularisation (LIDAR_DELTA, 1e-4 on the
        within-pair covariance), and in float64 the products and the sums cost about twice as much
        there (0.21 against 0.10 ms a call at 64 x 128, timed alone). In float64 on a GPU, where a
        float32 product may run as TF32 (a 1e-3 rounding) and the spectrum's own product is
        float64 already."""
        dim, batch = self.dim, x.shape[0]
        if self.pairs is None:
            dtype = torch.float32 if self.buffer.device.type == "cpu" else torch.float64
            self.pairs = torch.zeros(2 * (dim + 1) ** 2, dtype=dtype, device=self.buffer.device)
            self._twice_reference = (2.0 * self.reference).to(dtype)
        if self._pair_rows is None or self._pair_rows.shape[1] != batch:  # [s, 1] and [d, 1], made once per batch size
            self._pair_rows = torch.ones(2, batch, dim + 1, dtype=self.pairs.dtype, device=self.pairs.device)
        rows = self._pair_rows
        s, d = rows[0, :, :dim], rows[1, :, :dim]
        torch.add(x, x2, out=s).sub_(self._twice_reference)
        torch.sub(x, x2, out=d)
        if valid is not None:  # a sample left out: its row (ones included) is zero in both
            rows.mul_(valid[None, :, None])
        self.pairs.view(2, dim + 1, dim + 1).baddbmm_(rows.transpose(1, 2), rows)
        if valid is not None:
            rows[:, :, dim] = 1.0  # the ones the mask zeroed, for the next call

    def host_arrays(self):
        """(buffer, pairs or None, reference or None) as numpy float64 arrays, for the writer thread."""
        def numpy(t):
            return None if t is None else t.detach().cpu().numpy()
        return numpy(self.buffer), numpy(self.pairs), numpy(self.reference)


def window_statistics(buffer, dim: int, pairs=None, reference=None) -> dict:
    """What a window's sums (SpectrumWindow.host_arrays) say, on the host: ``eigenvalues``
    (largest first), ``samples``, ``rank`` (RankMe) and the health signals of
    scoreviz.signals (LiDAR with ``pairs``, the Wasserstein uniformity with ``reference``;
    NaN without), by SPECTRUM_COLUMNS name, but ``windows_dropped``."""
    buffer = np.asarray(buffer, dtype=np.float64)
    samples, pair_count = buffer[-2:]
    out = {"eigenvalues": np.full(dim, np.nan), "samples": int(samples) if samples >= 1 else 0,
           "rank": float("nan")}
    out.update({c: float("nan") for c in SPECTRUM_COLUMNS if c != "windows_dropped"})
    out["lidar_pairs"] = float(pair_count)
    if samples < 1:
        return out
    mean = buffer[dim * dim:dim * dim + dim] / samples
    second = buffer[:dim * dim].reshape(dim, dim) / samples - np.outer(mean, mean)
    try:
        with _one_blas_thread():
            eigenvalues = np.linalg.eigvalsh((second + second.T) / 2)[::-1].clip(min=0.0)
            if pairs is not None and pair_count >= 2:
                pairs = np.asarray(pairs, dtype=np.float64)
                out["lidar"] = signals.lidar(*_pair_covariances(pairs, pair_count, dim))
    except np.linalg.LinAlgError:  # did not converge: the window is stored, without a spectrum
        return out
    out.update(eigenvalues=eigenvalues, rank=effective_rank(eigenvalues), nesum=signals.nesum(eigenvalues),
               participation_ratio=signals.participation_ratio(eigenvalues))
    out["alpha_req"], out["alpha_req_r2"] = signals.alpha_req(eigenvalues)
    if reference is not None:
        out["w2_uniformity"] = signals.w2_uniformity(eigenvalues, np.asarray(reference) + mean)
    return out


def _pair_covariances(pairs, n, dim):
    """(Sb, Sw) of LiDAR from a window's pairs' sums (SpectrumWindow._add_pairs) over n pairs:
    the covariance of the pairs' means m = s / 2 + r (ddof 1) and the within-pair covariance,
    the sum over pairs of d d^T / 2 over n."""
    products = pairs.reshape(2, dim + 1, dim + 1)
    means_square = products[0, :dim, :dim] / 4
    within = products[1, :dim, :dim]
    mean = products[0, dim, :dim] / (2 * n)
    return (means_square - n * np.outer(mean, mean)) / (n - 1), within / (2 * n)


@functools.cache
def _threadpools() -> ThreadpoolController:
    """Made once, at the first spectrum: it looks through the loaded libraries."""
    return ThreadpoolController()


def _one_blas_thread():
    """numpy's BLAS and LAPACK limited to one thread while the block runs. The spectrum is
    computed on the writer thread, beside the training: OpenBLAS's threads keep spinning for a
    while after every call, on the cores the training needs, and the writer's work must not take
    more than the one core it runs on. (Another thread's numpy BLAS calls in the meantime run on
    one thread too.)"""
    return _threadpools().limit(limits=1, user_api="blas")


def effective_rank(eigenvalues) -> float:
    """RankMe's effective rank from the eigenvalues of a second-moment matrix: exp of the entropy
    of its singular values (their square roots) normalised to sum to 1. 0 when the total
    variance is below TRACE_FLOOR (one point), NaN when there are none."""
    eigenvalues = np.clip(np.asarray(eigenvalues, dtype=np.float64), 0.0, None)
    if eigenvalues.size == 0 or not np.isfinite(eigenvalues).all():
        return float("nan")
    if eigenvalues.sum() <= TRACE_FLOOR:
        return 0.0
    singular = np.sqrt(eigenvalues)
    p = singular / singular.sum()
    p = p[p > 0]
    return float(np.exp(-(p * np.log(p)).sum()))
