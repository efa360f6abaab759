"""The HDF5 schema of a run, its writer and its reader: the only module that touches h5py.

One file, `scores.h5`, per run:

    /                     attrs: scoreviz_schema, scoreviz_version, bins, config (JSON), env (JSON)
    /scores/step          int64 (n,)          the training step of each row
    /scores/tag           int32 (n,)          index into /scores/tag_names
    /scores/tag_names     bytes (t,)          UTF-8 tag names, in order of first use
    /scores/stats         float64 (n, c)      attrs: columns (the c column names)
    /scores/pos_hist      uint32 (n, bins)    histogram of positive scores over [-1, 1]
    /scores/neg_hist      uint32 (n, bins)    histogram of negative scores over [-1, 1]
    /gradients/step       int64 (n,)
    /gradients/total      float32 (n,)        L2 norm of all gradients
    /gradients/norms      float32 (n, l)      L2 norm per layer, NaN where a layer had none
    /gradients/layer_names bytes (l,)
    /scalars/step         int64 (n,)
    /scalars/values       float64 (n, s)      NaN where a scalar was not logged
    /scalars/names        bytes (s,)

Every dataset is chunked and resizable, and not compressed: a live writer
appends a few rows every second, and HDF5 writes each grown compressed chunk to a
new place in the file without reusing the old one (measured: 41 KB per step at
one row per flush, against 2.5 KB uncompressed, whatever the flush rate). The writer works in
SWMR mode, so readers (opened with swmr=True) see every flushed row while the
file grows, and a file whose writer was killed still holds every flushed row.
SWMR forbids creating datasets once it has started, so every dataset exists
from the start: tags, layers and scalar names that appear later are new rows
of the name lists and new columns of the 2-D tables, never new datasets.
"""

from __future__ import annotations

import ctypes
import json
import os
import time
from pathlib import Path

import h5py
import numpy as np

from scoreviz.errors import ScorevizError
from scoreviz.stats import KINDS, STAT_NAMES

SCHEMA_VERSION = 1
FILE_NAME = "scores.h5"
STATS_COLUMNS = tuple(f"{k}_{s}" for k in KINDS for s in STAT_NAMES) + ("neg_sample_var",)
NAME_BYTES = 256
_ROWS_PER_CHUNK = 256
# the 2-D tables whose columns grow: stream -> (table, column names)
_TABLES = {"gradients": ("norms", "layer_names"), "scalars": ("values", "names")}


def _names_dataset(group, name):
    group.create_dataset(name, shape=(0,), maxshape=(None,), dtype=f"S{NAME_BYTES}", chunks=(64,))


def _column(group, name, dtype, columns=None):
    shape = (0,) if columns is None else (0, columns)
    maxshape = (None,) if columns is None else (None, None if columns == 0 else columns)
    chunks = (4096,) if columns is None else (_ROWS_PER_CHUNK, max(min(columns, 128), 16))
    fill = np.nan if np.dtype(dtype).kind == "f" else 0
    group.create_dataset(name, shape=shape, maxshape=maxshape, dtype=dtype, chunks=chunks,
                         fillvalue=fill)


def _create(path: Path, bins: int, config: dict, env: dict):
    f = h5py.File(path, "w", libver="latest")
    f.attrs.update(scoreviz_schema=SCHEMA_VERSION, bins=bins, config=json.dumps(config),
                   env=json.dumps(env), scoreviz_version=env.get("scoreviz", ""))
    scores = f.create_group("scores")
    _column(scores, "step", np.int64)
    _column(scores, "tag", np.int32)
    _names_dataset(scores, "tag_names")
    _column(scores, "stats", np.float64, len(STATS_COLUMNS))
    scores["stats"].attrs["columns"] = json.dumps(STATS_COLUMNS)
    for kind in KINDS:
        _column(scores, f"{kind}_hist", np.uint32, bins)
    grads = f.create_group("gradients")
    _column(grads, "step", np.int64)
    _column(grads, "total", np.float32)
    _column(grads, "norms", np.float32, 0)
    _names_dataset(grads, "layer_names")
    scalars = f.create_group("scalars")
    _column(scalars, "step", np.int64)
    _column(scalars, "values", np.float64, 0)
    _names_dataset(scalars, "names")
    return f


