"""Typed reads of one run's streams, each cached (app.runs.cache) and bounded: what the views draw.

Every stream a view draws is read here and only here, once per file version: scores, scalars,
wall times, histograms, gradients, embeddings and spectra. Where a whole array would be large
(the per-step histograms, the step x layer gradient norms, the spectra), only a bounded
reduction (app.plot.reduce) is cached, which is all the figures need.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from app.plot.reduce import MAX_POINTS, MAX_ROWS, bucket_rows, evenly, reduce_gradients, to_density
from app.runs.ids import RefusedRunId

# Exact histograms kept per (run, tag, kind) for the step slider; the slider
# moves over this many positions at most.
SNAPSHOTS = 1000
# grouped_curves results kept (a few hundred KB each at most: MAX_POINTS steps per group).
GROUPED_KEPT = 32


class Reads:
    """The typed reads of :class:`app.runs.RunData`, which supplies ``cached``, ``light_info``,
    ``stamp`` and the ``_grouped`` results kept with their ``_grouped_lock``."""

    def scores(self, run_id: str, tag: str) -> pd.DataFrame:
        """run.scores(tag) as float32 (empty when the run has no such tag)."""
        def read(run):
            tags = self.light_info(run_id).get("tags")  # from the cached header: no extra open
            if tag not in (tags if tags is not None else run.tags):
                return pd.DataFrame()
            return run.scores(tag).astype(np.float32)
        return self.cached(run_id, ("scores", tag), read)

    def scalars(self, run_id: str) -> pd.DataFrame:
        """run.scalars() as float32."""
        return self.cached(run_id, ("scalars",), lambda run: run.scalars().astype(np.float32))

    def curve_frame(self, run_id: str, tag: str, columns) -> pd.DataFrame:
        """The score columns of ``tag`` plus any requested scalars, indexed by step (empty when the
        run cannot be read)."""
        scores = self.safe(lambda: self.scores(run_id, tag), pd.DataFrame())
        wanted = [c for c in columns if c not in scores.columns]
        if not wanted:
            return scores
        scalars = self.safe(lambda: self.scalars(run_id), pd.DataFrame())
        extra = scalars[[c for c in wanted if c in scalars.columns]]
        return extra if scores.empty else scores.join(extra, how="outer")

    def times(self, run_id: str) -> pd.Series:
        """run.times(): the wall time of each step (NaN where the file has none)."""
        return self.cached(run_id, ("times",), lambda run: run.times())

    def run_times(self, runs, x) -> dict | None:
        """{run: times} when the x axis ``x`` is a time, else None (no file read for steps)."""
        if x not in ("wall", "relative"):
            return None
        return {r: self.safe(lambda r=r: self.times(r)) for r in runs}

    def histograms(self, run_id: str, tag: str, kind: str) -> dict | None:
        """Bounded views of run.histograms(tag, kind), None when the run has no such tag.

        ``{"heat": (steps, edges, densities)}`` averaged into at most ``MAX_ROWS`` step
        buckets for the heatmap, and ``{"snap": (steps, edges, counts)}``: at most
        ``SNAPSHOTS`` exact recorded rows for the step slider (the last one always).
        """
        def read(run):
            if tag not in run.tags:
                return None
            steps, edges, counts = run.histograms(tag, kind)
            heat_steps, dens = bucket_rows(steps, to_density(counts), MAX_ROWS, how="mean")
            pick = evenly(len(steps), SNAPSHOTS)
            return {"heat": (heat_steps, edges, dens.astype(np.float32)),
                    "snap": (steps[pick], edges, counts[pick])}
        return self.cached(run_id, ("hist", tag, kind), read)

    def snapshots(self, run_id: str, tag: str) -> dict:
        """{"pos": (steps, edges, counts), "neg": ...}: the exact rows the step slider moves over,
        the kinds the run recorded under ``tag`` (empty when it cannot be read)."""
        out = {}
        for kind in ("pos", "neg"):
            view = self.safe(lambda kind=kind: self.histograms(run_id, tag, kind))
            if view:
                out[kind] = view["snap"]
        return out

    def last_histograms(self, run_id: str, tag: str) -> dict:
        """The first and last histogram rows of each kind, ``{"pos": (steps, edges, counts), ...}``:
        what a figure at the last step needs, read as two rows (a sweep's report reads hundreds of runs)."""
        def read(run):
            if tag not in run.tags:
                return {}
            return {kind: run.histograms(tag, kind, max_points=2) for kind in ("pos", "neg")}
        return self.safe(lambda: self.cached(run_id, ("last-hist", tag), read), {})

    def gradients(self, run_id: str) -> dict:
        """Bucketed gradient norms ``(steps, layers, norms)`` and the total norm."""
        def read(run):
            steps, layers, norms = reduce_gradients(run.gradients(), MAX_ROWS)
            return {"steps": steps, "layers": layers, "norms": norms.astype(np.float32),
                    "total": run.total_gradient_norm().astype(np.float32)}
        return self.cached(run_id, ("gradients",), read)

    def embeddings(self, run_id: str, tag: str) -> pd.DataFrame:
        """run.embeddings(tag): std, uniformity, alignment, rank per step."""
        return self.cached(run_id, ("embeddings", tag), lambda run: run.embeddings(tag))

    def spectrum(self, run_id: str, tag: str):
        """run.spectrum(tag) with its steps averaged into at most MAX_ROWS buckets: (steps, eigenvalues)."""
        def read(run):
            steps, eigenvalues = run.spectrum(tag)
            return bucket_rows(steps, eigenvalues.astype("float32"), MAX_ROWS)
        return self.cached(run_id, ("spectrum", tag), read)

    def embedding_tag(self, run_id: str, tag):
        """``tag`` where the run logged embeddings under it, else its first embedding tag (None without
        any): scores and embeddings may be logged under different tags (the trainer's ``ft`` has scores only)."""
        tags = list(self.light_info(run_id).get("embedding_tags", []))
        return tag if tag in tags else (tags[0] if tags else None)

    def statistic(self, run_id: str, tag: str, column: str, max_points: int = MAX_POINTS) -> pd.Series:
        """One statistic of one run, at most ``max_points`` steps read as a strided hyperslab
        (scoreviz.store.select): a score column of ``tag``, else a scalar of that name; an
        empty Series when the run has neither. For grouped curves, where a spike of one seed
        matters less than the group's mean; a single run's curve reads full resolution.

        All score columns of a tag (or all scalars) are read in one go and cached as one
        entry, so the statistics of a view cost one read per run."""
        from scoreviz.store import STATS_COLUMNS

        empty = pd.Series(dtype=np.float32)
        if column in STATS_COLUMNS:
            if tag not in self.light_info(run_id).get("tags", []):
                return empty
            frame = self.cached(run_id, ("thin-scores", tag, max_points), lambda run: run.scores(
                tag, max_points=max_points).astype(np.float32))
        else:
            frame = self.cached(run_id, ("thin-scalars", max_points), lambda run: run.scalars(
                max_points=max_points).astype(np.float32))
        return frame[column] if column in frame else empty

    def grouped_curves(self, run_ids, tag: str, column: str, by=(), band: str = "std",
                       max_points: int = MAX_POINTS) -> list:
        """scoreviz.groups.group_curves of ``run_ids`` grouped by config keys ``by``: what a
        grouped curve view draws (a list of GroupCurve: mean, lower, upper, count per step).
        Broken runs and runs without the statistic are left out of their group's curve."""
        from scoreviz import groups

        try:
            key = (tuple((r, self.stamp(r)) for r in run_ids), tag, column, tuple(by), band, max_points)
        except RefusedRunId:
            key = None
        kept = self._grouped
        with self._grouped_lock:
            if key in kept:  # the same runs, unchanged: the groups' alignment is not redone
                kept.move_to_end(key)
                return kept[key]
        configs, curves = {}, {}
        for run_id in run_ids:
            info = self.light_info(run_id)
            if info.get("error"):
                continue
            configs[run_id] = info.get("config", {})
            curves[run_id] = self.safe(lambda run_id=run_id: self.statistic(run_id, tag, column, max_points))
        result = groups.group_curves(curves, groups.group_runs(configs, by, most=groups.MAX_GROUPS), band=band,
                                     max_points=max_points)
        if key is not None:
            with self._grouped_lock:
                kept[key] = result
                while len(kept) > GROUPED_KEPT:
                    kept.popitem(last=False)
        return result

    def memo(self, run_id: str, key: tuple, compute):
        """``compute()`` cached until the run's file changes (for results derived from reads)."""
        return self.cached(run_id, ("memo",) + key, lambda _run: compute())

    @staticmethod
    def safe(read, default=None):
        """The value of ``read()``, or ``default`` if the run cannot be read.

        A run that breaks between two refreshes must not break the whole page;
        the run table and the notice show its error.
        """
        try:
            return read()
        except (ValueError, OSError, KeyError):
            return default
