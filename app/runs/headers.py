"""A small persistent index of run headers, so a restarted server lists a sweep at once.

Reading a run's header (config, tag and scalar names, row counts, last step)
opens its HDF5 file: about 6 ms a run, 6 s for a sweep of 1,000 runs. The
server keeps what it read in one JSON file per set of run folders, keyed by
each file's absolute path, size and mtime: a run that changed (a live run, a
rewritten file) no longer matches its entry and is read again, so the index can
only save reads, never show a stale run. Runs that could not be read are not
kept (their error is found again).

The file lives in ``$SCOREVIZ_CACHE_DIR``, else ``$XDG_CACHE_HOME/scoreviz``,
else ``~/.cache/scoreviz``; nothing is written into the run folders. A missing,
unreadable or damaged index is an empty one, and a cache folder that cannot be
written leaves the server working without it.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from pathlib import Path

VERSION = 2  # 2: headers list the embedding tags


def cache_dir() -> Path:
    """Where the header indexes live (see the module's docstring)."""
    if os.environ.get("SCOREVIZ_CACHE_DIR"):
        return Path(os.environ["SCOREVIZ_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "scoreviz"


class HeaderIndex:
    """{scores.h5 path: (size, mtime_ns, header)} of the runs below some run folders, saved as JSON."""

    def __init__(self, roots, folder: Path | None = None):
        names = "\n".join(sorted(str(Path(r).resolve()) for r in roots))
        digest = hashlib.sha1(names.encode()).hexdigest()[:16]
        self.path = (folder or cache_dir()) / f"headers-{digest}.json"
        self._lock = threading.Lock()
        self._entries = self._load()
        self._dirty = False

    def _load(self) -> dict:
        try:
            saved = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        if not isinstance(saved, dict) or saved.get("version") != VERSION or not isinstance(saved.get("runs"), dict):
            return {}
        return {path: entry for path, entry in saved["runs"].items()
                if isinstance(entry, list) and len(entry) == 3 and isinstance(entry[2], dict)}

    def get(self, file: Path, stamp) -> dict | None:
        """The header saved for ``file`` as it is now (``stamp``: (size, mtime_ns)), else None."""
        if stamp is None:
            return None
        with self._lock:
            entry = self._entries.get(str(file))
        if entry is None or (entry[0], entry[1]) != tuple(stamp):
            return None
        return dict(entry[2])

    def put(self, file: Path, stamp, header: dict) -> None:
        if stamp is None:
            return
        with self._lock:
            self._entries[str(file)] = [stamp[0], stamp[1], header]
            self._dirty = True

    @property
    def dirty(self) -> bool:
        """Whether the index changed since it was loaded or saved."""
        return self._dirty

    def forget_missing(self, files) -> None:
        """Drop the entries of files no longer listed (deleted runs), so the index stays small."""
        keep = {str(f) for f in files}
        with self._lock:
            gone = [p for p in self._entries if p not in keep]
            for p in gone:
                del self._entries[p]
            self._dirty = self._dirty or bool(gone)

    def save(self) -> None:
        """Write the index if it changed (atomically: a reader never sees half a file); errors ignored."""
        with self._lock:
            if not self._dirty:
                return
            text = json.dumps({"version": VERSION, "runs": self._entries}, default=str)
            self._dirty = False
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".headers-", suffix=".tmp")
            with os.fdopen(fd, "w") as out:
                out.write(text)
            os.replace(tmp, self.path)
        except OSError:
            try:
                os.unlink(tmp)
            except (OSError, UnboundLocalError):
                pass
