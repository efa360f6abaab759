"""One writer per run: an exclusive lock on `scores.h5.lock`, held for the writer's life.

The lock is an OS lock (flock) on a small file next to the run's data file, so it
goes away with the process that held it, however that process ended: a writer
that was killed leaves no stale lock to clean up. While the lock is held the file
says who holds it (host, pid, start time, command), so a second writer can be told.
The lock file itself is never deleted (deleting it would let two writers lock two
different files); it is empty when nobody holds it.

flock works between processes of one machine and, on Linux, over NFS v4 (as a
byte-range lock). On file systems without working locks the lock is refused with
a clear error rather than silently skipped.
"""

from __future__ import annotations

import datetime
import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path

from scoreviz.errors import ScorevizError


def lock_path(data_file: Path) -> Path:
    return data_file.with_name(data_file.name + ".lock")


class RunLock:
    """An exclusive, non-blocking lock of one run's data file."""

    def __init__(self, data_file):
        self.data_file = Path(data_file)
        self.path = lock_path(self.data_file)
        self._fd = None

    def acquire(self, wait: float = 0.0):
        """Take the lock, or raise ScorevizError naming its holder; with ``wait``, try for up to
        that many seconds first (a reader's local copy, brought up to date by one process at a time)."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as err:
            raise ScorevizError(f"{self.data_file}: cannot create its lock file {self.path.name} "
                                f"({err.strerror}, errno {err.errno})") from None
        deadline = time.monotonic() + wait
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise
                    time.sleep(0.05)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise ScorevizError(f"{self.data_file}: already being recorded by {holder}; scoreviz allows one "
                                "writer per run, and that writer's rows would be lost. Record into another "
                                "folder, or stop the other writer first. (Under torch.distributed only rank 0 "
                                "writes: build the Recorder after init_process_group, or launch with torchrun, "
                                "which sets RANK.)") from None
        except OSError as err:
            os.close(fd)
            raise ScorevizError(f"{self.data_file}: cannot lock the run on this file system ({err.strerror}, "
                                f"errno {err.errno}); one writer per run cannot be guaranteed here") from None
        self._fd = fd
        holder = json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                             "since": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                             "argv": sys.argv[:8]})
        try:  # who holds it, for the error of a second writer; the lock itself does not depend on it
            os.ftruncate(fd, 0)
            os.pwrite(fd, holder.encode(), 0)
        except OSError:
            pass
        return self

    def release(self):
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)
        except OSError:
            pass
        try:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            os.close(self._fd)
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None


def _read_holder(fd) -> str:
    """'pid 123 on host (since ...)'; the holder writes this right after locking, so wait a moment for it."""
    for _ in range(10):
        try:
            info = json.loads(os.pread(fd, 4096, 0).decode() or "null")
        except (OSError, ValueError, UnicodeDecodeError):
            info = None
        if isinstance(info, dict):
            where = "this process" if info.get("pid") == os.getpid() and info.get("host") == socket.gethostname() \
                else f"pid {info.get('pid')} on {info.get('host')}"
            return f"another Recorder ({where}, since {info.get('since')})"
        time.sleep(0.05)
    return "another process (it did not say which)"
