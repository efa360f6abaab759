"""Recording to a URL: the run is written locally as always, and published from a thread.

``RemoteWriter`` is what a Recorder writes through when its run is a URL. The run's
file lives in the cache folder (objects.local_folder("write", url)), written by a
StoreWriter exactly as a local run; a publishing thread, never the training loop's,
wakes every ``upload_secs`` and publishes the rows committed since the last time as
one new part (an immutable HDF5 file, store/manifest.py) and then the manifest's next
version. Nothing published is uploaded again; closing compacts a run of several
parts into one part, so a finished run is two objects.

One writer per run: Recorder() creates the next manifest version naming itself
(create-if-absent), which only one writer can do. A run whose manifest names a
writer that is still publishing is refused; a writer that is gone is taken over
when it is known to be gone (this machine's lock on its local file is free, or it
was an earlier try of the same SLURM job), or after it has published nothing for
``lease_secs`` (10 upload intervals, at least 10 minutes). A writer that was taken
over (it was silent too long) learns it at its next publish, stops publishing and
keeps its rows in its local file; it never overwrites anything.

When the store cannot be reached, the thread warns once, keeps the rows locally,
retries with a back-off (1 s doubling up to the interval) and publishes everything
it missed in one part when the store answers again. The training loop never waits
for it. A writer killed with SIGKILL loses at most what it had not published; a new
Recorder on the same URL (on the same machine) publishes what its local file holds.
"""

from __future__ import annotations

import datetime
import json
import os
import secrets
import socket
import threading
import time
import warnings
from pathlib import Path

from scoreviz.errors import ScorevizError
from scoreviz.store.lock import RunLock
from scoreviz.store.manifest import PARTS, Manifest, is_part, manifest_key, manifest_versions, part_key
from scoreviz.store.objects import ObjectStore, local_folder, shown
from scoreviz.store.reader import StoreReader
from scoreviz.store.remote import RemoteRun, apply_parts
from scoreviz.store.schema import FILE_NAME, STREAMS
from scoreviz.store.writer import StoreWriter, write_packed

DEFAULT_UPLOAD_SECS = 60.0
MIN_UPLOAD_SECS, MAX_UPLOAD_SECS = 1.0, 3600.0
HEARTBEAT_INTERVALS = 5  # an idle writer still writes its manifest every 5 intervals: it is alive
LEASE_INTERVALS, MIN_LEASE_SECS = 10, 600.0
CLOSE_WAIT_S = 60.0  # how long close() keeps trying to publish the last rows to a store that does not answer
_STAGING = "staging.json"


class Lost(ScorevizError):
    """Another writer took the run over: this one publishes no more."""


