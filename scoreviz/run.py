"""A recorded run as pandas frames, and finding runs below a folder."""

from __future__ import annotations

import errno
import glob
import os
import stat
from pathlib import Path

import numpy as np
import pandas as pd

from scoreviz.errors import ScorevizError
from scoreviz.store.objects import check_options, is_url, local_path
from scoreviz.store.schema import KINDS, SPECTRUM_COLUMNS
from scoreviz.store import FILE_NAME, STATS_COLUMNS, StoreReader
from scoreviz.store.hdf5 import describe
from scoreviz.store.select import last_of_each_step as _last_of_each_step

EMBEDDING_FRAME_COLUMNS = ("std", "uniformity", "alignment", "rank") + SPECTRUM_COLUMNS[:-1] + (
    "dim", "samples", "nonfinite", "window_samples", "windows_dropped")


class Run:
    """A run folder holding `scores.h5`. Every method reads the file afresh,
    so a run that is still being written shows its newest steps.

    When a resumed run recorded a step twice, the later row wins.

    The readers of long series take ``steps=(first, last)`` (inclusive, either
    end None) and ``max_points`` (at most that many steps: every k-th and the
    last, read as HDF5 hyperslabs, see scoreviz.store.select), and a column
    selection, so a view reads only what it shows.
    """

    def __init__(self, run_dir, header: bool = False, storage_options=None, published=None):
        self.url = None
        if is_url(run_dir):  # a run in an object store: read from its local copy, brought up to date now
            from scoreviz.store.remote import RemoteRun

            remote = RemoteRun(str(run_dir), storage_options)
            self.url, self.name = remote.url, remote.url.rsplit("/", 1)[-1]
            self.path, self.file = remote.folder, remote.sync(published)
            self._reader = StoreReader(self.file, header=header)
            self.config, self.env, self.bins = self._reader.config, self._reader.env, self._reader.bins
            return
        path = local_path(run_dir)
        found = looked_up(path, "run folder")
        if found is None:
            raise ScorevizError(f"{path}: no such run folder or file")
        folder = stat.S_ISDIR(found.st_mode)
        self.path = path if folder else path.parent
        self.file = path / FILE_NAME if folder else path
        if folder and looked_up(self.file, "run file") is None:
            raise ScorevizError(f"{self.path}: not a scoreviz run (no {FILE_NAME} in it)")
        self._reader = StoreReader(self.file, header=header)
        self.name = self.path.name
        self.config = self._reader.config
        self.env = self._reader.env
        self.bins = self._reader.bins

    def __repr__(self):
        return f"Run({self.url or str(self.path)!r})"

    @property
    def tags(self) -> list:
        """Score tags in order of first use."""
        return self._reader.tags()

    @property
    def embedding_tags(self) -> list:
        """Tags of logged embeddings (log_embeddings) in order of first use."""
        return self._reader.tags("embeddings")

    @property
    def layers(self) -> list:
        """Layer names in model order (later additions at the end)."""
        return self._reader.layers()

    @property
    def scalar_names(self) -> list:
        """Names of the logged scalars in order of first use (without reading their values)."""
        return self._reader._names("scalars")

    @property
    def header(self) -> dict:
        """What a run list shows, read with the run's root attributes in one open:
        ``{"tags", "embedding_tags", "layers", "scalars", "rows": {stream: rows}, "last_step"}``
        (names and counts only; no statistics are read). Read when the run is opened
        (``open_run(..., header=True)`` reads it in the same open; otherwise on first use)."""
        if self._reader.header is None:
            self._reader = StoreReader(self.file, header=True)
        names = self._reader.header["names"]
        return {"tags": names.get("scores", []), "embedding_tags": names.get("embeddings", []),
                "layers": names.get("gradients", []), "scalars": names.get("scalars", []),
                "rows": dict(self._reader.header["rows"]), "last_step": self._reader.header["last_step"]}

    def scores(self, tag: str = "train", columns=None, steps=None, max_points=None) -> pd.DataFrame:
        """Score statistics of one tag, indexed by step.

        Columns, for k in pos and neg: k_count, k_mean, k_var (ddof=0), k_min,
        k_max, k_q05 ... k_q95 (from the histogram), k_nonfinite, k_out_of_range;
        neg_sample_var, the mean over samples of each sample's negative variance;
        margin, the mean over samples of (positive - hardest negative score), and
        hard_frac, the fraction of samples whose hardest negative beats their
        positive (NaN without negatives, or when there is not one positive per
        sample, and in files of scoreviz before 0.2).

        ``columns`` reads only those statistics (in that order); ``steps`` and
        ``max_points`` as in the class docstring.
        """
        if columns is not None:
            columns = list(columns)
            unknown = [c for c in columns if c not in STATS_COLUMNS]
            if unknown:
                raise ScorevizError(f"{self.file}: no score statistic {unknown[0]!r}; known: {list(STATS_COLUMNS)}")
        row_steps, stats, names, _ = self._reader.scores(tag, columns=columns, steps=steps, max_points=max_points)
        frame = pd.DataFrame(stats, columns=names)
        for column in columns if columns is not None else STATS_COLUMNS:  # those an older file lacks
            if column not in frame:
                frame[column] = np.nan
        if columns is not None:
            frame = frame[columns]
        return _by_step(frame, row_steps)

    def embeddings(self, tag: str = "train") -> pd.DataFrame:
        """Embedding statistics of one tag (log_embeddings), indexed by step.

        Columns: std, uniformity, alignment (NaN without a second view); at the last
        step of each spectrum window (NaN elsewhere) rank (RankMe's effective rank of
        the spectrum) and the window's health signals (scoreviz.signals, docs/health.md):
        alpha_req, alpha_req_r2, nesum, participation_ratio, w2_uniformity, lidar and
        lidar_pairs (NaN and 0 without a second view); then dim, samples (kept in the
        batch), nonfinite (left out), window_samples (the samples behind each rank) and
        windows_dropped (windows of the tag the writer was too far behind to take, since
        the one before). The signals are NaN in files of schema 3 and older.
        """
        steps, stats, columns = self._reader.embeddings(tag)
        frame = _by_step(pd.DataFrame(stats, columns=columns), steps)
        spectrum_steps, _, samples, ranks, _, signals = self._spectrum_rows(tag)
        windows = pd.DataFrame({"rank": ranks, "window_samples": samples.astype(np.float64)})
        for column in SPECTRUM_COLUMNS:
            windows[column] = signals[column] if column in signals else np.nan
        frame = frame.join(_by_step(windows, spectrum_steps), how="outer")
        return frame[[c for c in EMBEDDING_FRAME_COLUMNS if c in frame] + [c for c in frame if c not in
                                                                        EMBEDDING_FRAME_COLUMNS]]

    def spectrum(self, tag: str = "train"):
        """(steps (n,), eigenvalues (n, dim)): each window's eigenvalues of the second moment of
        the centred, l2-normalised embeddings, largest first (NaN after a row's own dim where
        the dim changed between resumed runs, which runs recorded before schema 4 allowed).
        Empty arrays when no window was completed."""
        steps, _, _, _, eigenvalues, _ = self._spectrum_rows(tag)
        return steps, eigenvalues

    def _spectrum_rows(self, tag):
        """The last spectrum row of each step of `tag` (none when the tag has embeddings only):
        steps, dims, samples, ranks, eigenvalues and {signal: values} (those the file has)."""
        if tag not in self._reader.tags("spectrum"):
            self._reader.embeddings(tag)  # a ScorevizError naming the tags when there is no such tag
            return np.empty(0, dtype=np.int64), np.empty(0), np.empty(0), np.empty(0), np.empty((0, 0)), {}
        steps, dims, samples, ranks, eigenvalues, signals, names = self._reader.spectrum(tag)
        keep = _last_of_each_step(steps)
        return (steps[keep], dims[keep], samples[keep], ranks[keep], eigenvalues[keep],
                {name: signals[keep, i] for i, name in enumerate(names)})

    def histograms(self, tag: str, kind: str, steps=None, max_points=None):
        """(steps (n,), bin_edges (bins + 1,), counts (n, bins)) of one tag and kind ("pos" or "neg");
        ``steps`` and ``max_points`` as in the class docstring."""
        if kind not in KINDS:
            raise ScorevizError(f"histograms: kind must be 'pos' or 'neg', got {kind!r}")
        if steps is None and max_points is None:
            steps, _, _, hists = self._reader.scores(tag, with_hist=(kind,))
        else:
            steps, _, _, hists = self._reader.scores(tag, with_hist=(kind,), columns=(), steps=steps,
                                                     max_points=max_points)
        keep = _last_of_each_step(steps)
        edges = np.linspace(-1.0, 1.0, self.bins + 1)
        return steps[keep], edges, hists[kind][keep]

    def histogram_at(self, tag: str, kind: str, step: int):
        """(recorded step, bin_edges, counts (bins,)) of the recorded step nearest to ``step``
        (the earlier one on a tie); reads the step column and one histogram row only."""
        recorded = self.scores(tag, columns=[]).index.to_numpy()
        if not len(recorded):
            raise ScorevizError(f"{self.file}: no {kind} histograms under tag {tag!r} yet")
        at = int(recorded[np.argmin(np.abs(recorded - int(step)))])
        steps, edges, counts = self.histograms(tag, kind, steps=(at, at))
        return at, edges, counts[-1]

    def gradients(self, layers=None, steps=None, max_points=None) -> pd.DataFrame:
        """Per-layer gradient L2 norms, indexed by step, one column per layer (``layers``: only
        those recorded of these); ``steps`` and ``max_points`` as in the class docstring."""
        steps, values, names, _ = self._reader.table("gradients", layers, steps, max_points)
        return _by_step(pd.DataFrame(values, columns=names), steps)

    def total_gradient_norm(self, steps=None, max_points=None) -> pd.Series:
        """The L2 norm of all gradients together, indexed by step."""
        names = None if steps is None and max_points is None else ()
        steps, _, _, totals = self._reader.table("gradients", names, steps, max_points)
        return _by_step(pd.DataFrame({"total": totals}), steps)["total"]

    def scalars(self, names=None, steps=None, max_points=None) -> pd.DataFrame:
        """Logged scalars, indexed by step, one column per name (NaN where not logged);
        ``names``: only those logged of these; ``steps`` and ``max_points`` as in the class docstring."""
        steps, values, names, _ = self._reader.table("scalars", names, steps, max_points)
        frame = pd.DataFrame(values, columns=names)
        frame.index = pd.Index(np.asarray(steps, dtype=np.int64), name="step")
        # several log_scalars calls may share a step: keep the last value of each name
        return frame.groupby(level="step").last()

    def times(self) -> pd.Series:
        """Wall time (Unix seconds, float) at which each step was logged, indexed by step.

        A step logged in several streams or calls keeps its latest time (as a step
        recorded twice keeps its later row). NaN for steps without a time: files of
        scoreviz 0.1, and rows copied from them.
        """
        steps, times = self._reader.times()
        series = pd.Series(times, index=pd.Index(np.asarray(steps, dtype=np.int64), name="step"), name="time")
        return series.groupby(level="step").max()

    def steps(self) -> np.ndarray:
        """Every step recorded in any stream, sorted; cheap (reads only the step columns)."""
        return self._reader.steps()

    def summary(self) -> dict:
        """Steps, tags, layers and the last value of the main statistics (and window signals) and of
        every scalar; the spectrum windows a tag dropped, where it dropped any."""
        out = {"name": self.name, "path": self.url or str(self.path), "tags": self.tags, "layers": len(self.layers)}
        for tag in out["tags"]:
            frame = self.scores(tag)
            if len(frame):
                last = frame.iloc[-1]
                out[f"last {tag}"] = {c: float(last[c]) for c in ("pos_mean", "neg_mean", "neg_sample_var")}
        out["embedding tags"] = self.embedding_tags
        for tag in out["embedding tags"]:
            frame = self.embeddings(tag)
            last = {c: float(frame[c].dropna().iloc[-1]) if frame[c].notna().any() else float("nan")
                    for c in ("std", "uniformity", "alignment", "rank", "alpha_req", "nesum", "participation_ratio",
                              "w2_uniformity", "lidar")}
            dropped = frame["windows_dropped"].sum()
            if dropped > 0:  # the writer fell behind: say how many spectrum windows are missing
                last["windows_dropped"] = float(dropped)
            out[f"last {tag} embeddings"] = last
        scalars = self.scalars()
        if len(scalars):
            out["last scalars"] = {c: float(scalars[c].dropna().iloc[-1]) for c in scalars if scalars[c].notna().any()}
        steps = self.steps()
        out["steps"] = len(steps)
        out["first_step"] = int(steps[0]) if len(steps) else None
        out["last_step"] = int(steps[-1]) if len(steps) else None
        return out


