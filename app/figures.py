"""Figure functions: frames in, plotly Figure out.

Every function here is pure: it takes pandas / numpy data already read from a
run and returns a ``plotly.graph_objects.Figure`` (or plain data for tables).
Nothing here reads files or knows about Dash, so all of it is tested without a
browser. Every trace is reduced on the server to a bounded number of points
before it is put into a figure, so the browser never receives a whole run.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

# Points per line trace after downsampling; two per bucket (its min and max).
MAX_POINTS = 2000
# Time rows per heatmap / surface; a 100k-step run becomes this many buckets.
MAX_ROWS = 400
# Cells (rows x columns, all runs together) allowed in one heatmap figure, so a
# figure stays well under 2 MB of JSON however many runs are selected.
MAX_CELLS = 160_000

DEFAULT_STATS = ("pos_mean", "neg_mean", "neg_sample_var")
# Columns of run.scores(tag), as documented by scoreviz.Run.
SCORE_COLUMNS = tuple(
    f"{kind}_{stat}" for kind in ("pos", "neg")
    for stat in ("mean", "var", "min", "max", "q05", "q25", "q50", "q75", "q95",
                 "count", "nonfinite", "out_of_range")
) + ("neg_sample_var", "margin", "hard_frac")
TEMPLATE = "plotly_white"

STAT_LABELS = {
    "pos_mean": "positive mean",
    "neg_mean": "negative mean",
    "neg_var": "negative variance (all scores)",
    "pos_var": "positive variance",
    "neg_sample_var": "negative variance (per sample)",
    "margin": "margin: positive - hardest negative (mean over samples)",
    "hard_frac": "fraction of samples whose hardest negative beats the positive",
}


def stat_label(column: str) -> str:
    """Human label for a statistic or scalar column name."""
    return STAT_LABELS.get(column, column.replace("_", " "))


# --------------------------------------------------------------------------
# Reduction helpers
# --------------------------------------------------------------------------


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


def empty_figure(title: str = "", message: str = "no data") -> go.Figure:
    """A blank figure that shows `message` in its middle."""
    fig = go.Figure()
    fig.update_layout(
        template=TEMPLATE,
        title=title,
        xaxis_visible=False,
        yaxis_visible=False,
        annotations=[dict(text=message, showarrow=False, font_size=16, x=0.5, y=0.5,
                          xref="paper", yref="paper")],
    )
    return fig


# --------------------------------------------------------------------------
# Curves over steps
# --------------------------------------------------------------------------


def curves_figure(
    frames: Mapping[str, pd.DataFrame],
    columns: Sequence[str] = DEFAULT_STATS,
    *,
    log_y: bool = False,
    smoothing: float = 0.0,
    max_points: int = MAX_POINTS,
    title: str = "Statistics over steps",
) -> go.Figure:
    """One subplot per statistic, one trace per run in each.

    ``frames`` maps a run name to a DataFrame indexed by step holding (some
    of) ``columns``; a run lacking a column simply has no trace there.
    Traces of one run share a legend group and colour; trace names are the run
    names. Each trace is smoothed (EMA, ``smoothing``) then min/max-downsampled.
    """
    columns = [c for c in columns if c]
    if not frames or not columns:
        return empty_figure(title, "select runs and statistics")
    fig = make_subplots(rows=len(columns), cols=1, shared_xaxes=True,
                        vertical_spacing=0.06 if len(columns) > 1 else 0,
                        subplot_titles=[stat_label(c) for c in columns])
    palette = _palette()
    for i, (name, frame) in enumerate(frames.items()):
        color = palette[i % len(palette)]
        shown = False
        for row, column in enumerate(columns, start=1):
            if frame is None or column not in frame.columns:
                continue
            series = smooth(frame[column].astype(float), smoothing)
            x, y = downsample_minmax(series.index.to_numpy(), series.to_numpy(), max_points)
            fig.add_trace(
                go.Scatter(x=x, y=y.astype(np.float32), name=name, mode="lines",
                             legendgroup=name, showlegend=not shown,
                             line=dict(color=color, width=1.5)),
                row=row, col=1,
            )
            shown = True
    fig.update_yaxes(type="log" if log_y else "linear")
    fig.update_xaxes(title_text="step", row=len(columns), col=1)
    fig.update_layout(template=TEMPLATE, title=title, height=260 * len(columns) + 80,
                      hovermode="x unified", margin=dict(l=60, r=20, t=80, b=40),
                      uirevision="curves")
    return fig


def total_norm_figure(
    norms: Mapping[str, pd.Series],
    *,
    log_y: bool = True,
    max_points: int = MAX_POINTS,
    title: str = "Total gradient L2 norm",
) -> go.Figure:
    """Total gradient norm over steps, one trace per run, log scale by default."""
    if not norms:
        return empty_figure(title, "no gradients recorded")
    frames = {name: s.rename("total").to_frame() for name, s in norms.items() if s is not None}
    fig = curves_figure(frames, ["total"], log_y=log_y, max_points=max_points, title=title)
    fig.update_layout(height=340, uirevision="total-norm")
    fig.layout.annotations = ()
    return fig


# --------------------------------------------------------------------------
# Score distributions
# --------------------------------------------------------------------------


def score_heatmap_figure(
    histograms: Mapping[str, tuple],
    *,
    kind: str = "neg",
    max_cells: int = MAX_CELLS,
    title: str | None = None,
) -> go.Figure:
    """Step x score heatmap of the histograms, one subplot row per run.

    ``histograms`` maps a run name to ``(steps, bin_edges, counts)``. Each
    histogram is turned into a density (fraction of scores per bin) and steps
    are averaged into buckets so the figure holds at most ``max_cells`` cells.
    """
    title = title or f"{'Positive' if kind == 'pos' else 'Negative'} score distribution over steps"
    # A run without scores of this kind (BYOL, SimSiam: no negatives) has empty histograms only.
    histograms = {k: v for k, v in histograms.items()
                  if v is not None and len(v[0]) and np.asarray(v[2]).sum() > 0 and not np.isnan(v[2]).all()}
    if not histograms:
        return empty_figure(title, f"no {'positive' if kind == 'pos' else 'negative'} scores recorded")
    n = len(histograms)
    fig = make_subplots(rows=n, cols=1, shared_xaxes=True, vertical_spacing=min(0.12, 0.3 / n) if n > 1 else 0,
                        subplot_titles=list(histograms))
    for row, (name, (steps, edges, counts)) in enumerate(histograms.items(), start=1):
        bins = counts.shape[1]
        rows = max(2, min(MAX_ROWS, max_cells // (n * bins)))
        bsteps, dens = bucket_rows(steps, to_density(counts), rows, how="mean")
        centers = (np.asarray(edges[:-1]) + np.asarray(edges[1:])) / 2
        fig.add_trace(
            go.Heatmap(x=bsteps, y=centers.astype(np.float32), z=dens.T.astype(np.float32),
                       name=name, coloraxis="coloraxis",
                       hovertemplate="step %{x}<br>score %{y:.3f}<br>fraction %{z:.4f}<extra>"
                       + name + "</extra>"),
            row=row, col=1,
        )
        fig.update_yaxes(title_text="score", range=[-1, 1], row=row, col=1)
    fig.update_xaxes(title_text="step", row=n, col=1)
    fig.update_layout(template=TEMPLATE, title=title, height=max(320, 220 * n + 80),
                      coloraxis=dict(colorscale="Viridis", colorbar_title="fraction"),
                      margin=dict(l=60, r=20, t=80, b=40))
    return fig


def row_at_step(steps, step) -> int | None:
    """Index of the last recorded step at or before ``step`` (else the first)."""
    steps = np.asarray(steps)
    if len(steps) == 0:
        return None
    i = int(np.searchsorted(steps, step, side="right")) - 1
    return max(i, 0)


def histograms_at_step_figure(
    histograms: Mapping[str, Mapping[str, tuple]],
    step: int,
    *,
    title: str | None = None,
) -> go.Figure:
    """Positive and negative histograms at ``step``, all runs overlaid.

    ``histograms`` maps a name (run, or tag) to ``{"pos": (steps, edges,
    counts), "neg": (...)}``. Each uses its last recorded step at or before
    ``step``. Trace names are ``"<name> pos"`` and ``"<name> neg"``; positives
    are solid, negatives dashed, one colour per name.
    """
    title = title or f"Score histograms at step {step}"
    fig = go.Figure()
    palette = _palette()
    for i, (name, kinds) in enumerate(histograms.items()):
        color = palette[i % len(palette)]
        for kind in ("pos", "neg"):
            data = kinds.get(kind) if kinds else None
            if data is None or len(data[0]) == 0:
                continue
            steps, edges, counts = data
            r = row_at_step(steps, step)
            centers = (np.asarray(edges[:-1]) + np.asarray(edges[1:])) / 2
            density = to_density(counts[r])
            if np.isnan(density).all():  # no scores of this kind at that step (e.g. no negatives)
                continue
            fig.add_trace(go.Scatter(
                x=centers.astype(np.float32), y=density.astype(np.float32),
                name=f"{name} {kind}", mode="lines", line_shape="hvh",
                legendgroup=name,
                line=dict(color=color, width=2, dash="solid" if kind == "pos" else "dash"),
                hovertemplate=f"{name} {kind} (step {int(steps[r])})<br>"
                              "score %{x:.3f}<br>fraction %{y:.4f}<extra></extra>",
            ))
    if not fig.data:
        return empty_figure(title, "no histograms recorded")
    fig.update_layout(template=TEMPLATE, title=title, height=420,
                      xaxis=dict(title="cosine score", range=[-1, 1]),
                      yaxis=dict(title="fraction of scores"),
                      margin=dict(l=60, r=20, t=60, b=40))
    return fig


def raw_vs_ft_figure(histograms_by_tag: Mapping[str, Mapping[str, tuple]], step: int,
                     run_name: str) -> go.Figure:
    """One run's score histograms at ``step`` for each tag (e.g. raw vs ft)."""
    fig = histograms_at_step_figure(histograms_by_tag, step,
                                    title=f"{run_name}: tags compared at step {step}")
    return fig


