"""Runs grouped by config values: a group's mean curve with a band, and its mean histogram.

A sweep runs each setting with several seeds; a finding counts when it holds
across them. These pure functions (pandas and numpy in, out; no Dash, no files)
turn per-run curves into per-group curves, so a curve view only calls:

    groups = group_runs(configs, by=["moco_m"])                # ignore every other key (seed...)
    curves = group_curves(series_by_run, groups, band="std")    # one GroupCurve per group
    hist = mean_histogram({run: (edges, counts) for run in group.runs})
    means = mean_histograms_at_step(histograms_by_run, groups, step)  # each group's, at one step

Choices, where a sweep tool must pick one:

- A group is every run with the same values of the ``by`` keys; a run without
  a key has the value None there (its own group, named ``key not set``, "-" in a table).
- Curves are aligned on the union of their recorded steps (or a strided subset
  of it, ``max_points``). Each run is linearly interpolated at the grid steps
  inside its own first..last recorded step and is NaN outside: no run is
  extrapolated, so a shorter run simply stops counting. NaN values count as
  not recorded (interpolated over when inside the run's range).
- The mean and band at a step are over the runs that have a value there;
  ``count`` says how many. ``std`` is the sample standard deviation (ddof=1,
  as pandas), the band mean +- std; ``sem`` is std / sqrt(count); ``minmax``
  the smallest and largest run. Where one run has a value, the band is that
  run's value (zero width), not NaN.
- A mean histogram averages each run's histogram normalised to a density
  (batch sizes differ between runs and steps), so each run weighs the same.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from numbers import Number
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from scoreviz.errors import ScorevizError

BANDS = ("std", "sem", "minmax")
MAX_KEYS = 8  # config keys one grouping uses: a sweep varies a few (2,001 once made a 208 MB figure)
MAX_GROUPS = 20  # groups a view draws (group_runs(most=...)); the rest are drawn as one group


class _Others:
    """The key value of the group that holds the runs of the groups past ``most`` (see group_runs)."""

    def __repr__(self):
        return "others"


OTHERS = _Others()


@dataclass(frozen=True)
class Group:
    """Runs sharing the values ``key`` of the config keys ``by``."""

    by: tuple
    key: tuple
    runs: tuple
    folded: int = 0  # for the group of the others (its key is OTHERS): how many groups it holds

    @property
    def name(self) -> str:
        """``moco_m=0.99, alpha=1``; ``all runs`` when grouping by nothing; ``pos_alpha not set`` for
        the runs without the key (never ``pos_alpha=-``, which reads as a value)."""
        if not self.by:
            return "all runs"
        if self.folded:
            return f"{self.folded} other groups"
        return ", ".join(f"{k} not set" if v is None else f"{k}={_format(v)}" for k, v in zip(self.by, self.key))

    @property
    def values(self) -> list:
        """The values of the ``by`` keys as text (``0.99``; ``-`` where a run has no such key)."""
        if self.folded:
            return [f"{self.folded} others"] + [""] * (len(self.key) - 1)
        return [_format(v) for v in self.key]

    @property
    def label(self) -> str:
        """The legend entry: the name and the run count, ``moco_m=0.99 (n=5)``."""
        return f"{self.name} (n={len(self.runs)})"


@dataclass(frozen=True)
class GroupCurve:
    """A group's curve: ``frame`` indexed by step with columns mean, lower, upper, count
    (runs with a value at that step); ``runs`` those that have the statistic, ``missing``
    those of the group that do not."""

    group: Group
    frame: pd.DataFrame
    runs: tuple
    missing: tuple = field(default=())


@dataclass(frozen=True)
class MeanHistogram:
    """The mean density over runs (bins,), its sample std (ddof=1; 0 for one run), the runs used,
    and the smallest and largest run's density in each bin."""

    edges: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    runs: tuple
    low: np.ndarray | None = None
    high: np.ndarray | None = None

    def band(self, band: str = "std") -> tuple:
        """(lower, upper) densities per bin: mean -+ std, mean -+ std / sqrt(runs), or min and max
        over runs, as :func:`summarize` draws a curve's band."""
        if band not in BANDS:
            raise ScorevizError(f"band must be one of {BANDS}, got {band!r}")
        if band == "minmax":
            return (self.mean if self.low is None else self.low), (self.mean if self.high is None else self.high)
        spread = self.std / np.sqrt(max(len(self.runs), 1)) if band == "sem" else self.std
        return self.mean - spread, self.mean + spread


