"""Figure functions: frames in, plotly Figure out.

Every function here is pure: it takes pandas / numpy data already read from a
run and returns a ``plotly.graph_objects.Figure`` (or plain data for tables).
Nothing here reads files or knows about Dash, so all of it is tested without a
browser. Every trace is reduced on the server to a bounded number of points
before it is put into a figure, so the browser never receives a whole run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
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
    "total": "all layers together",
    "margin": "margin: positive - hardest negative (mean over samples)",
    "hard_frac": "fraction of samples whose hardest negative beats the positive",
}


def stat_label(column: str) -> str:
    """Human label for a statistic or scalar column name."""
    return STAT_LABELS.get(column, str(column or "").replace("_", " "))


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


def message_annotation(message: str) -> dict:
    """`message` in the middle of a figure without axes."""
    return {"text": message, "showarrow": False, "font": {"size": 16}, "x": 0.5, "y": 0.5,
            "xref": "paper", "yref": "paper"}


def empty_figure(title: str = "", message: str = "no data") -> go.Figure:
    """A blank figure that shows `message` in its middle."""
    fig = go.Figure()
    fig.update_layout(
        template=TEMPLATE,
        title=title,
        xaxis_visible=False,
        yaxis_visible=False,
        annotations=[message_annotation(message)],
    )
    return fig


# --------------------------------------------------------------------------
# Curves over steps
# --------------------------------------------------------------------------


# The x axis of the line figures: query value -> axis title.
X_AXES = {"step": "step", "wall": "wall time", "relative": "relative time"}
# A series with at most this many points is drawn with markers too: a kNN accuracy
# logged once per epoch is a handful of points, and a single point has no line.
SPARSE_POINTS = 100


def x_values(steps, times: pd.Series | None, x: str, start: float | None = None):
    """The x of each step: the step itself, its wall time (datetime64, local time), or
    seconds since ``start`` (default: the run's first time). NaN/NaT where a step has no time."""
    steps = np.asarray(steps)
    if x == "step" or times is None:
        return steps
    known = times.dropna()
    if known.empty:
        return np.full(len(steps), np.nan)
    # interpolated between recorded steps: a heatmap's buckets sit between them
    seconds = np.interp(steps.astype(float), known.index.to_numpy(dtype=float), known.to_numpy(dtype=float),
                        left=np.nan, right=np.nan)
    if x == "wall":
        stamps = pd.to_datetime(seconds, unit="s", utc=True).tz_convert(_local_zone()).tz_localize(None)
        return stamps.to_numpy()
    origin = np.nanmin(times.to_numpy(dtype=float)) if start is None else start
    return seconds - origin


@dataclass
class XAxis:
    """Each run's x values for the chosen x axis, the axis title, and what could not be drawn."""
    values: dict
    title: str
    notes: list
    is_date: bool


def x_axis(steps_by_run: Mapping[str, np.ndarray], x: str = "step",
           times: Mapping[str, pd.Series] | None = None) -> XAxis:
    """The x of every run's steps for ``x`` (step, wall, relative). A run without wall times
    (a file written before rows carried one) is left out of a time axis, and said so in ``notes``;
    relative times are in s, min or h, whichever reads best for the longest run."""
    x = x if x in X_AXES else "step"
    values, notes = {}, []
    for name, steps in steps_by_run.items():
        run_times = (times or {}).get(name)
        if x != "step" and (run_times is None or run_times.isna().all()):
            notes.append(f"{name}: no wall times in its file (written before rows carried one)")
            continue
        values[name] = x_values(steps, run_times, x)
    unit = ""
    if x == "relative" and values:
        divisor, unit = relative_unit(max((np.nanmax(v) for v in values.values() if np.isfinite(v).any()),
                                          default=0))
        values = {k: v / divisor for k, v in values.items()}
    return XAxis(values, X_AXES[x] + (f" ({unit})" if unit else ""), notes, x == "wall")


def with_notes(title: str, notes) -> str:
    """A figure title with what was left out underneath."""
    return f"{title}<br><sup>{'; '.join(notes)}</sup>" if notes else title


def color_titles(fig: go.Figure, names, colors: Mapping[str, str] | None) -> None:
    """Colour each subplot title (one per run, in ``names`` order) with its run's colour."""
    for annotation, name in zip(fig.layout.annotations, names):
        color = (colors or {}).get(name)
        if color:
            annotation.font = dict(color=color, size=13)


def relative_unit(max_seconds: float) -> tuple[float, str]:
    """(divisor, unit) for relative times up to ``max_seconds``: s, min or h, as TensorBoard's hours."""
    if not np.isfinite(max_seconds) or max_seconds < 120:
        return 1.0, "s"
    if max_seconds < 2 * 3600:
        return 60.0, "min"
    return 3600.0, "h"


def _local_zone():
    import datetime

    return datetime.datetime.now().astimezone().tzinfo


def log_ticks(lo: float, hi: float) -> tuple[list[float], list[str]]:
    """Tick values and labels for a log axis over [lo, hi] (positive): 1-2-5 steps over
    up to two decades, every decade beyond, every few decades over many. Each label is
    the whole number (0.02, 0.05, 0.1), never plotly's bare leading digits ("2 5 1")."""
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo <= 0 or hi <= 0:
        return [], []
    lo, hi = min(lo, hi), max(lo, hi)
    first, last = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    decades = max(1, last - first)
    mantissas = (1, 2, 5) if decades <= 2 else (1,)
    every = 1 if decades <= 8 else math.ceil(decades / 8)
    values = [m * 10.0 ** e for e in range(first, last + 1) if (e - first) % every == 0 for m in mantissas]
    inside = [v for v in values if lo / 1.05 <= v <= hi * 1.05]
    if len(inside) < 2:  # a range within one 1-2-5 step: its ends
        inside = [lo, hi]
    return inside, [_tick_label(v) for v in inside]


def _tick_label(value: float) -> str:
    if 1e-3 <= abs(value) < 1e5:
        return f"{value:.3g}"
    mantissa, exponent = f"{value:.0e}".split("e")
    return f"{mantissa}e{int(exponent)}"


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
    name; app.colors.run_colors). ``x`` is ``step``, ``wall`` or ``relative``
    (wall times from ``times``, a Series per run as Run.times() gives). Each
    trace is smoothed (EMA, ``smoothing``) then min/max-downsampled. On a log
    axis values <= 0 cannot be drawn: the subplot's title says how many there are.
    """
    columns = [c for c in columns if c]
    if not frames or not columns:
        return empty_figure(title, "select runs and statistics")
    colors = dict(colors or {})
    palette = _palette()
    axis = x_axis({name: frame.index for name, frame in frames.items() if frame is not None}, x, times)
    xs, notes = axis.values, axis.notes

    traces = {c: [] for c in columns}
    for i, (name, frame) in enumerate(frames.items()):
        if name not in xs:
            continue
        color = colors.get(name) or palette[i % len(palette)]
        for column in columns:
            if column not in frame.columns:
                continue
            series = pd.Series(frame[column].to_numpy(dtype=float), index=pd.RangeIndex(len(frame)))
            keep = series.notna().to_numpy() & pd.notna(xs[name])
            if not keep.any():
                continue
            series = smooth(series[keep].reset_index(drop=True), smoothing)
            px, py = downsample_minmax(np.asarray(xs[name])[keep], series.to_numpy(), max_points)
            traces[column].append(Line(name, color, px, py))
    return stat_subplots(columns, traces, list(frames), log_y=log_y, x_title=axis.title, is_date=axis.is_date,
                         title=title, notes=notes, row_height=row_height, uirevision="curves")


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


def stat_subplots(columns: Sequence[str], lines: Mapping[str, list], order: Sequence[str], *, log_y: bool,
                  x_title: str, is_date: bool, title: str, notes: Sequence[str], row_height: int,
                  uirevision: str) -> go.Figure:
    """One subplot per statistic (``columns``), each drawing its ``lines[column]`` (:class:`Line`),
    legend entries in ``order`` of name, one legend entry per name shared by its subplots. On a
    log axis values <= 0 cannot be drawn: the subplot's title says how many there are."""
    fig = make_subplots(rows=len(columns), cols=1, shared_xaxes=True,
                        vertical_spacing=min(0.08, 0.25 / len(columns)) if len(columns) > 1 else 0,
                        subplot_titles=[stat_label(c) for c in columns])
    shown = set()
    traces, rows = [], []  # added in one call: plotly checks a trace once then, not twice (150 traces: 0.3 s)
    for name in order:  # traces name by name, so the legend lists them in the order given
        for row, column in enumerate(columns, start=1):
            for line in lines[column]:
                if line.name != name:
                    continue
                if line.lower is not None and line.upper is not None:
                    traces.append(_band(line))
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
        if not log_y:
            continue
        values = [np.asarray(line.y) for line in lines[column]]
        every = np.concatenate(values) if values else np.array([])
        every = every[np.isfinite(every)]
        positive = every[every > 0]
        tickvals, ticktext = log_ticks(positive.min(), positive.max()) if len(positive) else ([], [])
        fig.update_yaxes(type="log", tickvals=tickvals or None, ticktext=ticktext or None, row=row, col=1)
        dropped = int((every <= 0).sum())
        if dropped:
            annotation = fig.layout.annotations[row - 1]
            annotation.text += f" <span style='color:#b22'>({dropped:,} values &le; 0 not drawn on a log scale)</span>"
    fig.update_xaxes(title_text=x_title, row=len(columns), col=1)
    if is_date:
        fig.update_xaxes(type="date")
    if not shown:
        message = "; ".join(notes) if notes else "nothing recorded for these statistics yet"
        return empty_figure(title, message)
    fig.update_layout(template=TEMPLATE, title=with_notes(title, notes), height=row_height * len(columns) + 100,
                      hovermode="x unified", margin=dict(l=70, r=20, t=90, b=50), uirevision=uirevision)
    return fig