def _rebuild(path: Path):
    """Copy a file whose writer died into a fresh one, so it can be appended to.

    A killed SWMR writer leaves a mark in the file that stops any later writer
    from opening it; readers still can, so everything is copied out.
    """
    tmp = path.with_name(path.name + ".rebuild")
    with open_file(path) as old, h5py.File(tmp, "w", libver="latest") as new:
        new.attrs.update(dict(old.attrs))
        for name in old:
            old.copy(old[name], new, name)
    os.replace(tmp, path)


class StoreWriter:
    """Appends rows to a run's file; creates the file, or appends to an existing one."""

    def __init__(self, path, bins: int, config: dict, env: dict):
        self.path = Path(path)
        if self.path.exists():
            self._file = self._open_existing(bins)
        else:
            self._file = _create(self.path, bins, config, env)
        self._file.swmr_mode = True
        self._tag_index = {name: i for i, name in enumerate(_decode(self._file["scores/tag_names"][:]))}
        self._columns = {stream: _decode(self._file[stream][names][:]) for stream, (_, names) in _TABLES.items()}

    def _open_existing(self, bins: int):
        validate(self.path)  # clear errors for a foreign or damaged file
        try:
            f = h5py.File(self.path, "r+", libver="latest")
        except OSError:
            _rebuild(self.path)
            f = h5py.File(self.path, "r+", libver="latest")
        recorded_bins = int(f.attrs["bins"])
        if recorded_bins != bins:
            f.close()
            raise ScorevizError(f"{self.path}: recorded with {recorded_bins} histogram bins, "
                                f"cannot append with bins={bins}")
        return f

    def append_scores(self, tag: str, steps, stats: dict):
        """Rows of one tag: `stats` maps every STATS_COLUMNS name and '<kind>_hist' to arrays."""
        g = self._file["scores"]
        if tag not in self._tag_index:
            self._tag_index[tag] = len(self._tag_index)
            _append(g["tag_names"], _encode([tag], "tag"))
        n = len(steps)
        _append(g["tag"], np.full(n, self._tag_index[tag], dtype=np.int32))
        _append(g["stats"], np.stack([np.asarray(stats[c], dtype=np.float64) for c in STATS_COLUMNS], axis=1))
        for kind in KINDS:
            _append(g[f"{kind}_hist"], stats[f"{kind}_hist"])
        _append(g["step"], np.asarray(steps, dtype=np.int64))  # last: a reader trusts rows up to here

    def append_gradients(self, steps, names, norms, totals):
        """Rows of per-layer norms (n, len(names)) in the order of `names`."""
        g = self._file["gradients"]
        _append(g["norms"], self._table_rows("gradients", names, norms))
        _append(g["total"], np.asarray(totals, dtype=np.float32))
        _append(g["step"], np.asarray(steps, dtype=np.int64))

    def append_scalars(self, steps, names, values):
        """Rows of scalar values (n, len(names)) in the order of `names`."""
        g = self._file["scalars"]
        _append(g["values"], self._table_rows("scalars", names, values))
        _append(g["step"], np.asarray(steps, dtype=np.int64))

    def _table_rows(self, stream, names, values):
        """Map rows given in `names` order onto the stored columns, adding new columns."""
        group = self._file[stream]
        table_key, names_key = _TABLES[stream]
        known = self._columns[stream]
        new = [name for name in names if name not in known]
        if new:
            _append(group[names_key], _encode(new, stream))
            known.extend(new)
        table = group[table_key]
        if table.shape[1] < len(known):
            table.resize(len(known), axis=1)
        position = {name: i for i, name in enumerate(known)}
        values = np.asarray(values, dtype=table.dtype).reshape(-1, len(names))
        rows = np.full((values.shape[0], len(known)), np.nan, dtype=table.dtype)
        rows[:, [position[name] for name in names]] = values
        return rows

    def flush(self):
        self._file.flush()

    def close(self):
        if self._file:
            self._file.close()
            self._file = None


