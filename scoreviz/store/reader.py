"""Reading a run's file: checks first, then only the rows complete in every dataset.

Every failure while reading (a damaged or foreign file, a dataset whose declared
size cannot be true) is a ScorevizError naming the file. Sizes are checked
against each other and against the file's size before anything is read, so a
small file that declares billions of rows is refused at once, in bounded memory.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np

from scoreviz.errors import ScorevizError
from scoreviz.store.hdf5 import describe, open_read
from scoreviz.store.schema import GROWS, NAME_BYTES, SCHEMA_VERSION, STATS_COLUMNS, STREAMS, decode_names, streams_of
from scoreviz.store.select import check_max_points, check_step_range, pick_rows, read_rows

# A dataset may declare more than the file holds: rows a live writer has staged but not
# flushed, and columns of a table added late, whose earlier rows take no space. Beyond
# 16 times the file's size plus this many bytes, a declared size cannot be true.
_DECLARED_SLACK = 256 << 20
# A compressed dataset (a published part, scoreviz.store.manifest) holds at most this many
# bytes of rows per byte of file: deflate's largest ratio is about 1,032 to 1.
_DEFLATE_RATIO = 1032
_MAX_READER_BINS = 1 << 20


class open_file:
    """Open a run's file for reading (SWMR) and check it is a scoreviz run: a context
    manager yielding h5py.File; every failure is a ScorevizError naming the file."""

    def __init__(self, path):
        self.path = Path(path)

    def __enter__(self) -> h5py.File:
        path = self.path
        try:
            if not path.exists():
                raise ScorevizError(f"{path}: no such file")
            if not path.is_file():
                raise ScorevizError(f"{path}: not a file")
            if path.stat().st_size == 0:
                raise ScorevizError(f"{path}: empty file (0 bytes), not a scoreviz run")
            if not h5py.is_hdf5(path):
                raise ScorevizError(f"{path}: not an HDF5 file")
        except OSError as err:
            raise ScorevizError(f"{path}: cannot read the file ({describe(err)})") from None
        self._file = open_read(path)
        try:
            self.schema = check_schema(self._file, path)
        except BaseException:
            self._file.close()
            raise
        return self._file

    def __exit__(self, *exc):
        try:
            self._file.close()
        except Exception:  # noqa: BLE001: closing a damaged file must not hide the real error
            pass
        return False


def validate(path: Path):
    """Raise ScorevizError unless `path` is a readable scoreviz run, sizes checked."""
    StoreReader(path).rows()


def check_schema(f: h5py.File, path: Path) -> int:
    """The schema version of a scoreviz run's file; ScorevizError for a foreign or newer file."""
    try:
        if "scoreviz_schema" not in f.attrs:
            raise ScorevizError(f"{path}: an HDF5 file, but not a scoreviz run (no 'scoreviz_schema' attribute)")
        version = _integer(f.attrs["scoreviz_schema"], "scoreviz_schema", path)
        if version > SCHEMA_VERSION:
            raise ScorevizError(f"{path}: written by a newer scoreviz (schema {version}); this one reads schema "
                                f"{SCHEMA_VERSION} and older: upgrade scoreviz")
        if version < 1:
            raise ScorevizError(f"{path}: truncated or damaged scoreviz run (schema version {version})")
        missing = [g for g in streams_of(version) if not isinstance(f.get(g), h5py.Group)]  # one lookup each
        if missing:
            raise ScorevizError(f"{path}: truncated or damaged scoreviz run: missing groups {missing}")
        return version
    except ScorevizError:
        raise
    except Exception as err:  # noqa: BLE001
        raise ScorevizError(f"{path}: truncated or damaged scoreviz run: cannot read its header ({describe(err)})") from None


def _integer(value, name, path) -> int:
    if isinstance(value, np.ndarray) and value.size == 1:
        value = value.reshape(())[()]
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ScorevizError(f"{path}: truncated or damaged scoreviz run: attribute {name!r} is not an integer ({value!r:.40})")
    return int(value)