def _line_style(log_y: bool = False, smoothing: float = 0.0, max_points: int = MAX_POINTS, row_height: int = 260):
    """The style options of a line figure, with curves_figure's defaults."""
    return log_y, smoothing, max_points, row_height


def _band(line: Line) -> dict:
    """The shaded area between ``line.lower`` and ``line.upper``, in the line's colour, see-through
    (a scatter trace's properties)."""
    x = np.asarray(line.x)
    upper, lower = np.asarray(line.upper, dtype=np.float32), np.asarray(line.lower, dtype=np.float32)
    return dict(type="scatter", x=np.concatenate([x, x[::-1]]), y=np.concatenate([upper, lower[::-1]]),
                name=f"{line.name} band", legendgroup=line.name, showlegend=False, mode="lines",
                fill="toself", fillcolor=_transparent(line.color, 0.2), line=dict(width=0), hoverinfo="skip")


def _transparent(color: str, alpha: float) -> str:
    """``#rrggbb`` as an rgba() colour with opacity ``alpha``."""
    red, green, blue = (int(color.lstrip("#")[i:i + 2], 16) for i in (0, 2, 4))
    return f"rgba({red},{green},{blue},{alpha})"


# The band around a group's mean: query value -> what the legend says it is.
BAND_LABELS = {"std": "mean \u00b1 std over runs", "sem": "mean \u00b1 standard error",
               "minmax": "mean, band from min to max run"}