def _append(dataset, rows):
    rows = np.asarray(rows)
    n = dataset.shape[0]
    dataset.resize(n + rows.shape[0], axis=0)
    dataset[n:] = rows


def _encode(names, what):
    out = []
    for name in names:
        raw = str(name).encode("utf-8")
        if len(raw) > NAME_BYTES:
            raise ScorevizError(f"{what} name {name[:40]!r}... is longer than {NAME_BYTES} bytes")
        out.append(raw)
    return np.array(out, dtype=f"S{NAME_BYTES}")


def _decode(raw):
    return [bytes(b).decode("utf-8") for b in raw]


# ---------------------------------------------------------------- reading


def validate(path: Path):
    """Raise ScorevizError if `path` is not a readable scoreviz file."""
    with open_file(path):
        pass


class open_file:
    """Open a run's file for reading (SWMR), with clear errors; a context manager yielding h5py.File."""

    def __init__(self, path):
        self.path = Path(path)

    def __enter__(self) -> h5py.File:
        path = self.path
        if not path.exists():
            raise ScorevizError(f"{path}: no such file")
        if not path.is_file():
            raise ScorevizError(f"{path}: not a file")
        size = path.stat().st_size
        if size == 0:
            raise ScorevizError(f"{path}: empty file (0 bytes), not a scoreviz run")
        if not h5py.is_hdf5(path):
            raise ScorevizError(f"{path}: not an HDF5 file")
        self._file = _open_swmr(path)
        try:
            check_schema(self._file, path)
        except BaseException:
            self._file.close()
            raise
        return self._file

    def __exit__(self, *exc):
        self._file.close()
        return False


def _open_swmr(path: Path, attempts: int = 5) -> h5py.File:
    """Open for reading alongside a live writer. A writer that has just created the
    file holds it exclusively for a moment, so a lock error is retried briefly."""
    for attempt in range(attempts):
        try:
            fid = h5py.h5f.open(os.fsencode(path), h5py.h5f.ACC_RDONLY | h5py.h5f.ACC_SWMR_READ, fapl=_reader_fapl())
            return h5py.File(fid)
        except OSError as err:
            message = str(err)
            if "lock" in message and attempt + 1 < attempts:
                time.sleep(0.1 * (attempt + 1))
                continue
            if "lock" in message:
                raise ScorevizError(f"{path}: held open by a writer that does not allow readers ({message})") from None
            raise ScorevizError(f"{path}: truncated or damaged HDF5 file ({message})") from None
    raise AssertionError("unreachable")


# A SWMR reader retries a metadata read that fails its checksum, in case it raced the
# writer. HDF5's default of 100 attempts with exponential back-off turns a damaged file
# into a wait of many minutes; 16 attempts still cover a race but give up in under a second.
_READ_ATTEMPTS = 16
_fapl = None


def _reader_fapl():
    global _fapl
    if _fapl is None:
        fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
        _set_metadata_read_attempts(fapl, _READ_ATTEMPTS)
        _fapl = fapl
    return _fapl


def _set_metadata_read_attempts(fapl, attempts):
    """h5py does not wrap H5Pset_metadata_read_attempts: call it in the HDF5 library h5py
    loaded. Where that library cannot be found, HDF5's default stays."""
    try:
        with open("/proc/self/maps") as maps:
            libs = sorted({line.split()[-1] for line in maps if "libhdf5-" in line or "libhdf5.so" in line})
        lib = ctypes.CDLL(libs[0])
        setter = lib.H5Pset_metadata_read_attempts
    except (OSError, IndexError, AttributeError):
        return
    setter.argtypes = [ctypes.c_int64, ctypes.c_uint]
    setter(fapl.id, attempts)


