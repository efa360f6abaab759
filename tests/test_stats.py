"""Every statistic of scoreviz.stats against a numpy reference on the same data."""

import random

import numpy as np
import pytest
import torch

from scoreviz import stats
from scoreviz.stats import QUANTILES, RowLayout, score_row, summarize

BINS = 100
BIN_WIDTH = 2.0 / BINS


def reference(x):
    """Statistics of one kind computed in numpy, float64, from the float32 values."""
    x = x.float().numpy().astype(np.float64).reshape(-1)
    finite = x[np.isfinite(x)]
    in_range = finite[np.abs(finite) <= 1]
    return {
        "count": finite.size,
        "mean": finite.mean(),
        "var": finite.var(),
        "min": finite.min(),
        "max": finite.max(),
        "nonfinite": x.size - finite.size,
        "out_of_range": finite.size - in_range.size,
        "hist": np.histogram(in_range, bins=BINS, range=(-1, 1))[0],
        # a histogram locates the inverted-CDF quantile's bin exactly
        "quantiles": np.quantile(in_range, QUANTILES, method="inverted_cdf"),
    }


def computed(pos, neg, bins=BINS):
    return summarize(score_row(pos, neg, bins)[None].numpy(), RowLayout(bins))


def assert_kind_matches(out, kind, x, atol):
    ref = reference(x)
    assert out[f"{kind}_count"][0] == ref["count"]
    assert out[f"{kind}_nonfinite"][0] == ref["nonfinite"]
    assert out[f"{kind}_out_of_range"][0] == ref["out_of_range"]
    assert out[f"{kind}_mean"][0] == pytest.approx(ref["mean"], abs=atol)
    assert out[f"{kind}_var"][0] == pytest.approx(ref["var"], rel=1e-4, abs=atol)
    assert out[f"{kind}_min"][0] == pytest.approx(ref["min"], abs=1e-7)
    assert out[f"{kind}_max"][0] == pytest.approx(ref["max"], abs=1e-7)
    np.testing.assert_array_equal(out[f"{kind}_hist"][0], ref["hist"])
    for q, expected in zip(("q05", "q25", "q50", "q75", "q95"), ref["quantiles"]):
        assert abs(out[f"{kind}_{q}"][0] - expected) <= BIN_WIDTH, q


SHAPES = [((32,), (32, 64)), ((8, 1), (8, 257)), ((5,), (5, 3, 7)), ((1,), (300,)), ((2, 3), (2, 4, 5, 6))]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("pos_shape,neg_shape", SHAPES)
def test_statistics_match_numpy(dtype, pos_shape, neg_shape):
    g = torch.Generator().manual_seed(hash((pos_shape, neg_shape)) % 1000)
    pos = (0.5 + 0.3 * torch.randn(pos_shape, generator=g)).clamp(-1, 1).to(dtype)
    neg = (0.1 * torch.randn(neg_shape, generator=g)).to(dtype)
    out = computed(pos, neg)
    assert_kind_matches(out, "pos", pos, atol=1e-6)
    assert_kind_matches(out, "neg", neg, atol=1e-6)
    rows = neg.float().numpy().astype(np.float64)
    rows = rows.reshape(rows.shape[0], -1) if neg.dim() > 1 else rows.reshape(1, -1)
    assert out["neg_sample_var"][0] == pytest.approx(rows.var(axis=1).mean(), rel=1e-4)


def test_non_finite_scores_are_counted_and_excluded():
    g = torch.Generator().manual_seed(0)
    neg = 0.2 * torch.randn(16, 128, generator=g)
    neg[0, :5] = float("nan")
    neg[3, 7] = float("inf")
    neg[9, :] = float("-inf")  # a sample with no finite negative at all
    pos = torch.rand(16, generator=g)
    pos[2] = float("nan")
    out = computed(pos, neg)
    assert out["neg_nonfinite"][0] == 5 + 1 + 128
    assert out["pos_nonfinite"][0] == 1
    assert_kind_matches(out, "neg", neg, atol=1e-6)
    assert_kind_matches(out, "pos", pos, atol=1e-6)
    rows = [r[np.isfinite(r)] for r in neg.numpy().astype(np.float64)]
    assert out["neg_sample_var"][0] == pytest.approx(np.mean([r.var() for r in rows if r.size]), rel=1e-5)