class StoreReader:
    """Reads a run's file as plain numpy arrays. Open, read, close: every read sees the newest rows.

    With ``header=True`` the one open that reads the root attributes also reads
    what a run list shows (:attr:`header`): the name lists, the committed row
    counts and each stream's last step, a few hundred bytes whatever the run's length.
    """

    def __init__(self, path, header: bool = False):
        self.path = Path(path)

        opened = open_file(self.path)

        def read(f):
            self.attrs = {k: _attr(v) for k, v in f.attrs.items()}
            self.schema = opened.schema  # checked on opening
            self.bins = _integer(self.attrs.get("bins"), "bins", self.path)
            if not 0 < self.bins <= _MAX_READER_BINS:
                raise ScorevizError(f"{self.path}: truncated or damaged scoreviz run: {self.bins} histogram bins")
            return self._header(f) if header else None

        self.header = self._read(read, opened)
        self.config = self._json_attr("config")
        self.env = self._json_attr("env")

    def _json_attr(self, key):
        value = self.attrs.get(key, "{}")
        try:
            parsed = json.loads(value)
        except (TypeError, ValueError):
            raise ScorevizError(f"{self.path}: attribute {key!r} is not valid JSON") from None
        if not isinstance(parsed, dict):
            raise ScorevizError(f"{self.path}: attribute {key!r} is not a JSON object")
        return parsed

    def _read(self, fn, opened=None):
        """fn(f) on the open file (``opened``, an open_file, or a new one); every failure becomes a
        ScorevizError naming the file."""
        with opened or open_file(self.path) as f:
            try:
                return fn(f)
            except ScorevizError:
                raise
            except MemoryError:
                raise ScorevizError(f"{self.path}: too large to read into memory") from None
            except Exception as err:  # noqa: BLE001: h5py raises OSError, KeyError, ValueError, RuntimeError...
                raise ScorevizError(f"{self.path}: truncated or damaged scoreviz run: cannot read it "
                                    f"({describe(err)})") from None

    # ------------------------------------------------------------ what is there

    def _header(self, f) -> dict:
        """Names, committed rows and the last step of every stream, without reading its data."""
        committed = self._committed(f)
        size = self.path.stat().st_size
        out = {"rows": {}, "names": {}, "last_step": None}
        for name in streams_of(self.schema):
            if committed is None:
                rows, count = self._extent(f, name, committed)
                steps, names_ds = f[name]["step"], f[name][STREAMS[name].names]
            else:
                rows, count = committed[name]
                if not rows and not count:  # nothing committed: nothing to check or read
                    out["rows"][name], out["names"][name] = 0, []
                    continue
                steps, names_ds = self._counted(f[name], name, rows, count, size)
            out["rows"][name] = rows
            out["names"][name] = decode_names(names_ds[:count]) if count else []
            if rows:
                last = int(steps[rows - 1])  # one element: rows are appended in step order
                out["last_step"] = last if out["last_step"] is None else max(out["last_step"], last)
        return out

    def _counted(self, group, stream_name, rows, names, size):
        """The step and name datasets of a stream, checked against its committed (rows, names):
        all a header reads. Reading data checks every dataset (:meth:`_extent`)."""
        steps = _dataset(group, "step", 1, self.path, "iu")
        names_ds = _dataset(group, STREAMS[stream_name].names, 1, self.path, "S")
        for name, ds in (("step", steps), (STREAMS[stream_name].names, names_ds)):
            if ds.shape[0] * ds.dtype.itemsize > 16 * size + _DECLARED_SLACK:
                raise self._absurd(f"{stream_name}/{name}", ds.shape)
        if rows * steps.dtype.itemsize > size * _ratio(steps):
            raise self._absurd(stream_name, (rows, names))
        if not (0 <= rows <= steps.shape[0] and 0 <= names <= names_ds.shape[0]) or names * NAME_BYTES > size:
            raise ScorevizError(f"{self.path}: truncated or damaged scoreviz run: {stream_name} says {rows} rows "
                                f"and {names} names are complete, but holds {steps.shape[0]} steps and "
                                f"{names_ds.shape[0]} names")
        return steps, names_ds

    def rows(self) -> dict:
        """{stream: (rows, names)} complete in every dataset, sizes checked; (0, 0) for a stream
        the file's schema does not have."""
        def read(f):
            committed = self._committed(f)
            extents = {name: self._extent(f, name, committed) for name in STREAMS}
            if extents["spectrum"][0]:  # a window's dim says how much of its row to read: checked here too
                self._checked_dims(f["spectrum"]["dim"][:extents["spectrum"][0]], f["spectrum"]["eigenvalues"])
            return extents
        return self._read(read)

    def _committed(self, f):
        """{stream: (rows, names)} the writer has committed (None for schema 1 files, which have no count).
        Read before anything else: a live writer raises it only after the rows are on disk."""
        if self.schema < 2:
            return None
        ds = _dataset(f, "committed", 2, self.path, "iu")
        try:
            order = json.loads(_attr(ds.attrs["streams"]))
        except (KeyError, TypeError, ValueError):
            order = None
        present = streams_of(self.schema)
        if not isinstance(order, list) or ds.shape != (len(order), 2) or not set(present) <= set(order):
            raise ScorevizError(f"{self.path}: truncated or damaged scoreviz run: /committed has shape {ds.shape} "
                                f"for streams {order!r:.80}")
        values = ds[:]
        return {name: (int(values[order.index(name), 0]), int(values[order.index(name), 1])) for name in present}

    def _extent(self, f, stream_name, committed="read"):
        """(rows, names) of one stream that every dataset holds, after checking their sizes."""
        if committed == "read":
            committed = self._committed(f)
        stream = STREAMS[stream_name]
        if stream.since > self.schema:
            return 0, 0  # an older file: the stream came later
        group = f[stream_name]
        size = self.path.stat().st_size
        if committed is not None:
            rows, names = committed[stream_name]
        names_ds = _dataset(group, stream.names, 1, self.path, "S")
        datasets = {}
        for name, dtype, width in stream.present(self.schema):
            datasets[name] = _dataset(group, name, 1 if width is None else 2, self.path, _KINDS[np.dtype(dtype).kind])
        for name, ds in [(stream.names, names_ds), *datasets.items()]:
            if int(np.prod(ds.shape, dtype=np.float64)) * ds.dtype.itemsize > 16 * size + _DECLARED_SLACK:
                raise self._absurd(f"{stream_name}/{name}", ds.shape)
        present = min(ds.shape[0] for ds in datasets.values())
        if committed is None:
            rows, names = present, names_ds.shape[0]
        elif not (0 <= rows <= present and 0 <= names <= names_ds.shape[0]):
            raise ScorevizError(f"{self.path}: truncated or damaged scoreviz run: {stream_name} says {rows} rows "
                                f"and {names} names are complete, but its datasets hold {present} rows and "
                                f"{names_ds.shape[0]} names")
        widths = stream.widths(self.bins, names)
        fixed_bytes = 0
        for name, ds in datasets.items():
            width = widths[name]
            if width == GROWS:  # as wide as its widest row: checked against each row's width when read
                continue
            if name == "stats" and stream.columns:  # as many columns as its `columns` attribute names (checked
                width = ds.shape[1]                 # when read): older files have fewer
            if width is not None and stream.table != name and ds.shape[1] != width:
                raise ScorevizError(f"{self.path}: truncated or damaged scoreviz run: {stream_name}/{name} has "
                                    f"{ds.shape[1]} columns, expected {width}")
            if stream.table == name and ds.shape[1] < names and self.schema >= 2:
                raise ScorevizError(f"{self.path}: truncated or damaged scoreviz run: {stream_name}/{name} has "
                                    f"{ds.shape[1]} columns for {names} names")
            if stream.table != name:
                fixed_bytes += ds.dtype.itemsize * (width or 1) / _ratio(ds)
        if rows * fixed_bytes > size or names * NAME_BYTES > size:
            raise self._absurd(stream_name, (rows, names))
        return rows, names

    def _absurd(self, what, shape):
        return ScorevizError(f"{self.path}: truncated or damaged scoreviz run: {what} declares shape {tuple(shape)}, more "
                             f"than a file of {self.path.stat().st_size:,} bytes can hold")

    # ------------------------------------------------------------ reading

    def tags(self, stream="scores"):
        """Tag names of a stream with tags (scores, embeddings, spectrum), in order of first use."""
        return self._names(stream)

    def layers(self):
        return self._names("gradients")

    def _names(self, stream):
        def read(f):
            _, names = self._extent(f, stream)
            return decode_names(f[stream][STREAMS[stream].names][:names]) if names else []
        return self._read(read)

    def scores(self, tag, with_hist=(), columns=None, steps=None, max_points=None):
        """(steps, stats (n, c), column names, {kind: hist (n, bins)}) for one tag.

        ``columns``: the statistics to read (names; those the file lacks are left out),
        None for all. ``steps``: (first, last) inclusive, either None. ``max_points``:
        at most this many steps, every k-th plus the last (see scoreviz.store.select).
        Only the rows and columns asked for are read (hyperslabs); the tag and step
        columns are read whole to find them.
        """
        step_range = check_step_range(steps, self.path)
        max_points = check_max_points(max_points, self.path)
        whole = columns is None and steps is None and max_points is None

        def read(f):
            g, n, picked = self._tag_rows(f, "scores", tag, "scores")
            names = _stats_columns(g["stats"], self.path)
            if whole:
                hists = {k: _rows_at(g[f"{k}_hist"], picked) for k in with_hist}
                return g["step"][:n][picked], _rows_at(g["stats"], picked), names, hists
            step_column = g["step"][:n]
            rows = pick_rows(step_column[picked], picked, step_range, max_points)
            wanted = names if columns is None else [c for c in columns if c in names]
            stats = read_rows(g["stats"], rows, [names.index(c) for c in wanted])
            hists = {k: read_rows(g[f"{k}_hist"], rows) for k in with_hist}
            return step_column[rows], stats, wanted, hists
        return self._read(read)

    def embeddings(self, tag):
        """(steps, stats (n, c), column names) of the embedding statistics of one tag."""
        def read(f):
            g, n, picked = self._tag_rows(f, "embeddings", tag, "embeddings")
            return g["step"][:n][picked], _rows_at(g["stats"], picked), _stats_columns(g["stats"], self.path)
        return self._read(read)

    def spectrum(self, tag):
        """(steps, dims, samples, ranks, eigenvalues (n, largest dim), NaN after each row's dim,
        signals (n, c), their column names) of one tag; a file without the signals (schema 3)
        gives (n, 0) and no names."""
        def read(f):
            g, n, picked = self._tag_rows(f, "spectrum", tag, "spectra")
            table = g["eigenvalues"]
            dims = self._checked_dims(_rows_at(g["dim"], picked), table)
            width = int(dims.max()) if len(dims) else 0
            if len(picked) and (picked[-1] - picked[0] + 1) * width * table.dtype.itemsize > \
                    16 * self.path.stat().st_size + _DECLARED_SLACK:
                raise self._absurd("spectrum/eigenvalues", (len(picked), width))
            values = _rows_at(table, picked, width).astype(np.float64)
            values[np.arange(width)[None, :] >= dims[:, None]] = np.nan
            if "stats" in (name for name, _, _ in STREAMS["spectrum"].present(self.schema)):
                signals, names = _rows_at(g["stats"], picked), _stats_columns(g["stats"], self.path)
            else:
                signals, names = np.empty((len(picked), 0)), []
            return (g["step"][:n][picked], dims, _rows_at(g["samples"], picked), _rows_at(g["rank"], picked),
                    values, signals, names)
        return self._read(read)

    def _checked_dims(self, dims, table):
        """The dims of spectrum rows, each between 1 and the eigenvalue table's width."""
        dims = np.asarray(dims, dtype=np.int64)
        bad = dims[(dims < 1) | (dims > table.shape[1])]
        if len(bad):
            raise ScorevizError(f"{self.path}: truncated or damaged scoreviz run: a spectrum row says dim {bad[0]}, "
                                f"but /spectrum/eigenvalues has {table.shape[1]} columns")
        return dims

    def _tag_rows(self, f, stream, tag, what):
        """(group, committed rows, indices of the rows of `tag`); ScorevizError when the tag has none."""
        n, count = self._extent(f, stream)
        names = decode_names(f[stream]["tag_names"][:count]) if count else []
        if tag not in names:
            raise ScorevizError(f"{self.path}: no {what} under tag {tag!r}; tags: {names}")
        g = f[stream]
        return g, n, np.flatnonzero(g["tag"][:n] == names.index(tag))

    def table(self, stream, names=None, steps=None, max_points=None):
        """(steps, values (n, columns), column names, totals or None) of 'gradients' or 'scalars'.

        ``names``, ``steps`` and ``max_points`` select columns (those recorded), a step range
        and at most that many steps, read as hyperslabs, as in :meth:`scores`.
        """
        step_range = check_step_range(steps, self.path)
        max_points = check_max_points(max_points, self.path)

        def read(f):
            g = f[stream]
            n, count = self._extent(f, stream)
            key = STREAMS[stream].table
            recorded = decode_names(g[STREAMS[stream].names][:count])
            width = min(len(recorded), g[key].shape[1])
            recorded = recorded[:width]
            if names is None and steps is None and max_points is None:
                values = g[key][:n, :width] if n and width else np.full((n, width), np.nan, dtype=g[key].dtype)
                totals = g["total"][:n] if stream == "gradients" else None
                return g["step"][:n], values, recorded, totals
            step_column = g["step"][:n]
            rows = pick_rows(step_column, np.arange(n), step_range, max_points)
            wanted = recorded if names is None else [c for c in names if c in recorded]
            values = read_rows(g[key], rows, [recorded.index(c) for c in wanted])
            totals = read_rows(g["total"], rows) if stream == "gradients" else None
            return step_column[rows], values, wanted, totals
        return self._read(read)

    def steps(self):
        """Every recorded step of every stream, unique and sorted (reads only the step columns)."""
        def read(f):
            committed = self._committed(f)
            extents = {name: self._extent(f, name, committed)[0] for name in streams_of(self.schema)}
            return np.unique(np.concatenate([f[name]["step"][:n] for name, n in extents.items()]))
        return self._read(read)

    def times(self):
        """(steps, wall times) of every row of every stream; times NaN where a file has none (schema 1)."""
        def read(f):
            committed = self._committed(f)
            steps, times = [], []
            for name in STREAMS:
                n = self._extent(f, name, committed)[0]
                steps.append(f[name]["step"][:n])
                has_time = self.schema >= 2 and "time" in f[name]
                times.append(f[name]["time"][:n] if has_time else np.full(n, np.nan))
            return np.concatenate(steps), np.concatenate(times).astype(np.float64)
        return self._read(read)

    def read_rows(self, stream, start, stop):
        """Rows start:stop of every dataset of a stream, as {dataset: array}, and its names."""
        def read(f):
            g = f[stream]
            n, count = self._extent(f, stream)
            stop_ = min(stop, n)
            out = {}
            for name, _, _ in STREAMS[stream].present(self.schema):
                out[name] = g[name][start:stop_]
            if "stats" in out:
                out["stats_columns"] = _stats_columns(g["stats"], self.path)
            if stream == "spectrum":
                out["dim"] = self._checked_dims(out["dim"], g["eigenvalues"])
            return out, decode_names(g[STREAMS[stream].names][:count])
        return self._read(read)


