"""Figure functions of the Representation view: frames in, plotly Figure out.

Pure functions (no Dash, no files), over what ``Run.embeddings(tag)``,
``Run.spectrum(tag)`` and ``Run.scores(tag)`` return, each reduced to a bounded
size before it goes into a figure.
"""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from app.plot.axes import TEMPLATE, empty_figure, label_every_x_axis, over, with_notes, x_axis
from app.plot.lines import curves_figure
from app.plot.palette import fallback
from app.plot.panels import run_panels
from app.plot.reduce import MAX_CELLS, MAX_POINTS, MAX_ROWS, bucket_rows, downsample_minmax
from scoreviz import health

PLANE_POINTS = 400  # points per run in the alignment-uniformity plane
EIGENVALUE_FLOOR = 1e-12  # drawn as the floor of the log colour scale (an eigenvalue of 0 has no log)


def rank_std_figure(frames: Mapping[str, pd.DataFrame], *, title: str = "Effective rank and std of the embeddings",
                    max_points: int = MAX_POINTS, colors: Mapping[str, str] | None = None, x: str = "step",
                    times: Mapping[str, pd.Series] | None = None) -> go.Figure:
    """Two panels, one trace per run in its colour (``colors``): RankMe's effective rank per
    window, and the std of the l2-normalised embeddings per step on a log scale, over steps
    or time (``x``, ``times`` as for figures.curves_figure). Grey lines for each dim the runs
    have: dotted, the level of spread-out embeddings (dim, 1/sqrt(dim)); dashed, the health
    panel's thresholds (dimensional and complete collapse below)."""
    frames = {name: f for name, f in frames.items() if f is not None and not f.empty}
    if not frames:
        return empty_figure(title, "no embeddings recorded (Recorder.log_embeddings)")
    axis = x_axis({name: f.index.to_numpy() for name, f in frames.items()}, x, times)
    frames = {name: f for name, f in frames.items() if name in axis.values}
    if not frames:
        return empty_figure(title, "; ".join(axis.notes))
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.1,
                        subplot_titles=["effective rank (RankMe), per window", "std of the l2-normalised embeddings"])
    for i, (name, frame) in enumerate(frames.items()):
        color = (colors or {}).get(name) or fallback(i)
        at = pd.Series(axis.values[name], index=frame.index)
        rank = frame["rank"].dropna()
        x, y = downsample_minmax(at[rank.index].to_numpy(), rank.to_numpy(), max_points)
        fig.add_trace(go.Scatter(x=x, y=y.astype(np.float32), name=name, legendgroup=name, mode="lines+markers",
                                 marker_size=4, line=dict(color=color, width=1.5)), row=1, col=1)
        std = frame["std"].dropna()
        std = std[std > 0]  # a log axis has no place for 0
        x, y = downsample_minmax(at[std.index].to_numpy(), std.to_numpy(), max_points)
        fig.add_trace(go.Scatter(x=x, y=y.astype(np.float32), name=name, legendgroup=name, showlegend=False,
                                 mode="lines", line=dict(color=color, width=1.5)), row=2, col=1)
    dims = sorted({int(d) for f in frames.values() for d in f["dim"].dropna().unique()})
    for dim in dims:
        label = f" (dim {dim})" if len(dims) > 1 else ""
        for row, level, dash, text in (
                (1, dim, "dot", f"dim{label}"),
                (1, health.DIMENSIONAL_COLLAPSE_RANK * dim, "dash", f"dimensional collapse below{label}"),
                (2, 1 / math.sqrt(dim), "dot", f"spread out: 1/sqrt(dim){label}"),
                (2, health.COMPLETE_COLLAPSE_STD / math.sqrt(dim), "dash", f"complete collapse below{label}")):
            fig.add_hline(y=level, row=row, col=1, line=dict(color="#9aa5b1", width=1, dash=dash))
            # placed by hand: on a log axis an hline's own annotation lands at 10**level
            # at the right end, over a light box: early steps are where curves cross the thresholds
            fig.add_annotation(x=1, xref="x domain" if row == 1 else "x2 domain", yref=f"y{'' if row == 1 else 2}",
                               y=level if row == 1 else math.log10(level), text=text, showarrow=False,
                               xanchor="right", yanchor="bottom", font=dict(size=10, color="#616e7c"),
                               bgcolor="rgba(255, 255, 255, 0.8)")
    fig.update_yaxes(title_text="rank", rangemode="tozero", row=1, col=1)
    fig.update_yaxes(title_text="std", type="log", dtick="D2", tickformat=".2~g", row=2, col=1)
    fig.update_xaxes(title_text=axis.title, row=2, col=1)
    label_every_x_axis(fig)
    if axis.is_date:
        fig.update_xaxes(type="date")
    fig.update_layout(template=TEMPLATE, title=with_notes(title, axis.notes), height=640, hovermode="x unified",
                      margin=dict(l=60, r=20, t=80, b=40), uirevision="rank-std")
    return fig