# --------------------------------------------------------------------------
# 3D waterfall over a config value
# --------------------------------------------------------------------------


def waterfall_figure(
    series: Mapping[str, pd.Series],
    order: Mapping[str, object],
    *,
    key: str,
    stat: str = "neg_sample_var",
    max_points: int = MAX_POINTS // 2,
    smoothing: float = 0.0,
) -> go.Figure:
    """Paper-style 3D waterfall: runs ordered by a config value x step x statistic.

    ``series`` maps run name to the statistic over steps; ``order`` maps run
    name to its value of config ``key`` (runs without it go last). Each run is
    one 3D line at its own depth, labelled ``key=value``.
    """
    title = f"{stat_label(stat)} over steps, runs ordered by {key or '(no key)'}"
    if not series:
        return empty_figure(title, "select runs")

    def sort_key(name):
        value = order.get(name)
        missing = value is None
        try:
            return (missing, float(value), name)
        except (TypeError, ValueError):
            return (missing, math.inf, f"{value}{name}")

    names = sorted(series, key=sort_key)
    fig = go.Figure()
    palette = _palette()
    for depth, name in enumerate(names):
        s = smooth(series[name].astype(float), smoothing)
        x, z = downsample_minmax(s.index.to_numpy(), s.to_numpy(), max_points)
        label = f"{key}={order.get(name)}" if key else name
        fig.add_trace(go.Scatter3d(
            x=x, y=np.full(len(x), depth, dtype=np.float32), z=z.astype(np.float32),
            mode="lines", name=f"{name} ({label})",
            line=dict(color=palette[depth % len(palette)], width=4),
        ))
    fig.update_layout(
        template=TEMPLATE, title=title, height=600,
        scene=dict(
            xaxis_title="step", zaxis_title=stat_label(stat),
            yaxis=dict(title=key or "run", tickvals=list(range(len(names))),
                       ticktext=[str(order.get(n)) if key else n for n in names]),
        ),
        margin=dict(l=0, r=0, t=60, b=0), uirevision="waterfall",
    )
    return fig


