"""Figure functions of the Gradient landscape view (pure, no Dash): one run's layer x step heatmap
and 3D surface of log10 gradient L2 norms, and every run's total norm over steps (or time)."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from app.plot.axes import TEMPLATE, empty_figure, over, x_axis
from app.plot.lines import curves_figure
from app.plot.reduce import MAX_POINTS, bucket_rows


def _log10(values) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.log10(np.asarray(values, dtype=float))
    return np.where(np.isfinite(out), out, np.nan).astype(np.float32)


def gradient_heatmap_figure(steps, layers: Sequence[str], norms, *, run_name: str = "", color: str | None = None,
                            x: str = "step", times: pd.Series | None = None) -> go.Figure:
    """Layer x step (or time, ``x``) heatmap of log10 gradient L2 norms (layers in model order),
    the run's name in its colour.

    Takes the output of :func:`reduce_gradients`.
    """
    title = f"Gradient L2 norm per layer (log10) {over(x)}{': ' + run_name if run_name else ''}"
    if len(steps) == 0 or len(layers) == 0:
        return empty_figure(title, "no gradients recorded")
    axis = x_axis({run_name: np.asarray(steps)}, x, {run_name: times} if times is not None else None)
    if run_name not in axis.values:
        return empty_figure(title, "; ".join(axis.notes))
    fig = go.Figure(go.Heatmap(
        x=axis.values[run_name], y=list(layers), z=_log10(norms).T,
        colorscale="Inferno", colorbar_title="log10 norm", name=run_name,
        hovertemplate="%{x}<br>%{y}<br>log10 norm %{z:.2f}<extra></extra>",
    ))
    fig.update_layout(
        template=TEMPLATE, title=dict(text=title, font=dict(color=color)) if color else title,
        height=max(420, min(900, 6 * len(layers) + 160)),
        xaxis=dict(title=axis.title, type="date" if axis.is_date else None),
        # Model order top to bottom, as the layers appear in the network.
        yaxis=dict(title="layer", autorange="reversed", tickfont_size=9, type="category"),
        margin=dict(l=160, r=20, t=60, b=40),
    )
    return fig


def gradient_surface_figure(steps, layers: Sequence[str], norms, *, run_name: str = "",
                            max_steps: int = 200, max_layer_ticks: int = 12) -> go.Figure:
    """3D surface of log10 gradient L2 norms over (step, layer), layers named on their axis
    (at most ``max_layer_ticks`` names, evenly picked, long ones shortened in the middle)."""
    title = f"Gradient landscape (log10 L2 norm){': ' + run_name if run_name else ''}"
    if len(steps) == 0 or len(layers) == 0:
        return empty_figure(title, "no gradients recorded")
    steps, norms = bucket_rows(steps, norms, max_steps, how="max")
    layers = list(layers)
    ticks = _evenly_spaced(len(layers), max_layer_ticks)
    fig = go.Figure(go.Surface(
        x=np.asarray(steps), y=np.arange(len(layers)), z=_log10(norms).T,
        customdata=np.array([[name] * len(steps) for name in layers], dtype=object),
        hovertemplate="step %{x}<br>%{customdata}<br>log10 norm %{z:.2f}<extra></extra>",
        colorscale="Inferno", colorbar=dict(title=dict(text="log10 norm"), len=0.75), name=run_name,
    ))
    fig.update_layout(
        template=TEMPLATE, title=title, height=700,
        scene=dict(xaxis=dict(title="step", nticks=6),
                   yaxis=dict(title="", tickmode="array", tickvals=ticks,
                              ticktext=layer_labels([layers[i] for i in ticks], 22), tickfont=dict(size=10)),
                   zaxis=dict(title="log10 norm", nticks=5),
                   camera=dict(eye=dict(x=-1.35, y=-1.6, z=0.65), center=dict(x=0, y=0, z=-0.25)),
                   aspectmode="manual", aspectratio=dict(x=1.5, y=1.2, z=0.7)),
        margin=dict(l=10, r=10, t=60, b=10), uirevision="surface",
    )
    return fig


def layer_labels(names: Sequence[str], most: int) -> list[str]:
    """Short, still distinct names for layer ticks: the dotted prefix all share (``encoder_q.``) is
    dropped, and a name longer than ``most`` keeps its end (``…layer4.1.conv2``), where layers differ."""
    parts = [str(n).split(".") for n in names]
    common = 0
    while len(names) > 1 and all(len(p) > common + 1 and p[common] == parts[0][common] for p in parts):
        common += 1
    labels = [".".join(p[common:]) for p in parts]
    labels = [label if len(label) <= most else "\u2026" + label[-(most - 1):] for label in labels]
    return labels if len(set(labels)) == len(labels) else [str(n) for n in names]


def _evenly_spaced(n: int, most: int) -> list[int]:
    """Up to ``most`` indices of range(n), evenly spread, first and last included."""
    if n <= most:
        return list(range(n))
    return sorted({int(round(i)) for i in np.linspace(0, n - 1, most)})


def total_norm_figure(
    norms: Mapping[str, pd.Series],
    *,
    log_y: bool = True,
    max_points: int = MAX_POINTS,
    title: str | None = None,
    colors: Mapping[str, str] | None = None,
    x: str = "step",
    times: Mapping[str, pd.Series] | None = None,
) -> go.Figure:
    """Total gradient norm over steps (or time), one trace per run, log scale by default."""
    title = title or f"Total gradient L2 norm {over(x)}"
    if not norms:
        return empty_figure(title, "no gradients recorded")
    frames = {name: s.rename("total").to_frame() for name, s in norms.items() if s is not None}
    fig = curves_figure(frames, ["total"], log_y=log_y, max_points=max_points, title=title, colors=colors,
                        x=x, times=times, row_height=280)
    fig.update_layout(uirevision="total-norm")
    return fig