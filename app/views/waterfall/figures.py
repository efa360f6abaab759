"""Figure functions of the 3D waterfall view (pure, no Dash): runs ordered by a config value x step
(or time) x statistic, as in the paper's figure; or one mean line and band per group of runs."""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from app.plot.axes import (
    TEMPLATE, empty_figure, fmt, key_value, numeric_value, over, short, stat_label, with_notes, x_axis,
)
from app.plot.lines import BAND_LABELS
from app.plot.palette import fallback
from app.plot.reduce import MAX_POINTS, downsample_minmax, smooth


def waterfall_figure(
    series: Mapping[str, pd.Series],
    order: Mapping[str, object],
    *,
    key: str,
    stat: str = "neg_sample_var",
    max_points: int = MAX_POINTS // 2,
    smoothing: float = 0.0,
    colors: Mapping[str, str] | None = None,
    x: str = "step",
    times: Mapping[str, pd.Series] | None = None,
    tag: str | None = None,
) -> go.Figure:
    """Paper-style 3D waterfall: runs ordered by a config value x step (or time, ``x``) x statistic.

    ``series`` maps run name to the statistic over steps; ``order`` maps run
    name to its value of config ``key`` (runs without it go last). Each run is
    one 3D line at its own depth in its own colour (``colors``), every depth
    labelled with the run's value of ``key`` (its name without a key), the
    legend with the run's name (and ``key=value``). Runs sharing a value are told apart
    by their names on the depth axis.
    """
    title = f"{stat_label(stat)} {over(x)}{f' ({tag})' if tag else ''}, runs ordered by {key or 'name'}"
    series = {name: s.astype(float).dropna() for name, s in series.items() if s is not None}
    if not series:
        return empty_figure(title, "select runs")
    axis = x_axis({name: s.index.to_numpy() for name, s in series.items()}, x, times)
    if not axis.values:
        return empty_figure(title, "; ".join(axis.notes))
    title = with_notes(title, axis.notes)
    series = {name: s for name, s in series.items() if name in axis.values}

    def sort_key(name):
        value = order.get(name)
        number = numeric_value(value)
        if number is None:
            return (value is None, math.inf, f"{value}{name}")
        return (value is None, number, name)

    names = sorted(series, key=sort_key) if key else sorted(series)
    colors = dict(colors or {})
    fig = go.Figure()
    for depth, name in enumerate(names):
        s = smooth(series[name], smoothing)
        px, z = downsample_minmax(np.asarray(axis.values[name]), s.to_numpy(), max_points)
        fig.add_trace(go.Scatter3d(
            x=px, y=np.full(len(px), depth, dtype=np.float32), z=z.astype(np.float32),
            mode="lines", name=f"{name} ({key_value(key, order.get(name))})" if key else name,
            line=dict(color=colors.get(name) or fallback(depth), width=5),
        ))
    values = [fmt(order.get(n)) if order.get(n) is not None else "not set" for n in names]
    shared = key and len(set(values)) < len(values)  # a value alone would not say which run
    ticktext = [short(f"{v} {n}" if shared else v, 28) if key else short(n, 24) for n, v in zip(names, values)]
    scene(fig, title, x_title=axis.title, is_date=axis.is_date, stat=stat, depth_title=key or "run",
          ticks=ticktext, uirevision="waterfall")
    return fig


def _ordered(curves: Sequence, key: str) -> list:
    """Groups' curves in waterfall depth order: by their value of ``key`` when they are grouped by it
    (numbers numerically, missing last), else in the order given (group_runs sorts by their values)."""
    if not curves or not key or key not in curves[0].group.by:
        return list(curves)
    at = curves[0].group.by.index(key)

    def sort_key(indexed):
        index, curve = indexed
        value = curve.group.key[at]
        number = numeric_value(value)
        return (value is None, math.inf if number is None else number, index)
    return [c for _, c in sorted(enumerate(curves), key=sort_key)]


