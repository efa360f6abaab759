"""Figure functions of the Distributions view: histograms in, plotly figures out (pure, no Dash).

The step x score heatmap of each run, the positive and negative histograms of every run at one
step (or each group's mean histogram with its band), and one run's tags compared at that step.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from app.plot.axes import TEMPLATE, empty_figure, over, with_notes
from app.plot.lines import BAND_LABELS
from app.plot.palette import fallback, shades, transparent
from app.plot.panels import run_panels
from app.plot.reduce import MAX_CELLS, MAX_ROWS, bucket_rows, row_at_step, to_density

# The heatmap's colour scale ends at this percentile of the per-step peaks (the
# largest fraction in any bin at each step): early steps, whose scores crowd into a
# few bins, saturate instead of turning the rest of the run uniform dark.
HEAT_SCALES = {"90": 90.0, "99": 99.0, "100": 100.0}
DEFAULT_HEAT_SCALE = "90"


def heat_zmax(densities: Sequence[np.ndarray], percentile: float = 90.0) -> float | None:
    """The colour-scale maximum: ``percentile`` of the peak density of every step of every run."""
    peaks = [np.nanmax(d, axis=1) for d in densities if d.size and not np.isnan(d).all()]
    if not peaks:
        return None
    peaks = np.concatenate(peaks)
    peaks = peaks[np.isfinite(peaks)]
    return float(np.percentile(peaks, percentile)) if len(peaks) else None


def score_heatmap_figure(
    histograms: Mapping[str, tuple],
    *,
    kind: str = "neg",
    max_cells: int = MAX_CELLS,
    title: str | None = None,
    scale: float = HEAT_SCALES[DEFAULT_HEAT_SCALE],
    colors: Mapping[str, str] | None = None,
    x: str = "step",
    times: Mapping[str, pd.Series] | None = None,
) -> go.Figure:
    """Step (or time, ``x``) x score heatmap of the histograms, one subplot row per run,
    its title in the run's colour (``colors``).

    ``histograms`` maps a run name to ``(steps, bin_edges, counts)``. Each
    histogram is turned into a density (fraction of scores per bin) and steps
    are averaged into buckets so the figure holds at most ``max_cells`` cells.
    One colour scale for all runs, from 0 to the ``scale`` percentile of the
    per-step peaks (100: the largest value); brighter cells saturate.
    """
    title = title or f"{'Positive' if kind == 'pos' else 'Negative'} score distribution {over(x)}"
    # A run without scores of this kind (BYOL, SimSiam: no negatives) has empty histograms only.
    histograms = {k: v for k, v in histograms.items()
                  if v is not None and len(v[0]) and np.asarray(v[2]).sum() > 0 and not np.isnan(v[2]).all()}
    if not histograms:
        return empty_figure(title, f"no {'positive' if kind == 'pos' else 'negative'} scores recorded")
    n = len(histograms)
    reduced = {}
    for name, (steps, edges, counts) in histograms.items():
        rows = max(2, min(MAX_ROWS, max_cells // (n * counts.shape[1])))
        bsteps, dens = bucket_rows(steps, to_density(counts), rows, how="mean")
        reduced[name] = (bsteps, (np.asarray(edges[:-1]) + np.asarray(edges[1:])) / 2, dens)
    zmax = heat_zmax([d for _, _, d in reduced.values()], scale)
    fig, axis, reduced = run_panels(reduced, x, times, colors)
    if fig is None:
        return empty_figure(title, "; ".join(axis.notes))
    n = len(reduced)
    for row, (name, (bsteps, centers, dens)) in enumerate(reduced.items(), start=1):
        fig.add_trace(
            go.Heatmap(x=axis.values[name], y=centers.astype(np.float32), z=dens.T.astype(np.float32),
                       name=name, coloraxis="coloraxis",
                       hovertemplate="%{x}<br>score %{y:.3f}<br>fraction %{z:.4f}<extra>" + name + "</extra>"),
            row=row, col=1,
        )
        fig.update_yaxes(title_text="score", range=[-1, 1], row=row, col=1)
    fig.update_xaxes(title_text=axis.title, row=n, col=1)
    if axis.is_date:
        fig.update_xaxes(type="date")
    scale_text = "max" if scale >= 100 else f"p{scale:g} of step peaks"
    fig.update_layout(template=TEMPLATE, title=with_notes(title, axis.notes), height=max(320, 220 * n + 80),
                      coloraxis=dict(colorscale="Viridis", cmin=0, cmax=zmax,
                                     colorbar=dict(title=dict(text=f"fraction<br><sup>top: {scale_text}</sup>"))),
                      margin=dict(l=60, r=20, t=80, b=40))
    return fig


def histograms_at_step_figure(
    histograms: Mapping[str, Mapping[str, tuple]],
    step: int,
    *,
    title: str | None = None,
    colors: Mapping[str, str] | None = None,
) -> go.Figure:
    """Positive and negative histograms at ``step``, all runs overlaid.

    ``histograms`` maps a name (run, or tag) to ``{"pos": (steps, edges,
    counts), "neg": (...)}``. Each uses its last recorded step at or before
    ``step``. Trace names are ``"<name> pos"`` and ``"<name> neg"``; positives
    are solid, negatives dashed, one colour per name (``colors``, else in turn).
    """
    title = title or f"Score histograms at step {step}"
    fig = go.Figure()
    colors = dict(colors or {})
    for i, (name, kinds) in enumerate(histograms.items()):
        color = colors.get(name) or fallback(i)
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
                     run_name: str, color: str | None = None) -> go.Figure:
    """One run's score histograms at ``step`` for each tag (e.g. raw vs ft), its tags in shades of
    the run's ``color`` (the run's own first, then darker), the title in that colour."""
    title = f"{run_name}: its tags compared at step {step}"
    if len(histograms_by_tag) == 1:
        title += f" (it recorded one tag, {next(iter(histograms_by_tag))})"
    tones = shades(color or fallback(0), len(histograms_by_tag))
    fig = histograms_at_step_figure(histograms_by_tag, step, title=title, colors=dict(zip(histograms_by_tag, tones)))
    if color:
        fig.update_layout(title_font_color=color)
    return fig


def grouped_histograms_figure(means: Sequence, step: int, *, band: str = "std",
                              colors: Mapping[str, str] | None = None, title: str | None = None) -> go.Figure:
    """The histogram overlay with one mean histogram per group and kind (positives solid, negatives
    dashed) and its band shaded, from scoreviz.groups.mean_histograms_at_step. The y axis is the mean
    fraction of scores per bin, as in the overlay of single runs; the legend names each group
    and kind with the runs behind it (``moco_m=0.9 neg (n=3)``)."""
    title = title or f"Mean score histograms per group at step {step}"
    fig = go.Figure()
    for index, (group, kinds, used) in enumerate(means):
        color = (colors or {}).get(group.name) or fallback(index)
        for kind in ("pos", "neg"):
            mean = kinds.get(kind)
            if mean is None:
                continue
            widths = np.diff(mean.edges)
            centers = (mean.edges[:-1] + mean.edges[1:]) / 2
            lower, upper = (np.clip(v * widths, 0, None).astype(np.float32) for v in mean.band(band))
            name = f"{group.name} {kind} (n={len(mean.runs)})"
            fig.add_trace(go.Scatter(
                x=np.concatenate([centers, centers[::-1]]).astype(np.float32),
                y=np.concatenate([upper, lower[::-1]]), name=f"{name} band", legendgroup=name,
                showlegend=False, mode="lines", line=dict(width=0, shape="hvh"), fill="toself",
                fillcolor=transparent(color, 0.18), hoverinfo="skip"))
            steps_text = ", ".join(map(str, used)) if len(used) <= 3 else f"{used[0]} to {used[-1]}"
            fig.add_trace(go.Scatter(
                x=centers.astype(np.float32), y=(mean.mean * widths).astype(np.float32), name=name,
                legendgroup=name, mode="lines", line_shape="hvh",
                line=dict(color=color, width=2, dash="solid" if kind == "pos" else "dash"),
                hovertemplate=f"{name}, step {steps_text}<br>score %{{x:.3f}}<br>"
                              "mean fraction %{y:.4f}<extra></extra>"))
    if not fig.data:
        return empty_figure(title, "no histograms recorded")
    fig.update_layout(template=TEMPLATE, title=title, height=440,
                      legend_title_text=BAND_LABELS.get(band, band),
                      xaxis=dict(title="cosine score", range=[-1, 1]),
                      yaxis=dict(title="mean fraction of scores", rangemode="tozero"),
                      margin=dict(l=60, r=20, t=60, b=40))
    return fig