"""Figure functions of the Compare view (pure: histograms in, figures and numbers out).

At one step, every run's (or group's) score distribution of each kind as a cumulative
distribution function with markers at its 5/25/50/75/95% quantiles, and each one's distance to a
reference: the 1-Wasserstein distance (the area between the two CDFs, in units of cosine score)
and the Kolmogorov-Smirnov statistic (their largest vertical gap).

A recorded histogram is taken as uniform within each bin, so its CDF is exact at the bin edges
and linear between them; two CDFs are compared on the union of their edges, where both are
linear, so W1 and KS are exact for those distributions (whatever bins each run recorded).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from dash import html
from plotly.subplots import make_subplots

from app.plot.axes import TEMPLATE, empty_figure, label_every_x_axis
from app.plot.palette import fallback
from app.plot.reduce import row_at_step
from scoreviz import groups as grouping

KINDS = ("pos", "neg")
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
MARKERS = ("triangle-up", "diamond", "circle", "diamond", "triangle-down")


def cdf(edges, counts) -> np.ndarray | None:
    """The cumulative fraction at each bin edge (0 at the first, 1 at the last); None without scores."""
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    if not np.isfinite(total) or total <= 0:
        return None
    return np.concatenate([[0.0], np.cumsum(counts) / total])


def quantiles(edges, values, levels=QUANTILES) -> np.ndarray:
    """The scores where a CDF (``values`` at ``edges``, linear between) reaches each of ``levels``."""
    edges, values = np.asarray(edges, dtype=np.float64), np.asarray(values, dtype=np.float64)
    levels = np.asarray(levels, dtype=np.float64)
    # the first edge where the CDF reaches each level, and the point within the bin before it
    i = np.clip(np.searchsorted(values, levels, side="left"), 1, len(values) - 1)
    low, high = values[i - 1], values[i]
    share = np.where(high > low, (levels - low) / np.where(high > low, high - low, 1.0), 1.0)
    return edges[i - 1] + np.clip(share, 0.0, 1.0) * (edges[i] - edges[i - 1])


def _on(grid, edges, values) -> np.ndarray:
    """A CDF given at ``edges`` evaluated on ``grid`` (linear between edges, 0 before, 1 after)."""
    return np.interp(grid, edges, values, left=0.0, right=1.0)


def distances(a: tuple, b: tuple) -> tuple[float, float]:
    """(1-Wasserstein, Kolmogorov-Smirnov) between two CDFs given as (edges, values at edges)."""
    grid = np.union1d(np.asarray(a[0], dtype=np.float64), np.asarray(b[0], dtype=np.float64))
    gap = _on(grid, *a) - _on(grid, *b)
    ks = float(np.max(np.abs(gap)))
    # |gap| is linear on each piece: where it changes sign, two triangles, else a trapezoid
    left, right, width = gap[:-1], gap[1:], np.diff(grid)
    same = left * right >= 0
    with np.errstate(invalid="ignore", divide="ignore"):
        crossing = (left ** 2 + right ** 2) / (2 * np.abs(left - right))
    area = np.where(same, (np.abs(left) + np.abs(right)) / 2, np.where(np.isfinite(crossing), crossing, 0.0))
    return float(np.sum(area * width)), ks


def at_step(histograms: Mapping[str, Mapping[str, tuple]], step) -> dict:
    """{name: {kind: (edges, CDF values, the step used)}} of each run's last row at or before ``step``."""
    out = {}
    for name, kinds in histograms.items():
        for kind in KINDS:
            data = (kinds or {}).get(kind)
            if data is None or len(data[0]) == 0:
                continue
            steps, edges, counts = data
            row = row_at_step(steps, step)
            values = cdf(edges, counts[row])
            if values is not None:
                out.setdefault(name, {})[kind] = (np.asarray(edges, dtype=np.float64), values, int(steps[row]))
    return out


def groups_at_step(histograms: Mapping[str, Mapping[str, tuple]], groups: Sequence, step) -> dict:
    """{group name: {kind: (edges, CDF of the group's mean histogram, the latest step used)}}: each
    group's runs averaged as densities (scoreviz.groups.mean_histograms_at_step), so each run weighs
    the same."""
    out = {}
    for group, means, used in grouping.mean_histograms_at_step(histograms, groups, step):
        for kind, mean in means.items():
            values = cdf(mean.edges, mean.mean * np.diff(mean.edges))
            if values is not None:
                out.setdefault(group.name, {})[kind] = (np.asarray(mean.edges, dtype=np.float64), values, max(used))
    return out