def test_scores_outside_unit_interval_are_counted_not_binned():
    neg = torch.tensor([[-3.0, -1.0, 0.0, 0.5, 1.0, 14.0]])
    out = computed(torch.tensor([0.9]), neg)
    assert out["neg_out_of_range"][0] == 2
    assert out["neg_hist"][0].sum() == 4
    assert out["neg_min"][0] == -3.0 and out["neg_max"][0] == 14.0
    assert out["neg_mean"][0] == pytest.approx(np.mean([-3, -1, 0, 0.5, 1, 14]))


def test_empty_scores_give_nan_statistics():
    out = computed(torch.tensor([0.5]), torch.zeros(4, 0))
    assert out["neg_count"][0] == 0
    assert np.isnan(out["neg_mean"][0]) and np.isnan(out["neg_min"][0]) and np.isnan(out["neg_q50"][0])
    assert np.isnan(out["neg_sample_var"][0])


def test_rows_add_up_across_batches_like_one_global_batch():
    """The distributed reduction: summed rows (min of the extreme part) equal the concatenated batch."""
    g = torch.Generator().manual_seed(1)
    parts = [(torch.rand(8, generator=g), 0.3 * torch.randn(8, 50, generator=g)) for _ in range(3)]
    layout = RowLayout(BINS)
    rows = torch.stack([score_row(p, n, BINS) for p, n in parts])
    reduced = torch.cat([rows[:, :layout.sum_width].sum(0), rows[:, layout.sum_width:].min(0).values])
    merged = summarize(reduced[None].numpy(), layout)
    whole = computed(torch.cat([p for p, _ in parts]), torch.cat([n for _, n in parts]))
    for key in whole:
        np.testing.assert_allclose(merged[key], whole[key], rtol=1e-6, atol=1e-9, err_msg=key)  # float32 on the device


def test_large_tensors_get_exact_moments_and_a_subsampled_histogram(monkeypatch):
    monkeypatch.setattr(stats, "HIST_SAMPLE_LIMIT", 4096)
    g = torch.Generator().manual_seed(2)
    neg = 0.25 * torch.randn(64, 1024, generator=g)
    neg[0, 0] = 1.5  # out-of-range scores are counted exactly
    out = computed(torch.rand(4), neg)
    ref = reference(neg)
    assert out["neg_count"][0] == ref["count"]
    assert out["neg_mean"][0] == pytest.approx(ref["mean"], abs=1e-7)
    assert out["neg_var"][0] == pytest.approx(ref["var"], rel=1e-5)
    assert out["neg_out_of_range"][0] == ref["out_of_range"] >= 1
    # counts are scaled back to the full tensor: they sum to the in-range count, up to rounding
    assert abs(int(out["neg_hist"][0].sum()) - (ref["count"] - ref["out_of_range"])) <= BINS
    # a uniform subsample: its quantiles stay within a bin or two of the exact ones
    for q, expected in zip(("q05", "q50", "q95"), np.quantile(neg.numpy(), (0.05, 0.5, 0.95))):
        assert abs(out[f"neg_{q}"][0] - expected) <= 2 * BIN_WIDTH
    # the same when every score is inside [-1, 1] (the CPU's binning without range checks)
    neg.clamp_(-1.0, 1.0)
    for row in (score_row(torch.rand(4), neg, BINS), score_row(torch.rand(64), neg, BINS)):  # margin or not
        inside = summarize(row[None].numpy(), RowLayout(BINS))
        assert inside["neg_out_of_range"][0] == 0
        assert abs(int(inside["neg_hist"][0].sum()) - neg.numel()) <= BINS


def test_histogram_quantiles_interpolate_within_a_bin():
    counts = np.zeros(4)
    counts[2] = 10  # all mass in [0, 0.5)
    q = stats.histogram_quantiles(counts, (0.0, 0.5, 1.0))
    np.testing.assert_allclose(q, [0.0, 0.25, 0.5])
    assert np.isnan(stats.histogram_quantiles(np.zeros(4), (0.5,))).all()


def test_quantiles_of_many_histograms_match_one_at_a_time(monkeypatch):
    """All quantiles at once, in blocks of histograms, against a plain per-histogram reference."""
    monkeypatch.setattr(stats, "_QUANTILE_BLOCK", 3)  # several blocks and a partial one
    rng = np.random.default_rng(4)
    counts = rng.integers(0, 6, size=(10, 40)).astype(float)
    counts[:, :7] = 0  # empty bins in front
    counts[2] = 0  # an empty histogram
    counts[3] = 0
    counts[3, 39] = 5  # everything in the last bin

    def one(hist, q):
        if hist.sum() == 0:
            return np.nan
        cum = np.cumsum(hist)
        b = int(np.argmax(cum >= q * cum[-1])) if q > 0 else int(np.argmax(cum > 0))
        inside = hist[b]
        frac = (q * cum[-1] - (cum[b] - inside)) / inside
        return -1.0 + 2.0 * (b + min(max(frac, 0.0), 1.0)) / len(hist)

    expected = np.array([[one(h, q) for q in QUANTILES] for h in counts])
    np.testing.assert_allclose(stats.histogram_quantiles(counts), expected, equal_nan=True)
    np.testing.assert_allclose(stats.histogram_quantiles(counts.reshape(2, 5, 40)), expected.reshape(2, 5, -1),
                               equal_nan=True)


