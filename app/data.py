"""Runs below the run folders the server was given, read through scoreviz.Run and cached.

A run id is the run folder's path relative to the run folder (POSIX form);
with several run folders (``scoreviz serve runs/ other/``, or a glob), it is
relative to their deepest common folder, so two folders' runs of the same
name get different ids (``runs/a``, ``other/a``). Ids that point outside the
folders given (``../..``, absolute paths, symlinks leading out) are refused,
so a crafted URL can only ever open runs the server was given.

Reading is lazy and bounded, so the server's memory does not grow with the
number of runs on disk:

- listing runs (the page, the run table, the picker) reads each run's header
  only: root attributes, name lists, row counts, the last step (one open, a
  few hundred bytes, whatever the run's length);
- in the background, listed runs get their step counts (the step columns
  only), and only the *selected* runs are read in full for the figures;
- every read is cached in one LRU of at most ``CACHE_BYTES`` (512 MiB) of
  arrays and frames, least recently used dropped first; headers and step
  counts are a few hundred bytes each and are cached the same way.

The cache key includes the file's size and mtime: a run that is still being
written gets a new key as soon as it grows, so live runs update and finished
runs are read once. Where a whole array would be large (the per-step
histograms, the step x layer gradient norms), only a bounded reduction is
cached, which is all the figures need.
"""

from __future__ import annotations

import atexit
import itertools
import os
import queue
import stat
import threading
import time
import weakref
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pandas as pd

from app import figures
from scoreviz import health
from app.headers import HeaderIndex

# Exact histograms kept per (run, tag, kind) for the step slider; the slider
# moves over this many positions at most.
SNAPSHOTS = 1000
# The cache's bound: 512 MiB holds the full reads of about 50 runs of 100k steps, or
# of hundreds of 10k-step runs, and keeps a 1,000-run server well under 1.5 GB.
CACHE_BYTES = 512 * 1024**2
# Opened runs kept (a Run holds its config and attributes only, a few KB).
OPEN_RUNS = 2048


# Background reading, most urgent first (each level's queue priority): the selected runs'
# headers and scores, every listed run's header (the run table and filter), the rest of the
# selected runs, the step counts of every listed run.
_SCORES, _HEADER, _REST, _COUNT = 0, 1, 2, 3
# The queue priority of the header of a row the run table shows: after the selected runs'
# scores (what the researcher asked for), before every other header.
_ON_SCREEN = 0.5
# The background reader waits at most this long for requests to finish before its next read.
YIELD_S = 2.0
# grouped_curves results kept (a few hundred KB each at most: MAX_POINTS steps per group).
GROUPED_KEPT = 32
# With RunData(hold=True), background reading starts at most this long after the server did,
# when no page was served by then.
HOLD_S = 5.0
# Requests that may wait in wait_read at once; more answer at once (each holds one of the
# server's threads while it waits: a page has one such request at a time).
MAX_WAITING = 2
# Header reads between two saves of the header index (app.headers).
SAVE_EVERY = 200


class RefusedRunId(ValueError):
    """A run id that does not name a run below RUNS_DIR."""


def _scoreviz():
    # Imported on first use: the app module tree stays importable (and its
    # figure tests runnable) without pulling in torch.
    import scoreviz

    return scoreviz


# Every RunData that reads in the background. At interpreter exit a daemon thread frozen in the
# middle of an h5py read keeps h5py's lock, and the exit hangs tearing down h5py objects (seen:
# create_app on 1,000 runs in a script that then ended); so the reading stops while Python is whole,
# and before h5py's own exit handler: atexit runs the last registered first, so ours is registered
# once h5py is imported (RunData.__init__), not when this module is.
_LIVE = weakref.WeakSet()
_STOP_REGISTERED = []


def _stop_background_reading():
    for data in list(_LIVE):
        data.stop()


