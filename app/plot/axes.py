"""Axes and figure text every view shares: the names of statistics, the x axis (step, wall time,
relative time), log ticks, titles with notes, the empty figure."""

from __future__ import annotations

import datetime
import math
from dataclasses import dataclass
from typing import Mapping

import numpy as np
import pandas as pd
import plotly.graph_objects as go

TEMPLATE = "plotly_white"

DEFAULT_STATS = ("pos_mean", "neg_mean", "neg_sample_var")
# Columns of run.scores(tag), as documented by scoreviz.Run, in the order a picker lists them.
SCORE_COLUMNS = tuple(
    f"{kind}_{stat}" for kind in ("pos", "neg")
    for stat in ("mean", "var", "min", "max", "q05", "q25", "q50", "q75", "q95",
                 "count", "nonfinite", "out_of_range")
) + ("neg_sample_var", "margin", "hard_frac")

STAT_LABELS = {
    "pos_mean": "positive mean",
    "neg_mean": "negative mean",
    "neg_var": "negative variance (all scores)",
    "pos_var": "positive variance",
    "neg_sample_var": "negative variance (per sample)",
    "total": "all layers together",
    "margin": "margin: positive - hardest negative (mean over samples)",
    "hard_frac": "fraction of samples whose hardest negative beats the positive",
    # the embeddings' (Run.embeddings)
    "uniformity": "uniformity: log E exp(-2 |x - y|²) (lower: more spread)",
    "rank": "effective rank (RankMe), per window",
    # the trainer's scalars, with their units
    "knn_acc": "kNN accuracy (%)",
    "knn_acc_init": "kNN accuracy at initialisation (%)",
    "lincls_acc": "linear evaluation accuracy (%)",
    "lr": "learning rate",
}


def stat_label(column: str) -> str:
    """Human label for a statistic or scalar column name (with its unit where it has one)."""
    return STAT_LABELS.get(column, str(column or "").replace("_", " "))


# ---- text -----------------------------------------------------------------------------


def fmt(value) -> str:
    """A config value as a table cell or a label says it."""
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(fmt(v) for v in value)
    return "" if value is None else str(value)


def key_value(key: str, value) -> str:
    """``moco_m=0.99``, or ``pos_alpha not set`` for a run without the key (never ``pos_alpha=``)."""
    return f"{key} not set" if value is None else f"{key}={fmt(value)}"


def short(text: str, most: int) -> str:
    """``text``, cut in the middle with an ellipsis when longer than ``most`` characters."""
    text = str(text)
    if len(text) <= most:
        return text
    keep = most - 1
    return text[:keep // 2] + "\u2026" + text[len(text) - (keep - keep // 2):]


def numeric_value(value) -> float | None:
    """A config value as a number for ordering (numbers and numeric text), or None when it is not
    one (text, missing): those go after the numbers."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def with_notes(title: str, notes) -> str:
    """A figure title with what was left out underneath."""
    return f"{title}<br><sup>{'; '.join(notes)}</sup>" if notes else title


def message_annotation(message: str) -> dict:
    """`message` in the middle of a figure without axes."""
    return {"text": message, "showarrow": False, "font": {"size": 16}, "x": 0.5, "y": 0.5,
            "xref": "paper", "yref": "paper"}


def empty_figure(title: str = "", message: str = "no data") -> go.Figure:
    """A blank figure that shows `message` in its middle."""
    fig = go.Figure()
    fig.update_layout(template=TEMPLATE, title=title, xaxis_visible=False, yaxis_visible=False,
                      annotations=[message_annotation(message)])
    return fig


def color_titles(fig: go.Figure, names, colors: Mapping[str, str] | None) -> None:
    """Colour each subplot title (one per run, in ``names`` order) with its run's colour."""
    for annotation, name in zip(fig.layout.annotations, names):
        color = (colors or {}).get(name)
        if color:
            annotation.font = dict(color=color, size=13)


# ---- the x axis ------------------------------------------------------------------------

# The x axis of the line figures: query value -> axis title.
X_AXES = {"step": "step", "wall": "wall time", "relative": "relative time"}


def over(x: str) -> str:
    """What a title says its figure is drawn over: ``over steps``, ``over wall time``..."""
    return "over steps" if x not in X_AXES or x == "step" else f"over {X_AXES[x]}"


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
        zone = datetime.datetime.now().astimezone().tzinfo
        stamps = pd.to_datetime(seconds, unit="s", utc=True).tz_convert(zone).tz_localize(None)
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


def relative_unit(max_seconds: float) -> tuple[float, str]:
    """(divisor, unit) for relative times up to ``max_seconds``: s, min or h, as TensorBoard's hours."""
    if not np.isfinite(max_seconds) or max_seconds < 120:
        return 1.0, "s"
    if max_seconds < 2 * 3600:
        return 60.0, "min"
    return 3600.0, "h"


def label_every_x_axis(fig: go.Figure) -> None:
    """Tick labels under every subplot of a figure with shared x axes, not only the bottom one
    (make_subplots hides the others): each panel reads on its own when scrolled to."""
    fig.update_xaxes(showticklabels=True)


# ---- log ticks --------------------------------------------------------------------------


def log_ticks(lo: float, hi: float) -> tuple[list[float], list[str]]:
    """Tick values and labels for a log axis over [lo, hi] (positive): 1-2-5 steps over
    up to two decades (every digit where that gives fewer than three ticks, even steps inside
    the range where that does too), every decade beyond, every few decades over many. Each
    label is the whole number (0.02, 0.05, 0.1), never plotly's bare leading digits ("2 5 1")."""
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo <= 0 or hi <= 0:
        return [], []
    lo, hi = min(lo, hi), max(lo, hi)
    first, last = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    decades = max(1, last - first)
    every = 1 if decades <= 8 else math.ceil(decades / 8)
    inside = []
    for mantissas in ((1, 2, 5), tuple(range(1, 10))) if decades <= 2 else ((1,),):
        values = [m * 10.0 ** e for e in range(first, last + 1) if (e - first) % every == 0 for m in mantissas]
        inside = [v for v in values if lo / 1.05 <= v <= hi * 1.05]
        if len(inside) >= 3:
            break
    if len(inside) < 3:  # a range within one or two digits: even steps across it
        inside = _even_ticks(lo, hi)
    return inside, [_tick_label(v) for v in inside]


def _even_ticks(lo: float, hi: float, most: int = 6) -> list[float]:
    """Round values evenly spaced inside [lo, hi] (1, 2, 2.5 or 5 times a power of ten apart),
    at least three; the ends themselves when the range is a point."""
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / (most - 1)
    power = 10.0 ** math.floor(math.log10(raw))
    for factor in (1, 2, 2.5, 5, 10):
        step = factor * power
        ticks = [k * step for k in range(math.ceil(lo / step - 1e-9), math.floor(hi / step + 1e-9) + 1)]
        if len(ticks) <= most:
            break
    if len(ticks) < 3:
        return [lo, (lo + hi) / 2, hi]
    return [float(f"{t:.12g}") for t in ticks]


def _tick_label(value: float) -> str:
    if 1e-3 <= abs(value) < 1e5:
        return f"{value:.3g}"
    mantissa, exponent = f"{value:.0e}".split("e")
    return f"{mantissa}e{int(exponent)}"