def grouped_waterfall_figure(curves: Sequence, *, key: str = "", stat: str = "neg_sample_var", band: str = "std",
                             colors: Mapping[str, str] | None = None, smoothing: float = 0.0,
                             max_points: int = MAX_POINTS // 2, title: str | None = None) -> go.Figure:
    """The 3D waterfall with one line per group: its mean ``stat`` over steps at its own depth,
    a see-through ribbon for its band, the group's name on the depth axis and its run count
    in the legend. Groups are ordered by ``key`` when they are grouped by it."""
    title = title or f"{stat_label(stat)} over steps, groups ordered by {key or 'their values'}"
    curves = _ordered([c for c in curves if len(c.frame)], key)
    if not curves:
        return empty_figure(title, "select runs with this statistic")
    fig = go.Figure()
    for depth, curve in enumerate(curves):
        group, frame = curve.group, curve.frame
        if len(frame) > max_points:
            frame = frame.iloc[np.unique(np.linspace(0, len(frame) - 1, max_points).astype(int))]
        x = frame.index.to_numpy()
        mean, lower, upper = (smooth(frame[k].reset_index(drop=True), smoothing).to_numpy()
                              for k in ("mean", "lower", "upper"))
        color = (colors or {}).get(group.name) or fallback(depth)
        fig.add_trace(_ribbon(x, depth, lower, upper, color, group.label))
        fig.add_trace(go.Scatter3d(
            x=x, y=np.full(len(x), depth, dtype=np.float32), z=mean.astype(np.float32), mode="lines",
            name=group.label, legendgroup=group.label, line=dict(color=color, width=6),
            customdata=frame["count"].to_numpy(),
            hovertemplate=f"{group.name}<br>step %{{x}}<br>mean %{{z:.4g}} (n=%{{customdata}})<extra></extra>"))
    names = [short(c.group.name, 28) for c in curves]
    scene(fig, title, x_title="step", is_date=False, stat=stat, depth_title="group", ticks=names,
          uirevision="grouped-waterfall")
    fig.update_layout(legend_title_text=BAND_LABELS.get(band, band))
    return fig


def _ribbon(x, depth, lower, upper, color, label) -> go.Mesh3d:
    """A vertical strip at ``depth`` between ``lower`` and ``upper`` over ``x``: two triangles per step."""
    n = len(x)
    keep = np.isfinite(lower) & np.isfinite(upper)
    xs = np.concatenate([x, x]).astype(np.float64)
    zs = np.concatenate([np.where(keep, lower, 0), np.where(keep, upper, 0)]).astype(np.float32)
    i, j, k = [], [], []
    for s in range(n - 1):
        if keep[s] and keep[s + 1]:  # bottom s, bottom s+1, top s; then top s, bottom s+1, top s+1
            i += [s, n + s]
            j += [s + 1, s + 1]
            k += [n + s, n + s + 1]
    return go.Mesh3d(x=xs, y=np.full(2 * n, depth, dtype=np.float32), z=zs, i=i, j=j, k=k, color=color,
                     opacity=0.25, name=f"{label} band", legendgroup=label, showlegend=False, hoverinfo="skip",
                     flatshading=True, lighting=dict(ambient=1.0, diffuse=0.0, specular=0.0))


# Legend entries that fit in one row above the scene; with more, a row above wraps upward over the
# title and its last entry runs past the right edge (21 groups were cut there), so they go into a
# column at the right, one entry a line (21 lines fit the figure's height).
LEGEND_ROW = 4


def scene(fig: go.Figure, title: str, *, x_title: str, is_date: bool, stat: str, depth_title: str, ticks: list,
          uirevision: str) -> None:
    """The waterfall's 3D scene: steps (or time) along x, one depth per line labelled ``ticks``,
    the statistic up; the scene fills the figure (the camera close, the legend above it, or at its
    right when there are more than LEGEND_ROW entries)."""
    entries = sum(1 for t in fig.data if t.showlegend is not False)
    if entries <= LEGEND_ROW:
        legend = dict(orientation="h", yanchor="bottom", y=0.92, xanchor="left", x=0.0)
    else:  # outside the plot area: plotly widens the right margin to fit the longest entry
        legend = dict(orientation="v", yanchor="top", y=1.0, xanchor="left", x=1.0)
    fig.update_layout(
        template=TEMPLATE, title=title, height=720,
        scene=dict(
            domain=dict(x=[0, 1], y=[0, 0.95]),
            xaxis=dict(title=x_title, nticks=6, type="date" if is_date else None),
            zaxis=dict(title=stat_label(stat), nticks=5),
            yaxis=dict(title=depth_title, tickmode="array", tickvals=list(range(len(ticks))), ticktext=ticks),
            camera=dict(eye=dict(x=0.8, y=-1.55, z=0.55), center=dict(x=0, y=0, z=-0.1)), aspectmode="manual",
            aspectratio=dict(x=1.7, y=max(0.7, min(1.3, 0.25 * len(ticks))), z=0.75),
        ),
        legend=legend, margin=dict(l=0, r=0, t=60, b=0), uirevision=uirevision,
    )
