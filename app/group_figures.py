"""The waterfall, the histogram overlay and a summary table for runs grouped by config values.

Pure functions like app.figures: groups' curves (scoreviz.groups.GroupCurve) and runs'
histograms in, plotly figures or plain rows out. A group is drawn as its mean (the mean
curve on the waterfall, the mean histogram at a step) with a band (std, sem or min-max
over its runs), named with its run count (``moco_m=0.99 (n=3)``), in the colour of its
name (app.colors.group_colors), the same colour in every view.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from app import figures
from scoreviz import groups as grouping


def _ordered(curves: Sequence, key: str) -> list:
    """Groups' curves in waterfall depth order: by their value of ``key`` when they are grouped by it
    (numbers numerically, missing last), else in the order given (group_runs sorts by their values)."""
    if not curves or not key or key not in curves[0].group.by:
        return list(curves)
    at = curves[0].group.by.index(key)

    def sort_key(indexed):
        index, curve = indexed
        value = curve.group.key[at]
        number = figures.numeric_value(value)
        return (value is None, math.inf if number is None else number, index)
    return [c for _, c in sorted(enumerate(curves), key=sort_key)]


def grouped_waterfall_figure(curves: Sequence, *, key: str = "", stat: str = "neg_sample_var", band: str = "std",
                             colors: Mapping[str, str] | None = None, smoothing: float = 0.0,
                             max_points: int = figures.MAX_POINTS // 2, title: str | None = None) -> go.Figure:
    """The 3D waterfall with one line per group: its mean ``stat`` over steps at its own depth,
    a see-through ribbon for its band, the group's name on the depth axis and its run count
    in the legend. Groups are ordered by ``key`` when they are grouped by it."""
    title = title or f"{figures.stat_label(stat)} over steps, groups ordered by {key or 'their values'}"
    curves = _ordered([c for c in curves if len(c.frame)], key)
    if not curves:
        return figures.empty_figure(title, "select runs with this statistic")
    palette = figures._palette()
    fig = go.Figure()
    for depth, curve in enumerate(curves):
        group, frame = curve.group, curve.frame
        if len(frame) > max_points:
            frame = frame.iloc[np.unique(np.linspace(0, len(frame) - 1, max_points).astype(int))]
        x = frame.index.to_numpy()
        mean, lower, upper = (figures.smooth(frame[k].reset_index(drop=True), smoothing).to_numpy()
                              for k in ("mean", "lower", "upper"))
        color = (colors or {}).get(group.name) or palette[depth % len(palette)]
        fig.add_trace(_ribbon(x, depth, lower, upper, color, group.label))
        fig.add_trace(go.Scatter3d(
            x=x, y=np.full(len(x), depth, dtype=np.float32), z=mean.astype(np.float32), mode="lines",
            name=group.label, legendgroup=group.label, line=dict(color=color, width=6),
            customdata=frame["count"].to_numpy(),
            hovertemplate=f"{group.name}<br>step %{{x}}<br>mean %{{z:.4g}} (n=%{{customdata}})<extra></extra>"))
    names = [figures._short(c.group.name, 28) for c in curves]
    fig.update_layout(
        template=figures.TEMPLATE, title=title, height=640, legend_title_text=figures.BAND_LABELS.get(band, band),
        scene=dict(
            xaxis=dict(title="step", nticks=6), zaxis=dict(title=figures.stat_label(stat), nticks=5),
            yaxis=dict(title="group", tickmode="array", tickvals=list(range(len(curves))), ticktext=names),
            camera=dict(eye=dict(x=1.7, y=-1.7, z=0.9)), aspectmode="manual",
            aspectratio=dict(x=1.6, y=max(0.6, min(1.4, 0.25 * len(curves))), z=0.8)),
        legend=dict(yanchor="top", y=0.98, xanchor="left", x=0.0, bgcolor="rgba(255,255,255,0.7)"),
        margin=dict(l=10, r=10, t=60, b=10), uirevision="grouped-waterfall",
    )
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


def mean_histograms_at_step(histograms: Mapping[str, Mapping[str, tuple]], groups: Sequence, step: int) -> list:
    """Each group's mean histogram at ``step``: ``[(group, {"pos": MeanHistogram, "neg": ...}, steps used)]``.

    ``histograms`` maps a run to ``{"pos": (steps, edges, counts), "neg": ...}`` (as the
    histogram overlay takes them); each run contributes its last recorded row at or before
    ``step``. A kind no run of a group recorded (no negatives) is left out of its dict;
    a group with neither kind is left out."""
    out = []
    for group in groups:
        means, used = {}, set()
        for kind in ("pos", "neg"):
            rows = {}
            for run in group.runs:
                data = (histograms.get(run) or {}).get(kind)
                if data is None or len(data[0]) == 0:
                    continue
                steps, edges, counts = data
                r = figures.row_at_step(steps, step)
                rows[run] = (edges, counts[r])
                used.add(int(steps[r]))
            if rows:
                mean = grouping.mean_histogram(rows)
                if mean.runs:
                    means[kind] = mean
        if means:
            out.append((group, means, sorted(used)))
    return out


def grouped_histograms_figure(means: Sequence, step: int, *, band: str = "std",
                              colors: Mapping[str, str] | None = None, title: str | None = None) -> go.Figure:
    """The histogram overlay with one mean histogram per group and kind (positives solid, negatives
    dashed) and its band shaded, from :func:`mean_histograms_at_step`. The y axis is the mean
    fraction of scores per bin, as in the overlay of single runs; the legend names each group
    and kind with the runs behind it (``moco_m=0.9 neg (n=3)``)."""
    title = title or f"Mean score histograms per group at step {step}"
    palette = figures._palette()
    fig = go.Figure()
    for index, (group, kinds, used) in enumerate(means):
        color = (colors or {}).get(group.name) or palette[index % len(palette)]
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
                fillcolor=figures._transparent(color, 0.18), hoverinfo="skip"))
            steps_text = ", ".join(map(str, used)) if len(used) <= 3 else f"{used[0]} to {used[-1]}"
            fig.add_trace(go.Scatter(
                x=centers.astype(np.float32), y=(mean.mean * widths).astype(np.float32), name=name,
                legendgroup=name, mode="lines", line_shape="hvh",
                line=dict(color=color, width=2, dash="solid" if kind == "pos" else "dash"),
                hovertemplate=f"{name}, step {steps_text}<br>score %{{x:.3f}}<br>"
                              "mean fraction %{y:.4f}<extra></extra>"))
    if not fig.data:
        return figures.empty_figure(title, "no histograms recorded")
    fig.update_layout(template=figures.TEMPLATE, title=title, height=440,
                      legend_title_text=figures.BAND_LABELS.get(band, band),
                      xaxis=dict(title="cosine score", range=[-1, 1]),
                      yaxis=dict(title="mean fraction of scores", rangemode="tozero"),
                      margin=dict(l=60, r=20, t=60, b=40))
    return fig


def final_values(series: Mapping[str, pd.Series | None]) -> dict:
    """Each run's last recorded (non-NaN) value of a statistic; runs without one left out."""
    out = {}
    for run, values in series.items():
        values = values.dropna() if values is not None else None
        if values is not None and len(values):
            out[run] = float(values.sort_index().iloc[-1])
    return out