def grouped_curves_figure(
    curves: Mapping[str, Sequence], columns: Sequence[str] = DEFAULT_STATS, *, band: str = "std",
    title: str = "Statistics over steps", colors: Mapping[str, str] | None = None, x: str = "step", **style,
) -> go.Figure:
    """One subplot per statistic, one mean line per group with a shaded band (``band``).
    ``style``: ``log_y``, ``smoothing``, ``max_points`` and ``row_height`` as for curves_figure.

    ``curves`` maps a column to its groups' curves (scoreviz.groups.GroupCurve, as
    RunData.grouped_curves gives). The legend names each group with its run count
    (``moco_m=0.99 (n=5)``), hover says how many runs have a value at a step; colours
    come from ``colors`` by group name (app.colors.group_colors). Mean and band edges are
    smoothed like single runs. Groups are over steps: with ``x`` a time the title says so.
    """
    log_y, smoothing, max_points, row_height = _line_style(**style)
    columns = [c for c in columns if c]
    if not columns or not any(curves.get(c) for c in columns):
        return empty_figure(title, "select runs and statistics")
    palette = _palette()
    lines, order, notes = {c: [] for c in columns}, [], []
    for column in columns:
        for curve in curves.get(column) or []:
            group = curve.group
            if group.label not in order:
                order.append(group.label)
            color = (colors or {}).get(group.name) or palette[order.index(group.label) % len(palette)]
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


