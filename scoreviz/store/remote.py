"""Reading runs from an object store: finding them, and keeping a local copy of each.

A reader lists a prefix once (one request per 1,000 objects) and learns every run
below it and its current manifest (store/manifest.py). A run's local copy is an
ordinary run file in the cache folder (objects.local_folder("read", url)): the parts
the manifest names are fetched once each (they never change) and their new rows
appended, so bringing a copy up to date fetches only what was published since, and
the same reader (store/reader.py, scoreviz.Run) reads it as any local run. A run
uploaded whole (its ``scores.h5``, e.g. by ``aws s3 sync`` of a local run folder)
is fetched whole, again only when it changed.

The copy's state (the run's id, the last part applied, the manifest version) sits
beside it in ``copy.json``; the copy itself says how many rows it holds, so a reader
killed in the middle of an update only fetches a part again.

The copy's modification time is when its rows were published (the manifest's
``published``; for a run uploaded whole, the object's time), not when they were
copied: whatever asks a run file when it last changed (the app's "last update", its
most recent runs first) gets the same answer for a run in a store as for a local one.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from scoreviz.errors import ScorevizError
from scoreviz.store.lock import RunLock
from scoreviz.store.manifest import MANIFESTS, PARTS, Manifest, manifest_key, manifest_versions, parse
from scoreviz.store.objects import ObjectStore, is_url, join, local_folder, shown
from scoreviz.store.reader import StoreReader
from scoreviz.store.schema import FILE_NAME, STREAMS, install
from scoreviz.store.writer import StoreWriter

_PARTS_AT_ONCE = 16  # parts fetched concurrently while catching up
_STATE = "copy.json"
_LOCK_WAIT_S = 60.0  # another process bringing the same copy up to date


class RemoteRun:
    """One run at a URL: its manifest (or whole file) and its local copy."""

    def __init__(self, url: str, storage_options=None, store: ObjectStore = None, key: str = ""):
        # ``store`` and ``key``: the run as a folder ``key`` of a store already open (a prefix's listing)
        self.store = store if store is not None else ObjectStore(url, storage_options)
        self.key = key.strip("/")
        self.url = shown(join(self.store.url, self.key)) if store is not None else shown(url)
        self.folder = local_folder("read", self.url)
        self.file = self.folder / FILE_NAME

    def _key(self, name: str) -> str:
        return f"{self.key}/{name}" if self.key else name

    # ---------------------------------------------------------------- what is published

    def latest(self, listing: dict = None):
        """("manifest", Manifest) for a recorded run, ("whole", (size, version, time)) for a run uploaded
        as a plain scores.h5, or ScorevizError when the URL holds no run. ``listing``: the run's
        keys (relative to it) from a listing already made; else the run is listed now."""
        if listing is None:
            listing = {k[len(self.key) + 1:] if self.key else k: v for k, v in self.store.list(self.key).items()}
        versions = manifest_versions(listing)
        if versions:
            return "manifest", self.manifest(versions[-1], listing)
        if FILE_NAME in listing:
            return "whole", listing[FILE_NAME]
        raise ScorevizError(f"{self.url}: no scoreviz run there (neither {MANIFESTS}/ nor {FILE_NAME})")

    def manifest(self, version: int, listing=None) -> Manifest:
        where = self.store.key_url(self._key(manifest_key(version)))
        try:
            data = self.store.read(self._key(manifest_key(version)))
        except FileNotFoundError:  # replaced by a newer version between the listing and this read
            fresh = {k[len(self.key) + 1:] if self.key else k: v for k, v in self.store.list(self.key).items()}
            newer = [v for v in manifest_versions(fresh) if v > version]
            if not newer:
                raise ScorevizError(f"{where}: the run's manifest vanished while it was read") from None
            return self.manifest(newer[-1])
        return parse(data, version, where)

    # ---------------------------------------------------------------- the local copy

    def sync(self, published=None) -> Path:
        """Bring the local copy up to date with what is published (``published``: latest()'s answer,
        when already known) and return its file."""
        kind, what = published if published is not None else self.latest()
        self.folder.mkdir(parents=True, exist_ok=True)
        lock = RunLock(self.file).acquire(wait=_LOCK_WAIT_S)
        try:
            state = self._state()
            if kind == "whole":
                if state.get("whole") != list(what) or not self.file.exists():
                    self._fetch_whole(what)
                    _dated(self.file, what[2] if len(what) > 2 else None)
                return self.file
            if state.get("run") not in (None, what.run) or state.get("whole"):
                self._drop_copy()  # another run at the same URL since: start again
                state = {}
            if state.get("version") == what.version and self.file.exists():
                return self.file
            try:
                self._apply(what, state, lock)
            except _Gap:  # the copy and the store disagree (a run recorded again): fetch it all
                self._drop_copy()
                self._apply(what, {}, lock)
            _dated(self.file, what.published_at())
            return self.file
        finally:
            lock.release()

    def _state(self) -> dict:
        try:
            state = json.loads((self.folder / _STATE).read_text())
            return state if isinstance(state, dict) else {}
        except (OSError, ValueError):
            return {}

    def _save_state(self, state: dict) -> None:
        tmp = self.folder / f"{_STATE}.{os.getpid()}"
        tmp.write_text(json.dumps(state))
        os.replace(tmp, self.folder / _STATE)

    def _drop_copy(self):
        for name in (FILE_NAME, _STATE):
            try:
                (self.folder / name).unlink()
            except FileNotFoundError:
                pass

    def _fetch_whole(self, what):
        data = self.store.read(self._key(FILE_NAME))
        tmp = self.folder / f"{FILE_NAME}.fetching-{os.getpid()}"
        tmp.write_bytes(data)
        StoreReader(tmp).rows()  # a damaged upload is refused here, naming the file
        install(tmp, self.file)
        self._save_state({"whole": list(what)})

    def _apply(self, manifest: Manifest, state: dict, lock: RunLock):
        """Append the rows of the parts not applied yet, in order."""
        keys = manifest.part_keys()
        done = state.get("applied")
        todo = keys[keys.index(done) + 1:] if done in keys else keys
        if not self.file.exists() and len(keys) == 1 and todo == keys:
            self._fetch_single(manifest, keys[0])  # a closed, compacted run: its one part is the run
            self._save_state({"run": manifest.run, "applied": keys[0], "version": manifest.version})
            return
        header = manifest.header
        writer = StoreWriter(self.file, manifest.bins, header.get("config", {}), header.get("env", {}), lock=_Kept(lock))
        try:
            applied = apply_parts(self.store, self._key, todo, writer, manifest, self.folder)
            writer.close()
        except BaseException:
            _close_quietly(writer)
            raise
        self._save_state({"run": manifest.run, "applied": applied or done, "version": manifest.version})

    def _fetch_single(self, manifest, key):
        data = self.store.read(self._key(key))
        tmp = self.folder / f"{FILE_NAME}.fetching-{os.getpid()}"
        tmp.write_bytes(data)
        reader = StoreReader(tmp)
        rows = {s: n for s, (n, _) in reader.rows().items()}
        if _first_rows(reader) != {s: 0 for s in STREAMS} or rows != manifest.rows:
            tmp.unlink(missing_ok=True)
            raise ScorevizError(f"{self.store.key_url(self._key(key))}: holds rows {rows}, its manifest says "
                                f"{manifest.rows}")
        install(tmp, self.file)


def _dated(file: Path, published) -> None:
    """Give the copy the time its rows were published (see the module's docstring). Rows that are
    new always come with a new time, so the (size, time) of the file still changes with them."""
    if published:
        os.utime(file, (published, published))


class _Kept:
    """A held lock handed to a StoreWriter that must not let go of it when it closes."""

    def __init__(self, lock):
        self._lock = lock

    def release(self):
        pass

    @property
    def held(self):
        return self._lock.held


class _Gap(Exception):
    """A part starts after the rows the copy holds: the copy is not a prefix of the run."""


def apply_parts(store: ObjectStore, key_of, keys, writer: StoreWriter, manifest: Manifest, folder: Path):
    """Fetch the parts ``keys`` (in order, a few at once) and append to ``writer`` the rows of
    each that it does not hold yet; returns the last key applied. Raises _Gap when a part
    starts beyond the writer's rows, ScorevizError when the rows do not add up to the manifest's."""
    last = None
    for start in range(0, len(keys), _PARTS_AT_ONCE):
        batch = keys[start:start + _PARTS_AT_ONCE]
        have = writer.committed_rows
        if all(have.get(s, 0) >= manifest.rows[s] for s in STREAMS):
            return keys[-1]  # everything is there already (a compacted part repeats rows held)
        fetched = store.read_many([key_of(k) for k in batch])
        for key in batch:
            data = fetched[key_of(key)]
            with tempfile.NamedTemporaryFile(dir=folder, prefix="part-", suffix=".h5", delete=False) as out:
                out.write(data)
            try:
                reader = StoreReader(out.name)
                first = _first_rows(reader)
                have = writer.committed_rows
                if any(have.get(s, 0) < first[s] for s in STREAMS):
                    raise _Gap(key)
                writer.append_from(reader, {s: have.get(s, 0) - first[s] for s in STREAMS})
                writer.flush()
            except ScorevizError as err:
                raise ScorevizError(f"{store.key_url(key_of(key))}: {str(err).partition(': ')[2] or err}") from None
            finally:
                os.unlink(out.name)
            last = key
    have = writer.committed_rows
    short = {s: (have.get(s, 0), manifest.rows[s]) for s in STREAMS if have.get(s, 0) < manifest.rows[s]}
    if short:
        raise ScorevizError(f"{shown(store.url)}: the parts of manifest {manifest.version} hold fewer rows than it "
                            f"says ({short}): a part is missing or damaged")
    return last


def _first_rows(reader: StoreReader) -> dict:
    """The row of each stream a part starts at (its ``first_rows`` attribute; 0 for a whole run)."""
    raw = reader.attrs.get("first_rows")
    if raw is None:
        return {s: 0 for s in STREAMS}
    try:
        value = json.loads(raw)
        return {s: int(value.get(s, 0)) for s in STREAMS}
    except (TypeError, ValueError, AttributeError):
        raise ScorevizError(f"{reader.path}: damaged part: first_rows {raw!r:.60}") from None


def _close_quietly(writer):
    try:
        writer.close()
    except Exception:  # noqa: BLE001: the error that got us here is the one to tell
        pass


# ------------------------------------------------------------------- a prefix of runs


class RemoteRoot:
    """The runs below a URL as a server refreshes them: one listing per refresh(), each run's
    manifest fetched only when a newer version appears (several at once), each run's local
    copy brought up to date only when its data is read. Run ids are the runs' folders below
    the URL ("sweep/job-7")."""

    def __init__(self, url: str, storage_options=None):
        self.store = ObjectStore(url, storage_options)
        self.url = shown(url)
        self._listing: dict = {}  # run id -> its keys (relative) with (size, version, time)
        self._manifests: dict = {}  # run id -> the newest Manifest fetched

    def refresh(self) -> list:
        """Every run's id, from one listing of the URL (one request per 1,000 objects)."""
        self._listing = runs_in(self.store.list(""))
        return sorted(self._listing)

    def stamp(self, run_id: str):
        """What changes when the run is published again: its manifest's version, or (size, version, time)
        of a whole scores.h5; None for a run not in the last listing."""
        keys = self._listing.get(run_id)
        if keys is None:
            return None
        versions = manifest_versions(keys)
        return versions[-1] if versions else tuple(keys.get(FILE_NAME, ()))

    def manifests(self, run_ids) -> dict:
        """{run id: its newest Manifest} (None for a run uploaded whole), fetching only those
        whose version changed since they were fetched, several at once. A run whose manifest
        cannot be read maps to its ScorevizError."""
        out, wanted = {}, {}
        for run_id in run_ids:
            version = self.stamp(run_id)
            known = self._manifests.get(run_id)
            if not isinstance(version, int):
                out[run_id] = None
            elif known is not None and known.version == version:
                out[run_id] = known
            else:
                wanted[f"{run_id}/{manifest_key(version)}" if run_id else manifest_key(version)] = (run_id, version)
        for start in range(0, len(wanted), 64):
            keys = list(wanted)[start:start + 64]
            try:
                fetched = self.store.read_many(keys)
            except (ScorevizError, FileNotFoundError):  # one gone (replaced since the listing): one by one
                fetched = {}
            for key in keys:
                run_id, version = wanted[key]
                try:
                    manifest = parse(fetched[key], version, self.store.key_url(key)) if key in fetched else \
                        self.remote(run_id).latest()[1]
                    self._manifests[run_id] = out[run_id] = manifest
                except ScorevizError as err:
                    out[run_id] = err
        return out

    def remote(self, run_id: str) -> RemoteRun:
        return RemoteRun(self.url, store=self.store, key=run_id)

    def sync(self, run_id: str) -> Path:
        """The run's local copy, brought up to date with its newest manifest (fetched now if needed)."""
        manifest = self.manifests([run_id]).get(run_id)
        if isinstance(manifest, ScorevizError):
            raise manifest
        remote = self.remote(run_id)
        if manifest is None:
            return remote.sync()
        return remote.sync(("manifest", manifest))


class Mirror:
    """Every run below a URL copied into one local folder (objects.local_folder("read", url)) and
    kept up to date by a thread, every ``every`` seconds: one listing, the manifests that changed,
    the parts not fetched yet. What ``scoreviz serve URL`` serves: the app reads the folder as a
    folder of local runs, so its run ids, confinement, caches and live refresh are those of a
    local sweep. A run appears once its copy is made; a run gone from the store goes from the
    folder at the next refresh."""

    def __init__(self, url: str, every: float = 5.0, storage_options=None, workers: int = 8):
        import threading

        self.root = RemoteRoot(url, storage_options)
        self.folder = local_folder("read", url)
        self.every = every
        self.workers = workers
        self.errors: dict = {}  # run id -> the ScorevizError of its last copy
        self.root.refresh()  # bad credentials or a missing bucket: said now, by the command that asked
        self.folder.mkdir(parents=True, exist_ok=True)
        self._stop = threading.Event()
        self._warned = False
        if every is None:  # once, now (a report)
            self.refresh()
            return
        self._thread = threading.Thread(target=self._loop, name="scoreviz-mirror", daemon=True)
        self._thread.start()

    def refresh(self) -> None:
        """One round: list, fetch what changed, drop the copies of runs no longer there."""
        from concurrent.futures import ThreadPoolExecutor

        ids = self.root.refresh()
        self.root.manifests(ids)  # the changed ones, several at once
        with ThreadPoolExecutor(self.workers) as pool:  # fetching waits on the network, not the CPU
            for run_id, error in zip(ids, pool.map(self._copy, ids)):
                if error is None:
                    self.errors.pop(run_id, None)
                else:
                    self.errors[run_id] = error
        self._drop_gone(set(ids))

    def _copy(self, run_id):
        try:
            self.root.sync(run_id)
            return None
        except ScorevizError as err:
            return err

    def _drop_gone(self, ids):
        import shutil

        for state in self.folder.rglob(_STATE):
            run_id = state.parent.relative_to(self.folder).as_posix()
            run_id = "" if run_id == "." else run_id
            if run_id not in ids:
                shutil.rmtree(state.parent, ignore_errors=True) if run_id else None

    def _loop(self):
        import warnings

        while not self._stop.is_set():
            try:
                self.refresh()
                if self._warned:
                    warnings.warn(f"scoreviz: {self.root.url}: reachable again", RuntimeWarning, stacklevel=2)
                    self._warned = False
            except Exception as err:  # noqa: BLE001: the store, the network: the next round tries again
                if not self._warned:
                    warnings.warn(f"scoreviz: {self.root.url}: cannot refresh the runs ({err}); showing what "
                                  "was copied, trying again", RuntimeWarning, stacklevel=2)
                    self._warned = True
            self._stop.wait(self.every)

    def stop(self):
        self._stop.set()


def local_roots(roots, every: float = 5.0, storage_options=None) -> list:
    """``roots`` (folders, globs, URLs) with each URL replaced by its Mirror's folder, kept up to
    date every ``every`` seconds (None: brought up to date once, now): what a server or a report
    reads as local runs."""
    items = [roots] if isinstance(roots, (str, Path)) else list(roots)
    return [Mirror(str(r), every, storage_options).folder if isinstance(r, str) and is_url(r) else r for r in items]


def find_remote(url: str, storage_options=None) -> dict:
    """{run URL: its keys (relative to it) with (size, version, time)} of every run below ``url``
    (itself included), from one listing."""
    store = ObjectStore(url, storage_options)
    return {shown(join(store.url, folder)): keys for folder, keys in runs_in(store.list("")).items()}


def runs_in(listing: dict) -> dict:
    """{run folder: {key relative to it: (size, version, time)}} from a listing of a prefix: a folder is
    a run when it holds a manifest (scores.manifest/) or a whole scores.h5; parts go with their run."""
    runs: dict = {}
    for key, value in listing.items():
        for marker in (f"/{MANIFESTS}/", f"/{PARTS}/"):
            if marker in f"/{key}":
                folder = f"/{key}".split(marker)[0].strip("/")
                break
        else:
            if key == FILE_NAME or key.endswith("/" + FILE_NAME):
                folder = key[:-len(FILE_NAME)].strip("/")
            else:
                continue
        runs.setdefault(folder, {})[key[len(folder) + 1:] if folder else key] = value
    return {folder: keys for folder, keys in runs.items() if manifest_versions(keys) or FILE_NAME in keys}


__all__ = ["Mirror", "RemoteRoot", "RemoteRun", "local_roots", "apply_parts", "find_remote", "runs_in"]
