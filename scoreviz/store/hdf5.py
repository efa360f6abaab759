"""Opening a run's HDF5 file for reading or writing, and saying plainly why it failed.

HDF5 reports errors as long multi-line messages from deep in the library; these
helpers turn them into one line that names the file, with the OS errno where
there is one (a full disk, a quota, an I/O error).
"""

from __future__ import annotations

import ctypes
import errno as errno_codes
import os
import re
import time
from pathlib import Path

import h5py

from scoreviz.errors import ScorevizError

# A SWMR reader retries a metadata read that fails its checksum, in case it raced the
# writer. HDF5's default of 100 attempts with exponential back-off turns a damaged file
# into a wait of many minutes; 16 attempts still cover a race but give up in under a second.
READ_ATTEMPTS = 16
_LEFT_OPEN = "already open for write"
_ERRNO = re.compile(r"errno = (\d+)")


def open_read(path: Path, attempts: int = 5) -> h5py.File:
    """Open for reading alongside a live writer (SWMR). A writer that is switching the
    file to SWMR holds it exclusively for a moment, so a lock error is retried briefly."""
    for attempt in range(attempts):
        try:
            fid = h5py.h5f.open(os.fsencode(path), h5py.h5f.ACC_RDONLY | h5py.h5f.ACC_SWMR_READ,
                                fapl=_file_access(READ_ATTEMPTS))
            return h5py.File(fid)
        except Exception as err:  # noqa: BLE001: HDF5 raises OSError, RuntimeError, KeyError...
            message = str(err)
            if "lock" in message and attempt + 1 < attempts:
                time.sleep(0.1 * (attempt + 1))
                continue
            if isinstance(err, PermissionError) or _errno(err) == errno_codes.EACCES:
                raise ScorevizError(f"{path}: cannot read the file (permission denied)") from None
            if _LEFT_OPEN in message or "not already open for SWMR writing" in message:
                raise MarkedOpen(f"{path}: marked as open by a writer outside SWMR mode, which readers cannot "
                                 "open (a writer killed while creating it?); a new Recorder on the run repairs it")
            if "lock" in message:
                raise ScorevizError(f"{path}: held open by a writer that does not allow readers "
                                    f"({describe(err)})") from None
            raise ScorevizError(f"{path}: truncated or damaged HDF5 file ({describe(err)})") from None
    raise AssertionError("unreachable")


def open_write(path: Path) -> h5py.File:
    """Open an existing file for appending, in SWMR mode from the first moment, so a
    writer killed at any point leaves a file that readers can still open.

    Raises LeftOpen when a writer that is gone left the file marked as open."""
    try:
        fid = h5py.h5f.open(os.fsencode(path), h5py.h5f.ACC_RDWR | h5py.h5f.ACC_SWMR_WRITE,
                            fapl=_file_access(None))
    except Exception as err:  # noqa: BLE001
        if _LEFT_OPEN in str(err):
            raise LeftOpen(str(path)) from None
        raise ScorevizError(f"{path}: cannot open the run for writing ({describe(err)})") from None
    return h5py.File(fid)


def clear_open_mark(path: Path) -> None:
    """Clear the "open for write" mark that a writer killed outside SWMR mode leaves in a
    file (what HDF5's h5clear -s does), so that it can be read again. Only for a file
    whose writer is known to be gone: the caller holds the run's lock."""
    fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
    fapl.set_libver_bounds(h5py.h5f.LIBVER_LATEST, h5py.h5f.LIBVER_LATEST)
    lib = _hdf5_library()
    flag = ctypes.c_bool(True)
    if lib is not None:
        lib.H5Pset.argtypes = [ctypes.c_int64, ctypes.c_char_p, ctypes.c_void_p]
    if lib is None or lib.H5Pset(fapl.id, b"clear_status_flags", ctypes.byref(flag)) < 0:
        raise ScorevizError(f"{path}: marked as open by a writer that is gone, and this HDF5 library cannot "
                            "clear the mark (run h5clear -s on it)")
    try:
        h5py.h5f.open(os.fsencode(path), h5py.h5f.ACC_RDWR, fapl=fapl).close()
    except Exception as err:  # noqa: BLE001
        raise ScorevizError(f"{path}: marked as open by a writer that is gone, and the mark cannot be cleared "
                            f"({describe(err)})") from None


class MarkedOpen(ScorevizError):
    """A reader cannot open the file: a writer outside SWMR mode has it (or had it, and was killed)."""


class LeftOpen(Exception):
    """The file is still marked as open by a writer (one that was killed: the caller holds the run's lock)."""


def describe(err: BaseException) -> str:
    """One line for an error from HDF5 or the OS: the OS reason and errno where there is one."""
    number = _errno(err)
    if number:
        name = errno_codes.errorcode.get(number, "")
        detail = getattr(err, "strerror", None)
        detail = f": {detail}" if isinstance(err, OSError) and detail and detail != os.strerror(number) \
            and number == err.errno and "HDF5" not in detail and "synchronously" not in detail else ""
        return f"{os.strerror(number)} (errno {number}{', ' + name if name else ''}){detail}"
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return first[:200]


def errno_of(err: BaseException):
    """The OS errno behind an error, also when HDF5 only mentions it in its message; else None."""
    return _errno(err)


def _errno(err):
    number = getattr(err, "errno", None)
    if isinstance(number, int) and number > 0 and not str(err).startswith("Unable to synchronously"):
        return number
    found = _ERRNO.findall(str(err))
    return int(found[-1]) if found and int(found[-1]) > 0 else None


_access_lists = {}


def _file_access(read_attempts):
    """A file access property list: latest format, objects closed with the file, and for
    readers a bounded number of metadata read attempts."""
    if read_attempts not in _access_lists:
        fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
        fapl.set_libver_bounds(h5py.h5f.LIBVER_LATEST, h5py.h5f.LIBVER_LATEST)
        fapl.set_fclose_degree(h5py.h5f.CLOSE_STRONG)
        if read_attempts is not None:
            _set_metadata_read_attempts(fapl, read_attempts)
        _access_lists[read_attempts] = fapl
    return _access_lists[read_attempts]


def _set_metadata_read_attempts(fapl, attempts):
    """h5py does not wrap H5Pset_metadata_read_attempts: call it in the HDF5 library h5py
    loaded. Where that library cannot be found, HDF5's default stays."""
    lib = _hdf5_library()
    if lib is None or not hasattr(lib, "H5Pset_metadata_read_attempts"):
        return
    setter = lib.H5Pset_metadata_read_attempts
    setter.argtypes = [ctypes.c_int64, ctypes.c_uint]
    setter(fapl.id, attempts)


_library = []


def _hdf5_library():
    """The HDF5 shared library h5py loaded (for the few calls h5py does not wrap), or None."""
    if not _library:
        try:
            with open("/proc/self/maps") as maps:
                libs = sorted({line.split()[-1] for line in maps if "libhdf5-" in line or "libhdf5.so" in line})
            _library.append(ctypes.CDLL(libs[0]))
        except (OSError, IndexError):
            _library.append(None)
    return _library[0]