def total_norm_figure(
    norms: Mapping[str, pd.Series],
    *,
    log_y: bool = True,
    max_points: int = MAX_POINTS,
    title: str = "Total gradient L2 norm",
    colors: Mapping[str, str] | None = None,
    x: str = "step",
    times: Mapping[str, pd.Series] | None = None,
) -> go.Figure:
    """Total gradient norm over steps (or time), one trace per run, log scale by default."""
    if not norms:
        return empty_figure(title, "no gradients recorded")
    frames = {name: s.rename("total").to_frame() for name, s in norms.items() if s is not None}
    fig = curves_figure(frames, ["total"], log_y=log_y, max_points=max_points, title=title, colors=colors,
                        x=x, times=times, row_height=280)
    fig.update_layout(uirevision="total-norm")
    return fig


# --------------------------------------------------------------------------
# Score distributions
# --------------------------------------------------------------------------


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


def run_panels(reduced: dict, x, times, colors):
    """One panel per run, stacked with a shared x axis and titled in the run's colour.

    ``reduced`` maps a run to a tuple whose first item is its steps; runs without the
    x axis asked for (no wall times) are left out. Returns (figure or None when no run
    is left, the XAxis, the runs kept)."""
    axis = x_axis({name: r[0] for name, r in reduced.items()}, x, times)
    reduced = {name: r for name, r in reduced.items() if name in axis.values}
    if not reduced:
        return None, axis, reduced
    n = len(reduced)
    fig = make_subplots(rows=n, cols=1, shared_xaxes=True, vertical_spacing=min(0.12, 0.3 / n) if n > 1 else 0,
                        subplot_titles=list(reduced))
    color_titles(fig, list(reduced), colors)
    return fig, axis, reduced



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
    title = title or f"{'Positive' if kind == 'pos' else 'Negative'} score distribution over steps"
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
    palette = _palette()
    colors = dict(colors or {})
    for i, (name, kinds) in enumerate(histograms.items()):
        color = colors.get(name) or palette[i % len(palette)]
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
    title = f"{run_name}: tags compared at step {step}"
    if len(histograms_by_tag) == 1:
        title += f" (it recorded one tag, {next(iter(histograms_by_tag))})"
    return histograms_at_step_figure(histograms_by_tag, step, title=title)


# --------------------------------------------------------------------------
# 3D waterfall over a config value
# --------------------------------------------------------------------------


