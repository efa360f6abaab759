"""One LRU of everything read from runs, bounded in bytes, each value kept with the stamp of the
file it was read from.

A key is ``(run id, what)``; a lookup names the file's stamp as it is now (size, mtime), so a run
that is still being written misses as soon as it grows and a finished run is read once. A read
that failed is kept as its error until the file changes: a broken file is not opened again on
every request. Least recently used values go first once the bytes held pass the bound.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np
import pandas as pd

# 512 MiB holds the full reads of about 50 runs of 100k steps, or of hundreds of 10k-step
# runs, and keeps a 1,000-run server well under 1.5 GB.
CACHE_BYTES = 512 * 1024**2


class Cache:
    """``{(run id, what): (stamp, value)}``, least recently used dropped first past ``max_bytes``."""

    def __init__(self, max_bytes: int = CACHE_BYTES):
        self.max_bytes = max_bytes
        self.bytes = 0
        self._items: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple, stamp):
        """``(True, value)`` when ``key`` holds a value read from the file as it is now
        (``stamp``), else ``(False, None)``; a kept error is its value."""
        with self._lock:
            hit = self._items.get(key)
            if hit is None or hit[0] != stamp:
                return False, None
            self._items.move_to_end(key)
            return True, hit[1]

    def peek(self, key: tuple):
        """``(stamp, value)`` held for ``key`` whatever the file is now, or None; not counted as a use."""
        with self._lock:
            hit = self._items.get(key)
        return None if hit is None else (hit[0], hit[1])

    def put(self, key: tuple, stamp, value) -> None:
        """Keep ``value`` read from the file at ``stamp``, then drop the least recently used past the bound."""
        size = sizeof(value)
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self.bytes -= old[2]
            self._items[key] = (stamp, value, size)
            self.bytes += size
            while self.bytes > self.max_bytes and len(self._items) > 1:
                _, (_, _, dropped) = self._items.popitem(last=False)
                self.bytes -= dropped

    def keys(self) -> list:
        """Every key held, least recently used first."""
        with self._lock:
            return list(self._items)


def sizeof(value) -> int:
    """About how many bytes ``value`` holds (frames, series, arrays and containers of them)."""
    if isinstance(value, pd.DataFrame):  # memory_usage(deep=False), without its 3 ms per frame
        return int(sum(getattr(dtype, "itemsize", 8) for dtype in value.dtypes) * len(value) + value.index.nbytes)
    if isinstance(value, (pd.Series, np.ndarray)):
        return int(value.nbytes)
    if isinstance(value, dict):
        return sum(sizeof(v) for v in value.values()) + 64
    if isinstance(value, (tuple, list)):
        return sum(sizeof(v) for v in value) + 64
    return 256