def cdf_figure(cdfs: Mapping[str, Mapping[str, tuple]], *, reference: str | None = None,
               colors: Mapping[str, str] | None = None, title: str = "Score distributions") -> go.Figure:
    """One panel per kind (positives, negatives): each run's (or group's) CDF in its colour, markers
    at its quantiles, the reference drawn thicker."""
    kinds = [k for k in KINDS if any(k in c for c in cdfs.values())]
    if not kinds:
        return empty_figure(title, "no histograms recorded at this step")
    fig = make_subplots(rows=1, cols=len(kinds), shared_yaxes=True, horizontal_spacing=0.06,
                        subplot_titles=[{"pos": "positives", "neg": "negatives"}[k] for k in kinds])
    for i, (name, by_kind) in enumerate(cdfs.items()):
        color = (colors or {}).get(name) or fallback(i)
        width = 3.5 if name == reference else 1.8
        for col, kind in enumerate(kinds, start=1):
            if kind not in by_kind:
                continue
            edges, values, used = by_kind[kind]
            label = f"{name} (reference)" if name == reference else name
            fig.add_trace(go.Scatter(x=edges.astype(np.float32), y=values.astype(np.float32), mode="lines",
                                     name=label, legendgroup=name, showlegend=col == 1,
                                     line=dict(color=color, width=width),
                                     hovertemplate=f"{name} {kind}, step {used}<br>score %{{x:.3f}}<br>"
                                                   "fraction below %{y:.3f}<extra></extra>"), row=1, col=col)
            q = quantiles(edges, values)
            fig.add_trace(go.Scatter(x=q.astype(np.float32), y=np.asarray(QUANTILES, dtype=np.float32),
                                     mode="markers", name=f"{name} quantiles", legendgroup=name, showlegend=False,
                                     marker=dict(color=color, size=8, symbol=list(MARKERS),
                                                 line=dict(color="white", width=1)),
                                     customdata=[f"q{int(level * 100):02d}" for level in QUANTILES],
                                     hovertemplate=f"{name} {kind}: %{{customdata}} = %{{x:.3f}}<extra></extra>"),
                          row=1, col=col)
    for col, kind in enumerate(kinds, start=1):
        fig.update_xaxes(title_text="cosine score", range=span([c[kind] for c in cdfs.values() if kind in c]),
                         row=1, col=col)
    fig.update_yaxes(title_text="fraction of scores below", row=1, col=1)
    fig.update_yaxes(range=[0, 1.03], tickvals=list(QUANTILES))
    label_every_x_axis(fig)
    fig.update_layout(template=TEMPLATE, title=title, height=460, hovermode="closest",
                      margin=dict(l=70, r=20, t=90, b=50), uirevision="compare")
    return fig


def span(cdfs: Sequence[tuple], tail: float = 0.002) -> list[float]:
    """The x range of a panel: where any of ``cdfs`` is between ``tail`` and 1 - ``tail``, padded by
    a tenth, inside [-1, 1] (positives crowd near 1: the whole of [-1, 1] would squeeze them)."""
    lo = min((edges[np.searchsorted(values, tail, side="right") - 1] for edges, values, _ in cdfs), default=-1.0)
    hi = max((edges[min(np.searchsorted(values, 1 - tail, side="left"), len(edges) - 1)] for edges, values, _ in cdfs),
             default=1.0)
    pad = 0.1 * max(hi - lo, 0.05)
    return [max(-1.0, float(lo) - pad), min(1.0, float(hi) + pad)]


def distance_rows(cdfs: Mapping[str, Mapping[str, tuple]], reference: str) -> list[dict]:
    """Each run's (group's) distances to ``reference`` per kind: {"name", "step", "pos": (w1, ks), ...};
    a kind either lacks is None."""
    ref = cdfs.get(reference, {})
    rows = []
    for name, by_kind in cdfs.items():
        row = {"name": name, "step": max((v[2] for v in by_kind.values()), default=None)}
        for kind in KINDS:
            both = kind in by_kind and kind in ref
            row[kind] = distances(by_kind[kind][:2], ref[kind][:2]) if both else None
        rows.append(row)
    return rows


def distance_table(rows: Sequence[dict], reference: str, colors: Mapping[str, str] | None = None) -> html.Table:
    """The table of distances to the reference (a Dash table: the app shows it, the report writes it)."""
    head = ["run", "step", "W1 positives", "KS positives", "W1 negatives", "KS negatives"]
    body = []
    for row in rows:
        swatch = html.Span(className="swatch", style={"background": (colors or {}).get(row["name"], "transparent")})
        cells = [html.Td([swatch, row["name"] + (" (reference)" if row["name"] == reference else "")]),
                 html.Td("" if row["step"] is None else str(row["step"]))]
        for kind in KINDS:
            pair = row[kind]
            cells += [html.Td("-"), html.Td("-")] if pair is None else [html.Td(f"{pair[0]:.4f}"),
                                                                         html.Td(f"{pair[1]:.4f}")]
        body.append(html.Tr(cells))
    return html.Table(className="runs compare", children=[html.Thead(html.Tr([html.Th(h) for h in head])),
                                                          html.Tbody(body)])
