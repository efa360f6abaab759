"""Every embedding statistic of log_embeddings against a numpy reference on the same data."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from scoreviz import Recorder, ScorevizError, open_run
from scoreviz.embeddings import effective_rank


def unit(z):
    """Rows of z (numpy, float64) divided by their L2 norm."""
    z = np.asarray(z, dtype=np.float64)
    return z / np.linalg.norm(z, axis=1, keepdims=True)


def reference(z, z2=None):
    """std, uniformity and alignment of one batch in numpy, float64."""
    x = unit(z)
    i, j = np.triu_indices(len(x), k=1)
    out = {
        "std": x.std(axis=0, ddof=1).mean(),
        "uniformity": np.log(np.mean(np.exp(-2.0 * ((x[i] - x[j]) ** 2).sum(axis=1)))),
        "alignment": np.nan if z2 is None else ((x - unit(z2)) ** 2).sum(axis=1).mean(),
    }
    return out


def reference_spectrum(batches):
    """Eigenvalues (largest first) of the second moment of the centred normalised embeddings of
    a window, from the singular values of the centred data matrix, and RankMe's rank of them."""
    x = np.concatenate([unit(z) for z in batches])
    centred = x - x.mean(axis=0)
    singular = np.linalg.svd(centred / math.sqrt(len(x)), compute_uv=False)
    p = singular / singular.sum()
    p = p[p > 0]
    return singular ** 2, float(np.exp(-(p * np.log(p)).sum()))


def record(tmp_path, batches, views=None, window=50, tag="train", **options):
    with Recorder(tmp_path, spectrum_window=window, **options) as rec:
        for step, z in enumerate(batches):
            rec.log_embeddings(step, z, None if views is None else views[step], tag=tag)
    return open_run(tmp_path)