def _by_step(frame, steps):
    keep = _last_of_each_step(steps)
    frame = frame.iloc[keep]
    frame.index = pd.Index(np.asarray(steps)[keep].astype(np.int64), name="step")
    return frame


def open_run(run_dir, header: bool = False, storage_options=None) -> Run:
    """Open a recorded run (its folder or its scores.h5); ScorevizError on bad input.

    Opening reads the root attributes only (config, env, bins); with ``header`` the
    same open also reads :attr:`Run.header` (tags, layers, scalar names, row counts,
    last step), all a run list needs.

    ``run_dir`` may be an fsspec URL (``s3://bucket/runs/a``): what was published is
    fetched into a local copy (only the parts not fetched before) and read from it;
    the Run shows the rows published when it was opened (open it again for newer
    ones). ``storage_options``: fsspec's options for the store (credentials, endpoint)."""
    return Run(run_dir, header=header, storage_options=check_options(storage_options, "open_run"))


def looked_up(path: Path, what: str):
    """os.stat of `path` (following links), None if there is nothing there; a ScorevizError
    naming it for what else stops a look (a link loop, no permission), never a raw OSError."""
    try:
        return os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise ScorevizError(f"{path}: the {what} is a symbolic link loop ({describe(err)})") from None
        raise ScorevizError(f"{path}: cannot look at the {what} ({describe(err)})") from None
    except ValueError as err:  # a NUL in the name
        raise ScorevizError(f"{path!r}: not a usable path ({err})") from None


