"""RunData: the server's data access, its four jobs put together: run ids and confinement
(app.runs.ids), the cache (app.runs.cache), the background reader (app.runs.background) and
the typed reads (app.runs.reads), plus what the run list needs from each run's header.

Headers: listing runs (the page, the run table, the picker) reads each run's header only (root
attributes, name lists, row counts, the last step: one open, a few hundred bytes, whatever the
run's length), kept in the cache and in a header index on disk (app.runs.headers) so a restarted
server lists a sweep without opening it.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict

from app.runs import background as bg
from app.runs.cache import CACHE_BYTES, Cache
from app.runs.headers import HeaderIndex
from app.runs.ids import RefusedRunId, RunIds
from app.runs.reads import Reads

# Opened runs kept (a Run holds its config and attributes only, a few KB).
OPEN_RUNS = 2048
# Header reads between two saves of the header index (app.runs.headers).
SAVE_EVERY = 200


def _scoreviz():
    import scoreviz

    return scoreviz


def scores_of_every_tag(data, run_id) -> list:
    """The reads warmed for a selected run when no view says what it draws: its scores."""
    return [lambda tag=tag: data.scores(run_id, tag) for tag in data.light_info(run_id).get("tags", [])]


class RunData(Reads):
    """All runs below ``root`` (a folder, a glob, or a list of them), their reads cached per
    (file, size, mtime).

    ``warm`` reads runs in the background (app.runs.background), ``hold`` holds it back until the
    page is up, ``index`` keeps headers in the header index, ``warm_reads(data, run_id)`` lists
    the reads (callables) of a selected run to do before a figure asks (app.views gives every
    view's).
    """

    def __init__(self, root, max_bytes: int = CACHE_BYTES, warm: bool = True, index: bool = True,
                 hold: bool = False, warm_reads=scores_of_every_tag):
        self.ids = RunIds(root)
        self.root, self.roots = self.ids.root, self.ids.roots
        self.cache = Cache(max_bytes)
        self.index = HeaderIndex(self.roots) if index else None
        self.warm_reads = warm_reads
        self._lock = threading.Lock()
        self._runs: OrderedDict = OrderedDict()  # run id -> (stamp, scoreviz.Run), see open()
        self._unsaved = 0
        self._grouped: OrderedDict = OrderedDict()  # grouped_curves results, by runs and their stamps
        self._grouped_lock = threading.Lock()
        self.background = None
        if warm:
            _scoreviz()  # h5py imported first: the background's exit handler must run before h5py's
            self.background = bg.Background(self.read_level, self.stamp, lambda r: self.known_info(r) is not None,
                                            self.run_ids, hold=hold)

    # ---- ids (app.runs.ids) ------------------------------------------------

    def run_ids(self) -> list[str]:
        """Ids of every run folder below the root, broken ones included, sorted."""
        return self.ids.run_ids()

    def resolve(self, run_id):
        """Folder of ``run_id``; RefusedRunId unless it lies below the root."""
        return self.ids.resolve(run_id)

    def scores_file(self, run_id):
        """The run's scores.h5; RefusedRunId unless it, too, lies below the root."""
        return self.ids.scores_file(run_id)

    def stamp(self, run_id):
        """(size, mtime_ns) of the run's scores.h5, the cache's notion of a version."""
        return self.ids.stamp(run_id)

    # ---- background (app.runs.background); without it, nothing is pending ---------

    def warm(self, run_ids, urgent: bool = False) -> None:
        """Read ``run_ids`` in the background (``urgent``: the selected ones, in full)."""
        if self.background is not None:
            self.background.warm(run_ids, urgent)

    def pending(self, run_ids) -> list[str]:
        """Those of ``run_ids`` never read yet: figures leave them out until they are."""
        return [] if self.background is None else self.background.pending(run_ids)

    def wait_read(self, run_ids, timeout: float) -> list[str]:
        """pending(run_ids) once they are read, or after ``timeout`` seconds."""
        return [] if self.background is None else self.background.wait_read(run_ids, timeout)

    def warm_idle(self) -> bool:
        """True when the background reader has nothing left to do."""
        return self.background is None or self.background.idle()

    def stop(self) -> None:
        """Stop reading in the background."""
        if self.background is not None:
            self.background.stop()

    def read_level(self, run_id: str, level) -> None:
        """What the background reads of one run at one level (app.runs.background)."""
        if level == bg.SCORES:
            for tag in self.light_info(run_id).get("tags", []):
                self.scores(run_id, tag)
        elif level == bg.HEADER:
            self.light_info(run_id)
            self._unsaved += 1
            if self._unsaved >= SAVE_EVERY or self.background.queue.empty():
                self.save_headers()
        elif level == bg.REST:
            if self.info(run_id).get("error"):
                return
            # every read of a selected run, waiting for the requests in flight before each (a long
            # run's histograms and gradients take a second to read: a figure request must not wait)
            for read in [lambda: self.times(run_id)] + list(self.warm_reads(self, run_id)):
                if self.background.stopping:
                    return
                self.background.yield_to_requests()
                self.safe(read)
        else:
            self.info(run_id)

    # ---- the cache (app.runs.cache) -------------------------------------------

    def cached(self, run_id: str, key: tuple, compute):
        """``compute(run)`` for the run as its file is now, cached until the file changes; a
        failure is kept too (a ScorevizError naming the run) and raised again."""
        stamp = self.stamp(run_id)
        full_key = (run_id,) + key
        hit, value = self.cache.get(full_key, stamp)
        if not hit:
            try:
                value = compute(self.open(run_id, header=key == ("light",)))
            except Exception as err:  # noqa: BLE001 - whatever breaks one run must not break the others
                # A broken file stays broken until it changes: remember the error.
                value = err if isinstance(err, ValueError) else _scoreviz().ScorevizError(
                    f"{self.root / run_id}: cannot be read ({type(err).__name__}: {err})")
            self.cache.put(full_key, stamp, value)
        if isinstance(value, Exception):
            raise value
        return value

    def open(self, run_id, header: bool = False):
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

    # ---- headers: what the run list needs --------------------------------------

    def info(self, run_id: str) -> dict:
        """Run table row: name, steps, last update, config, tags; or an error."""
        try:
            row = dict(self.cached(run_id, ("info",), _info))
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
        if fresh or self.background is None:
            return self.info(run_id)
        row = self.known_info(run_id)
        if row is None:
            try:
                self.scores_file(run_id)  # a refused run is one at once: nothing to read
            except RefusedRunId as err:
                return {"id": run_id, "name": run_id, "error": str(err)}
            self.background.header_first(run_id)
            earlier, _ = self._peek(run_id, ("light",))  # a live run: its header before it grew
            if not isinstance(earlier, dict):
                return None
            row = dict(earlier, id=run_id)
        if row.get("error"):
            return row
        self.warm([run_id])
        row["steps"] = full["steps"] if isinstance(full, dict) else "reading"
        return row

    def _peek(self, run_id: str, key: tuple):
        """(cached value or None, whether it belongs to the file as it is now); never reads."""
        hit = self.cache.peek((run_id,) + key)
        if hit is None:
            return None, False
        try:
            fresh = hit[0] == self.stamp(run_id)
        except RefusedRunId:
            return None, False
        return hit[1], fresh

    def light_info(self, run_id: str) -> dict:
        """Name, config, tags, embedding tags, scalars and last update of a run, from its header
        (the header index, else one open of the file); or an error."""
        try:
            known = self.known_info(run_id)
            if known is not None:
                return known
            row = dict(self.cached(run_id, ("light",), _light_info))
        except Exception as err:  # noqa: BLE001
            return {"id": run_id, "name": run_id, "error": str(err) or type(err).__name__}
        if self.index is not None:
            hit = self.cache.peek((run_id, "light"))
            if hit is not None and not isinstance(hit[1], Exception):
                self.index.put(self.scores_file(run_id), hit[0], hit[1])
        row["id"] = run_id
        return row

    def listed_infos(self, run_ids) -> dict:
        """{run id: light_info} for the page and the run table. With background reading, only
        the runs whose header is read already: the others are queued for the background and left
        out until then (a page of 1,000 runs does not wait for 1,000 headers). Without it, every
        header is read now."""
        if self.background is None:
            return {r: self.light_info(r) for r in run_ids}
        infos = {}
        for run_id in run_ids:
            info = self.known_info(run_id)
            if info is not None:
                infos[run_id] = info
        return infos

    def mtime(self, run_id: str) -> float:
        """When the run's file was last written (seconds; 0 when it is gone)."""
        return self.ids.mtime(run_id)

    def known_info(self, run_id: str) -> dict | None:
        """light_info if the header was read already (this server's cache or the header index)
        and the file is unchanged since, else None; never opens the file (one stat)."""
        try:
            file, stamp = self.ids.file_and_stamp(run_id)
        except RefusedRunId:
            return None
        if stamp is None:
            return None
        hit, value = self.cache.get((run_id, "light"), stamp)
        if hit:
            if isinstance(value, Exception):
                return {"id": run_id, "name": run_id, "error": str(value) or type(value).__name__}
            return dict(value, id=run_id)
        saved = self.index.get(file, stamp) if self.index is not None else None
        if saved is None:
            return None
        self.cache.put((run_id, "light"), stamp, saved)
        return dict(saved, id=run_id)

    def save_headers(self, run_ids=None) -> None:
        """Write the header index if it changed; with ``run_ids`` (every run listed), forget the
        runs no longer there first."""
        self._unsaved = 0
        if self.index is None or not self.index.dirty:
            return
        if run_ids is not None:
            files = []
            for run_id in run_ids:
                try:
                    files.append(self.scores_file(run_id))
                except RefusedRunId:
                    continue
            self.index.forget_missing(files)
        self.index.save()


def _light_info(run) -> dict:
    header = run.header  # read in the same open as the config (see open(header=True))
    mtime = run.file.stat().st_mtime
    return {"name": run.name, "config": dict(run.config or {}), "tags": list(header["tags"]),
            "embedding_tags": list(header["embedding_tags"]), "scalars": list(header["scalars"]), "mtime": mtime,
            "last_step": header["last_step"], "rows": header["rows"],
            "last_update": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(mtime))}


def _info(run) -> dict:
    # run.steps() reads only the step columns: the run table never waits for a whole run
    every = run.steps()
    mtime = run.file.stat().st_mtime
    return {
        "name": run.name, "steps": int(len(every)),
        "last_step": int(every[-1]) if len(every) else None,
        "last_update": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(mtime)),
        "config": dict(run.config or {}), "tags": list(run.tags),
    }