def group_runs(configs: Mapping[str, Mapping], by: Sequence[str] = (), most: int | None = None) -> list:
    """Group runs by the values of config keys ``by``, every other key ignored.

    ``most``: at most that many groups; past it the groups after the first ``most - 1`` are
    folded into one, named "N other groups" (key: OTHERS for every key), drawn as any group
    (its mean and band over all their runs): a view draws a bounded number of groups
    whatever the sweep, and says how many it summarised.

    ``configs``: run id -> config dict. Groups are sorted by their values
    (numbers numerically, then text, None last); runs keep the order given. At most MAX_KEYS
    keys (a ScorevizError for more).
    """
    by = tuple(by)
    if len(by) > MAX_KEYS:
        raise ScorevizError(f"group by at most {MAX_KEYS} config keys, got {len(by)}")
    members: dict = {}
    for run_id, config in configs.items():
        config = config or {}
        key = tuple(_hashable(config.get(k)) for k in by)
        members.setdefault(key, []).append(run_id)
    groups = [Group(by, key, tuple(runs)) for key, runs in sorted(members.items(), key=lambda kv: _sort_key(kv[0]))]
    if most is not None and len(groups) > max(most, 1):
        kept, rest = groups[:max(most, 1) - 1], groups[max(most, 1) - 1:]
        groups = kept + [Group(by, (OTHERS,) * len(by), tuple(r for g in rest for r in g.runs), folded=len(rest))]
    return groups


