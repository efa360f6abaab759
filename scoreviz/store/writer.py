"""Appending to a run's file: one writer per run, all-or-nothing per flush.

The writer holds the run's lock (store/lock.py) from the moment it opens the file
until it closes it. Appended rows are staged past the `committed` count of their
stream and become part of the run only at `flush()`, after they are on disk; a
write that fails (a full disk, an I/O error) or a writer that is killed leaves
only rows that readers ignore, and the next writer cuts them off before it
appends. Opening never waits on a damaged file: the file is checked by the
reader (bounded retries, sizes checked) before it is opened for writing.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import h5py
import numpy as np
from h5py import h5s

from scoreviz.errors import ScorevizError
from scoreviz.store.schema import KINDS
from scoreviz.store.hdf5 import LeftOpen, MarkedOpen, clear_open_mark, describe, errno_of, open_write
from scoreviz.store.lock import RunLock
from scoreviz.store.reader import StoreReader
from scoreviz.store.space import Reservation
from scoreviz.store.schema import (
    GROWS, SCHEMA_VERSION, STATS_COLUMNS, STREAMS, build_empty, create_file, decode_names, encode_names, install,
    remove_leftovers,
)

_COPY_BLOCK = 1 << 16  # rows per read when a file is rebuilt


class StoreWriter:
    """Appends rows to a run's file; creates it, or appends to an existing one (resuming).

    One writer per run: a second StoreWriter on the same file, in any process, gets a
    ScorevizError naming the holder. Rows become visible to readers at `flush()`.
    After a failed write the writer is done: every later call raises the same error.
    """

    def __init__(self, path, bins: int, config: dict, env: dict, lock: RunLock = None):
        self.path = Path(path)
        self._error = None
        # ``lock``: the run's lock, already held by the caller (a remote run checks the store
        # between taking it and opening the file); released with the writer either way
        self._lock = lock if lock is not None else RunLock(self.path).acquire()
        self._file = self._rows = None
        try:
            self._file = _open_for_append(self.path, bins, config, env)
            self._rows = _Appender(self._file, self.path)
            self._rows.room.ensure(0)  # a disk that is already full is said now, not at the first flush
            self._file.flush()
        except BaseException as err:
            self._abandon()
            if isinstance(err, Exception) and not isinstance(err, ScorevizError):
                raise ScorevizError(f"{self.path}: cannot open the run for writing ({describe(err)})") from None
            raise

    # ------------------------------------------------------------ appending

    def append_scores(self, tag: str, steps, stats: dict, times=None):
        """Rows of one tag: `stats` maps every STATS_COLUMNS name and '<kind>_hist' to arrays."""
        def stage():
            [index] = self._rows.names_index("scores", [tag])
            n = len(steps)
            columns = {"step": steps, "time": _times(times, n), "tag": np.full(n, index, dtype=np.int32),
                       "stats": np.stack([np.asarray(stats[c], dtype=np.float64) for c in STATS_COLUMNS], axis=1)}
            columns.update({f"{kind}_hist": stats[f"{kind}_hist"] for kind in KINDS})
            self._rows.append("scores", columns)
        self._guarded(stage)

    def append_embeddings(self, tag: str, steps, stats: dict, times=None):
        """Rows of one tag: `stats` maps every EMBEDDING_COLUMNS name to an array."""
        def stage():
            [index] = self._rows.names_index("embeddings", [tag])
            n = len(steps)
            self._rows.append("embeddings", {
                "step": steps, "time": _times(times, n), "tag": np.full(n, index, dtype=np.int32),
                "stats": _stats_table(stats, STREAMS["embeddings"].columns, n)})
        self._guarded(stage)

    def append_spectrum(self, tag: str, steps, dims, samples, ranks, eigenvalues, signals: dict, times=None):
        """Spectra of one tag: each row's eigenvalues (largest first) in its first dims[i] columns
        of `eigenvalues` (n, w), w >= max(dims); `signals` maps every SPECTRUM_COLUMNS name to an array."""
        def stage():
            [index] = self._rows.names_index("spectrum", [tag])
            n = len(steps)
            self._rows.append("spectrum", {
                "step": steps, "time": _times(times, n), "tag": np.full(n, index, dtype=np.int32),
                "dim": dims, "samples": samples, "rank": ranks, "eigenvalues": _padded(eigenvalues, dims),
                "stats": _stats_table(signals, STREAMS["spectrum"].columns, n)})
        self._guarded(stage)

    def append_gradients(self, steps, names, norms, totals, times=None):
        """Rows of per-layer norms (n, len(names)) in the order of `names`, and their totals."""
        self._guarded(lambda: self._rows.append("gradients", {
            "step": steps, "time": _times(times, len(steps)), "total": totals,
            "norms": self._rows.table_rows("gradients", names, norms)}))

    def append_scalars(self, steps, names, values, times=None):
        """Rows of scalar values (n, len(names)) in the order of `names`."""
        self._guarded(lambda: self._rows.append("scalars", {
            "step": steps, "time": _times(times, len(steps)),
            "values": self._rows.table_rows("scalars", names, values)}))

    def append_from(self, reader: StoreReader, starts: dict) -> dict:
        """Append the rows of another run's file from row ``starts[stream]`` of each stream
        (a published segment, a copy being brought up to date); returns {stream: rows added}.
        Names (tags, layers, scalars) are matched by name, so the two files' name lists may
        differ in order and length. Call flush() to make them part of the run."""
        added = {}

        def stage():
            added.update(_copy_rows(self._rows, reader, starts))
        self._guarded(stage)
        return added

    def flush(self):
        """Make every row appended so far part of the run: on disk first, then counted."""
        self._guarded(self._rows.commit)

    def close(self):
        """Flush and close the file, and let go of the run. Idempotent."""
        if self._file is None:
            self._lock.release()
            if self._error is not None:
                raise self._error
            return
        try:
            self.flush()
            self._rows.close()  # its datasets, then the file
            self._file = self._rows = None
        except ScorevizError:
            raise
        except Exception as err:  # noqa: BLE001
            self._error = self._failure(err)
            raise self._error from None
        finally:
            self._abandon()

    def embedding_dims(self) -> dict:
        """{tag: the embedding dim of its last committed row}: what a resumed Recorder must keep."""
        rows = self._rows
        n = rows.committed["embeddings"][0]
        if not n:
            return {}
        group = rows.ds["embeddings"]
        column = STREAMS["embeddings"].columns.index("dim")
        tags, dims = group["tag"][:n], group["stats"][:n, column]
        last = {int(tag): dim for tag, dim in zip(tags, dims)}  # later rows win
        return {rows.names["embeddings"][tag]: int(dim) for tag, dim in last.items()}

    @property
    def committed_rows(self) -> dict:
        """{stream: rows that are part of the run}."""
        if self._rows is None:
            return {}
        return {stream: rows for stream, (rows, _) in self._rows.committed.items()}

    # ------------------------------------------------------------ failures

    def _guarded(self, work):
        self._raise_error()
        try:
            work()
        except ScorevizError as err:
            self._error = err
            self._abandon()
            raise
        except Exception as err:  # noqa: BLE001: any write failure ends this writer (a DiskFull comes
            # before the write, so the file still closes cleanly)
            self._error = self._failure(err)
            self._abandon()
            raise self._error from None

    def _raise_error(self):
        if self._error is not None:
            raise self._error
        if self._file is None:
            raise ScorevizError(f"{self.path}: the run's file is closed")

    def _failure(self, err) -> ScorevizError:
        """The error a training loop sees: the file, the reason with its errno, what is safe, what to do."""
        advice = " Free some space, then resume: a new Recorder on this folder appends after them." \
            if errno_of(err) in (28, 122) else ""
        kept = ", ".join(f"{rows} {stream}" for stream, rows in self.committed_rows.items())
        return ScorevizError(f"{self.path}: writing the run failed: {describe(err)}. The rows flushed "
                             f"before are safe ({kept} rows).{advice}")

    def _abandon(self):
        """Close whatever is open and let go of the run, quietly: the error that got us here is the one to tell."""
        f, self._file = self._file, None
        if f is not None:
            try:
                if self._rows is not None:
                    self._rows.truncate()  # every dataset of a stream back to its committed rows
                f.flush()
            except Exception:  # noqa: BLE001: the disk may be full; readers trust `committed` anyway
                pass
            try:
                self._rows.close() if self._rows is not None else f.close()
            except Exception:  # noqa: BLE001
                pass
        self._lock.release()


def _times(times, n):
    return np.full(n, time.time()) if times is None else np.asarray(times, dtype=np.float64)


def _stats_table(stats: dict, columns, n: int) -> np.ndarray:
    """The (n, len(columns)) float64 table of a `stats` dataset from {column: array}."""
    return np.stack([np.asarray(stats[c], dtype=np.float64) for c in columns], axis=1).reshape(n, len(columns))


def _padded(values, dims):
    """Rows of eigenvalues as a (n, max dim) table, NaN after each row's own dim."""
    dims = np.asarray(dims, dtype=np.int64)
    width = int(dims.max()) if len(dims) else 0
    table = np.full((len(dims), width), np.nan, dtype=np.float32)
    for i, (row, dim) in enumerate(zip(values, dims)):
        table[i, :dim] = np.asarray(row, dtype=np.float64)[:dim]
    return table


