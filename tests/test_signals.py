"""The window's health signals (scoreviz.signals, docs/health.md), each against a numpy reference
computed here from the raw embeddings of the window, by another route than the Recorder's sums."""

import math

import numpy as np
import pytest
import torch

from scoreviz import Recorder, open_run
from scoreviz import signals

WINDOW = 3
STEPS = 6  # two whole windows, ending at steps 2 and 5


def unit(z):
    z = np.asarray(z, dtype=np.float64)
    return z / np.linalg.norm(z, axis=1, keepdims=True)


def batches(dim, batch=48, seed=0, spread=None):
    """Two views of STEPS batches of anisotropic embeddings (a decaying spectrum, so the power
    law has a slope to find), the second view a noisy copy of the first."""
    g = torch.Generator().manual_seed(seed)
    spread = torch.arange(1, dim + 1, dtype=torch.float32) ** -0.8 if spread is None else spread
    out = []
    for _ in range(STEPS):
        z = torch.randn(batch, dim, generator=g) * spread + 0.2 * spread
        out.append((z, z + 0.1 * torch.randn(batch, dim, generator=g) * spread))
    return out


def recorded(tmp_path, views, second_view=True):
    with Recorder(tmp_path, spectrum_window=WINDOW) as rec:
        for step, (z, z2) in enumerate(views):
            rec.log_embeddings(step, z, z2 if second_view else None)
    frame = open_run(tmp_path).embeddings()
    return frame.loc[[WINDOW - 1, 2 * WINDOW - 1]]


def windows(views):
    """The raw (x, x2) of each window, l2-normalised, float64."""
    return [(np.concatenate([unit(z.numpy()) for z, _ in views[i:i + WINDOW]]),
             np.concatenate([unit(z2.numpy()) for _, z2 in views[i:i + WINDOW]])) for i in (0, WINDOW)]


def covariance_eigenvalues(x):
    """Eigenvalues of the population covariance, from the singular values of the centred data."""
    centred = x - x.mean(axis=0)
    return np.linalg.svd(centred / math.sqrt(len(x)), compute_uv=False) ** 2


def reference_alpha(eigenvalues, first=4, last=100):
    """The authors' fit (Stringer et al.'s weighted least squares in log-log, weights 1/rank),
    written with np.polyfit, whose weights multiply the residuals (so sqrt(1/rank))."""
    ranks = np.arange(first, min(last, len(eigenvalues)) + 1)
    y = np.log(eigenvalues[ranks - 1])
    slope, intercept = np.polyfit(np.log(ranks), y, 1, w=np.sqrt(1.0 / ranks))
    predicted = slope * np.log(ranks) + intercept
    return -slope, 1 - ((y - predicted) ** 2).sum() / ((y - y.mean()) ** 2).sum()


def reference_w2(x):
    """Fang et al.'s W2 between N(mean, cov) and N(0, I/d), cov with 1/N, its square root by eigh."""
    dim = x.shape[1]
    mean = x.mean(axis=0)
    cov = (x - mean).T @ (x - mean) / len(x)
    values, vectors = np.linalg.eigh(cov)
    root = vectors @ np.diag(np.sqrt(np.abs(values))) @ vectors.T
    return math.sqrt(mean @ mean + 1 + np.trace(cov - 2 / math.sqrt(dim) * root))


def reference_lidar(x, x2, delta=1e-4, eps=1e-8):
    """LiDAR as the paper writes it, with n classes of q = 2 samples (a sample and its second
    view): Sb of the class means (1/(n-1)), Sw of the deviations from them (1/(n(q-1))) + delta I,
    Sw^(-1/2) from its eigen-decomposition, p = lambda / sum lambda + eps."""
    classes = np.stack([x, x2], axis=1)  # (n, q, d)
    n, q, dim = classes.shape
    means = classes.mean(axis=1)
    centred_means = means - means.mean(axis=0)
    between = centred_means.T @ centred_means / (n - 1)
    deviations = (classes - means[:, None, :]).reshape(n * q, dim)
    within = deviations.T @ deviations / (n * (q - 1)) + delta * np.eye(dim)
    values, vectors = np.linalg.eigh(within)
    root_inverse = vectors @ np.diag(values ** -0.5) @ vectors.T
    lda = np.linalg.eigvalsh(root_inverse @ between @ root_inverse).clip(min=0)
    p = lda / lda.sum() + eps
    return math.exp(-(p * np.log(p)).sum())