def spectrum_heatmap_figure(spectra: Mapping[str, tuple], *, max_cells: int = MAX_CELLS, title: str | None = None,
                            colors: Mapping[str, str] | None = None, x: str = "step",
                            times: Mapping[str, pd.Series] | None = None) -> go.Figure:
    """Step x eigenvalue index heatmap of log10 eigenvalues, largest first, one panel per run.

    ``spectra`` maps a run name to ``(steps, eigenvalues (n, dim))`` as Run.spectrum returns
    them. Steps are averaged into buckets and, for a large dim, neighbouring eigenvalues
    too (in log space), so the figure holds at most ``max_cells`` cells.
    """
    title = title or f"Spectrum of the embeddings {over(x)} (log10 eigenvalue)"
    spectra = {k: v for k, v in spectra.items() if v is not None and len(v[0])}
    if not spectra:
        return empty_figure(title, "no spectrum recorded yet (one per window of log_embeddings calls)")
    n = len(spectra)
    budget = max(2, max_cells // n)
    reduced = {}
    for name, (steps, eigenvalues) in spectra.items():
        logs = np.log10(np.clip(np.asarray(eigenvalues, dtype=np.float64), EIGENVALUE_FLOOR, None))
        logs[np.isnan(eigenvalues)] = np.nan  # past a row's own dim
        dim = logs.shape[1]
        rows = max(2, min(MAX_ROWS, budget // min(dim, 512)))  # at least 512 columns' worth of cells per step
        bsteps, logs = bucket_rows(steps, logs, rows, how="mean")
        reduced[name] = (bsteps, *_group_columns(logs, max(1, budget // max(1, len(bsteps)))))
    fig, axis, reduced = run_panels(reduced, x, times, colors)
    if fig is None:
        return empty_figure(title, "; ".join(axis.notes))
    n = len(reduced)
    everything = []
    for row, (name, (_, index, logs)) in enumerate(reduced.items(), start=1):
        everything.append(logs[np.isfinite(logs)])
        fig.add_trace(go.Heatmap(
            x=axis.values[name], y=index, z=logs.T.astype(np.float32), coloraxis="coloraxis", name=name,
            hovertemplate="%{x}<br>eigenvalue %{y}<br>log10 %{z:.2f}<extra>" + name + "</extra>"),
            row=row, col=1)
        fig.update_yaxes(title_text="index (largest first)", autorange="reversed", row=row, col=1)
    fig.update_xaxes(title_text=axis.title, row=n, col=1)
    if axis.is_date:
        fig.update_xaxes(type="date")
    title = with_notes(title, axis.notes)
    # One colour scale for every run, from the 1st to the last percentile of what is drawn: a few
    # eigenvalues at the floor (zero) would otherwise squeeze every panel into one colour.
    values = np.concatenate(everything) if everything else np.zeros(1)
    low, high = (np.percentile(values, [1, 100]) if values.size else (0.0, 1.0))
    fig.update_layout(template=TEMPLATE, title=title, height=max(340, 240 * n + 80),
                      coloraxis=dict(colorscale="Viridis", colorbar_title="log10 eigenvalue", cmin=float(low),
                                     cmax=float(max(high, low + 1e-6))),
                      margin=dict(l=60, r=20, t=80, b=40))
    return fig


def _group_columns(values, most: int):
    """(first index of each group (1-based), the mean of each group of neighbouring columns), at most `most` groups."""
    width = values.shape[1]
    size = math.ceil(width / most) if width > most else 1
    starts = np.arange(0, width, size)
    if size == 1:
        return starts + 1, values
    finite = ~np.isnan(values)
    sums = np.add.reduceat(np.where(finite, values, 0.0), starts, axis=1)
    counts = np.add.reduceat(finite, starts, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return starts + 1, sums / counts


def alignment_uniformity_figure(frames: Mapping[str, pd.DataFrame], *, max_points: int = PLANE_POINTS,
                                title: str = "Alignment and uniformity over training",
                                colors: Mapping[str, str] | None = None) -> go.Figure:
    """Each run's trajectory in the alignment-uniformity plane (Wang & Isola 2020), its points
    coloured by step: lower left is better on both. Runs without a second view (no
    alignment) are left out, and said so."""
    usable = {}
    for name, frame in frames.items():
        if frame is None or frame.empty:
            continue
        both = frame[["uniformity", "alignment"]].dropna()
        if len(both):
            usable[name] = both
    if not usable:
        return empty_figure(title, "needs log_embeddings(step, z, z2) with a second view")
    fig = go.Figure()
    first = min(int(f.index[0]) for f in usable.values())
    last = max(int(f.index[-1]) for f in usable.values())
    for i, (name, both) in enumerate(usable.items()):
        color = (colors or {}).get(name) or fallback(i)
        pick = np.unique(np.linspace(0, len(both) - 1, min(max_points, len(both))).round().astype(int))
        both = both.iloc[pick]
        steps = both.index.to_numpy()
        fig.add_trace(go.Scatter(
            x=both["uniformity"].to_numpy(np.float32), y=both["alignment"].to_numpy(np.float32), name=name,
            mode="lines+markers", line=dict(color=color, width=2.5),
            marker=dict(size=5, color=steps, coloraxis="coloraxis", line=dict(width=0)),
            customdata=steps, hovertemplate="step %{customdata}<br>uniformity %{x:.3f}<br>alignment %{y:.3f}"
                                            "<extra>" + name + "</extra>"))
        fig.add_annotation(x=float(both["uniformity"].iloc[-1]), y=float(both["alignment"].iloc[-1]), text=name,
                           showarrow=True, arrowhead=0, ax=20, ay=-20, font=dict(size=11, color=color))
    fig.update_layout(template=TEMPLATE, title=title, height=520,
                      xaxis_title="uniformity: log E exp(-2 ||x - y||²), lower is more uniform",
                      yaxis_title="alignment: E ||x - x2||², lower is closer",
                      coloraxis=dict(colorscale="Viridis", cmin=first, cmax=last, colorbar_title="step"),
                      legend=dict(x=1.12), margin=dict(l=60, r=20, t=60, b=40), uirevision="plane")
    return fig


def signals_figure(frames: Mapping[str, pd.DataFrame], *, tag: str | None = None, **options) -> go.Figure:
    """The label-free signals of the embeddings that predict a run's final kNN accuracy best, strongest
    first (scoreviz.health.VALIDATED_SIGNALS, measured in docs/health_validation.md), one panel each,
    one trace per run, a point per spectrum window; each panel's title gives the signal's Spearman rho
    with final kNN accuracy over the studies' runs."""
    title = (f"Label-free signals, the best predictors of accuracy first{f' ({tag})' if tag else ''}: "
             f"Spearman's rho with final kNN accuracy over {health.VALIDATION_RUNS} runs")
    columns = [s.column for s in health.VALIDATED_SIGNALS]
    frames = {name: f for name, f in frames.items()
              if f is not None and any(c in f and f[c].notna().any() for c in columns)}
    if not frames:
        return empty_figure(title, "no spectrum window with these signals (log_embeddings, "
                                   "recorded in a file of schema 4 or later)")
    fig = curves_figure(frames, columns, title=title, row_height=200, **options)
    for annotation, signal in zip(fig.layout.annotations, health.VALIDATED_SIGNALS):  # the subplot titles
        annotation.text = f"{signal.label}: rho {signal.rho:+.2f}, {signal.better} is better"
    fig.update_layout(uirevision="signals")
    return fig


def margin_figure(frames: Mapping[str, pd.DataFrame], *, tag: str | None = None, **options) -> go.Figure:
    """margin and hard_frac over steps, one trace per run (runs without negatives have none)."""
    title = f"Hard negatives {over(options.get('x', 'step'))}: margin and fraction beaten{f' ({tag})' if tag else ''}"
    frames = {name: f for name, f in frames.items() if f is not None and "margin" in f and f["margin"].notna().any()}
    if not frames:
        return empty_figure(title, "needs scores with one positive per sample and negatives")
    fig = curves_figure(frames, ["margin", "hard_frac"], title=title, **options)
    fig.update_layout(uirevision="margin")
    return fig
