"""Figure functions and health checks, tested as pure functions (no browser)."""

import numpy as np
import pandas as pd
import pytest

from app.plot import lines as plot_lines
from app.plot import reduce as reduce_
from app.shell import runtable
from app.views.distribution import figures as distribution_figures
from app.views.gradients import figures as gradient_figures
from app.views.waterfall import figures as waterfall_figures
from scoreviz import health


def score_frame(n=5000, seed=0, spike_at=None):
    """A synthetic run.scores(tag) frame of the documented shape."""
    rng = np.random.default_rng(seed)
    steps = np.arange(n)
    t = steps / n
    frame = pd.DataFrame({
        "pos_mean": 0.3 + 0.6 * t + rng.normal(0, 0.01, n),
        "neg_mean": 0.05 * rng.standard_normal(n),
        "neg_var": 0.02 + 0.001 * rng.standard_normal(n),
        "neg_sample_var": 0.01 + 0.0005 * rng.random(n),
        "pos_nonfinite": np.zeros(n),
        "neg_nonfinite": np.zeros(n),
    }, index=pd.Index(steps, name="step"))
    if spike_at is not None:
        frame.loc[spike_at, "neg_sample_var"] = 5.0
    return frame


def hist(n=300, bins=100, seed=0, shift=0.0):
    rng = np.random.default_rng(seed)
    edges = np.linspace(-1, 1, bins + 1)
    counts = np.stack([
        np.histogram(np.clip(rng.normal(shift + i / n * 0.5, 0.2, 500), -1, 1), edges)[0]
        for i in range(n)])
    return np.arange(n, dtype=np.int64) * 10, edges, counts


# ---- downsampling ---------------------------------------------------------

def test_downsample_bounds_points_and_keeps_spike():
    x = np.arange(100_000)
    y = np.sin(x / 1000.0)
    y[54_321] = 50.0
    y[77_777] = -50.0
    dx, dy = reduce_.downsample_minmax(x, y, 1000)
    assert len(dx) == len(dy) <= 1000
    assert dy.max() == 50.0 and dx[dy.argmax()] == 54_321
    assert dy.min() == -50.0 and dx[dy.argmin()] == 77_777
    assert np.all(np.diff(dx) > 0)  # still ordered by step


def test_downsample_leaves_short_series_and_handles_nan():
    x, y = np.arange(10), np.arange(10.0)
    assert len(reduce_.downsample_minmax(x, y, 100)[0]) == 10
    y = np.full(10_000, np.nan)
    y[5000:] = 1.0
    dx, dy = reduce_.downsample_minmax(np.arange(10_000), y, 100)
    assert len(dx) <= 100 and np.isnan(dy).any() and (dy == 1.0).any()


def test_bucket_rows_max_keeps_spike():
    values = np.ones((10_000, 3))
    values[4321, 1] = 1e6
    steps, out = reduce_.bucket_rows(np.arange(10_000), values, 100, how="max")
    assert out.shape == (100, 3) and len(steps) == 100
    assert out[:, 1].max() == 1e6


# ---- curves ---------------------------------------------------------------

def test_curves_one_trace_per_run_and_statistic():
    frames = {"run-a": score_frame(seed=1), "run-b": score_frame(seed=2)}
    fig = plot_lines.curves_figure(frames, ["pos_mean", "neg_mean", "neg_sample_var"], max_points=500)
    assert len(fig.data) == 6
    assert [t.name for t in fig.data] == ["run-a"] * 3 + ["run-b"] * 3
    assert all(len(t.x) <= 500 for t in fig.data)
    # Only one legend entry per run.
    assert sum(bool(t.showlegend) for t in fig.data) == 2


def test_curves_spike_survives_downsampling_and_smoothing_off():
    frame = score_frame(n=100_000, spike_at=65_432)
    fig = plot_lines.curves_figure({"r": frame}, ["neg_sample_var"], max_points=2000)
    (trace,) = fig.data
    assert len(trace.x) <= 2000
    assert np.max(trace.y) == pytest.approx(5.0)
    assert 65_432 in set(np.asarray(trace.x).tolist())