@pytest.mark.parametrize("dim", [12, 128])
def test_each_signal_matches_its_numpy_reference_over_each_window(tmp_path, dim):
    views = batches(dim, batch=48 if dim == 12 else 64)
    frame = recorded(tmp_path, views)
    for (_, row), (x, x2) in zip(frame.iterrows(), windows(views)):
        eigenvalues = covariance_eigenvalues(x)
        alpha, r2 = reference_alpha(eigenvalues)
        assert row["alpha_req"] == pytest.approx(alpha, rel=1e-6)
        assert row["alpha_req_r2"] == pytest.approx(r2, rel=1e-6)
        assert 0.5 < row["alpha_req"] < 2.5  # the data's spectrum decays as k^-1.6 (std k^-0.8)
        assert row["nesum"] == pytest.approx(eigenvalues.sum() / eigenvalues[0], rel=1e-6)
        assert row["participation_ratio"] == pytest.approx(eigenvalues.sum() ** 2 / (eigenvalues ** 2).sum(),
                                                           rel=1e-6)
        assert row["w2_uniformity"] == pytest.approx(reference_w2(x), rel=1e-6)
        assert row["lidar"] == pytest.approx(reference_lidar(x, x2), rel=1e-6)
        assert row["lidar_pairs"] == len(x) and row["windows_dropped"] == 0


def test_a_sample_left_out_is_left_out_of_every_signal(tmp_path):
    """A non-finite sample in the first call of each window (the float64 path, a mask), the other
    calls clean (the fast path): the signals of the window without that sample."""
    views = batches(12)
    for step in (0, WINDOW):
        views[step][0][5, 2] = float("nan")
    with pytest.warns(RuntimeWarning, match="non-finite"):
        frame = recorded(tmp_path, views)
    for (_, row), (x, x2) in zip(frame.iterrows(), windows(views)):
        keep = np.isfinite(x).all(axis=1)
        x, x2 = x[keep], x2[keep]
        assert row["lidar_pairs"] == len(x) == 3 * 48 - 1
        assert row["lidar"] == pytest.approx(reference_lidar(x, x2), rel=1e-6)
        assert row["w2_uniformity"] == pytest.approx(reference_w2(x), rel=1e-6)
        assert row["nesum"] == pytest.approx(covariance_eigenvalues(x).sum() / covariance_eigenvalues(x)[0], rel=1e-6)


def test_without_a_second_view_lidar_is_nan_and_the_rest_recorded(tmp_path):
    frame = recorded(tmp_path, batches(12), second_view=False)
    assert frame["lidar"].isna().all() and (frame["lidar_pairs"] == 0).all()
    assert frame[["alpha_req", "nesum", "participation_ratio", "w2_uniformity"]].notna().all().all()


def test_the_signals_read_the_shapes_they_are_meant_to(tmp_path):
    """One point: every dimension count 0, W2 sqrt(2) (a point on the sphere against N(0, I/d)),
    no spectrum to fit. A line (+-direction): one dimension. Uniform on the sphere: W2 near 0."""
    g = torch.Generator().manual_seed(5)
    dim = 32
    point = [(torch.ones(64, dim), torch.ones(64, dim))] * STEPS
    direction = torch.randn(dim, generator=g)
    line = [(s * direction, s * direction) for s in (torch.randn(64, 1, generator=g) for _ in range(STEPS))]
    sphere = [(torch.randn(2000, dim, generator=g), torch.randn(2000, dim, generator=g)) for _ in range(STEPS)]
    one = recorded(tmp_path / "point", point).iloc[0]
    assert (one[["nesum", "participation_ratio", "lidar", "rank"]] == 0).all()
    assert one["w2_uniformity"] == pytest.approx(math.sqrt(2)) and math.isnan(one["alpha_req"])
    flat = recorded(tmp_path / "line", line).iloc[0]
    assert flat["nesum"] == pytest.approx(1.0, abs=1e-6) and flat["participation_ratio"] == pytest.approx(1.0)
    assert math.isnan(flat["alpha_req"])  # a single non-zero eigenvalue: nothing above the floor at ranks >= 4
    spread = recorded(tmp_path / "sphere", sphere).iloc[0]
    assert spread["w2_uniformity"] < 0.05 and spread["participation_ratio"] > 0.95 * dim


def test_alpha_req_leaves_out_eigenvalues_at_rounding_level_and_needs_three_ranks():
    exact = np.arange(1, 41, dtype=np.float64) ** -1.5
    assert signals.alpha_req(exact)[0] == pytest.approx(1.5) and signals.alpha_req(exact)[1] == pytest.approx(1.0)
    rounded = np.concatenate([exact[:10], np.full(30, 1e-18)])  # ten dimensions used, the rest rounding
    assert signals.alpha_req(rounded)[0] == pytest.approx(1.5)  # fitted on ranks 4 to 10
    assert all(math.isnan(v) for v in signals.alpha_req(exact[:5]))  # ranks 4 and 5 only