def _write_rows(ds: h5py.Dataset, start: int, values: np.ndarray, grows: bool) -> None:
    """values (n, ...) as rows start to start + n of ds, which grows to hold them; a dataset
    that `grows` is widened to the widest row, and the columns after a row's own keep their
    fill (NaN). With h5py's low-level calls: `ds[...] = values` costs about ten times more
    (selection and broadcasting in Python), which the writer paid for every dataset at
    every flush."""
    extent = list(ds.id.shape)
    extent[0] = start + values.shape[0]
    if grows:
        extent[1] = max(extent[1], values.shape[1])
    ds.id.set_extent(tuple(extent))
    if values.size:
        target = ds.id.get_space()
        target.select_hyperslab((start,) + (0,) * (values.ndim - 1), values.shape)
        ds.id.write(h5s.create_simple(values.shape), target, values)


class _Appender:
    """Staging and committing rows in an open file of the current schema.

    Every dataset stays open from start to end: HDF5 keeps written rows in a dataset's
    chunk cache until the dataset is flushed or closed, and a dataset object dropped by
    Python is closed in its destructor, where a failed write (a full disk) is only
    printed, never raised. Kept open, every write reaches the disk in `commit`, whose
    errors are raised before any row is counted.
    """

    def __init__(self, f: h5py.File, path: Path):
        self.f = f
        self.room = Reservation(f.id.get_vfd_handle(), path)
        self.ds = {s: {name: f[s][name] for name in [d for d, _, _ in stream.datasets] + [stream.names]}
                   for s, stream in STREAMS.items()}
        self.counts = f["committed"]  # one row per stream, in STREAMS order (a file of the current schema)
        self.committed = {s: (int(rows), int(names)) for s, (rows, names) in zip(STREAMS, self.counts[:])}
        self.rows = {s: rows for s, (rows, _) in self.committed.items()}
        self.names = {s: decode_names(f[s][STREAMS[s].names][:names]) for s, (_, names) in self.committed.items()}
        self._index = {s: {name: i for i, name in enumerate(names)} for s, names in self.names.items()}
        self.truncate()

    def truncate(self):
        """Cut every dataset back to the committed rows and names (what a failed or killed writer left)."""
        for s, stream in STREAMS.items():
            rows, names = self.committed[s]
            g = self.ds[s]
            for name, _, _ in stream.datasets:
                if g[name].shape[0] != rows:
                    g[name].resize(rows, axis=0)
            if stream.table and g[stream.table].shape[1] != names:
                g[stream.table].resize(names, axis=1)
            if g[stream.names].shape[0] != names:
                g[stream.names].resize((names,))
            self.rows[s] = rows
            del self.names[s][names:]
            self._index[s] = {name: i for i, name in enumerate(self.names[s])}

    def names_index(self, stream, names) -> list:
        """The column (or tag index) of each name, adding the new ones."""
        index = self._index[stream]
        new = [name for name in dict.fromkeys(names) if name not in index]
        if new:
            known = self.names[stream]
            ds = self.ds[stream][STREAMS[stream].names]
            ds.resize((len(known) + len(new),))
            ds[len(known):] = encode_names(new)
            for name in new:
                index[name] = len(known)
                known.append(name)
            table = STREAMS[stream].table
            if table:
                self.ds[stream][table].resize(len(known), axis=1)
        return [index[name] for name in names]

    def table_rows(self, stream, names, values):
        """Rows given in `names` order as rows of the stream's table (NaN for the other columns)."""
        columns = self.names_index(stream, names)
        values = np.asarray(values, dtype=np.float64).reshape(-1, len(names))
        rows = np.full((values.shape[0], len(self.names[stream])), np.nan)
        rows[:, columns] = values
        return rows

    def append(self, stream, columns: dict):
        lengths = {len(v) for v in columns.values()}
        if len(lengths) != 1:
            raise ValueError(f"{stream}: columns of different lengths {sorted(lengths)}")
        n = lengths.pop()
        self.room.ensure(sum(np.asarray(v).nbytes for v in columns.values()))
        start = self.rows[stream]
        g = self.ds[stream]
        for name, dtype, width in STREAMS[stream].datasets:
            _write_rows(g[name], start, np.ascontiguousarray(columns[name], dtype=dtype), width == GROWS)
        self.rows[stream] = start + n

    def close(self):
        """Close every dataset, then the file; a failed write raises here, not in a destructor."""
        datasets, self.ds = self.ds, {}
        try:
            for ds in [d for group in datasets.values() for d in group.values()] + [self.counts]:
                ds.id.close()
        finally:
            self.f.close()
            self.room.release()

    def commit(self):
        counts = {s: (self.rows[s], len(self.names[s])) for s in STREAMS}
        changed = [s for s in STREAMS if counts[s] != self.committed[s]]
        if not changed:
            return
        self.room.ensure(1 << 16)
        for s in changed:  # every row on disk before any reader is told it is there
            for ds in self.ds[s].values():
                ds.flush()
        self.f.flush()
        self.counts[:] = np.array([counts[s] for s in STREAMS], dtype=np.int64)  # one write for every stream
        self.counts.flush()
        self.f.flush()
        self.committed.update({s: counts[s] for s in changed})