def group_table(groups: Sequence, finals: Mapping[str, Mapping[str, float]], band: str = "std") -> dict:
    """Plain rows for the table of groups: the ``by`` values, the run count, and for each statistic
    (``finals``: statistic -> {run: its final value}) the mean over the group's runs with its band
    (as scoreviz.groups.summarize computes it) and how many runs have a value.

    Returns ``{"columns": [...], "rows": [[cells...]], "values": {group name: {stat: summary}}}``."""
    by = list(groups[0].by) if groups else []
    columns = by + ["runs"] + list(finals)
    rows, values = [], {}
    for group in groups:
        cells = group.values + [str(len(group.runs))]
        values[group.name] = {}
        for stat, by_run in finals.items():
            present = {r: [by_run[r]] for r in group.runs if r in by_run}
            if not present:
                cells.append("-")
                continue
            summary = grouping.summarize(pd.DataFrame(present), band).iloc[0]
            values[group.name][stat] = summary
            cells.append(_mean_and_band(summary, band, len(group.runs)))
        rows.append(cells)
    return {"columns": columns, "rows": rows, "values": values}


def _mean_and_band(summary, band: str, size: int) -> str:
    text = f"{summary['mean']:.4g}"
    if band == "minmax":
        text += f" [{summary['lower']:.4g}, {summary['upper']:.4g}]"
    else:
        text += f" \u00b1 {summary['upper'] - summary['mean']:.2g}"
    count = int(summary["count"])
    return text if count == size else f"{text} ({count} of {size} runs)"