# The element types a dataset may have, by the kind of the type the writer gives it: whole numbers
# where numbers index or count (steps, tags, histogram counts), any number for measurements.
_KINDS = {"i": "iu", "u": "iu", "f": "iuf", "S": "S"}


def _dataset(group, name, ndim, path, kinds):
    """``group[name]``, checked to be a dataset of ``ndim`` dimensions whose elements are of one
    of ``kinds`` (numpy kind letters): a step column of strings is a damaged file, said here,
    not a ValueError deep in a read."""
    ds = group.get(name)  # one lookup: a run list opens a thousand files
    if not isinstance(ds, h5py.Dataset):
        raise ScorevizError(f"{path}: truncated or damaged scoreviz run: missing dataset {group.name}/{name}")
    if ds.ndim != ndim or ds.dtype.kind not in kinds:
        raise ScorevizError(f"{path}: truncated or damaged scoreviz run: {group.name}/{name} has shape {ds.shape} "
                            f"and type {ds.dtype}")
    return ds


def _ratio(ds) -> int:
    """How many bytes of rows a byte of the file can hold in ``ds``: 1, or deflate's most for a
    compressed dataset (a size check that stays a bound, also for parts)."""
    return _DEFLATE_RATIO if ds.compression else 1


def _stats_columns(ds, path):
    try:
        columns = json.loads(_attr(ds.attrs["columns"]))
    except (KeyError, TypeError, ValueError):
        raise ScorevizError(f"{path}: truncated or damaged scoreviz run: {ds.name} has no valid 'columns' attribute") from None
    if not isinstance(columns, list) or len(columns) != ds.shape[1] or not all(isinstance(c, str) for c in columns):
        raise ScorevizError(f"{path}: truncated or damaged scoreviz run: {ds.name} 'columns' does not match its "
                            f"{ds.shape[1]} columns")
    return columns


def _rows_at(ds, picked, width=None):
    """ds[picked] (its first `width` columns, when given) for sorted row indices; one contiguous
    read when most rows are picked."""
    columns = () if ds.ndim == 1 else (width if width is not None else ds.shape[1],)
    if len(picked) == 0:
        return np.empty((0,) + columns, dtype=ds.dtype)
    block = ds[picked[0]:picked[-1] + 1] if width is None else ds[picked[0]:picked[-1] + 1, :width]
    return block[picked - picked[0]]


def _attr(value):
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.generic):
        return value.item()
    return value


__all__ = ["StoreReader", "open_file", "validate", "check_schema", "STATS_COLUMNS"]
