"""Line figures: one subplot per statistic, one trace (or group mean with its band) per run,
each in its run's colour. The curves view draws these, and so do the gradient, representation
and compare views for their own statistics."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from app.plot.axes import (
    DEFAULT_STATS, TEMPLATE, empty_figure, label_every_x_axis, log_ticks, stat_label, with_notes, x_axis,
)
from app.plot.palette import fallback, transparent
from app.plot.reduce import MAX_POINTS, downsample_minmax, smooth

# A series with at most this many points is drawn with markers too: a kNN accuracy
# logged once per epoch is a handful of points, and a single point has no line.
SPARSE_POINTS = 100
# The band around a group's mean: query value -> what the legend says it is.
BAND_LABELS = {"std": "mean \u00b1 std over runs", "sem": "mean \u00b1 standard error",
               "minmax": "mean, band from min to max run"}


@dataclass
class Line:
    """One curve of a subplot: its legend name, colour and points. With ``lower`` and ``upper``
    a shaded band is drawn around it; ``count`` (runs behind each point) shows on hover."""
    name: str
    color: str
    x: np.ndarray
    y: np.ndarray
    lower: np.ndarray | None = None
    upper: np.ndarray | None = None
    count: np.ndarray | None = None


def curves_figure(
    frames: Mapping[str, pd.DataFrame],
    columns: Sequence[str] = DEFAULT_STATS,
    *,
    log_y: bool = False,
    smoothing: float = 0.0,
    max_points: int = MAX_POINTS,
    title: str = "Statistics over steps",
    colors: Mapping[str, str] | None = None,
    x: str = "step",
    times: Mapping[str, pd.Series] | None = None,
    row_height: int = 260,
) -> go.Figure:
    """One subplot per statistic, one trace per run in each.

    ``frames`` maps a run name to a DataFrame indexed by step holding (some
    of) ``columns``; a run lacking a column simply has no trace there. Each
    column is drawn over the steps it was recorded at (a scalar logged once
    per epoch is a line through those points, with markers when there are few).
    Traces of one run share a legend group and its colour (``colors``, by run
    name; app.plot.palette.run_colors). ``x`` is ``step``, ``wall`` or ``relative``
    (wall times from ``times``, a Series per run as Run.times() gives). Each
    trace is smoothed (EMA, ``smoothing``) then min/max-downsampled. On a log
    axis values <= 0 cannot be drawn: the subplot's title says how many there are.
    """
    columns = [c for c in columns if c]
    if not frames or not columns:
        return empty_figure(title, "select runs and statistics")
    axis = x_axis({name: frame.index for name, frame in frames.items() if frame is not None}, x, times)
    traces = {c: [] for c in columns}
    for i, (name, frame) in enumerate(frames.items()):
        if name not in axis.values:
            continue
        color = (colors or {}).get(name) or fallback(i)
        for column in columns:
            if column not in frame.columns:
                continue
            series = pd.Series(frame[column].to_numpy(dtype=float), index=pd.RangeIndex(len(frame)))
            keep = series.notna().to_numpy() & pd.notna(axis.values[name])
            if not keep.any():
                continue
            series = smooth(series[keep].reset_index(drop=True), smoothing)
            px, py = downsample_minmax(np.asarray(axis.values[name])[keep], series.to_numpy(), max_points)
            traces[column].append(Line(name, color, px, py))
    return stat_subplots(columns, traces, list(frames), log_y=log_y, x_title=axis.title, is_date=axis.is_date,
                         title=title, notes=axis.notes, row_height=row_height, uirevision="curves")


def stat_subplots(columns: Sequence[str], lines: Mapping[str, list], order: Sequence[str], *, log_y: bool,
                  x_title: str, is_date: bool, title: str, notes: Sequence[str], row_height: int,
                  uirevision: str) -> go.Figure:
    """One subplot per statistic (``columns``), each drawing its ``lines[column]`` (:class:`Line`),
    legend entries in ``order`` of name, one legend entry per name shared by its subplots. Every
    subplot has its x tick labels. On a log axis values <= 0 cannot be drawn: the subplot's title
    says how many there are."""
    fig = make_subplots(rows=len(columns), cols=1, shared_xaxes=True,
                        vertical_spacing=min(0.1, 0.32 / len(columns)) if len(columns) > 1 else 0,
                        subplot_titles=[stat_label(c) for c in columns])
    shown = set()
    traces, rows = [], []  # added in one call: plotly checks a trace once then, not twice (150 traces: 0.3 s)
    for name in order:  # traces name by name, so the legend lists them in the order given
        for row, column in enumerate(columns, start=1):
            for line in lines[column]:
                if line.name != name:
                    continue
                if line.lower is not None and line.upper is not None:
                    traces.append(band(line))
                    rows.append(row)
                hover = {} if line.count is None else dict(
                    customdata=line.count, hovertemplate="%{y:.4g} (n=%{customdata})")
                traces.append(dict(
                    type="scatter", x=line.x, y=np.asarray(line.y).astype(np.float32), name=name, legendgroup=name,
                    showlegend=name not in shown, mode="lines+markers" if len(line.y) <= SPARSE_POINTS else "lines",
                    marker=dict(size=6, color=line.color), line=dict(color=line.color, width=1.5), **hover))
                rows.append(row)
                shown.add(name)
    if traces:
        fig.add_traces(traces, rows=rows, cols=[1] * len(rows))
    for row, column in enumerate(columns, start=1):
        if log_y:
            _log_axis(fig, row, [np.asarray(line.y) for line in lines[column]])
    fig.update_xaxes(title_text=x_title, row=len(columns), col=1)
    label_every_x_axis(fig)
    if is_date:
        fig.update_xaxes(type="date")
    if not shown:
        message = "; ".join(notes) if notes else "nothing recorded for these statistics yet"
        return empty_figure(title, message)
    fig.update_layout(template=TEMPLATE, title=with_notes(title, notes), height=row_height * len(columns) + 100,
                      hovermode="x unified", margin=dict(l=70, r=20, t=90, b=50), uirevision=uirevision)
    return fig


def _log_axis(fig: go.Figure, row: int, values: list) -> None:
    """Make subplot ``row`` a log axis with whole-number ticks; its title counts what it cannot draw."""
    every = np.concatenate(values) if values else np.array([])
    every = every[np.isfinite(every)]
    positive = every[every > 0]
    tickvals, ticktext = log_ticks(positive.min(), positive.max()) if len(positive) else ([], [])
    fig.update_yaxes(type="log", tickvals=tickvals or None, ticktext=ticktext or None, row=row, col=1)
    dropped = int((every <= 0).sum())
    if dropped:
        annotation = fig.layout.annotations[row - 1]
        annotation.text += f" <span style='color:#b22'>({dropped:,} values ≤ 0 not drawn on a log scale)</span>"


def band(line: Line) -> dict:
    """The shaded area between ``line.lower`` and ``line.upper``, in the line's colour, see-through
    (a scatter trace's properties)."""
    x = np.asarray(line.x)
    upper, lower = np.asarray(line.upper, dtype=np.float32), np.asarray(line.lower, dtype=np.float32)
    return dict(type="scatter", x=np.concatenate([x, x[::-1]]), y=np.concatenate([upper, lower[::-1]]),
                name=f"{line.name} band", legendgroup=line.name, showlegend=False, mode="lines",
                fill="toself", fillcolor=transparent(line.color, 0.2), line=dict(width=0), hoverinfo="skip")


def grouped_curves_figure(
    curves: Mapping[str, Sequence], columns: Sequence[str] = DEFAULT_STATS, *, band: str = "std",
    title: str = "Statistics over steps", colors: Mapping[str, str] | None = None, x: str = "step",
    log_y: bool = False, smoothing: float = 0.0, max_points: int = MAX_POINTS, row_height: int = 260,
) -> go.Figure:
    """One subplot per statistic, one mean line per group with a shaded band (``band``);
    ``log_y``, ``smoothing``, ``max_points`` and ``row_height`` as for curves_figure.

    ``curves`` maps a column to its groups' curves (scoreviz.groups.GroupCurve, as
    RunData.grouped_curves gives). The legend names each group with its run count
    (``moco_m=0.99 (n=5)``), hover says how many runs have a value at a step; colours
    come from ``colors`` by group name (app.plot.palette.group_colors). Mean and band edges are
    smoothed like single runs. Groups are over steps: with ``x`` a time the title says so.
    """
    columns = [c for c in columns if c]
    if not columns or not any(curves.get(c) for c in columns):
        return empty_figure(title, "select runs and statistics")
    lines, order, notes = {c: [] for c in columns}, [], []
    for column in columns:
        for curve in curves.get(column) or []:
            group = curve.group
            if group.label not in order:
                order.append(group.label)
            color = (colors or {}).get(group.name) or fallback(order.index(group.label))
            frame = curve.frame
            if len(frame) > max_points:
                frame = frame.iloc[np.unique(np.linspace(0, len(frame) - 1, max_points).astype(int))]
            edges = {k: smooth(frame[k].reset_index(drop=True), smoothing).to_numpy() for k in ("mean", "lower", "upper")}
            lines[column].append(Line(group.label, color, frame.index.to_numpy(), edges["mean"],
                                      edges["lower"], edges["upper"], frame["count"].to_numpy()))
            if curve.missing:
                notes.append(f"{group.name}: {len(curve.missing)} of {len(group.runs)} runs without {column}")
    if x != "step":
        notes.insert(0, "groups are drawn over steps, not time")
    fig = stat_subplots(columns, lines, order, log_y=log_y, x_title="step", is_date=False, title=title,
                        notes=notes, row_height=row_height, uirevision="grouped-curves")
    fig.update_layout(legend_title_text=BAND_LABELS.get(band, band))
    return fig