def step_grid(curves: Mapping[str, pd.Series], max_points: int | None = None) -> np.ndarray:
    """The union of the recorded steps of ``curves`` (NaN values left out), sorted; with
    ``max_points``, every k-th of them plus the last, at most that many."""
    parts = [np.asarray(s.dropna().index, dtype=np.int64) for s in curves.values() if s is not None]
    grid = np.unique(np.concatenate(parts)) if parts else np.empty(0, dtype=np.int64)
    if max_points is not None and len(grid) > max_points:
        if max_points < 2:
            raise ScorevizError(f"max_points must be at least 2, got {max_points}")
        stride = -(-len(grid) // (max_points - 1))
        grid = np.union1d(grid[::stride], grid[-1:])
    return grid


def align(curves: Mapping[str, pd.Series], grid=None) -> pd.DataFrame:
    """One column per run, indexed by ``grid`` (default :func:`step_grid`): each run's values
    linearly interpolated at the grid steps within its own recorded range, NaN outside."""
    grid = step_grid(curves) if grid is None else np.asarray(grid, dtype=np.int64)
    columns = {}
    for run_id, series in curves.items():
        values = series.dropna() if series is not None else pd.Series(dtype=float)
        values = values[~values.index.duplicated(keep="last")].sort_index()
        x = np.asarray(values.index, dtype=np.float64)
        y = np.asarray(values.to_numpy(), dtype=np.float64)
        out = np.full(len(grid), np.nan)
        if len(x):
            inside = (grid >= x[0]) & (grid <= x[-1])
            out[inside] = np.interp(grid[inside].astype(np.float64), x, y)
        columns[run_id] = out
    return pd.DataFrame(columns, index=pd.Index(grid, name="step"), columns=list(curves))


def summarize(aligned: pd.DataFrame, band: str = "std") -> pd.DataFrame:
    """mean, lower, upper and count per step over the columns (runs) of ``aligned``;
    steps where no run has a value are dropped."""
    if band not in BANDS:
        raise ScorevizError(f"band must be one of {BANDS}, got {band!r}")
    values = aligned.to_numpy(dtype=np.float64)
    count = np.sum(~np.isnan(values), axis=1)
    keep = count > 0
    values, count = values[keep], count[keep]
    mean = np.nanmean(values, axis=1) if len(values) else np.empty(0)
    if band == "minmax":
        lower, upper = np.nanmin(values, axis=1), np.nanmax(values, axis=1)
    else:
        spread = _sample_std(values, mean, count)
        if band == "sem":
            spread = spread / np.sqrt(count)
        lower, upper = mean - spread, mean + spread
    return pd.DataFrame({"mean": mean, "lower": lower, "upper": upper, "count": count},
                        index=aligned.index[keep])


def group_curves(curves: Mapping[str, pd.Series], groups: Sequence[Group], band: str = "std",
                 max_points: int | None = None) -> list:
    """A :class:`GroupCurve` per group that has the statistic in at least one run.

    ``curves``: run id -> Series of one statistic indexed by step (absent, None or
    empty for a run without it). All groups share one step grid (see :func:`step_grid`).
    """
    present = {r: s for r, s in curves.items() if s is not None and s.notna().any()}
    grid = step_grid(present, max_points)
    out = []
    for group in groups:
        runs = tuple(r for r in group.runs if r in present)
        if not runs:
            continue
        frame = summarize(align({r: present[r] for r in runs}, grid), band)
        out.append(GroupCurve(group, frame, runs, tuple(r for r in group.runs if r not in present)))
    return out


def mean_histogram(histograms: Mapping[str, tuple]) -> MeanHistogram:
    """The mean density of runs' histograms: ``histograms`` maps run id -> (edges (bins+1,),
    counts (bins,)). Histograms with no counts are left out; edges must agree."""
    edges, densities, runs = None, [], []
    for run_id, (run_edges, counts) in histograms.items():
        run_edges = np.asarray(run_edges, dtype=np.float64)
        counts = np.asarray(counts, dtype=np.float64)
        if edges is None:
            edges = run_edges
        elif run_edges.shape != edges.shape or not np.allclose(run_edges, edges):
            raise ScorevizError(f"run {run_id!r}: its histogram has {len(run_edges) - 1} bins over "
                                f"[{run_edges[0]:g}, {run_edges[-1]:g}], the others {len(edges) - 1} over "
                                f"[{edges[0]:g}, {edges[-1]:g}]: cannot average them")
        total = counts.sum()
        if total > 0:
            densities.append(counts / (total * np.diff(run_edges)))
            runs.append(run_id)
    if edges is None:
        raise ScorevizError("mean_histogram: no histograms given")
    if not densities:
        zeros = np.zeros(len(edges) - 1)
        return MeanHistogram(edges, zeros, zeros, (), zeros, zeros)
    stack = np.stack(densities)
    mean = stack.mean(axis=0)
    std = stack.std(axis=0, ddof=1) if len(stack) > 1 else np.zeros_like(mean)
    return MeanHistogram(edges, mean, std, tuple(runs), stack.min(axis=0), stack.max(axis=0))


def row_at_step(steps, step) -> int | None:
    """Index of the last recorded step at or before ``step`` (else the first); None without steps."""
    steps = np.asarray(steps)
    if len(steps) == 0:
        return None
    return max(int(np.searchsorted(steps, step, side="right")) - 1, 0)


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
                r = row_at_step(steps, step)
                rows[run] = (edges, counts[r])
                used.add(int(steps[r]))
            if rows:
                mean = mean_histogram(rows)
                if mean.runs:
                    means[kind] = mean
        if means:
            out.append((group, means, sorted(used)))
    return out


def _sample_std(values, mean, count):
    """Per-row sample std (ddof=1) ignoring NaN; 0 where one value (the band collapses onto it)."""
    deviations = np.where(np.isnan(values), 0.0, values - mean[:, None])
    sums = np.sum(deviations ** 2, axis=1)
    return np.sqrt(np.divide(sums, count - 1, out=np.zeros_like(sums), where=count > 1))


def _hashable(value):
    if isinstance(value, list):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _hashable(v)) for k, v in value.items()))
    return value


def _sort_key(key):
    return tuple((2, "") if v is None else (0, v) if isinstance(v, Number) and not isinstance(v, bool)
                 else (1, str(v)) for v in key)


def _format(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)