# --------------------------------------------------------------------------
# Gradient landscape
# --------------------------------------------------------------------------


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


def _log10(values) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.log10(np.asarray(values, dtype=float))
    return np.where(np.isfinite(out), out, np.nan).astype(np.float32)


def gradient_heatmap_figure(steps, layers: Sequence[str], norms, *, run_name: str = "") -> go.Figure:
    """Layer x step heatmap of log10 gradient L2 norms (layers in model order).

    Takes the output of :func:`reduce_gradients`.
    """
    title = f"Gradient L2 norm per layer (log10){': ' + run_name if run_name else ''}"
    if len(steps) == 0 or len(layers) == 0:
        return empty_figure(title, "no gradients recorded")
    fig = go.Figure(go.Heatmap(
        x=np.asarray(steps), y=list(layers), z=_log10(norms).T,
        colorscale="Inferno", colorbar_title="log10 norm", name=run_name,
        hovertemplate="step %{x}<br>%{y}<br>log10 norm %{z:.2f}<extra></extra>",
    ))
    fig.update_layout(
        template=TEMPLATE, title=title, height=max(420, min(900, 6 * len(layers) + 160)),
        xaxis_title="step",
        # Model order top to bottom, as the layers appear in the network.
        yaxis=dict(title="layer", autorange="reversed", tickfont_size=9, type="category"),
        margin=dict(l=160, r=20, t=60, b=40),
    )
    return fig