def find_runs(root, storage_options=None) -> list:
    """Every run folder (one holding scores.h5) below `root`, sorted, damaged ones included:
    a folder whose scores.h5 cannot be looked at (a link loop, no permission), and a folder
    that cannot be listed, are listed too, and opening them says why.

    ``root`` may also be a glob (``runs/sweep-*``) or a list of folders and globs
    (see :func:`expand_roots`); a run below two of them is listed once. A URL
    (``s3://bucket/runs/``) is listed once (one request per 1,000 objects) and its
    runs are returned as URLs."""
    items = [root] if isinstance(root, (str, Path)) else list(root)
    urls = [str(item) for item in items if is_url(item)]
    found = set()
    if urls:
        from scoreviz.store.remote import find_remote

        options = check_options(storage_options, "find_runs")
        for url in urls:
            found.update(find_remote(url, options))
    local = [item for item in items if not is_url(item)]
    if local or not urls:
        for folder in expand_roots(local):
            found.update(_run_folders(folder))
    return sorted(found, key=str)


def _run_folders(folder: Path):
    """The folders below ``folder`` (itself included) that hold a scores.h5 file, walked with
    os.scandir (a third of pathlib's rglob time on 1,000 runs). Linked folders are not entered,
    as rglob does not; a linked scores.h5 is listed (the server refuses one that leads out),
    and so is one that cannot be looked at (a link to itself, a folder without permission to
    enter), and a folder that cannot be listed: a broken run is shown, not left out."""
    pending = [str(folder)]
    while pending:
        current = pending.pop()
        try:
            entries = os.scandir(current)
        except (FileNotFoundError, NotADirectoryError):  # gone since it was listed
            continue
        except OSError:  # no permission to list it: it may be a run, opening it says why not
            yield Path(current)
            continue
        with entries:
            for entry in entries:
                try:
                    if entry.name == FILE_NAME:
                        if _file_or_unknown(entry):
                            yield Path(current)
                    elif entry.is_dir(follow_symlinks=False):
                        pending.append(entry.path)
                except OSError:
                    continue


