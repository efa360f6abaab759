"""The HDF5 store of a run: the schema (schema.py), the writer (writer.py), the reader
(reader.py), the one-writer lock (lock.py) and low-level file access (hdf5.py).
This package is the only code that touches h5py."""

from scoreviz.store.reader import StoreReader, check_schema, open_file, validate
from scoreviz.store.schema import FILE_NAME, NAME_BYTES, SCHEMA_VERSION, STATS_COLUMNS, STREAMS, check_name
from scoreviz.store.writer import StoreWriter

__all__ = ["FILE_NAME", "NAME_BYTES", "SCHEMA_VERSION", "STATS_COLUMNS", "STREAMS", "StoreReader",
           "StoreWriter", "check_name", "check_schema", "open_file", "validate"]