def test_curves_log_scale_smoothing_and_missing_column():
    frames = {"a": score_frame(), "b": score_frame().drop(columns=["neg_sample_var"])}
    fig = plot_lines.curves_figure(frames, ["pos_mean", "neg_sample_var"], log_y=True, smoothing=0.9)
    assert len(fig.data) == 3  # b has no neg_sample_var trace
    assert fig.layout.yaxis.type == "log"
    raw = frames["a"]["pos_mean"].to_numpy()
    assert np.std(np.diff(fig.data[0].y)) < np.std(np.diff(raw))


def test_curves_empty_selection_gives_message():
    fig = plot_lines.curves_figure({}, ["pos_mean"])
    assert len(fig.data) == 0 and fig.layout.annotations


def test_total_norm_figure_traces():
    norms = {"a": pd.Series(np.ones(50_000)), "b": pd.Series(np.ones(10))}
    fig = gradient_figures.total_norm_figure(norms, max_points=300)
    assert [t.name for t in fig.data] == ["a", "b"]
    assert len(fig.data[0].x) <= 300 and len(fig.data[1].x) == 10
    assert fig.layout.yaxis.type == "log"


# ---- distributions --------------------------------------------------------

def test_score_heatmap_one_trace_per_run_bounded_cells():
    hists = {"a": hist(n=3000), "b": hist(n=50)}
    fig = distribution_figures.score_heatmap_figure(hists, kind="neg", max_cells=20_000)
    assert [t.type for t in fig.data] == ["heatmap", "heatmap"]
    assert [t.name for t in fig.data] == ["a", "b"]
    z = np.asarray(fig.data[0].z)
    assert z.shape[0] == 100 and z.shape[1] <= 20_000 // (2 * 100)
    assert np.nansum(z[:, 0]) == pytest.approx(1.0, rel=1e-5)  # densities per step


def test_histograms_at_step_overlay_and_step_changes_figure():
    hists = {"a": {"pos": hist(seed=1, shift=0.5), "neg": hist(seed=2)},
             "b": {"pos": hist(seed=3, shift=0.4), "neg": hist(seed=4)}}
    fig = distribution_figures.histograms_at_step_figure(hists, step=100)
    assert [t.name for t in fig.data] == ["a pos", "a neg", "b pos", "b neg"]
    assert all(len(t.x) == 100 for t in fig.data)
    later = distribution_figures.histograms_at_step_figure(hists, step=2500)
    assert not np.allclose(fig.data[0].y, later.data[0].y)


def test_row_at_step_uses_last_step_at_or_before():
    steps = np.array([0, 10, 20])
    assert reduce_.row_at_step(steps, 15) == 1
    assert reduce_.row_at_step(steps, 20) == 2
    assert reduce_.row_at_step(steps, -5) == 0
    assert reduce_.row_at_step([], 3) is None


def test_raw_vs_ft_names_tags():
    by_tag = {"raw": {"pos": hist(), "neg": hist()}, "ft": {"pos": hist(shift=0.2), "neg": hist()}}
    fig = distribution_figures.raw_vs_ft_figure(by_tag, 50, "run-a")
    assert [t.name for t in fig.data] == ["raw pos", "raw neg", "ft pos", "ft neg"]
    assert "run-a" in fig.layout.title.text


def test_waterfall_orders_runs_by_config_value():
    series = {name: score_frame(n=5000, seed=i)["neg_sample_var"]
              for i, name in enumerate(["m0.99", "m0.5", "m0.9"])}
    order = {"m0.99": 0.99, "m0.5": 0.5, "m0.9": 0.9}
    fig = waterfall_figures.waterfall_figure(series, order, key="m", max_points=400)
    assert [t.type for t in fig.data] == ["scatter3d"] * 3
    assert [t.name.split()[0] for t in fig.data] == ["m0.5", "m0.9", "m0.99"]
    assert all(len(t.x) <= 400 for t in fig.data)
    assert [float(t.y[0]) for t in fig.data] == [0, 1, 2]