# ---------------------------------------------------------------- opening


def _open_for_append(path: Path, bins: int, config: dict, env: dict) -> h5py.File:
    """The run's file open for appending (SWMR), created if absent. Called under the run's lock."""
    remove_leftovers(path)  # of writers killed while creating or rebuilding
    if not path.exists() or (path.is_file() and path.stat().st_size == 0):  # a 0-byte file holds nothing
        create_file(path, bins, config, env)
    else:
        try:
            reader = StoreReader(path)
        except MarkedOpen:  # a writer killed outside SWMR mode (scoreviz 0.1 while creating the file)
            clear_open_mark(path)
            reader = StoreReader(path)
        reader.rows()  # every size checked: a damaged file is refused here, in seconds
        for stream in STREAMS:  # what the writer reads back; a damaged name list is refused here too,
            reader.tags(stream)  # where reads give up after 16 attempts (a write handle retries for minutes)
        if reader.bins != bins:
            raise ScorevizError(f"{path}: recorded with {reader.bins} histogram bins, "
                                f"cannot append with bins={bins}")
        if reader.schema < SCHEMA_VERSION or any(_stats_columns(reader, s) != list(STREAMS[s].columns)
                                                 for s in STREAMS if STREAMS[s].columns):
            rebuild(path, reader)
    try:
        return open_write(path)
    except LeftOpen:  # its writer was killed (we hold the lock, so it is gone): copy out what it flushed
        rebuild(path, StoreReader(path))
        return open_write(path)