class RemoteWriter:
    """StoreWriter's interface (append_*, flush, close, committed_rows) for a run at a URL."""

    def __init__(self, url: str, bins: int, config: dict, env: dict, storage_options=None,
                 upload_secs: float = DEFAULT_UPLOAD_SECS):
        self.url = shown(url)
        self.interval = float(upload_secs)
        self.store = ObjectStore(url, storage_options)
        if not self.store.atomic_create:
            raise ScorevizError(f"{self.url}: recording to {self.store.scheme}:// is not supported: one writer per "
                                "run needs a store that creates objects only where none is, atomically (S3, GCS); "
                                "record to a local path or an s3:// or gs:// URL")
        self.remote = RemoteRun(url, store=self.store)
        self.folder = local_folder("write", url)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ScorevizError(f"{self.folder}: cannot create the local folder of {self.url} ({err.strerror})") from None
        self.path = self.folder / FILE_NAME
        self.stats = {"parts": 0, "manifests": 0, "bytes": 0, "failures": 0}  # what was uploaded (benchmarks)
        lock = RunLock(self.path).acquire()  # a second writer on this machine is refused here
        self.local = None
        try:
            self._start(bins, config, env, lock)
        except BaseException:
            if self.local is not None:
                _quietly(self.local.close)
            else:
                lock.release()
            raise
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="scoreviz-publisher", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------ opening

    def _start(self, bins, config, env, lock):
        staging = self._staging_id()
        self.writer = {"id": secrets.token_hex(4), "host": socket.gethostname(), "pid": os.getpid(),
                       "staging": staging, "job": _slurm_job(),
                       "since": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
        listing = self.store.list("")  # one request; bad credentials or a missing bucket fail here
        versions = manifest_versions(listing)
        previous = self.remote.manifest(versions[-1]) if versions else None
        if previous is not None:
            if previous.bins != bins:
                raise ScorevizError(f"{self.url}: recorded with {previous.bins} histogram bins, cannot append with "
                                    f"bins={bins}")
            if previous.state == "writing" and not self._may_take_over(previous):
                raise ScorevizError(f"{self.url}: already being recorded by {_holder(previous)}; scoreviz allows "
                                    "one writer per run, and that writer's rows would be lost. Record to another URL, "
                                    "or stop the other writer first (a writer that publishes nothing for "
                                    f"{_lease(previous):.0f} s is taken over).")
        # the claim: the next manifest version, naming this writer; only one writer can create it
        self.manifest = Manifest(
            run=previous.run if previous else secrets.token_hex(8), writer=self.writer, state="writing",
            time=time.time(), interval=self.interval, bins=bins,
            rows=dict(previous.rows) if previous else {s: 0 for s in STREAMS},
            parts=[list(p) for p in previous.parts] if previous else [],
            header=dict(previous.header) if previous else {"config": config, "env": env},
            published=previous.published_at() if previous else time.time(),
            version=(previous.version if previous else 0) + 1)
        if not self.store.create(manifest_key(self.manifest.version), self.manifest.to_bytes()):
            raise ScorevizError(f"{self.url}: another writer claimed the run at the same moment; scoreviz allows one "
                                "writer per run")
        self.stats["manifests"] += 1
        self._obsolete = [manifest_key(v) for v in versions]
        # the local file: the continuation of what was published from here, else a copy of the store's
        if previous is not None and self.path.exists() and previous.writer.get("staging") != staging:
            self._set_aside("the run was published from elsewhere since it was written here")
        self.local = StoreWriter(self.path, bins, config, env, lock=lock)
        have = self.local.committed_rows
        if previous is not None and any(have[s] < previous.rows[s] for s in STREAMS):
            if any(have[s] for s in STREAMS):  # fewer rows than published: not the file they came from
                self.local.close()
                self._set_aside("it holds fewer rows than were published")
                lock = RunLock(self.path).acquire()
                self.local = StoreWriter(self.path, bins, config, env, lock=lock)
            apply_parts(self.store, lambda k: k, previous.part_keys(), self.local, previous, self.folder)
        self.published = dict(self.manifest.rows)
        self._pending = None  # (key, bytes, rows) of a part uploaded or being uploaded, not yet in a manifest
        self._last_manifest = time.monotonic()
        self._failing_since = None
        self._cleanup_error = None  # the last deletion of old manifests failed (see _loop)
        self._lost = None
        self._publish_lock = threading.Lock()

    def _staging_id(self) -> str:
        """The id of this machine's local folder of the run: which published rows came from its file."""
        path = self.folder / _STAGING
        try:
            return json.loads(path.read_text())["id"]
        except (OSError, ValueError, KeyError, TypeError):
            staging = secrets.token_hex(8)
            path.write_text(json.dumps({"id": staging, "url": self.url}))
            return staging

    def _may_take_over(self, previous: Manifest) -> bool:
        """Whether the writer named by ``previous`` is known to be gone (see the module's docstring)."""
        other = previous.writer
        if other.get("host") == socket.gethostname() and other.get("staging") == self.writer["staging"]:
            return True  # it wrote from this folder, whose lock we hold: it has ended
        job = self.writer["job"]
        if job and other.get("job") and other["job"].split(".")[0] == job.split(".")[0] and other["job"] != job:
            return True  # an earlier try of this SLURM job (requeued): SLURM ended it
        return time.time() - previous.time > _lease(previous)

    def _set_aside(self, why: str):
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        aside = self.path.with_name(f"{FILE_NAME}.set-aside-{stamp}")
        os.replace(self.path, aside)
        warnings.warn(f"scoreviz: {self.path}: set aside as {aside.name} ({why}); recording goes on from "
                      f"what {self.url} holds", RuntimeWarning, stacklevel=4)

    # ------------------------------------------------------------ StoreWriter's interface

    def append_scores(self, *args, **kwargs):
        self.local.append_scores(*args, **kwargs)

    def append_embeddings(self, *args, **kwargs):
        self.local.append_embeddings(*args, **kwargs)

    def append_spectrum(self, *args, **kwargs):
        self.local.append_spectrum(*args, **kwargs)

    def append_gradients(self, *args, **kwargs):
        self.local.append_gradients(*args, **kwargs)

    def append_scalars(self, *args, **kwargs):
        self.local.append_scalars(*args, **kwargs)

    def flush(self):
        self.local.flush()

    def embedding_dims(self) -> dict:
        return self.local.embedding_dims()

    @property
    def committed_rows(self) -> dict:
        return self.local.committed_rows

    def publish_now(self):
        """Publish the rows committed so far now, in the caller's thread, rather than at the next
        interval (benchmarks/remote_sweep.py drives a sweep's publishes by its own clock)."""
        self._publish()

    def close(self, compact: bool = True):
        """Close the local file, publish what is left (trying for up to CLOSE_WAIT_S while the store
        does not answer), mark the run closed and, with ``compact``, make its parts one. Rows that
        could not be published stay in the local file, and a warning says so."""
        self._stop.set()
        self._wake.set()
        self._thread.join()
        error = None
        try:
            self.local.close()
        except ScorevizError as err:
            error = err
        if self._lost is None:
            deadline = time.monotonic() + CLOSE_WAIT_S
            delay = 1.0
            while True:
                try:
                    self._publish(final=True)
                    if compact:
                        self._compact()
                    break
                except Lost as err:
                    self._lost = err
                    break
                except ScorevizError as err:
                    if time.monotonic() + delay > deadline:
                        warnings.warn(f"scoreviz: {self.url}: the last rows could not be published ({err}); they are "
                                      f"in {self.path}, and a new Recorder on {self.url} publishes them",
                                      RuntimeWarning, stacklevel=3)
                        break
                    time.sleep(delay)
                    delay = min(2 * delay, 10.0)
        if error is not None:
            raise error

    # ------------------------------------------------------------ publishing

    def _loop(self):
        delay = None
        while not self._stop.is_set():
            self._wake.wait(self.interval if delay is None else delay)
            if self._stop.is_set():
                return
            try:
                if self._cleanup_error is not None:  # the store failed right after the last publish: back?
                    self._delete_obsolete()
                self._publish()
                if self._cleanup_error is not None:  # published, then the store stopped answering
                    raise self._cleanup_error
            except Lost as err:
                self._lost = err
                warnings.warn(f"scoreviz: {err}", RuntimeWarning, stacklevel=2)
                return
            except Exception as err:  # noqa: BLE001: the store, the network: retried, never raised into training
                self.stats["failures"] += 1
                if self._failing_since is None:
                    self._failing_since = time.monotonic()
                    warnings.warn(f"scoreviz: {self.url}: publishing failed ({err}); recording goes on in "
                                  f"{self.path} and publishing is retried", RuntimeWarning, stacklevel=2)
                delay = 1.0 if delay is None else min(2 * delay, self.interval)
                continue
            if self._failing_since is not None:
                warnings.warn(f"scoreviz: {self.url}: published again, after "
                              f"{time.monotonic() - self._failing_since:.0f} s", RuntimeWarning, stacklevel=2)
                self._failing_since = None
            delay = None

    def _publish(self, final: bool = False):
        """Publish the rows committed since the last time as one part, then the next manifest.
        A part uploaded before a failure is uploaded again as it was (its name is its content)."""
        with self._publish_lock:
            if self._pending is None:
                header = _header(StoreReader(self.path, header=True))  # the rows and names, in one open
                rows = header.pop("rows")
                if any(rows[s] > self.published[s] for s in STREAMS):
                    number = self.manifest.next_number()
                    key = part_key(number, self.writer["id"])
                    self._pending = (key, self._packed(self.published, rows, key), rows, number, header)
            if self._pending is None and not final and \
                    time.monotonic() - self._last_manifest < HEARTBEAT_INTERVALS * self.interval:
                return
            header = None
            if self._pending is not None:
                key, data, rows, number, header = self._pending
                if self.store.create(key, data):
                    self.stats["parts"] += 1
                    self.stats["bytes"] += len(data)
                self._add_part(number)
                self.published = rows
            self._write_manifest("closed" if final else "writing", header=header)
            self._pending = None

    def _packed(self, starts, stops, key) -> bytes:
        target = self.folder / f"{Path(key).name}.building"
        write_packed(self.path, target, starts, stops, {"first_rows": json.dumps(starts)})
        try:
            return target.read_bytes()
        finally:
            target.unlink(missing_ok=True)

    def _add_part(self, number):
        writer = self.writer["id"]
        parts = self.manifest.parts
        if parts and parts[-1][0] == writer and parts[-1][2] == number - 1:
            parts[-1][2] = number
        elif not parts or parts[-1][2] < number:
            parts.append([writer, number, number])

    def _write_manifest(self, state: str, parts=None, header=None):
        now = time.time()
        new_rows = self.published != self.manifest.rows  # a heartbeat, closing or compacting adds none
        manifest = Manifest(run=self.manifest.run, writer=self.writer, state=state, time=now,
                            interval=self.interval, bins=self.manifest.bins, rows=dict(self.published),
                            parts=parts if parts is not None else [list(p) for p in self.manifest.parts],
                            header=header or self.manifest.header,
                            published=now if new_rows else self.manifest.published_at(),
                            version=self.manifest.version + 1)
        data = manifest.to_bytes()
        if not self.store.create(manifest_key(manifest.version), data):
            raise Lost(f"{self.url}: taken over by another writer (manifest version {manifest.version} exists); "
                       f"this writer publishes no more, and its rows stay in {self.path}")
        self.stats["manifests"] += 1
        self.stats["bytes"] += len(data)
        self._obsolete.append(manifest_key(self.manifest.version))
        self.manifest = manifest
        self._last_manifest = time.monotonic()
        try:  # the versions before: a reader that listed them finds the newer one (remote.RemoteRun.manifest)
            self._delete_obsolete()
        except ScorevizError:
            pass  # deleted after the next publish; the loop says the store failed (_cleanup_error)

    def _delete_obsolete(self):
        """Delete the manifests before the current one. A failure is kept in _cleanup_error: the
        loop counts it as a failed publish and tries again, so a store that stops answering during
        a deletion (which waits up to CALL_SECONDS) is warned about as during an upload (it was
        passed over: the next upload, waiting in turn, could end after the store was back, and a
        30 s outage went unsaid)."""
        try:
            self.store.delete(self._obsolete)
        except ScorevizError as err:
            # only the store not answering: credentials that may write but not delete cost old manifests
            # (a few KB each), never a warning
            self._cleanup_error = err if getattr(err, "unreachable", False) else None
            raise
        self._obsolete = []
        self._cleanup_error = None

    def _compact(self):
        """A run of several parts becomes one: all its rows in one new part, a manifest naming only
        it, and the old parts deleted. Uploads the run once more (compressed)."""
        if len(self.manifest.part_keys()) <= 1:
            return
        old = self.manifest.part_keys()
        number = self.manifest.next_number()
        key = part_key(number, self.writer["id"])
        data = self._packed({s: 0 for s in STREAMS}, self.published, key)
        if self.store.create(key, data):
            self.stats["parts"] += 1
            self.stats["bytes"] += len(data)
        self._write_manifest("closed", parts=[[self.writer["id"], number, number]])
        try:  # the parts before, and those of writers killed between a part and its manifest
            stale = [k for k in self.store.list(PARTS) if is_part(f"{PARTS}/{k}") and f"{PARTS}/{k}" != key]
            self.store.delete(sorted(set(old) | {f"{PARTS}/{k}" for k in stale}))
        except ScorevizError:
            pass  # unused parts cost storage only; readers follow the manifest


def _header(reader: StoreReader) -> dict:
    """What a run list shows (config, env, names, last step) and the rows committed, read in one open."""
    names = reader.header["names"]
    return {"config": reader.config, "env": reader.env, "rows": {s: reader.header["rows"].get(s, 0) for s in STREAMS},
            "names": {s: list(names.get(s, [])) for s in STREAMS}, "last_step": reader.header["last_step"]}


def _lease(manifest: Manifest) -> float:
    return max(LEASE_INTERVALS * manifest.interval, MIN_LEASE_SECS)


def _holder(manifest: Manifest) -> str:
    writer = manifest.writer
    ago = max(0.0, time.time() - manifest.time)
    return (f"another Recorder (pid {writer.get('pid')} on {writer.get('host')}, since {writer.get('since')}, "
            f"last published {ago:.0f} s ago)")


def _slurm_job():
    """'<job id>.<restart count>' under SLURM (a requeued job keeps its id), else None."""
    job = os.environ.get("SLURM_JOB_ID")
    if not job:
        return None
    return f"{job}.{os.environ.get('SLURM_RESTART_COUNT', '0')}"


def _quietly(fn):
    try:
        fn()
    except Exception:  # noqa: BLE001
        pass


__all__ = ["DEFAULT_UPLOAD_SECS", "MAX_UPLOAD_SECS", "MIN_UPLOAD_SECS", "RemoteWriter"]