def test_cpu_binning_of_scores_known_inside_the_range_is_exact():
    # The fast path (every score in [-1, 1]): bin edges, both ends, and random scores at logit scales.
    values = torch.cat([torch.linspace(-1.0, 1.0, 101), torch.tensor([-1.0, 1.0, 0.0]),
                        torch.empty(70_000).uniform_(-1.0, 1.0)])
    for scale in (1.0, 0.07, 0.2):
        logits = values / scale
        scores = (logits.float() * scale).numpy().astype(np.float64)
        inside = np.abs(scores) <= 1.0  # a logit whose float32 product rounds past 1 is left to the general path
        expected = np.histogram(scores[inside], bins=BINS, range=(-1, 1))[0]
        np.testing.assert_array_equal(stats._bin_counts(logits[torch.from_numpy(inside)], BINS, scale, inside=True).numpy(),
                                      expected)


def test_a_tiny_variance_next_to_a_large_mean_stays_exact():
    """Collapse: every score near 0.99 with a spread of 1e-4; float32 sums of squares would lose it."""
    g = torch.Generator().manual_seed(3)
    neg = (0.99 + 1e-4 * torch.randn(32, 4096, generator=g)).clamp(-1, 1)
    out = computed(torch.full((32,), 0.999), neg)
    ref = neg.double()
    assert out["neg_var"][0] == pytest.approx(ref.var(correction=0).item(), rel=1e-3)
    assert out["neg_sample_var"][0] == pytest.approx(ref.var(dim=1, correction=0).mean().item(), rel=1e-3)


def test_logits_with_a_scale_equal_the_scores_they_came_from(monkeypatch):
    monkeypatch.setattr(stats, "HIST_SAMPLE_LIMIT", 1 << 30)  # whole histograms, to compare exactly
    g = torch.Generator().manual_seed(4)
    scores = torch.cat([torch.rand(16, 1, generator=g), 0.3 * torch.randn(16, 300, generator=g)], dim=1)
    logits = scores / 0.2
    from_logits = summarize(score_row(logits[:, 0], logits[:, 1:], BINS, scale=0.2)[None].numpy(), RowLayout(BINS))
    from_scores = computed(scores[:, 0], scores[:, 1:])
    for key in from_scores:
        np.testing.assert_allclose(from_logits[key], from_scores[key], rtol=1e-5, atol=1e-7, err_msg=key)


def test_recording_never_draws_from_torchs_random_generator(monkeypatch):
    monkeypatch.setattr(stats, "HIST_SAMPLE_LIMIT", 64)  # the subsampling path
    torch.manual_seed(5)
    score_row(torch.rand(8), torch.rand(8, 512), BINS)
    expected = torch.rand(3)
    torch.manual_seed(5)
    torch.rand(8), torch.rand(8, 512)
    assert torch.equal(torch.rand(3), expected)


def reference_margin(pos, neg):
    """margin and hard_frac in numpy: per sample, positive minus its hardest (largest finite)
    negative; samples without a finite positive or any finite negative left out."""
    pos = pos.double().numpy().reshape(-1)
    neg = neg.double().numpy().reshape(len(pos), -1)
    hardest = np.where(np.isfinite(neg), neg, -np.inf).max(axis=1)
    counted = np.isfinite(pos) & np.isfinite(hardest)
    return (pos - hardest)[counted].mean(), (hardest > pos)[counted].mean()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_margin_and_hard_fraction_match_numpy(dtype):
    g = torch.Generator().manual_seed(6)
    pos = (0.3 + 0.2 * torch.randn(64, generator=g)).to(dtype)
    neg = (0.25 * torch.randn(64, 40, generator=g)).to(dtype)
    neg[5] = float("nan")  # a sample without a finite negative
    neg[6, :10] = float("inf")  # non-finite negatives are not the hardest
    pos[7] = float("nan")
    out = computed(pos, neg)
    margin, hard = reference_margin(pos, neg)
    assert 0 < hard < 1
    assert out["margin"][0] == pytest.approx(margin, rel=1e-6)
    assert out["hard_frac"][0] == pytest.approx(hard)
    # a sample whose positive ties its hardest negative is not beaten
    tied = computed(torch.tensor([0.5, 0.5]), torch.tensor([[0.5, 0.1], [0.6, 0.1]]))
    assert tied["hard_frac"][0] == 0.5 and tied["margin"][0] == pytest.approx(-0.05)


