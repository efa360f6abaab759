"""The background reader: one thread that reads runs into the cache before a figure asks.

Reading is lazy and bounded, so the server's memory does not grow with the number of runs on disk:
listing runs (the page, the run table, the picker) reads each run's header only; in the
background, every listed run gets its header and then its step counts (the step columns only),
and only the *selected* runs are read in full, first their score statistics (what the default
view draws: a run is no longer pending then), then everything the views declare they draw
(app.views: each view's ``warm``). One thread does it: reads share h5py's lock anyway, and it
leaves the other cores to the requests, which it waits for (a read holds Python's lock in h5py).
"""

from __future__ import annotations

import atexit
import itertools
import queue
import threading
import time
import weakref
from typing import Callable

from app.runs.ids import RefusedRunId

# Background reading, most urgent first (each level's queue priority): the selected runs'
# headers and scores, every listed run's header (the run table and filter), the rest of the
# selected runs, the step counts of every listed run.
SCORES, HEADER, REST, COUNT = 0, 1, 2, 3
# The queue priority of the header of a row the run table shows: after the selected runs'
# scores (what the researcher asked for), before every other header.
ON_SCREEN = 0.5
# The background reader waits at most this long for requests to finish before its next read.
YIELD_S = 2.0
# With hold=True, background reading starts at most this long after the server did,
# when no page was served by then.
HOLD_S = 5.0
# Requests that may wait in wait_read at once; more answer at once (each holds one of the
# server's threads while it waits: a page has one such request at a time).
MAX_WAITING = 2

# Every reader that reads in the background. At interpreter exit a daemon thread frozen in the
# middle of an h5py read keeps h5py's lock, and the exit hangs tearing down h5py objects (seen:
# create_app on 1,000 runs in a script that then ended); so the reading stops while Python is whole,
# and before h5py's own exit handler: atexit runs the last registered first, so ours is registered
# once h5py is imported (the first Background, after scoreviz.run), not when this module is.
_LIVE = weakref.WeakSet()
_STOP_REGISTERED = []


def _stop_all():
    for reader in list(_LIVE):
        reader.stop()


_NEVER = object()  # not read (nor queued) yet: unlike None, the stamp of a file that cannot be looked at


