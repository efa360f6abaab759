"""The layout of a run's file, `scores.h5`, and how a new one is created.

    /                      attrs: scoreviz_schema, scoreviz_version, bins, config (JSON), env (JSON)
    /committed             int64 (5, 2)      per stream (attr `streams`: their order), the rows and
                                             names complete in every dataset of the stream
    /<stream>/step         int64 (n,)        the training step of each row
    /<stream>/time         float64 (n,)      wall time of each row (Unix seconds, at the log call)
    /scores/tag            int32 (n,)        index into /scores/tag_names
    /scores/tag_names      bytes (t,)        UTF-8 tag names, in order of first use
    /scores/stats          float64 (n, c)    attrs: columns (the c column names, JSON)
    /scores/pos_hist       uint32 (n, bins)  histogram of positive scores over [-1, 1]
    /scores/neg_hist       uint32 (n, bins)  histogram of negative scores over [-1, 1]
    /gradients/total       float32 (n,)      L2 norm of all gradients
    /gradients/norms       float32 (n, l)    L2 norm per layer, NaN where a layer had none
    /gradients/layer_names bytes (l,)
    /scalars/values        float64 (n, s)    NaN where a scalar was not logged
    /scalars/names         bytes (s,)
    /embeddings/tag        int32 (n,)        index into /embeddings/tag_names
    /embeddings/tag_names  bytes (t,)
    /embeddings/stats      float64 (n, c)    attrs: columns (samples, nonfinite, dim, std, uniformity,
                                             alignment)
    /spectrum/tag          int32 (n,)        index into /spectrum/tag_names
    /spectrum/tag_names    bytes (t,)
    /spectrum/dim          int32 (n,)        the embedding dimension of each row (>= 1)
    /spectrum/samples      int64 (n,)        samples in the row's window
    /spectrum/rank         float64 (n,)      RankMe's effective rank of the window
    /spectrum/eigenvalues  float32 (n, w)    eigenvalues, largest first, in the first `dim` columns;
                                             NaN after them; w grows to the largest dim
    /spectrum/stats        float64 (n, c)    attrs: columns (SPECTRUM_COLUMNS: the window's health
                                             signals, see scoreviz.signals)

A stream is a group of datasets with one row per record. A writer appends to
every dataset of a stream, flushes, and only then raises `committed` (one small
write for all streams), so a reader that reads `committed` first sees only rows
complete in every dataset, whatever happened to the writer (killed, disk full)
in between. Schema 1 files (scoreviz 0.1) have no `committed` and no `time`:
readers take the rows present in every dataset. Schema 2 files have no
`embeddings` and `spectrum` streams (read as empty) and 25 score columns (no
margin, hard_frac). Schema 3 files have no `spectrum/stats` (its columns read as NaN).
A writer upgrades an older file before appending.

Every dataset is chunked and resizable, and not compressed: a live writer
appends a few rows every few seconds, and HDF5 writes each grown compressed chunk to
a new place in the file without reusing the old one (measured: 41 KB per step at
one row per flush, against 2.5 KB uncompressed). The writer works in SWMR mode,
which forbids creating datasets once writing has started, so every dataset
exists from the start: tags, layers and scalar names that appear later are new
rows of the name lists and new columns of the 2-D tables, never new datasets,
and a larger embedding dimension widens the eigenvalue table.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from scoreviz.errors import ScorevizError
from scoreviz.store.hdf5 import describe

SCHEMA_VERSION = 4
# The names the file's columns are made of, defined here (not in scoreviz.stats or
# scoreviz.embeddings, which compute them with torch): reading a run never imports torch.
KINDS = ("pos", "neg")
STAT_NAMES = ("count", "mean", "var", "min", "max", "q05", "q25", "q50", "q75", "q95",
              "nonfinite", "out_of_range")
EMBEDDING_COLUMNS = ("samples", "nonfinite", "dim", "std", "uniformity", "alignment")
# Per spectrum window (scoreviz.signals defines each): alpha-ReQ's slope and its fit's R^2, NESum,
# the participation ratio, the Wasserstein uniformity, LiDAR and the pairs (surrogate classes) behind
# it, and the windows of the tag dropped since the previous stored one (the writer was behind).
SPECTRUM_COLUMNS = ("alpha_req", "alpha_req_r2", "nesum", "participation_ratio", "w2_uniformity", "lidar",
                    "lidar_pairs", "windows_dropped")
FILE_NAME = "scores.h5"
STATS_COLUMNS = tuple(f"{k}_{s}" for k in KINDS for s in STAT_NAMES) + ("neg_sample_var", "margin", "hard_frac")
NAME_BYTES = 256
MAX_BINS = 4096
ROWS_PER_CHUNK = 256
BINS = "bins"  # a width: the file's histogram bins
NAMES = "names"  # a width: grows with the stream's name list
GROWS = "grows"  # a width: grows to the widest row appended (rows are NaN after their own width)


@dataclass(frozen=True)
class Stream:
    """One stream of rows: its datasets (name, dtype, width: None for 1-D), its name list,
    the dataset whose columns follow that list (None when none does), the column names of
    its `stats` dataset (kept in the file as that dataset's `columns` attribute; empty when
    it has none), the first schema that has the stream, and {dataset: first schema} for
    datasets added to it later."""

    name: str
    datasets: tuple
    names: str
    table: str = None
    columns: tuple = ()
    since: int = 1
    later: tuple = (("time", 2),)

    def present(self, schema: int) -> list:
        """The (name, dtype, width) of the datasets a file of `schema` has in this stream."""
        first = dict(self.later)
        return [d for d in self.datasets if first.get(d[0], self.since) <= schema]

    def widths(self, bins: int, names: int) -> dict:
        """{dataset: number of columns (None for 1-D)} for a file with `bins` bins and `names` names."""
        sizes = {BINS: bins, NAMES: names}
        return {ds: sizes.get(width, width) for ds, _, width in self.datasets}


_ROW = (("step", np.int64, None), ("time", np.float64, None))
_TAG = (("tag", np.int32, None),)
STREAMS = {
    "scores": Stream("scores", _ROW + _TAG + (("stats", np.float64, len(STATS_COLUMNS)),)
                     + tuple((f"{kind}_hist", np.uint32, BINS) for kind in KINDS), names="tag_names",
                     columns=STATS_COLUMNS),
    "gradients": Stream("gradients", _ROW + (("total", np.float32, None), ("norms", np.float32, NAMES)),
                        names="layer_names", table="norms"),
    "scalars": Stream("scalars", _ROW + (("values", np.float64, NAMES),), names="names", table="values"),
    "embeddings": Stream("embeddings", _ROW + _TAG + (("stats", np.float64, len(EMBEDDING_COLUMNS)),),
                         names="tag_names", columns=EMBEDDING_COLUMNS, since=3),
    "spectrum": Stream("spectrum", _ROW + _TAG + (("dim", np.int32, None), ("samples", np.int64, None),
                                                  ("rank", np.float64, None), ("eigenvalues", np.float32, GROWS),
                                                  ("stats", np.float64, len(SPECTRUM_COLUMNS))),
                       names="tag_names", columns=SPECTRUM_COLUMNS, since=3, later=(("stats", 4),)),
}


def streams_of(schema: int) -> list:
    """The names of the streams a file of `schema` has."""
    return [name for name, stream in STREAMS.items() if stream.since <= schema]


def create_file(path: Path, bins: int, config: dict, env: dict) -> None:
    """Create an empty run file at `path`, atomically: it is built under a temporary name
    and moved into place only once complete and on disk, so a writer killed (or a disk
    that fills) while creating it leaves no half-made file behind."""
    install(build_empty(path, bins, {"config": json.dumps(config), "env": json.dumps(env),
                                     "scoreviz_version": env.get("scoreviz", "")}), path)


def build_empty(path: Path, bins: int, attrs: dict, packed: int = 0) -> Path:
    """An empty run file with the current schema, under a temporary name next to `path`; returns that name.

    ``packed`` (rows): a file written once and never appended to (a published segment):
    chunks of about that many rows, compressed (gzip with shuffle). A live file stays
    uncompressed (see the module's docstring); a file written once has no such cost, and
    its histograms, mostly zeros, shrink several times."""
    tmp = temporary_path(path, "creating")
    with _cleaned_up_on_error(tmp, path, "create the run file"):
        with h5py.File(tmp, "w", libver="latest") as f:
            f.attrs.update(attrs)
            f.attrs.update(scoreviz_schema=SCHEMA_VERSION, bins=bins)
            f.create_dataset("committed", data=np.zeros((len(STREAMS), 2), dtype=np.int64),
                             maxshape=(None, 2), chunks=(16, 2))
            f["committed"].attrs["streams"] = json.dumps(list(STREAMS))
            for stream in STREAMS.values():
                _create_stream(f.create_group(stream.name), stream, bins, packed)
    return tmp


def install(tmp: Path, path: Path) -> None:
    """Move a complete file built under a temporary name into place, once it is on disk."""
    with _cleaned_up_on_error(tmp, path, "write the run file"):
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)


class _cleaned_up_on_error:
    """Remove the temporary file if the work fails; OS and HDF5 errors become one-line ScorevizErrors."""

    def __init__(self, tmp, path, what):
        self.tmp, self.path, self.what = tmp, path, what

    def __enter__(self):
        return self

    def __exit__(self, kind, err, tb):
        if err is None:
            return False
        _remove(self.tmp)
        if isinstance(err, Exception) and not isinstance(err, ScorevizError):
            raise ScorevizError(f"{self.path}: cannot {self.what} ({describe(err)})") from None
        return False


def _create_stream(group, stream: Stream, bins: int, packed: int = 0):
    widths = stream.widths(bins, 0)
    for name, dtype, _ in stream.datasets:
        _column(group, name, dtype, widths[name], packed)
    group.create_dataset(stream.names, shape=(0,), maxshape=(None,), dtype=f"S{NAME_BYTES}", chunks=(64,),
                         **_PACKED if packed else {})  # 16 KB a chunk, mostly zeros
    if stream.columns:
        group["stats"].attrs["columns"] = json.dumps(stream.columns)


_PACKED = {"compression": "gzip", "compression_opts": 4, "shuffle": True}


def _column(group, name, dtype, width, packed=0):
    if width == GROWS:  # few rows (one per window), many columns: chunks of 16 rows x 256 columns
        shape, maxshape, chunks = (0, 0), (None, None), (16, 256)
    else:
        shape = (0,) if width is None else (0, width)
        maxshape = (None,) if width is None else (None, width if width else None)
        chunks = (4096,) if width is None else (ROWS_PER_CHUNK, min(width, 128) if width else 16)
    options = {}
    if packed:  # written once: chunks no longer than the rows, the whole width, compressed
        rows = max(1, min(packed, chunks[0]))
        chunks = (rows,) if width is None else (rows, max(1, min(width, 1024)) if width not in (0, GROWS) else 64)
        options = _PACKED
    fill = np.nan if np.dtype(dtype).kind == "f" else 0
    group.create_dataset(name, shape=shape, maxshape=maxshape, dtype=dtype, chunks=chunks, fillvalue=fill,
                         **options)


def temporary_path(path: Path, purpose: str) -> Path:
    """A name next to `path` for a file being built; `leftovers` finds those of killed writers."""
    return path.with_name(f"{path.name}.{purpose}-{os.getpid()}")


def leftovers(path: Path):
    """Temporary files a killed writer left next to `path` (only to be removed under the run's lock)."""
    return [p for purpose in ("creating", "rebuild") for p in path.parent.glob(f"{path.name}.{purpose}-*")]


def remove_leftovers(path: Path):
    for stale in leftovers(path):
        _remove(stale)


def _remove(path: Path):
    try:
        os.unlink(path)
    except OSError:
        pass


def encode_names(names) -> np.ndarray:
    """Names as fixed-width UTF-8 bytes; the caller has checked them (see check_name)."""
    return np.array([str(name).encode("utf-8") for name in names], dtype=f"S{NAME_BYTES}")


def check_name(name, what: str) -> str:
    """A tag or scalar name the file can hold, or a ScorevizError saying why not."""
    if not isinstance(name, str) or not name:
        raise ScorevizError(f"{what} must be a non-empty string, got {name!r}")
    try:
        raw = name.encode("utf-8")
    except UnicodeEncodeError:
        raise ScorevizError(f"{what} {name!r} is not valid Unicode text (it holds a lone surrogate)") from None
    if len(raw) > NAME_BYTES:
        raise ScorevizError(f"{what} {name[:40]!r}... is {len(raw)} bytes long; at most {NAME_BYTES} bytes "
                            "(UTF-8) fit")
    if "\x00" in name:
        raise ScorevizError(f"{what} {name!r} holds a NUL character")
    return name


def decode_names(raw) -> list:
    return [bytes(b).decode("utf-8") for b in raw]
