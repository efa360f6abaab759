"""The Compare view: each run's score distribution at one step as a CDF with quantile markers,
and its 1-Wasserstein and Kolmogorov-Smirnov distances to a reference, from the histograms."""

import json

import numpy as np
import pytest

from app.views.compare import figures
from scoreviz import groups
from tests.sweep_runs import write_run


def dense(edges, counts, grid):
    """A histogram's CDF (uniform within each bin) on a fine grid, the brute-force way."""
    density = np.repeat(np.asarray(counts, float) / np.sum(counts) / np.diff(edges), 1)
    return np.array([np.sum(density * np.clip(np.minimum(x, edges[1:]) - edges[:-1], 0, None)) for x in grid])


@pytest.mark.parametrize("seed", range(5))
def test_w1_and_ks_are_exact_for_histograms_on_different_bins(seed):
    rng = np.random.default_rng(seed)
    a_edges, b_edges = np.linspace(-1, 1, 11), np.sort(np.r_[-1, rng.uniform(-1, 1, 6), 1])
    a_counts, b_counts = rng.integers(0, 9, 10), rng.integers(1, 9, 7)
    a = (a_edges, figures.cdf(a_edges, a_counts))
    b = (b_edges, figures.cdf(b_edges, b_counts))
    w1, ks = figures.distances(a, b)
    grid = np.linspace(-1, 1, 40001)
    gap = np.abs(dense(a_edges, a_counts, grid) - dense(b_edges, b_counts, grid))
    assert w1 == pytest.approx(np.sum((gap[1:] + gap[:-1]) / 2 * np.diff(grid)), abs=2e-5)
    assert ks == pytest.approx(gap.max(), abs=1e-4)
    assert figures.distances(b, a) == pytest.approx((w1, ks)) and figures.distances(a, a) == (0.0, 0.0)


def test_w1_of_a_shifted_distribution_is_the_shift():
    edges = np.linspace(-1, 1, 201)
    counts = np.zeros(200)
    counts[20:60] = 1
    shifted = np.roll(counts, 50)  # 50 bins of 0.01: a shift of 0.5 in score
    w1, ks = figures.distances((edges, figures.cdf(edges, counts)), (edges, figures.cdf(edges, shifted)))
    assert w1 == pytest.approx(0.5) and ks == pytest.approx(1.0)


def test_quantiles_of_a_histogram():
    edges = np.linspace(-1, 1, 5)  # bins of 0.5; all scores in [-0.5, 0.5]
    values = figures.cdf(edges, [0, 2, 2, 0])
    np.testing.assert_allclose(figures.quantiles(edges, values), [-0.45, -0.25, 0.0, 0.25, 0.45])
    assert figures.cdf(edges, [0, 0, 0, 0]) is None  # no scores: no distribution


def test_each_run_at_its_last_recorded_step_at_or_before_and_groups_as_mean_histograms():
    edges = np.linspace(-1, 1, 5)
    one = {"pos": (np.array([0, 10]), edges, np.array([[4, 0, 0, 0], [0, 0, 0, 4]]))}
    two = {"pos": (np.array([5]), edges, np.array([[0, 4, 0, 0]]))}
    at = figures.at_step({"a": one, "b": two}, 9)
    assert at["a"]["pos"][2] == 0 and at["b"]["pos"][2] == 5
    np.testing.assert_allclose(at["a"]["pos"][1], [0, 1, 1, 1, 1])
    grouped = figures.groups_at_step({"a": one, "b": two}, groups.group_runs({"a": {}, "b": {}}, []), 10)
    edges_, values, used = grouped["all runs"]["pos"]
    np.testing.assert_allclose(values, [0, 0, 0.5, 0.5, 1.0])  # half the mass in each run's bin
    assert used == 10


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare-runs")
    steps = np.arange(0, 20, 2)
    for name, m, offset in (("a", 0.9, 0), ("b", 0.9, 3), ("c", 0.99, 6)):
        write_run(root / name, {"moco_m": m}, steps, steps / 100, hist_bin=(np.arange(len(steps)) + offset) % 10)
    return root


def test_the_view_draws_every_run_and_its_distances_to_the_reference(runs):
    from app import create_app
    from test_app import post_panel, post_state

    dash_app = create_app(runs, refresh=60)
    client = dash_app.server.test_client()
    state = post_state(client, dash_app, "?view=compare&ref=b&at=10")["compare-cdfs-state"]["data"]
    assert (state["ref"], state["at"], state["runs"]) == ("b", 10, ["a", "b", "c"])
    out = post_panel(client, dash_app, "compare-cdfs-state", state)
    fig = out["compare-graph"]["figure"]
    lines = [t["name"] for t in fig["data"] if t["mode"] == "lines"]
    assert lines == ["a", "a", "b (reference)", "b (reference)", "c", "c"]  # positives and negatives each
    assert "step 10" in fig["layout"]["title"]["text"]
    table = json.dumps(out["compare-table"]["children"])
    assert "b (reference)" in table and table.count("0.0000") == 4  # the reference to itself
    # at step 10 every run has all its scores in one bin of 0.2: a's bin 5, b's 8, c's 1
    rows = figures.distance_rows(figures.at_step({r: dash_app.scoreviz_data.snapshots(r, "train") for r in "abc"}, 10),
                                 "b")
    assert rows[0]["pos"] == pytest.approx((0.6, 1.0)) and rows[2]["neg"] == pytest.approx((1.4, 1.0))
    assert (out["compare-at"]["min"], out["compare-at"]["max"]) == (0, 18)
    # grouped: the groups' mean histograms, the reference's group the reference
    grouped = post_panel(client, dash_app, "compare-cdfs-state", dict(state, group=["moco_m"]))
    names = [t["name"] for t in grouped["compare-graph"]["figure"]["data"] if t["mode"] == "lines"]
    assert names == ["moco_m=0.9 (reference)"] * 2 + ["moco_m=0.99"] * 2