class Background:
    """Reads runs at the levels above in one daemon thread.

    ``read(run_id, level)`` does the reading of one level, ``stamp(run_id)`` says which
    version of the file is there (RefusedRunId for a refused id), ``header_known(run_id)``
    whether a run's header is known already (from the header index), and ``list_runs()`` lists
    every run, whose headers are read once the page is up. With ``hold`` (a server), reading
    starts once the page is up (see page_up): the first page of a 1,000-run server took twice
    as long with a thousand headers read beside it.
    """

    def __init__(self, read: Callable, stamp: Callable, header_known: Callable, list_runs: Callable,
                 hold: bool = False):
        self._read, self._stamp, self._header_known, self._list_runs = read, stamp, header_known, list_runs
        self.queue = queue.PriorityQueue()
        self._order = itertools.count()  # FIFO within one priority
        self._queued: dict = {}  # (run id, level) -> stamp last queued
        self.done: dict = {level: {} for level in (SCORES, HEADER, REST, COUNT)}  # {run id: stamp read}
        self._lock = threading.Lock()
        self._in_flight = 0  # requests being answered (app.create_app counts them)
        self._waiting = 0  # of which: waiting for background reads (see wait_read)
        self._progress = threading.Condition()  # notified after each background read
        self._stopping = threading.Event()
        self._page_up = threading.Event()
        if not hold:
            self._page_up.set()
        self._thread = threading.Thread(target=self.read_forever, name="scoreviz-warm", daemon=True)
        self._thread.start()
        _LIVE.add(self)
        if not _STOP_REGISTERED:  # h5py is imported by now (scoreviz.run): ours runs before its own
            _STOP_REGISTERED.append(atexit.register(_stop_all))
        # every run's header in the background (once the page is up): the page does not wait for them
        threading.Thread(target=self.list_all, name="scoreviz-list", daemon=True).start()

    def warm(self, run_ids, urgent: bool = False) -> None:
        """Read ``run_ids`` in the background: ``urgent`` runs (the selected ones) in full, before
        the rest (their scores, then the rest), the others their header and step count. A run read
        at a level for its file as it is now is not read again."""
        for run_id in run_ids:
            if self._stopping.is_set():
                return
            try:
                stamp = self._stamp(run_id)
            except RefusedRunId:
                continue
            for level in (SCORES, REST) if urgent else (HEADER, COUNT):
                if self.done[level].get(run_id, _NEVER) == stamp or (
                        level == COUNT and self.done[REST].get(run_id, _NEVER) == stamp):  # read in full: counted
                    continue
                if level == HEADER and self._header_known(run_id):
                    self.done[HEADER][run_id] = stamp  # from the header index: looked up once, not every refresh
                    continue
                if self._queued.get((run_id, level), _NEVER) == stamp:
                    continue
                self._queued[(run_id, level)] = stamp
                self.queue.put((level, next(self._order), run_id, level))

    def header_first(self, run_id: str) -> None:
        """Read the run's header before anything but the selected runs' scores (a run table shows it)."""
        self.queue.put((ON_SCREEN, next(self._order), run_id, HEADER))

    def pending(self, run_ids) -> list[str]:
        """Those of ``run_ids`` whose scores were never read yet: figures leave them out until they are.

        A run read before but grown since is not pending: the requests read it again
        themselves, so a live run stays current.
        """
        return [r for r in run_ids if r not in self.done[SCORES]]

    def wait_read(self, run_ids, timeout: float) -> list[str]:
        """pending(run_ids) once the background has read them all, or after ``timeout`` seconds.

        A request may wait here: it does not hold the background reader back
        meanwhile (see _yield_to_requests), and it lets a held reader start
        (hold=True: a page asking for runs is up). With MAX_WAITING requests
        waiting already, it does not wait.
        """
        self.page_up()
        deadline = time.monotonic() + timeout
        with self._lock:
            if self._waiting >= MAX_WAITING:
                deadline = 0.0
            self._waiting += 1
        try:
            with self._progress:
                while (left := self.pending(run_ids)) and not self._stopping.is_set():
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._progress.wait(remaining)
        finally:
            with self._lock:
                self._waiting -= 1
        return left

    def idle(self) -> bool:
        """True when the background reader has nothing left to do."""
        return self.queue.unfinished_tasks == 0

    def request_started(self) -> None:
        """A request is being answered: the background reader waits (see _yield_to_requests)."""
        with self._lock:
            self._in_flight += 1

    def request_finished(self) -> None:
        with self._lock:
            self._in_flight = max(0, self._in_flight - 1)

    def page_up(self) -> None:
        """The page has been served: background reading may start (hold=True)."""
        self._page_up.set()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop reading in the background: the read in progress ends, the queue is dropped."""
        self._stopping.set()
        self._page_up.set()  # a thread still holding back for the page goes on, to stop
        with self._progress:
            self._progress.notify_all()  # requests waiting in wait_read answer now
        if self._thread.is_alive():
            self.queue.put((-1, -1, None, None))  # wakes the thread if it waits for work
            self._thread.join(timeout)

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def yield_to_requests(self) -> None:
        """Wait while requests are being answered, up to YIELD_S: reads hold Python's lock in
        h5py, so a background read would slow every page request by half on a shared CPU."""
        deadline = time.monotonic() + YIELD_S
        while self._in_flight - self._waiting > 0 and time.monotonic() < deadline:
            time.sleep(0.005)

    def list_all(self) -> None:
        """Queue every run's header and step count, once the page is up."""
        self._page_up.wait(HOLD_S)
        self.warm(self._list_runs())

    def read_forever(self) -> None:
        """The thread's work: the queued reads, most urgent first, until stop()."""
        self._page_up.wait(HOLD_S)
        while True:
            _, _, run_id, level = self.queue.get()  # (priority, order, run, what to read)
            if self._stopping.is_set():
                return
            self.yield_to_requests()
            try:
                stamp = self._stamp(run_id)
                # a file that cannot be looked at has the stamp None: it is read once all the same,
                # so its error shows (compared with .get()'s None, it stayed "being read" for ever)
                if self.done[level].get(run_id, _NEVER) != stamp:
                    self._read(run_id, level)
                    self.done[level][run_id] = stamp
            except Exception:  # noqa: BLE001 - a broken run shows its error when asked for
                self.done[level].setdefault(run_id, None)
            finally:
                self.queue.task_done()
                with self._progress:
                    self._progress.notify_all()