def random_batches(n, batch=64, dim=16, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return [scale * torch.randn(batch, dim, generator=g) + torch.randn(dim, generator=g) for _ in range(n)]


def test_std_uniformity_and_alignment_match_numpy(tmp_path):
    batches = random_batches(6, batch=48, dim=24)
    views = [z + 0.3 * torch.randn_like(z) for z in batches]
    frame = record(tmp_path, batches, views).embeddings()
    assert list(frame.index) == list(range(6))
    for step, (z, z2) in enumerate(zip(batches, views)):
        expected = reference(z.numpy(), z2.numpy())
        for column, value in expected.items():
            assert frame.loc[step, column] == pytest.approx(value, rel=1e-5), (column, step)
        assert frame.loc[step, "dim"] == 24 and frame.loc[step, "samples"] == 48 and frame.loc[step, "nonfinite"] == 0


def test_std_is_lightlys_std_of_l2_normalized(tmp_path):
    """lightly.utils.debug.std_of_l2_normalized(z) is torch.std(F.normalize(z, dim=1), dim=0).mean()
    (unbiased std per dimension, then the mean): the same number to float32 precision, also for
    float16 and bfloat16 input (taken as float32, as their values are)."""
    batches = [b.to(dtype) for b, dtype in zip(random_batches(3, batch=100, dim=32, seed=3),
                                               (torch.float32, torch.float16, torch.bfloat16))]
    frame = record(tmp_path, batches).embeddings()
    for step, z in enumerate(batches):
        lightly = torch.std(F.normalize(z.float(), dim=1), dim=0).mean().item()
        assert frame.loc[step, "std"] == pytest.approx(lightly, rel=1e-6)
        exact = torch.std(F.normalize(z.double(), dim=1), dim=0).mean().item()
        assert frame.loc[step, "std"] == pytest.approx(exact, rel=1e-6)


def test_spectrum_and_rank_match_numpy_over_each_window(tmp_path):
    batches = random_batches(7, batch=20, dim=12, seed=1)
    run = record(tmp_path, batches, window=3)
    steps, eigenvalues = run.spectrum()
    # windows end at steps 2 and 5; the last, incomplete one (step 6 alone) is stored at close
    assert list(steps) == [2, 5, 6] and eigenvalues.shape == (3, 12)
    frame = run.embeddings()
    for row, window in enumerate([batches[0:3], batches[3:6], batches[6:7]]):
        expected, rank = reference_spectrum([z.numpy() for z in window])
        np.testing.assert_allclose(eigenvalues[row], expected, rtol=1e-4, atol=1e-9)
        assert frame.loc[steps[row], "rank"] == pytest.approx(rank, rel=1e-5)
    assert frame["rank"].notna().sum() == 3  # rank only at the end of each window
    assert (np.diff(eigenvalues, axis=1) <= 0).all()  # largest first


def test_a_rank_one_embedding_has_rank_one_and_an_isotropic_one_nearly_full_rank(tmp_path):
    g = torch.Generator().manual_seed(2)
    dim = 64
    direction = torch.randn(dim, generator=g)
    one_line = [torch.randn(256, 1, generator=g) * direction for _ in range(4)]  # +-direction after normalising
    isotropic = [torch.randn(256, dim, generator=g) for _ in range(20)]  # 5,120 samples for 64 dims
    rank_one = record(tmp_path / "one", one_line, window=4).embeddings()["rank"].dropna()
    full = record(tmp_path / "iso", isotropic, window=20).embeddings()["rank"].dropna()
    assert rank_one.iloc[0] == pytest.approx(1.0, abs=1e-3)
    assert 0.95 * dim < full.iloc[0] <= dim


def test_complete_collapse_reads_std_zero_uniformity_zero_rank_zero(tmp_path):
    point = torch.randn(1, 32)
    frame = record(tmp_path, [point.repeat(64, 1) * (1 + torch.rand(64, 1)) for _ in range(3)], window=3).embeddings()
    assert (frame["std"] < 1e-7).all() and np.allclose(frame["uniformity"], 0.0, atol=1e-6)
    assert frame["rank"].dropna().tolist() == [0.0]


def test_nearly_collapsed_embeddings_keep_their_spectrum(tmp_path):
    """Embeddings within 1e-4 of one point: the second moment is summed about the window's first
    mean, so its eigenvalues (about 1e-9 here) keep their precision."""
    g = torch.Generator().manual_seed(4)
    centre = torch.randn(16, generator=g)
    centre = centre / centre.norm()
    batches = [centre + 1e-4 * torch.randn(128, 16, generator=g) * torch.linspace(1, 3, 16)
               for _ in range(4)]
    run = record(tmp_path, batches, window=4)
    _, eigenvalues = run.spectrum()
    expected, rank = reference_spectrum([z.numpy() for z in batches])
    # float32 input: each embedding is known to about 6e-8, a relative 1e-3 of its 1e-4 spread; the
    # last eigenvalue (the radial direction of the sphere, about 1e-14) is rounding alone
    np.testing.assert_allclose(eigenvalues[0], expected, rtol=5e-3, atol=1e-14)
    assert eigenvalues[0][-2] > 1e-10
    assert run.embeddings()["rank"].dropna().iloc[0] == pytest.approx(rank, rel=1e-3)
    assert run.embeddings()["std"].iloc[0] == pytest.approx(reference(batches[0].numpy())["std"], rel=1e-3)


def test_non_finite_samples_are_counted_and_left_out(tmp_path):
    batches = random_batches(2, batch=32, dim=8, seed=5)
    views = [z + 0.1 for z in batches]
    batches[0][3, 2] = float("nan")
    views[0][7, 0] = float("inf")  # in the second view: the sample is left out of everything
    with pytest.warns(RuntimeWarning, match="2 embeddings of tag 'train' at step 0 hold non-finite"):
        run = record(tmp_path, batches, views, window=2)
    frame = run.embeddings()
    keep = np.ones(32, dtype=bool)
    keep[[3, 7]] = False
    expected = reference(batches[0].numpy()[keep], views[0].numpy()[keep])
    assert frame.loc[0, "nonfinite"] == 2 and frame.loc[0, "samples"] == 30
    for column, value in expected.items():
        assert frame.loc[0, column] == pytest.approx(value, rel=1e-5), column
    eig, _ = reference_spectrum([batches[0].numpy()[keep], batches[1].numpy()])
    np.testing.assert_allclose(run.spectrum()[1][0], eig, rtol=1e-4, atol=1e-9)


def test_every_tags_and_the_spectrum_window_option(tmp_path):
    g = torch.Generator().manual_seed(6)
    with Recorder(tmp_path, every=2, spectrum_window=2) as rec:
        for step in range(8):
            rec.log_embeddings(step, torch.randn(16, 4, generator=g), tag="a")
            rec.log_embeddings(step, torch.randn(16, 6, generator=g), tag="b")
    run = open_run(tmp_path)
    assert run.embedding_tags == ["a", "b"] and run.tags == []
    assert list(run.embeddings("a").index) == [0, 2, 4, 6]
    assert list(run.spectrum("a")[0]) == [2, 6] and run.spectrum("b")[1].shape == (2, 6)
    with Recorder(tmp_path / "none", spectrum_window=0) as rec:
        rec.log_embeddings(0, torch.randn(8, 5000))  # any dim without a spectrum
    run = open_run(tmp_path / "none")
    assert run.embeddings()["rank"].isna().all() and run.spectrum()[1].shape == (0, 0)
    with pytest.raises(ScorevizError, match="no embeddings under tag 'c'; tags: \\['a', 'b'\\]"):
        open_run(tmp_path).embeddings("c")


def test_a_tag_keeps_its_dim_and_few_samples_warn(tmp_path):
    with Recorder(tmp_path, spectrum_window=2) as rec:
        rec.log_embeddings(0, torch.randn(4, 8))
        with pytest.raises(ScorevizError, match="tag 'train' has dim 8 in this run, got dim 9"):
            rec.log_embeddings(1, torch.randn(4, 9))
        with pytest.warns(RuntimeWarning, match="at step 1 has 7 samples for dim 8: its rank cannot exceed"):
            rec.log_embeddings(1, torch.randn(3, 8))
            rec.flush()
    assert open_run(tmp_path).embeddings()["rank"].dropna().iloc[0] <= 7


def test_effective_rank_is_rankmes_formula():
    assert effective_rank(np.ones(10)) == pytest.approx(10.0)
    assert effective_rank([4.0, 0.0, 0.0]) == pytest.approx(1.0)
    singular = np.array([3.0, 2.0, 1.0])
    p = singular / singular.sum()
    assert effective_rank(singular ** 2) == pytest.approx(np.exp(-(p * np.log(p)).sum()))
    assert effective_rank(np.zeros(5)) == 0.0 and math.isnan(effective_rank([]))