def test_margin_needs_one_positive_per_sample_and_some_negatives():
    for pos, neg in [(torch.rand(8), None), (torch.rand(8), torch.empty(8, 0)), (torch.rand(4), torch.rand(8, 3)),
                     (torch.rand(2, 3), torch.rand(2, 4))]:
        out = computed(pos, torch.empty(0, 0) if neg is None else neg)
        assert np.isnan(out["margin"][0]) and np.isnan(out["hard_frac"][0])
    # several negatives per sample in any shape: the first dimension is the sample
    pos, neg = torch.rand(5), torch.rand(5, 3, 4)
    assert computed(pos, neg)["margin"][0] == pytest.approx(reference_margin(pos, neg)[0], rel=1e-6)


def test_cpu_binning_is_exact_at_the_edges():
    # Bin edges, the ends of the range (1.0 falls in the last bin), just outside it, inf and
    # a large random sample, at logit scales: each float32 score lands in numpy's bin for it.
    edges = torch.linspace(-1.0, 1.0, 101)
    special = torch.tensor([-1.0, 1.0, 0.0, -1.0000001, 1.0000001, float("inf"), -float("inf"), 0.5, -0.5])
    values = torch.cat([edges, special, torch.empty(70_000).uniform_(-1.1, 1.1)])
    for scale in (1.0, 0.07, 0.2):
        logits = values / scale
        scores = (logits.float() * scale).numpy().astype(np.float64)
        expected = np.histogram(scores[np.isfinite(scores)], bins=BINS, range=(-1, 1))[0]
        np.testing.assert_array_equal(stats._bin_counts(logits, BINS, scale).numpy(), expected)


@pytest.mark.parametrize("scale", [1.0, 0.2, 0.07])
@pytest.mark.parametrize("samples,negatives,limit", [(16, 300, None), (8, 1, None), (3, 5000, None), (64, 4096, 4096)])
def test_the_cpu_fast_path_gives_the_general_paths_row(monkeypatch, scale, samples, negatives, limit):
    """One positive per sample, every score finite and in [-1, 1]: the fast path's row is the general one's."""
    if limit:
        monkeypatch.setattr(stats, "HIST_SAMPLE_LIMIT", limit)  # a subsampled histogram, weighted back up
    g = torch.Generator().manual_seed(samples + negatives)
    scores = torch.cat([torch.rand(samples, 1, generator=g),
                        (0.3 * torch.randn(samples, negatives, generator=g)).clamp(-1, 1)], dim=1)
    scores[0, 0], scores[-1, -1] = 1.0, -1.0  # both ends of the range
    logits = (scores / scale).float()
    inside = (logits * scale).abs().le(1.0).all()  # a logit whose float32 product rounds past 1 goes the general way
    rows = {}
    for name, compute in (("fast", stats._unit_scores_row), ("general", lambda *a: stats._general_row(a[:2], *a[2:]))):
        monkeypatch.setattr(stats, "_offsets", random.Random(7))  # the same histogram sample
        rows[name] = compute(logits[:, :1], logits[:, 1:], BINS, scale)
    if not inside:
        assert rows["fast"] is None
        return
    np.testing.assert_allclose(rows["fast"].numpy(), rows["general"].numpy(), rtol=1e-12, atol=1e-12)
    assert rows["fast"].dtype == torch.float64 and rows["fast"].shape == (RowLayout(BINS).width,)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf"), 1.5, -1.0001])
@pytest.mark.parametrize("where", ["pos", "neg"])
def test_the_cpu_fast_path_leaves_other_scores_to_the_general_path(bad, where):
    pos, neg = torch.rand(4, 1), 0.2 * torch.randn(4, 9)
    (pos if where == "pos" else neg)[2, 0] = bad
    assert stats._unit_scores_row(pos, neg, BINS, 1.0) is None
    out = computed(pos[:, 0], neg)
    assert out[f"{where}_nonfinite"][0] + out[f"{where}_out_of_range"][0] == 1