def numeric_value(value) -> float | None:
    """A config value as a number for the waterfall's depth order (numbers and numeric text), or
    None when it is not one (text, missing): those go after the numbers."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


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
) -> go.Figure:
    """Paper-style 3D waterfall: runs ordered by a config value x step (or time, ``x``) x statistic.

    ``series`` maps run name to the statistic over steps; ``order`` maps run
    name to its value of config ``key`` (runs without it go last). Each run is
    one 3D line at its own depth in its own colour (``colors``), every depth
    labelled with the run's value of ``key`` (its name without a key), the
    legend with the run's name (and ``key=value``). Runs sharing a value are told apart
    by their names on the depth axis.
    """
    title = f"{stat_label(stat)} over steps, runs ordered by {key or 'name'}"
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
    palette = _palette()
    fig = go.Figure()
    for depth, name in enumerate(names):
        s = smooth(series[name], smoothing)
        px, z = downsample_minmax(np.asarray(axis.values[name]), s.to_numpy(), max_points)
        fig.add_trace(go.Scatter3d(
            x=px, y=np.full(len(px), depth, dtype=np.float32), z=z.astype(np.float32),
            mode="lines", name=f"{name} ({key}={_fmt(order.get(name))})" if key else name,
            line=dict(color=colors.get(name) or palette[depth % len(palette)], width=5),
        ))
    values = [_fmt(order.get(n)) for n in names]
    shared = key and len(set(values)) < len(values)  # a value alone would not say which run
    ticktext = [_short(f"{v} {n}" if shared else v, 28) if key else _short(n, 24) for n, v in zip(names, values)]
    fig.update_layout(
        template=TEMPLATE, title=title, height=640,
        scene=dict(
            xaxis=dict(title=axis.title, nticks=6, type="date" if axis.is_date else None),
            zaxis=dict(title=stat_label(stat), nticks=5),
            yaxis=dict(title=key or "run", tickmode="array", tickvals=list(range(len(names))), ticktext=ticktext),
            camera=dict(eye=dict(x=1.7, y=-1.7, z=0.9)), aspectmode="manual",
            aspectratio=dict(x=1.6, y=max(0.6, min(1.4, 0.25 * len(names))), z=0.8),
        ),
        legend=dict(yanchor="top", y=0.98, xanchor="left", x=0.0, bgcolor="rgba(255,255,255,0.7)"),
        margin=dict(l=10, r=10, t=60, b=10), uirevision="waterfall",
    )
    return fig


def _short(text: str, most: int) -> str:
    """``text``, cut in the middle with an ellipsis when longer than ``most`` characters."""
    text = str(text)
    if len(text) <= most:
        return text
    keep = most - 1
    return text[:keep // 2] + "\u2026" + text[len(text) - (keep - keep // 2):]


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


def gradient_heatmap_figure(steps, layers: Sequence[str], norms, *, run_name: str = "", color: str | None = None,
                            x: str = "step", times: pd.Series | None = None) -> go.Figure:
    """Layer x step (or time, ``x``) heatmap of log10 gradient L2 norms (layers in model order),
    the run's name in its colour.

    Takes the output of :func:`reduce_gradients`.
    """
    title = f"Gradient L2 norm per layer (log10){': ' + run_name if run_name else ''}"
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
                   camera=dict(eye=dict(x=-1.6, y=-1.9, z=0.8)),
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


# --------------------------------------------------------------------------
# Run table (plain data for an HTML table)
# --------------------------------------------------------------------------


def differing_keys(configs: Sequence[Mapping]) -> list[str]:
    """Config keys whose values are not the same in every one of ``configs`` (a missing key
    counts as a value), sorted: what tells these runs apart."""
    keys = sorted({k for c in configs for k in (c or {})})
    return [k for k in keys if len({_fmt((c or {}).get(k, "")) for c in configs}) > 1]


def run_table(rows: Sequence[Mapping]) -> dict:
    """Columns, cells and config-difference marks for the run table.

    Each row is ``{"id", "name", "steps", "last_update", "config": {...}}`` or,
    for a run that cannot be read, ``{"id", "name", "error": "..."}``. Config
    keys become columns, those that differ between the readable runs first
    (each group sorted) and marked in ``differs``. A cell is marked (its row's
    ``marks``) when it departs from a value most runs share: the odd ones out.
    Where every run has its own value (seeds, momenta of a sweep) no cell is
    marked, only the column. Returns ``{"columns", "config_columns", "differs",
    "rows"}``; each output row has ``"cells"``, ``"marks"`` (aligned with
    columns) and ``"error"`` (str or None).
    """
    good = [r for r in rows if not r.get("error")]
    keys = sorted({k for r in good for k in (r.get("config") or {})})
    varying = set(differing_keys([r.get("config") or {} for r in good]))
    differs = {k: k in varying for k in keys}
    # Differing keys first: with dozens of config values, what tells runs
    # apart must be visible without scrolling.
    keys = [k for k in keys if differs[k]] + [k for k in keys if not differs[k]]
    usual = {}
    for k in keys:
        if differs[k]:
            counts = {}
            for r in good:
                value = _fmt((r.get("config") or {}).get(k, ""))
                counts[value] = counts.get(value, 0) + 1
            top = sorted(counts.values(), reverse=True)
            if top[0] >= 2 and (len(top) == 1 or top[0] > top[1]):
                usual[k] = max(counts, key=counts.get)
    columns = ["run", "steps", "last update"] + keys
    out_rows = []
    for r in rows:
        if r.get("error"):
            out_rows.append({"id": r.get("id"), "error": r["error"], "marks": [False] * len(columns),
                             "cells": [r.get("name", r.get("id")), "", ""] + [""] * len(keys)})
            continue
        config = r.get("config") or {}
        values = [_fmt(config.get(k, "")) for k in keys]
        out_rows.append({
            "id": r.get("id"), "error": None,
            "cells": [r.get("name", r.get("id")), _fmt(r.get("steps", "")), _fmt(r.get("last_update", ""))] + values,
            "marks": [False] * 3 + [k in usual and v != usual[k] for k, v in zip(keys, values)],
        })
    return {"columns": columns, "config_columns": keys, "differs": differs, "rows": out_rows}


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_fmt(v) for v in value)
    return "" if value is None else str(value)


def _palette() -> list[str]:
    # Colours for traces not named in a ``colors`` mapping (app.colors gives each run its own).
    from app.colors import PALETTE

    return list(PALETTE)