def _stats_columns(reader: StoreReader, stream: str):
    data, _ = reader.read_rows(stream, 0, 0)
    return data["stats_columns"]


def rebuild(path: Path, reader: StoreReader) -> None:
    """Replace the file with a fresh one of the current schema holding every row readers see.

    Used when a killed writer left the file marked as open (only a reader can open it
    then) and to upgrade files of older schemas. The copy is built under a temporary
    name and moved into place when complete, so a kill during the rebuild loses nothing.
    """
    _write_copy(reader, path, {}, None, {}, 0, f"{path}: cannot rebuild the run's file")


def write_packed(source: Path, target: Path, starts: dict, stops: dict, attrs: dict) -> None:
    """A new file at ``target`` holding rows ``starts`` to ``stops`` of each stream of the run
    file ``source`` (read as a reader would), compressed and in chunks sized to its rows
    (schema.build_empty's ``packed``): a published part. ``attrs`` are added to its root."""
    rows = max([int(stops.get(s, 0)) - int(starts.get(s, 0)) for s in STREAMS] + [1])
    _write_copy(StoreReader(source), target, starts, stops, attrs, rows,
                f"{source}: cannot copy rows into {target.name}")


def _write_copy(reader: StoreReader, target: Path, starts, stops, attrs: dict, packed: int, failure: str):
    """A file of the current schema at ``target`` (built under a temporary name, moved into place
    when complete) holding ``reader``'s rows from ``starts`` to ``stops`` (all when None)."""
    root = {"config": json.dumps(reader.config), "env": json.dumps(reader.env),
            "scoreviz_version": str(reader.attrs.get("scoreviz_version", "")), **attrs}
    tmp = build_empty(target, reader.bins, root, packed=packed)
    try:
        rows = _Appender(h5py.File(tmp, "r+"), tmp)
        try:
            _copy_rows(rows, reader, starts, stops)
            rows.commit()
        finally:
            rows.close()
    except ScorevizError:
        tmp.unlink(missing_ok=True)
        raise
    except Exception as err:  # noqa: BLE001
        tmp.unlink(missing_ok=True)
        raise ScorevizError(f"{failure} ({describe(err)})") from None
    install(tmp, target)