def _file_or_unknown(entry: os.DirEntry) -> bool:
    """Whether a scores.h5 entry is a file, or a link or entry whose target cannot be looked at."""
    try:
        return entry.is_file()
    except OSError:
        return not entry.is_dir(follow_symlinks=False)


def expand_roots(roots) -> list:
    """The folders named by ``roots``: a folder, a glob, or a list (tuple) of them, in the order
    given, globs sorted, each folder once. ScorevizError for a name that is not a folder and a
    glob that matches none."""
    items = [roots] if isinstance(roots, (str, Path)) else list(roots)
    if not items:
        raise ScorevizError("no run folder given")
    folders = []
    for item in items:
        text = str(item)
        if glob.has_magic(text) and not os.path.lexists(text):
            matches = [Path(m) for m in sorted(glob.glob(text)) if os.path.isdir(m)]
            if not matches:
                raise ScorevizError(f"{text}: the pattern matches no folder")
        else:
            found = looked_up(Path(text), "folder")
            if found is None or not stat.S_ISDIR(found.st_mode):
                raise ScorevizError(f"{text}: no such folder")
            matches = [Path(text)]
        folders += [m for m in matches if m not in folders]
    return folders


def common_base(folders) -> Path:
    """The folder that run ids of several run folders are relative to: their deepest common
    folder, so two folders' runs of the same name get different ids (``runs/a``, ``other/a``);
    a single folder is its own base."""
    return Path(os.path.commonpath([Path(f).resolve() for f in folders]))
