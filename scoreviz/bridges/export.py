"""`scoreviz export`: the formats other than HTML (`--format tensorboard|parquet`), and the check of
the file every export writes (`output_file`), without Dash."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from scoreviz.errors import ScorevizError
from scoreviz.store import FILE_NAME

FORMATS = ("tensorboard", "parquet")


def export_runs(run_dirs, fmt: str, out_dir, overwrite: bool = False) -> list[Path]:
    """Write `run_dirs` under `out_dir` as `fmt`; returns the paths written."""
    if fmt == "tensorboard":
        from scoreviz.bridges.tensorboard import export_tensorboard

        return export_tensorboard(run_dirs, out_dir, overwrite=overwrite)
    if fmt == "parquet":
        from scoreviz.bridges.parquet import export_parquet

        return export_parquet(run_dirs, out_dir, overwrite=overwrite)
    raise ScorevizError(f"export: format must be one of {', '.join(FORMATS)}, got {fmt!r}")


def output_file(out, force: bool = False, reads=()) -> Path:
    """``out`` checked as a file an export may write: a new path, or (with ``force``) a
    regular file to replace. ScorevizError naming ``--out`` when it is a folder, in a missing
    folder, exists without ``force``, is anything but a regular file (a device such as
    /dev/null, a FIFO, a socket, a symbolic link: ``force`` replaces none of them), or is a
    file of a run in ``reads`` (run folders or their scores.h5: the report would be written
    over the run it reads, and a live writer would lose every later step).
    """
    out = Path(out)
    try:
        found = os.lstat(out)
    except FileNotFoundError:
        found = None
    except OSError as err:
        raise ScorevizError(f"--out {out}: cannot look at it ({err.strerror or err})") from None
    if found is not None and stat.S_ISDIR(found.st_mode):
        raise ScorevizError(f"--out {out}: is a folder; give a file name, e.g. {out / 'report.html'}")
    if not out.parent.exists():
        raise ScorevizError(f"--out {out}: the folder {out.parent} does not exist")
    if not out.parent.is_dir():
        raise ScorevizError(f"--out {out}: {out.parent} is not a folder")
    for run in reads:
        _refuse_run_file(out, Path(run))
    if found is not None:
        if not stat.S_ISREG(found.st_mode):
            raise ScorevizError(f"--out {out}: is {_kind(found.st_mode)}, not a regular file; --force replaces "
                                "only regular files")
        if not force:
            raise ScorevizError(f"--out {out}: exists; add --force to overwrite it")
    return out


def output_folder(out, reads=(), what: str = "the exported files") -> Path:
    """``out`` checked as a folder an export writes ``what`` into: a folder or a new path (made
    by the export). ScorevizError naming ``--out`` when it is anything else (a file, a device, a
    FIFO), or when it is the folder of a run in ``reads`` (run folders): an export that replaces
    its old files there would delete the run's own.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ScorevizError(f"--out {out}: must be a folder for {what}, and this is {_kind(os.stat(out).st_mode)}")
    for run in reads:
        try:
            same = out.exists() and os.path.samefile(out, run)
        except OSError:  # a run that cannot be looked at is not this folder
            same = False
        if same:
            raise ScorevizError(f"--out {out}: is the folder of the run {run}, which the export reads; give "
                                "another folder")
    return out


def _refuse_run_file(out: Path, read: Path):
    """ScorevizError if ``out`` is a file of a run that reading ``read`` (a run, its scores.h5,
    or a folder of runs) reads: a scores.h5 or a file named after it (the lock, a writer's
    temporary files) in that folder or below it, also through links, or the run's file under
    another name (a hard link)."""
    folder = read.parent if read.name == FILE_NAME and not read.is_dir() else read
    try:
        where, below = out.parent.resolve(), folder.resolve()
        by_name = out.name.lstrip(".").startswith(FILE_NAME) and (where == below or below in where.parents)
        by_inode = out.exists() and (folder / FILE_NAME).exists() and os.path.samefile(out, folder / FILE_NAME)
    except (OSError, RuntimeError):  # a link loop: then it is nothing the export reads
        return
    if by_name or by_inode:
        raise ScorevizError(f"--out {out}: is a file of a run in {folder}, which the export reads; writing it "
                            "would destroy the run")


def _kind(mode: int) -> str:
    """What a file of ``mode`` is, in words ("a FIFO")."""
    for test, name in ((stat.S_ISREG, "a file"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISLNK, "a symbolic link")):
        if test(mode):
            return name
    return "not a regular file"
