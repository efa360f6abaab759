"""Run ids: which runs lie below the run folders the server was given, and which folder an id names.

A run id is the run folder's path relative to the run folder (POSIX form);
with several run folders (``scoreviz serve runs/ other/``, or a glob), it is
relative to their deepest common folder, so two folders' runs of the same
name get different ids (``runs/a``, ``other/a``). Ids that point outside the
folders given (``../..``, absolute paths, symlinks leading out) are refused,
so a crafted URL can only ever open runs the server was given. Runs are found
through scoreviz.find_runs, the library's one run discovery.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path


class RefusedRunId(ValueError):
    """A run id that does not name a run below RUNS_DIR."""


def _resolved(path: Path, run_id) -> Path:
    """``path`` resolved; RefusedRunId (an error row, like any broken run) when it cannot be: a
    symbolic link loop (``loop -> loop``, a scores.h5 linked to itself) made pathlib raise a
    RuntimeError, a 500 on every view that had the run selected."""
    try:
        return path.resolve()
    except RuntimeError:
        raise RefusedRunId(f"run id {run_id!r} refused: {path.name} is a symbolic link loop") from None
    except OSError as err:  # Python 3.13 says ELOOP for a loop
        reason = "is a symbolic link loop" if err.errno == errno.ELOOP else \
            f"cannot be looked at ({err.strerror or err})"
        raise RefusedRunId(f"run id {run_id!r} refused: {path.name} {reason}") from None


def _scoreviz():
    # Imported on first use: the app module tree stays importable without torch.
    import scoreviz

    return scoreviz


class RunIds:
    """The run folders below ``root`` (a folder, a glob, or a list of them): their ids, each id's
    folder and scores.h5 (confined to the folders given), and the file's stamp."""

    def __init__(self, root):
        from scoreviz.run import common_base, expand_roots

        self.roots = [p.resolve() for p in expand_roots(root)]
        self.root = common_base(self.roots)  # run ids are relative to it
        self._root_prefixes = tuple(str(r).rstrip(os.sep) + os.sep for r in self.roots)

    def run_ids(self) -> list[str]:
        """Ids of every run folder below the root, broken ones included, sorted."""
        below = str(self.root).rstrip(os.sep) + os.sep
        ids = []
        for path in _scoreviz().find_runs(self.roots):
            text = str(path)  # the common prefix cut off: os.path.relpath takes 30 us a run
            if text == str(self.root):  # a run folder given itself (export RUN_DIR): its name
                ids.append(Path(text).name)
                continue
            ids.append(text[len(below):].replace(os.sep, "/") if text.startswith(below) else
                       Path(os.path.relpath(text, self.root)).as_posix())
        return sorted(ids)

    def _inside(self, path: Path, strictly: bool = False) -> bool:
        """Whether ``path`` (resolved) lies in one of the run folders given."""
        return any(root in path.parents or (path == root and not strictly) for root in self.roots)

    def resolve(self, run_id) -> Path:
        """Folder of ``run_id``; raises RefusedRunId unless it lies below the root."""
        return Path(self.folder(run_id))

    def folder(self, run_id) -> str:
        """resolve() as a string (a table of 1,000 runs asks thousands of times: pathlib's
        objects took most of the time)."""
        if not isinstance(run_id, str) or not run_id or "\x00" in run_id:
            raise RefusedRunId(f"run id {run_id!r} refused: not a run name")
        if os.path.isabs(run_id) or run_id.startswith(("/", "\\")):
            raise RefusedRunId(f"run id {run_id!r} refused: absolute paths are not allowed")
        if len(self.roots) == 1 and self.root.name == run_id and (self.root / _scoreviz().store.FILE_NAME).exists():
            return str(self.root)  # the run folder given itself
        path = self._plainly_below(run_id)
        if path is not None:
            return path
        path = _resolved(self.root / run_id, run_id)
        if not self._inside(path):
            raise RefusedRunId(f"run id {run_id!r} refused: it points outside the runs folder")
        return str(path)

    def _plainly_below(self, run_id: str) -> str | None:
        """``root/run_id`` when it lies in a run folder given with no link and no '..' on
        the way below the (resolved) root, checked with one lstat per part instead of a full
        resolve of every part from / (a page of 1,000 runs asks this thousands of times);
        None when that cannot be said so simply (the caller resolves)."""
        parts = [part for part in run_id.split("/") if part not in ("", ".")]  # as Path(run_id).parts
        if not parts or ".." in parts:
            return None
        path = str(self.root)  # strings, not pathlib: a quarter of the time
        for part in parts:
            path = os.path.join(path, part)
            try:
                if stat.S_ISLNK(os.lstat(path).st_mode):
                    return None
            except OSError:
                return None
        if not path.startswith(self._root_prefixes):
            return None
        return path

    def scores_file(self, run_id) -> Path:
        """The run's scores.h5; raises RefusedRunId unless it, too, lies below the root.

        The folder may be below the root while its scores.h5 is a symlink to a
        file elsewhere: that file is not one the server was given.
        """
        return Path(self.scores_path(run_id))

    def scores_path(self, run_id) -> str:
        """scores_file() as a string (see folder())."""
        path = os.path.join(self.folder(run_id), _scoreviz().store.FILE_NAME)
        try:
            if not stat.S_ISLNK(os.lstat(path).st_mode):
                return path  # a file (or nothing yet) in a folder inside the root: inside too
        except OSError:
            pass
        if not self._inside(_resolved(Path(path), run_id), strictly=True):
            raise RefusedRunId(f"run id {run_id!r} refused: its {os.path.basename(path)} is a link to a file "
                               "outside the runs folder")
        return path

    def stamp(self, run_id):
        """(size, mtime_ns) of the run's scores.h5, the cache's notion of a version; None when
        the file cannot be looked at."""
        return self.file_and_stamp(run_id)[1]

    def file_and_stamp(self, run_id):
        """The run's scores.h5 (a string) and its stamp (None when it cannot be looked at)."""
        path = self.scores_path(run_id)
        try:
            st = os.stat(path)
        except OSError:
            return path, None
        return path, (st.st_size, st.st_mtime_ns)

    def mtime(self, run_id: str) -> float:
        """When the run's file was last written (seconds; 0 when it is gone): the run list's
        "most recent" without reading the run; 0 for a refused one."""
        try:
            stamp = self.stamp(run_id)
        except RefusedRunId:
            return 0.0
        return stamp[1] / 1e9 if stamp else 0.0