class RunData:
    """All runs below ``root`` (a folder, a glob, or a list of them), their reads cached
    per (file, size, mtime)."""

    def __init__(self, root, max_bytes: int = CACHE_BYTES, warm: bool = True, index: bool = True,
                 hold: bool = False):
        from scoreviz.run import common_base, expand_roots

        self.roots = [p.resolve() for p in expand_roots(root)]
        self.root = common_base(self.roots)  # run ids are relative to it
        self._root_prefixes = tuple(str(root).rstrip(os.sep) + os.sep for root in self.roots)
        self.max_bytes = max_bytes
        self._cache: OrderedDict = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._warm_queue = queue.PriorityQueue() if warm else None
        self._order = itertools.count()  # FIFO within one priority
        self._runs: OrderedDict = OrderedDict()  # run id -> (stamp, scoreviz.Run), see _open
        self._queued: dict = {}  # (run id, level) -> stamp last queued
        self._done: dict = {level: {} for level in (_SCORES, _HEADER, _REST, _COUNT)}  # {run id: stamp read}
        # headers read before (by an earlier server on the same folders), by file, size and mtime
        self._index = HeaderIndex(self.roots) if index else None
        self._unsaved = 0
        self._in_flight = 0  # requests being answered (app.create_app counts them)
        self._waiting = 0  # of which: waiting for background reads (see wait_read)
        self._read_progress = threading.Condition()  # notified after each background read
        self._grouped: OrderedDict = OrderedDict()  # grouped_curves results, by runs and their stamps
        self._stopping = threading.Event()
        # With ``hold`` (a server), background reading starts once the page is up (see page_up):
        # reads hold Python's lock, and the first page of a 1,000-run server took twice as long
        # with a thousand headers read beside it.
        self._page_up = threading.Event()
        if not hold:
            self._page_up.set()
        self._warm_thread = None
        if warm:
            self._warm_thread = threading.Thread(target=self._warm_loop, name="scoreviz-warm", daemon=True)
            self._warm_thread.start()
            _LIVE.add(self)
            if not _STOP_REGISTERED:  # h5py is imported by now (scoreviz.run): ours runs before its own
                _STOP_REGISTERED.append(atexit.register(_stop_background_reading))
            # every run's header in the background (once the page is up): the page does not wait for them
            threading.Thread(target=self._list_all, name="scoreviz-list", daemon=True).start()

    # ---- ids and paths ---------------------------------------------------

    def run_ids(self) -> list[str]:
        """Ids of every run folder below the root, broken ones included, sorted."""
        below = str(self.root).rstrip(os.sep) + os.sep
        ids = []
        for path in _scoreviz().find_runs(self.roots):
            text = str(path)  # the common prefix cut off: os.path.relpath takes 30 us a run
            ids.append(text[len(below):].replace(os.sep, "/") if text.startswith(below) else
                       Path(os.path.relpath(text, self.root)).as_posix())
        return sorted(ids)

    def _inside(self, path: Path, strictly: bool = False) -> bool:
        """Whether ``path`` (resolved) lies in one of the run folders given."""
        return any(root in path.parents or (path == root and not strictly) for root in self.roots)

    def resolve(self, run_id) -> Path:
        """Folder of ``run_id``; raises RefusedRunId unless it lies below the root."""
        return Path(self._folder(run_id))

    def _folder(self, run_id) -> str:
        """resolve() as a string (a table of 1,000 runs asks thousands of times: pathlib's
        objects took most of the time)."""
        if not isinstance(run_id, str) or not run_id or "\x00" in run_id:
            raise RefusedRunId(f"run id {run_id!r} refused: not a run name")
        if os.path.isabs(run_id) or run_id.startswith(("/", "\\")):
            raise RefusedRunId(f"run id {run_id!r} refused: absolute paths are not allowed")
        path = self._plainly_below(run_id)
        if path is not None:
            return path
        path = (self.root / run_id).resolve()
        if not self._inside(path):
            raise RefusedRunId(f"run id {run_id!r} refused: it points outside the runs folder")
        return str(path)

    def _plainly_below(self, run_id: str) -> str | None:
        """``root/run_id`` when it lies in a run folder given with no link and no '..' on
        the way below the (resolved) root, checked with one lstat per part instead of a full
        resolve of every part from / (a page of 1,000 runs asks this thousands of times);
        None when that cannot be said so simply (the caller resolves)."""
        parts = [part for part in run_id.split("/") if part not in ("", ".")]  # as Path(run_id).parts
        if not parts or ".." in parts:
            return None
        path = str(self.root)  # strings, not pathlib: a quarter of the time
        for part in parts:
            path = os.path.join(path, part)
            try:
                if stat.S_ISLNK(os.lstat(path).st_mode):
                    return None
            except OSError:
                return None
        if not path.startswith(self._root_prefixes):
            return None
        return path

    def scores_file(self, run_id) -> Path:
        """The run's scores.h5; raises RefusedRunId unless it, too, lies below the root.

        The folder may be below the root while its scores.h5 is a symlink to a
        file elsewhere: that file is not one the server was given.
        """
        return Path(self._scores_text(run_id))

    def _scores_text(self, run_id) -> str:
        """scores_file() as a string (see _folder)."""
        path = os.path.join(self._folder(run_id), _scoreviz().store.FILE_NAME)
        try:
            if not stat.S_ISLNK(os.lstat(path).st_mode):
                return path  # a file (or nothing yet) in a folder inside the root: inside too
        except OSError:
            pass
        if not self._inside(Path(path).resolve(), strictly=True):
            raise RefusedRunId(f"run id {run_id!r} refused: its {os.path.basename(path)} is a link to a file "
                               "outside the runs folder")
        return path

    def stamp(self, run_id):
        """(size, mtime_ns) of the run's scores.h5, the cache's notion of a version."""
        return self._file_and_stamp(run_id)[1]

    def _file_and_stamp(self, run_id):
        """The run's scores.h5 (a string) and its stamp (None when it cannot be looked at)."""
        path = self._scores_text(run_id)
        try:
            st = os.stat(path)
        except OSError:
            return path, None
        return path, (st.st_size, st.st_mtime_ns)

    # ---- cache -----------------------------------------------------------

    def _cached(self, run_id: str, key: tuple, compute):
        stamp = self.stamp(run_id)
        full_key = (run_id,) + key
        with self._lock:
            hit = self._cache.get(full_key)
            if hit is not None and hit[0] == stamp:
                self._cache.move_to_end(full_key)
                value = hit[1]
                if isinstance(value, Exception):
                    raise value
                return value
        try:
            value = compute(self._open(run_id, header=key == ("light",)))
        except Exception as err:  # noqa: BLE001 - whatever breaks one run must not break the others
            # A broken file stays broken until it changes: remember the error.
            value = err if isinstance(err, ValueError) else _scoreviz().ScorevizError(
                f"{self.root / run_id}: cannot be read ({type(err).__name__}: {err})")
        self._store(full_key, stamp, value)
        if isinstance(value, Exception):
            raise value
        return value

    def _store(self, full_key: tuple, stamp, value) -> None:
        with self._lock:
            old = self._cache.pop(full_key, None)
            if old is not None:
                self._bytes -= old[2]
            size = _sizeof(value)
            self._cache[full_key] = (stamp, value, size)
            self._bytes += size
            while self._bytes > self.max_bytes and len(self._cache) > 1:
                _, (_, _, dropped) = self._cache.popitem(last=False)
                self._bytes -= dropped

    def _peek(self, run_id: str, key: tuple):
        """(cached value or None, whether it belongs to the file as it is now); never reads."""
        with self._lock:
            hit = self._cache.get((run_id,) + key)
        if hit is None:
            return None, False
        try:
            fresh = hit[0] == self.stamp(run_id)
        except RefusedRunId:
            return None, False
        return hit[1], fresh

    def _open(self, run_id, header: bool = False):
        """The run as scoreviz.Run, kept while its file is unchanged (opening reads its root
        attributes: one open of the file saved on every later read)."""
        self.scores_file(run_id)  # refuses a scores.h5 that links out of the root
        stamp = self.stamp(run_id)
        with self._lock:
            hit = self._runs.get(run_id)
            if hit is not None and hit[0] == stamp:
                self._runs.move_to_end(run_id)
                return hit[1]
        run = _scoreviz().open_run(self.resolve(run_id), header=header)
        with self._lock:
            self._runs[run_id] = (stamp, run)
            while len(self._runs) > OPEN_RUNS:
                self._runs.popitem(last=False)
        return run

    # ---- background reading -------------------------------------------------

    def warm(self, run_ids, urgent: bool = False) -> None:
        """Read ``run_ids`` into the cache in a background thread.

        ``urgent`` runs (the selected ones) are read before the rest, in two
        passes: first their score statistics (what the curves, the default
        view, draw: a run is no longer pending then), then everything else
        (histograms, gradients, health). A 100k-step run takes seconds to read
        in full, so it is read when it is selected or changes, not when a
        figure asks for it. The other runs (every listed run) get only their
        step counts for the run table (the step columns), so a thousand runs
        on disk cost a thousand small rows, not a thousand runs in memory. One
        thread does it: reads share h5py's lock anyway, and it leaves the
        other cores to the callbacks.
        """
        if self._warm_queue is None:
            return
        for run_id in run_ids:
            if self._stopping.is_set():
                return
            try:
                stamp = self.stamp(run_id)
            except RefusedRunId:
                continue
            for level in (_SCORES, _REST) if urgent else (_HEADER, _COUNT):
                if self._done[level].get(run_id) == stamp or (
                        level == _COUNT and self._done[_REST].get(run_id) == stamp):  # read in full: counted
                    continue
                if level == _HEADER and self.known_info(run_id) is not None:
                    self._done[_HEADER][run_id] = stamp  # from the header index: looked up once, not every refresh
                    continue
                if self._queued.get((run_id, level)) == stamp:
                    continue
                self._queued[(run_id, level)] = stamp
                self._warm_queue.put((level, next(self._order), run_id, level))

    def warm_header_first(self, run_id: str) -> None:
        """Read the run's header in the background before anything but the selected runs' scores
        (a run table shows it)."""
        if self._warm_queue is not None:
            self._warm_queue.put((_ON_SCREEN, next(self._order), run_id, _HEADER))

    def pending(self, run_ids) -> list[str]:
        """Those of ``run_ids`` whose scores were never read yet: figures leave them out until they are.

        A run read before but grown since is not pending: the callbacks read
        it again themselves, so a live run stays current.
        """
        if self._warm_queue is None:
            return []
        return [r for r in run_ids if r not in self._done[_SCORES]]

    def wait_read(self, run_ids, timeout: float) -> list[str]:
        """pending(run_ids) once the background has read them all, or after ``timeout`` seconds.

        A request may wait here: it does not hold the background reader back
        meanwhile (see _yield_to_requests), and it lets a held reader start
        (RunData(hold=True): a page asking for runs is up). With MAX_WAITING
        requests waiting already, it does not wait.
        """
        self.page_up()
        deadline = time.monotonic() + timeout
        with self._lock:
            if self._waiting >= MAX_WAITING:
                deadline = 0.0
            self._waiting += 1
        try:
            with self._read_progress:
                while (left := self.pending(run_ids)) and not self._stopping.is_set():
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._read_progress.wait(remaining)
        finally:
            with self._lock:
                self._waiting -= 1
        return left

    def warm_idle(self) -> bool:
        """True when the background reader has nothing left to do."""
        return self._warm_queue is None or self._warm_queue.unfinished_tasks == 0

    def request_started(self) -> None:
        """A request is being answered: the background reader waits (see _yield_to_requests)."""
        with self._lock:
            self._in_flight += 1

    def request_finished(self) -> None:
        with self._lock:
            self._in_flight = max(0, self._in_flight - 1)

    def _yield_to_requests(self) -> None:
        """Wait while requests are being answered, up to YIELD_S: reads hold Python's lock in
        h5py, so a background read would slow every page request by half on a shared CPU."""
        deadline = time.monotonic() + YIELD_S
        while self._in_flight - self._waiting > 0 and time.monotonic() < deadline:
            time.sleep(0.005)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop reading in the background: the read in progress ends, the queue is dropped."""
        self._stopping.set()
        self._page_up.set()  # a thread still holding back for the page goes on, to stop
        with self._read_progress:
            self._read_progress.notify_all()  # requests waiting in wait_read answer now
        if self._warm_thread is not None and self._warm_thread.is_alive():
            self._warm_queue.put((-1, -1, None, None))  # wakes the thread if it waits for work
            self._warm_thread.join(timeout)

    def page_up(self) -> None:
        """The page has been served: background reading may start (RunData(hold=True))."""
        self._page_up.set()

    def _wait_for_page(self) -> None:
        """With ``hold``, wait until the page is up, or at most HOLD_S (no browser came)."""
        self._page_up.wait(HOLD_S)

    def _list_all(self) -> None:
        self._wait_for_page()
        self.warm(self.run_ids())

    def _warm_loop(self):
        self._wait_for_page()
        while True:
            _, _, run_id, level = self._warm_queue.get()  # (priority, order, run, what to read)
            if self._stopping.is_set():
                return
            self._yield_to_requests()
            try:
                stamp = self.stamp(run_id)
                if self._done[level].get(run_id) != stamp:
                    if level == _SCORES:
                        for tag in self.light_info(run_id).get("tags", []):
                            self.scores(run_id, tag)
                    elif level == _HEADER:
                        self.light_info(run_id)
                        self._unsaved += 1
                        if self._unsaved >= SAVE_EVERY or self._warm_queue.empty():
                            self.save_headers()
                    elif level == _REST:
                        self._read_everything(run_id)
                    else:
                        self.info(run_id)
                    self._done[level][run_id] = stamp
            except Exception:  # noqa: BLE001 - a broken run shows its error when asked for
                self._done[level].setdefault(run_id, None)
            finally:
                self._warm_queue.task_done()
                with self._read_progress:
                    self._read_progress.notify_all()

    def _read_everything(self, run_id):
        """Every read of a selected run, waiting for the requests in flight before each (a long
        run's histograms and gradients take a second to read: a figure request must not wait)."""
        info = self.info(run_id)
        if info.get("error"):
            return
        tags = info.get("tags", [])
        reads = [lambda tag=tag: self.scores(run_id, tag) for tag in tags]
        reads += [lambda tag=tag, kind=kind: self.histograms(run_id, tag, kind) for tag in tags for kind in ("pos", "neg")]
        reads += [lambda: self.gradients(run_id), lambda: self.times(run_id)]
        reads += [lambda tag=tag: self.health(run_id, tag) for tag in tags]
        for read in reads:
            if self._stopping.is_set():
                return
            self._yield_to_requests()
            read()

    # ---- what the callbacks read -------------------------------------------

    def info(self, run_id: str) -> dict:
        """Run table row: name, steps, last update, config, tags; or an error."""
        try:
            row = dict(self._cached(run_id, ("info",), self._info))
        except Exception as err:  # noqa: BLE001 - any broken run becomes an error row
            return {"id": run_id, "name": run_id, "error": str(err) or type(err).__name__}
        row["id"] = run_id
        return row

    def table_row(self, run_id: str) -> dict | None:
        """Run table row without waiting for a read; None while its header is being read.

        Counting a run's steps means reading its scores, and even its header
        (config, tags) takes milliseconds to read, tens on a network file
        system: a page of 50 rows would wait for them. So a run whose header is
        not read yet is None (the table shows its name), its header is read in
        the background before every other header, and the table asks again soon; a
        run whose file changed since (a live run) keeps the header read before
        until then; a run whose steps are not counted yet shows the count of its
        last read (or "reading") until the background has counted them. Without
        background reading, reads it now.
        """
        full, fresh = self._peek(run_id, ("info",))
        if fresh or self._warm_queue is None:
            return self.info(run_id)
        row = self.known_info(run_id)
        if row is None:
            try:
                self.scores_file(run_id)  # a refused run is one at once: nothing to read
            except RefusedRunId as err:
                return {"id": run_id, "name": run_id, "error": str(err)}
            self.warm_header_first(run_id)
            earlier, _ = self._peek(run_id, ("light",))  # a live run: its header before it grew
            if not isinstance(earlier, dict):
                return None
            row = dict(earlier, id=run_id)
        if row.get("error"):
            return row
        self.warm([run_id])
        row["steps"] = full["steps"] if isinstance(full, dict) else "reading"
        return row

    def light_info(self, run_id: str) -> dict:
        """Name, config, tags and last update of a run, from its header (the header index, else
        one open of the file); or an error."""
        try:
            known = self.known_info(run_id)
            if known is not None:
                return known
            row = dict(self._cached(run_id, ("light",), self._light_info))
        except Exception as err:  # noqa: BLE001
            return {"id": run_id, "name": run_id, "error": str(err) or type(err).__name__}
        if self._index is not None:
            with self._lock:
                hit = self._cache.get((run_id, "light"))
            if hit is not None and not isinstance(hit[1], Exception):
                self._index.put(self.scores_file(run_id), hit[0], hit[1])
        row["id"] = run_id
        return row

    def listed_infos(self, run_ids) -> dict:
        """{run id: light_info} for the page and the run table. With background reading, only
        the runs whose header is read already: the others are queued for the background and left
        out until then (a page of 1,000 runs does not wait for 1,000 headers). Without it, every
        header is read now."""
        if self._warm_queue is None:
            return {r: self.light_info(r) for r in run_ids}
        infos = {}
        for run_id in run_ids:
            info = self.known_info(run_id)
            if info is not None:
                infos[run_id] = info
        return infos

    def mtime(self, run_id: str) -> float:
        """When the run's file was last written (seconds; 0 when it is gone): the run list's
        "most recent" without reading the run."""
        stamp = self.stamp(run_id)
        return stamp[1] / 1e9 if stamp else 0.0

    def known_info(self, run_id: str) -> dict | None:
        """light_info if the header was read already (this server's cache or the header index)
        and the file is unchanged since, else None; never opens the file (one stat)."""
        try:
            file, stamp = self._file_and_stamp(run_id)
        except RefusedRunId:
            return None
        if stamp is None:
            return None
        with self._lock:
            hit = self._cache.get((run_id, "light"))
        if hit is not None and hit[0] == stamp:
            if isinstance(hit[1], Exception):
                return {"id": run_id, "name": run_id, "error": str(hit[1]) or type(hit[1]).__name__}
            return dict(hit[1], id=run_id)
        saved = self._index.get(file, stamp) if self._index is not None else None
        if saved is None:
            return None
        self._store((run_id, "light"), stamp, saved)
        return dict(saved, id=run_id)

    def save_headers(self, run_ids=None) -> None:
        """Write the header index (app.headers) if it changed; with ``run_ids`` (every run
        listed), forget the runs no longer there first."""
        self._unsaved = 0
        if self._index is None or not self._index.dirty:
            return
        if run_ids is not None:
            files = []
            for run_id in run_ids:
                try:
                    files.append(self.scores_file(run_id))
                except RefusedRunId:
                    continue
            self._index.forget_missing(files)
        self._index.save()

    def scores(self, run_id: str, tag: str) -> pd.DataFrame:
        """run.scores(tag) as float32 (empty when the run has no such tag)."""
        def read(run):
            tags = self.light_info(run_id).get("tags")  # from the cached header: no extra open
            if tag not in (tags if tags is not None else run.tags):
                return pd.DataFrame()
            return run.scores(tag).astype(np.float32)
        return self._cached(run_id, ("scores", tag), read)

    def scalars(self, run_id: str) -> pd.DataFrame:
        """run.scalars() as float32."""
        return self._cached(run_id, ("scalars",), lambda run: run.scalars().astype(np.float32))

    def times(self, run_id: str) -> pd.Series:
        """run.times(): the wall time of each step (NaN where the file has none)."""
        return self._cached(run_id, ("times",), lambda run: run.times())

    def histograms(self, run_id: str, tag: str, kind: str) -> dict:
        """Bounded views of run.histograms(tag, kind).

        ``{"heat": (steps, edges, densities)}`` averaged into at most
        ``figures.MAX_ROWS`` step buckets for the heatmap, and ``{"snap":
        (steps, edges, counts)}``: at most ``SNAPSHOTS`` exact recorded rows
        for the step slider.
        """
        def read(run):
            if tag not in run.tags:
                return None
            steps, edges, counts = run.histograms(tag, kind)
            heat_steps, dens = figures.bucket_rows(steps, figures.to_density(counts),
                                                   figures.MAX_ROWS, how="mean")
            pick = _evenly(len(steps), SNAPSHOTS)
            return {"heat": (heat_steps, edges, dens.astype(np.float32)),
                    "snap": (steps[pick], edges, counts[pick])}
        return self._cached(run_id, ("hist", tag, kind), read)

    def gradients(self, run_id: str) -> dict:
        """Bucketed gradient norms ``(steps, layers, norms)`` and the total norm."""
        def read(run):
            grads = run.gradients()
            steps, layers, norms = figures.reduce_gradients(grads, figures.MAX_ROWS)
            return {"steps": steps, "layers": layers, "norms": norms.astype(np.float32),
                    "total": run.total_gradient_norm().astype(np.float32)}
        return self._cached(run_id, ("gradients",), read)


    def statistic(self, run_id: str, tag: str, column: str, max_points: int = figures.MAX_POINTS) -> pd.Series:
        """One statistic of one run, at most ``max_points`` steps read as a strided hyperslab
        (scoreviz.store.select): a score column of ``tag``, else a scalar of that name; an
        empty Series when the run has neither. For grouped curves, where a spike of one seed
        matters less than the group's mean; a single run's curve reads full resolution.

        All score columns of a tag (or all scalars) are read in one go and cached as one
        entry, so the statistics of a view cost one read per run."""
        empty = pd.Series(dtype=np.float32)
        if column in _scoreviz().store.STATS_COLUMNS:
            if tag not in self.light_info(run_id).get("tags", []):
                return empty
            frame = self._cached(run_id, ("thin-scores", tag, max_points), lambda run: run.scores(
                tag, max_points=max_points).astype(np.float32))
        else:
            frame = self._cached(run_id, ("thin-scalars", max_points), lambda run: run.scalars(
                max_points=max_points).astype(np.float32))
        return frame[column] if column in frame else empty

    def grouped_curves(self, run_ids, tag: str, column: str, by=(), band: str = "std",
                       max_points: int = figures.MAX_POINTS) -> list:
        """scoreviz.groups.group_curves of ``run_ids`` grouped by config keys ``by``: what a
        grouped curve view draws (a list of GroupCurve: mean, lower, upper, count per step).
        Broken runs and runs without the statistic are left out of their group's curve."""
        from scoreviz import groups

        try:
            key = (tuple((r, self.stamp(r)) for r in run_ids), tag, column, tuple(by), band, max_points)
        except RefusedRunId:
            key = None
        with self._lock:
            if key in self._grouped:  # the same runs, unchanged: the groups' alignment is not redone
                self._grouped.move_to_end(key)
                return self._grouped[key]
        configs, curves = {}, {}
        for run_id in run_ids:
            info = self.light_info(run_id)
            if info.get("error"):
                continue
            configs[run_id] = info.get("config", {})
            try:
                curves[run_id] = self.statistic(run_id, tag, column, max_points)
            except Exception:  # noqa: BLE001 - a run that cannot be read has no curve
                curves[run_id] = None
        result = groups.group_curves(curves, groups.group_runs(configs, by), band=band, max_points=max_points)
        if key is not None:
            with self._lock:
                self._grouped[key] = result
                while len(self._grouped) > GROUPED_KEPT:
                    self._grouped.popitem(last=False)
        return result

    def health(self, run_id: str, tag: str) -> list:
        """health.run_health of one run and tag (list of health.Flag)."""
        return self.memo(run_id, ("health", tag), lambda: health.run_health(
            self.scores(run_id, tag), self.scalars(run_id), self.gradients(run_id)["total"]))

    def memo(self, run_id: str, key: tuple, compute):
        """``compute()`` cached until the run's file changes (for derived results)."""
        return self._cached(run_id, ("memo",) + key, lambda _run: compute())

    def _light_info(self, run) -> dict:
        header = run.header  # read in the same open as the config (see _open(header=True))
        mtime = run.file.stat().st_mtime
        return {"name": run.name, "config": dict(run.config or {}), "tags": list(header["tags"]),
                "embedding_tags": list(header["embedding_tags"]), "scalars": list(header["scalars"]), "mtime": mtime,
                "last_step": header["last_step"], "rows": header["rows"],
                "last_update": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(mtime))}

    def _info(self, run) -> dict:
        # run.steps() reads only the step columns: the run table never waits for a whole run
        every = run.steps()
        mtime = run.file.stat().st_mtime
        return {
            "name": run.name, "steps": int(len(every)),
            "last_step": int(every[-1]) if len(every) else None,
            "last_update": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(mtime)),
            "config": dict(run.config or {}), "tags": list(run.tags),
        }


def _evenly(n: int, k: int) -> np.ndarray:
    """k indices spread evenly over range(n), first and last included."""
    if n <= k:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, k).round().astype(int))


def _sizeof(value) -> int:
    if isinstance(value, pd.DataFrame):  # memory_usage(deep=False), without its 3 ms per frame
        return int(sum(getattr(dtype, "itemsize", 8) for dtype in value.dtypes) * len(value) + value.index.nbytes)
    if isinstance(value, (pd.Series, np.ndarray)):
        return int(value.nbytes)
    if isinstance(value, dict):
        return sum(_sizeof(v) for v in value.values()) + 64
    if isinstance(value, (tuple, list)):
        return sum(_sizeof(v) for v in value) + 64
    return 256
