"""Room on the disk for the writes to come, reserved before they are made.

When HDF5 runs into a full disk in the middle of a write, the file can no longer
be flushed or closed cleanly (and HDF5 2.0 crashes at interpreter exit). So the
writer reserves disk blocks past the end of its file (Linux `fallocate` with
FALLOC_FL_KEEP_SIZE: the file's size does not change, the blocks are its own)
before it writes, and a full disk or a quota shows up as a failed reservation,
before any byte is written; what is already reserved is enough to close the file
cleanly. The reservation is given back when the file is closed.

Where fallocate is not available (other systems, some network file systems) the
free space of the disk is checked instead, which cannot see quotas or other
processes racing for the last blocks.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import sys

HEADROOM = 8 << 20  # bytes kept reserved past the end of the file while it is written
_KEEP_SIZE, _PUNCH_HOLE = 0x01, 0x02
_UNSUPPORTED = {errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL, errno.ENODEV}


def _libc_fallocate():
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).fallocate
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    function.restype = ctypes.c_int
    return function


_fallocate = _libc_fallocate()


class DiskFull(OSError):
    """There is not room for the next writes (raised before they are made)."""


class Reservation:
    """Blocks reserved past the end of one open file (given by its descriptor)."""

    def __init__(self, fd: int, path):
        self.fd, self.path = fd, path
        self.end = 0  # the file is reserved up to here
        self.supported = _fallocate is not None

    def ensure(self, upcoming: int):
        """Make sure `upcoming` bytes (and the headroom) can be written; DiskFull if not."""
        size = os.fstat(self.fd).st_size
        want = size + max(HEADROOM // 2, 2 * upcoming)
        if want <= self.end:
            return
        if self.supported:
            start = max(0, size - HEADROOM)  # recent allocations of HDF5 may still be holes
            length = size + HEADROOM + 4 * upcoming - start
            if _fallocate(self.fd, _KEEP_SIZE, start, length) == 0:
                self.end = start + length
                return
            number = ctypes.get_errno()
            if number in (errno.ENOSPC, errno.EDQUOT):
                raise DiskFull(number, f"cannot reserve {length:,} bytes for the next writes")
            if number not in _UNSUPPORTED:
                raise OSError(number, os.strerror(number))
            self.supported = False
        free = shutil.disk_usage(os.path.dirname(os.path.abspath(self.path))).free
        if free < HEADROOM // 4 + 2 * upcoming:
            raise DiskFull(errno.ENOSPC, f"only {free:,} bytes left on the disk")

    def release(self):
        """Give back the blocks reserved past the end of the file (call once it is closed)."""
        if not self.supported or not self.end:
            return
        try:
            fd = os.open(self.path, os.O_WRONLY)
        except OSError:
            return
        try:
            size = os.fstat(fd).st_size
            if self.end > size:
                # Truncating to the same size drops the blocks past the end (ext4, XFS; a hole
                # punched there is ignored by ext4); the punch covers file systems that keep them.
                os.ftruncate(fd, size)
                _fallocate(fd, _PUNCH_HOLE | _KEEP_SIZE, size, self.end - size)
        finally:
            os.close(fd)
        self.end = 0