# ---- gradients ------------------------------------------------------------

def grad_frame(n=20_000, layers=150):
    rng = np.random.default_rng(0)
    data = rng.lognormal(0, 0.3, (n, layers))
    data[12_345, 7] = 1e4
    data[:, 3] = np.nan  # a frozen layer
    return pd.DataFrame(data, columns=[f"layer{i}.weight" for i in range(layers)],
                        index=pd.Index(np.arange(n), name="step"))


def test_gradient_heatmap_and_surface_bounded_and_keep_spike():
    steps, layers, norms = reduce_.reduce_gradients(grad_frame(), max_rows=400)
    assert norms.shape == (400, 150)
    heat = gradient_figures.gradient_heatmap_figure(steps, layers, norms, run_name="a")
    (trace,) = heat.data
    z = np.asarray(trace.z)
    assert trace.type == "heatmap" and z.shape == (150, 400)
    assert np.nanmax(z) == pytest.approx(4.0)  # log10(1e4) survived
    assert np.isnan(z[3]).all()
    surface = gradient_figures.gradient_surface_figure(steps, layers, norms, max_steps=100)
    assert surface.data[0].type == "surface"
    assert np.asarray(surface.data[0].z).shape == (150, 100)


def test_figures_stay_small_as_json():
    steps, layers, norms = reduce_.reduce_gradients(grad_frame(), max_rows=400)
    heat = gradient_figures.gradient_heatmap_figure(steps, layers, norms)
    assert len(heat.to_json()) < 2_000_000
    curves = plot_lines.curves_figure({f"r{i}": score_frame(n=100_000, seed=i) for i in range(8)})
    assert len(curves.to_json()) < 2_000_000


# ---- run table ------------------------------------------------------------

def test_run_table_highlights_config_differences_and_errors():
    rows = [
        {"id": "a", "name": "a", "steps": 10, "last_update": "t", "config": {"m": 0.99, "lr": 0.03}},
        {"id": "b", "name": "b", "steps": 20, "last_update": "t", "config": {"m": 0.9, "lr": 0.03}},
        {"id": "bad", "name": "bad", "error": "bad/scores.h5: not an HDF5 file"},
    ]
    table = runtable.table_data(rows)
    assert table["columns"] == ["run", "steps", "last update", "m", "lr"]  # differing first
    assert table["differs"] == {"lr": False, "m": True}
    assert table["rows"][2]["error"].endswith("not an HDF5 file")
    assert table["rows"][0]["cells"][3] == "0.99"


# ---- health ---------------------------------------------------------------

def test_health_clean_run_has_no_flags():
    flags = health.run_health(score_frame(), None, pd.Series(np.ones(5000)))
    assert [f.check for f in flags] == ["collapse", "instability", "non-finite"]
    assert not any(f.fired for f in flags)


def test_health_collapse_reports_start_step():
    frame = score_frame(n=1000)
    frame.loc[600:, "pos_mean"] = 0.99
    frame.loc[600:, "neg_mean"] = 0.97
    flag = health.check_collapse(frame)
    assert flag.fired and flag.step == 600


def test_health_collapse_by_flat_negatives():
    frame = score_frame(n=1000)
    frame.loc[700:, "pos_mean"] = 0.95
    frame.loc[700:, "neg_sample_var"] = 1e-6
    flag = health.check_collapse(frame)
    assert flag.fired and flag.step == 700 and "variance" in flag.detail


def test_health_instability_spike_step():
    frame = score_frame(n=1000, spike_at=432)
    norms = pd.Series(np.ones(1000))
    norms[800] = 1e3
    flag = health.check_instability(frame, norms)
    assert flag.fired and flag.step == 432
    assert "gradient norm: 1 spikes" in flag.detail


def test_health_nonfinite_step():
    frame = score_frame(n=100)
    frame.loc[42:, "neg_nonfinite"] = 3
    norms = pd.Series(np.ones(100))
    norms[60] = np.inf
    flag = health.check_nonfinite(frame, None, norms)
    assert flag.fired and flag.step == 42
