"""Label-free health signals of one spectrum window, from its sums, on the host (numpy only).

Each is computed by the Recorder's writer thread when a window of `log_embeddings`
calls ends, from what the window accumulated (scoreviz.embeddings.SpectrumWindow):
the eigenvalues of the covariance of the l2-normalised embeddings (the same spectrum
as RankMe's), their mean, and, when a second view was logged, the scatter of the
pairs' means and of their differences. docs/health.md ("Signals") gives each one's
definition, paper and convention; in short, with eigenvalues l_1 >= ... >= l_d:

- ``alpha_req`` (Agrawal et al. 2022): the slope alpha of a power law l_k ~ k^-alpha,
  fitted to log l_k over the ranks k = 4..100 by least squares weighted by 1/k (the
  authors' fit), and ``alpha_req_r2``, the fit's R^2 over the same ranks (unweighted);
- ``nesum`` (He & Ozay 2022): sum_k l_k / l_1;
- ``participation_ratio``: (sum_k l_k)^2 / sum_k l_k^2;
- ``w2_uniformity`` (Fang et al. 2024): the 2-Wasserstein distance between N(mu, C), the
  Gaussian fitted to the embeddings, and N(0, I/d), the uniform distribution on the
  sphere's Gaussian approximation: sqrt(|mu|^2 + 1 + tr C - (2/sqrt d) tr C^(1/2));
- ``lidar`` (Thilak et al. 2023), two views: each sample and its second view form one
  surrogate class; LiDAR is the effective rank (exp of the entropy) of the eigenvalues of
  Sw^(-1/2) Sb Sw^(-1/2), Sb the covariance of the pairs' means (ddof 1), Sw the
  within-pair covariance (each pair's two deviations from its mean, divided by the number
  of pairs, as the paper's 1/(n(q-1)) with q = 2) plus LIDAR_DELTA I; p_k = l_k / sum l +
  LIDAR_EPSILON, as the paper writes it.
"""

from __future__ import annotations

import math

import numpy as np

# Below this total variance the embeddings are one point to float32 precision (see
# scoreviz.embeddings.TRACE_FLOOR): the dimension counts (NESum, participation ratio, LiDAR)
# are 0, as RankMe's rank is, and alpha-ReQ has no spectrum to fit.
TRACE_FLOOR = 1e-12
# Eigenvalues below this fraction of the total variance are zero up to rounding (float32
# embeddings leave about 1e-14): alpha-ReQ's fit leaves them out rather than fit log(rounding).
EIGENVALUE_FLOOR = 1e-12
ALPHA_RANKS = (4, 100)  # the authors' trange np.arange(3, 100): 0-based indices, ranks 4 to 100
ALPHA_MIN_POINTS = 3
LIDAR_DELTA = 1e-4  # Sw's regularisation (the paper's delta; stable-pretraining's default too)
LIDAR_EPSILON = 1e-8  # added to each p_k (the paper's epsilon)


def alpha_req(eigenvalues) -> tuple:
    """(alpha, R^2) of the power law fitted to the eigenvalues (largest first); NaN, NaN when
    fewer than ALPHA_MIN_POINTS ranks in ALPHA_RANKS hold an eigenvalue above the floor."""
    values = np.asarray(eigenvalues, dtype=np.float64)
    total = values.sum() if values.size and np.isfinite(values).all() else 0.0
    if total <= TRACE_FLOOR:
        return math.nan, math.nan
    first, last = ALPHA_RANKS
    ranks = np.arange(first, min(last, values.size) + 1)
    kept = values[ranks - 1] > EIGENVALUE_FLOOR * total
    ranks = ranks[kept]
    if ranks.size < ALPHA_MIN_POINTS:
        return math.nan, math.nan
    x, y, w = np.log(ranks), np.log(values[ranks - 1]), 1.0 / ranks
    design = np.stack([x, np.ones_like(x)], axis=1)
    slope, intercept = np.linalg.solve(design.T @ (design * w[:, None]), design.T @ (w * y))
    residual = y - (slope * x + intercept)
    spread = ((y - y.mean()) ** 2).sum()
    r2 = 1.0 - (residual ** 2).sum() / spread if spread > 0 else math.nan
    return float(-slope), float(r2)


def nesum(eigenvalues) -> float:
    """NESum: the sum of the eigenvalues over the largest; 0 for one point."""
    values = np.asarray(eigenvalues, dtype=np.float64)
    if values.size == 0 or not np.isfinite(values).all():
        return math.nan
    total = values.sum()
    return 0.0 if total <= TRACE_FLOOR else float(total / values.max())


def participation_ratio(eigenvalues) -> float:
    """(sum l)^2 / sum l^2; 0 for one point."""
    values = np.asarray(eigenvalues, dtype=np.float64)
    if values.size == 0 or not np.isfinite(values).all():
        return math.nan
    total = values.sum()
    return 0.0 if total <= TRACE_FLOOR else float(total * total / (values * values).sum())


def w2_uniformity(eigenvalues, mean) -> float:
    """The 2-Wasserstein distance between N(mean, C) (C's eigenvalues given) and N(0, I/d), d the
    dimension: 0 for the isotropic Gaussian, sqrt(2) for one point on the sphere."""
    values = np.clip(np.asarray(eigenvalues, dtype=np.float64), 0.0, None)
    mean = np.asarray(mean, dtype=np.float64)
    if values.size == 0 or not (np.isfinite(values).all() and np.isfinite(mean).all()):
        return math.nan
    squared = mean @ mean + 1.0 + values.sum() - 2.0 / math.sqrt(values.size) * np.sqrt(values).sum()
    return math.sqrt(max(squared, 0.0))


def lidar(between, within) -> float:
    """LiDAR from the between-class covariance Sb and the within-class covariance Sw (both (d, d),
    Sw without its regularisation): the effective rank of Sw'^(-1/2) Sb Sw'^(-1/2), Sw' = Sw +
    LIDAR_DELTA I. 0 when Sb's trace is at most TRACE_FLOOR (the pairs' means are one point:
    whitened, their rounding would look like a full rank); NaN when the matrices are not finite."""
    between = np.asarray(between, dtype=np.float64)
    within = np.asarray(within, dtype=np.float64)
    if not (np.isfinite(between).all() and np.isfinite(within).all()):
        return math.nan
    if np.trace(between) <= TRACE_FLOOR:
        return 0.0
    dim = between.shape[0]
    # The eigenvalues of Sw'^(-1/2) Sb Sw'^(-1/2) are those of L^-1 Sb L^-T, L the Cholesky factor of
    # Sw' (the two matrices are similar): a factorisation and an inverse of a triangle rather than an
    # eigen-decomposition with vectors.
    try:
        factor = np.linalg.cholesky((within + within.T) / 2 + LIDAR_DELTA * np.eye(dim))
        inverse = np.linalg.inv(factor)
        values = np.linalg.eigvalsh(_symmetric(inverse @ between @ inverse.T)).clip(min=0.0)
    except np.linalg.LinAlgError:
        return math.nan
    total = values.sum()
    if total <= 0.0:
        return 0.0
    p = values / total + LIDAR_EPSILON
    return float(np.exp(-(p * np.log(p)).sum()))


def _symmetric(matrix):
    return (matrix + matrix.T) / 2