def _copy_rows(rows: _Appender, reader: StoreReader, starts: dict, stops: dict = None) -> dict:
    """Append the rows of ``reader``'s streams from ``starts[stream]`` (0 when absent) up to
    ``stops[stream]`` (the rows it holds, when absent), in blocks; returns {stream: rows appended}."""
    added = {}
    for stream, (count, _) in reader.rows().items():
        if stops is not None:
            count = min(count, int(stops.get(stream, 0)))
        first = max(0, int(starts.get(stream, 0)))
        for start in range(first, count, _COPY_BLOCK):
            data, names = reader.read_rows(stream, start, min(count, start + _COPY_BLOCK))
            _copy(rows, stream, data, names)
        added[stream] = max(0, count - first)
    return added


def _copy(rows: _Appender, stream, data, names):
    """Rows read from an older or left-open file, appended in the current schema: datasets
    copied as they are, except tag indices (into the new name list), stats columns (mapped
    by name; a column the old file lacks is NaN), tables (columns by name) and eigenvalues."""
    n = len(data["step"])
    if not n:
        return
    spec = STREAMS[stream]
    columns = {name: data[name] for name, _, _ in spec.datasets if name in data}
    columns.setdefault("time", np.full(n, np.nan))  # schema 1 has no wall times
    if "tag" in data:
        columns["tag"] = np.asarray(rows.names_index(stream, names), dtype=np.int32)[data["tag"]]
    if spec.columns:  # (a schema 3 file's spectrum has no stats: all NaN)
        old = {c: i for i, c in enumerate(data.get("stats_columns", []))}
        columns["stats"] = np.stack([data["stats"][:, old[c]] if c in old else np.full(n, np.nan)
                                     for c in spec.columns], axis=1)
    if spec.table:
        width = min(len(names), data[spec.table].shape[1])
        columns[spec.table] = rows.table_rows(stream, names[:width], data[spec.table][:, :width])
    if "eigenvalues" in data:
        columns["eigenvalues"] = _padded(data["eigenvalues"], data["dim"])
    rows.append(stream, columns)


__all__ = ["StoreWriter", "rebuild", "write_packed"]