def gradient_surface_figure(steps, layers: Sequence[str], norms, *, run_name: str = "",
                            max_steps: int = 200) -> go.Figure:
    """3D surface of log10 gradient L2 norms over (step, layer)."""
    title = f"Gradient landscape (log10 L2 norm){': ' + run_name if run_name else ''}"
    if len(steps) == 0 or len(layers) == 0:
        return empty_figure(title, "no gradients recorded")
    steps, norms = bucket_rows(steps, norms, max_steps, how="max")
    fig = go.Figure(go.Surface(
        x=np.asarray(steps), y=np.arange(len(layers)), z=_log10(norms).T,
        colorscale="Inferno", colorbar_title="log10 norm", name=run_name,
    ))
    fig.update_layout(
        template=TEMPLATE, title=title, height=600,
        scene=dict(xaxis_title="step", yaxis_title="layer (model order)",
                   zaxis_title="log10 norm"),
        margin=dict(l=0, r=0, t=60, b=0), uirevision="surface",
    )
    return fig


# --------------------------------------------------------------------------
# Run table (plain data for an HTML table)
# --------------------------------------------------------------------------


def run_table(rows: Sequence[Mapping]) -> dict:
    """Columns, cells and config-difference flags for the run table.

    Each row is ``{"id", "name", "steps", "last_update", "config": {...}}`` or,
    for a run that cannot be read, ``{"id", "name", "error": "..."}``. Config
    keys become columns, those that differ first (each group sorted); a
    config column is marked as differing when the readable runs do not all
    hold the same value there, so differences stand out. Returns ``{"columns", "config_columns", "differs", "rows"}``
    where each output row has ``"cells"`` (list aligned with columns) and
    ``"error"`` (str or None).
    """
    good = [r for r in rows if not r.get("error")]
    keys = sorted({k for r in good for k in (r.get("config") or {})})
    differs = {}
    for k in keys:
        values = {_fmt(r.get("config", {}).get(k, "")) for r in good}
        differs[k] = len(values) > 1
    # Differing keys first: with dozens of config values, what tells runs
    # apart must be visible without scrolling.
    keys = [k for k in keys if differs[k]] + [k for k in keys if not differs[k]]
    columns = ["run", "steps", "last update"] + keys
    out_rows = []
    for r in rows:
        if r.get("error"):
            out_rows.append({"id": r.get("id"), "error": r["error"],
                             "cells": [r.get("name", r.get("id")), "", ""] + [""] * len(keys)})
            continue
        config = r.get("config") or {}
        out_rows.append({
            "id": r.get("id"), "error": None,
            "cells": [r.get("name", r.get("id")), _fmt(r.get("steps", "")),
                      _fmt(r.get("last_update", ""))] + [_fmt(config.get(k, "")) for k in keys],
        })
    return {"columns": columns, "config_columns": keys, "differs": differs, "rows": out_rows}


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_fmt(v) for v in value)
    return "" if value is None else str(value)


def _palette() -> list[str]:
    # Plotly's default qualitative colours, extended so 20 runs stay distinct.
    import plotly.express as px

    return list(px.colors.qualitative.Plotly) + list(px.colors.qualitative.Dark24)