def check_schema(f: h5py.File, path: Path):
    if "scoreviz_schema" not in f.attrs:
        raise ScorevizError(f"{path}: an HDF5 file, but not a scoreviz run (no 'scoreviz_schema' attribute)")
    version = int(f.attrs["scoreviz_schema"])
    if version > SCHEMA_VERSION:
        raise ScorevizError(f"{path}: written by a newer scoreviz (schema {version}); this one reads schema "
                            f"{SCHEMA_VERSION} and older: upgrade scoreviz")
    missing = [g for g in ("scores", "gradients", "scalars") if g not in f]
    if missing:
        raise ScorevizError(f"{path}: damaged scoreviz run, missing groups {missing}")


class StoreReader:
    """Reads a run's file as plain numpy arrays. Open, read, close: every read sees the newest rows."""

    def __init__(self, path):
        self.path = Path(path)
        with open_file(self.path) as f:
            self.attrs = {k: _attr(v) for k, v in f.attrs.items()}
        self.config = self._json_attr("config")
        self.env = self._json_attr("env")
        self.bins = int(self.attrs.get("bins", 0))

    def _json_attr(self, key):
        try:
            return json.loads(self.attrs.get(key, "{}"))
        except ValueError:
            raise ScorevizError(f"{self.path}: attribute {key!r} is not valid JSON") from None

    def _read(self, fn):
        """Run fn(f) on the open file, turning any h5py failure into a ScorevizError."""
        with open_file(self.path) as f:
            try:
                return fn(f)
            except ScorevizError:
                raise
            except (OSError, KeyError, ValueError, TypeError, RuntimeError) as err:
                raise ScorevizError(f"{self.path}: truncated or damaged scoreviz run, cannot read it ({err})") from None

    def tags(self):
        return self._read(lambda f: _decode(f["scores/tag_names"][:]))

    def layers(self):
        return self._read(lambda f: _decode(f["gradients/layer_names"][:]))

    def scores(self, tag, with_hist=()):
        """(steps, stats (n, c), column names, {kind: hist (n, bins)}) for one tag."""
        def read(f):
            g = f["scores"]
            names = _decode(g["tag_names"][:])
            if tag not in names:
                raise ScorevizError(f"{self.path}: no scores under tag {tag!r}; tags: {names}")
            n = _rows(g, "step", "tag", "stats", *[f"{k}_hist" for k in with_hist])
            mask = g["tag"][:n] == names.index(tag)
            steps = g["step"][:n][mask]
            stats = g["stats"][:n][mask]
            columns = json.loads(g["stats"].attrs["columns"])
            hists = {k: g[f"{k}_hist"][:n][mask] for k in with_hist}
            return steps, stats, columns, hists
        return self._read(read)

    def table(self, stream):
        """(steps, values (n, columns), column names) of 'gradients' (plus totals) or 'scalars'."""
        def read(f):
            g = f[stream]
            key, names_key = _TABLES[stream]
            extra = ("total",) if stream == "gradients" else ()
            n = _rows(g, "step", key, *extra)
            names = _decode(g[names_key][:])
            values = g[key][:n]
            if values.shape[1] < len(names):  # names flushed before the widened table
                names = names[:values.shape[1]]
            values = values[:, :len(names)]
            totals = g["total"][:n] if extra else None
            return g["step"][:n], values, names, totals
        return self._read(read)

    def steps(self):
        """Every recorded step of every stream, unique and sorted (reads only the step columns)."""
        def read(f):
            columns = [f[f"{stream}/step"][:] for stream in ("scores", "gradients", "scalars")]
            return np.unique(np.concatenate(columns))
        return self._read(read)



def _rows(group, *names):
    """Rows complete in every dataset of a stream (a live writer may be between two appends)."""
    return min(group[name].shape[0] for name in names)


def _attr(value):
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.generic):
        return value.item()
    return value
