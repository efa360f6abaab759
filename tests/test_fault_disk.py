"""Fault suite: a real full disk (a small tmpfs mounted by the test; needs root).

The loop must see a ScorevizError naming the file and the errno at its next log
call, flush or close; every row flushed before stays readable and correct; the
process exits normally (no crash at exit); after space is freed the run resumes.
"""

import os
import subprocess

import pytest

from faults import check_rows, drain, last_flushed, report, start_writer
from scoreviz import Recorder, ScorevizError, open_run

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.fixture
def small_disk(tmp_path):
    """A 24 MB tmpfs; skipped, with the reason, where it cannot be mounted."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk, leave):
    """Fill the disk but `leave` bytes with a file that can be removed later."""
    free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
    with open(disk / "filler", "wb") as out:
        out.truncate(0)
        out.write(b"\0" * max(0, free - leave))
    return disk / "filler"


@pytest.mark.parametrize("fallocate", [True, False], ids=["reserved", "free-space check"])
def test_a_disk_that_fills_while_recording(small_disk, subprocess_env, fallocate):
    """The disk fills as the run grows; with fallocate the writer finds out when it reserves
    room, elsewhere from the free space; either way before HDF5 fails mid-write."""
    run_dir = small_disk / "run"
    fill(small_disk, leave=13 << 20)
    setup = [] if fallocate else ["import scoreviz.store.space as s; s._fallocate = None"]
    writer = start_writer(run_dir, subprocess_env, pause=0.0, flush_every=50, setup=setup)
    assert writer.wait(timeout=240) == 0  # the loop saw the error, closed, and exited normally
    lines = drain(writer)
    stderr = writer.stderr.read()
    errors = [line for line in lines if line.startswith("error ")]
    assert errors and "scores.h5: writing the run failed: No space left on device (errno 28, ENOSPC)" in errors[0]
    assert lines[-1] == "closed after error"
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr[-2000:]
    flushed = last_flushed(lines)
    assert flushed > 1000
    rows = check_rows(run_dir, flushed)  # every flushed row, correct and in place
    (small_disk / "filler").unlink()
    resumed = start_writer(run_dir, subprocess_env, steps=100, pause=0.0, flush_every=50)
    assert resumed.wait(timeout=120) == 0, resumed.stderr.read()
    # It resumes after the last step every stream has: the step being logged when the disk
    # filled may be in some streams only (the call that found the disk full logged no more).
    start = int(next(line for line in drain(resumed) if line.startswith("imported")).split()[1])
    assert start in (rows, rows - 1)
    assert check_rows(run_dir, start + 99) == start + 100
    report("disk full while recording", check="fallocate" if fallocate else "free space", rows_kept=rows,
           last_flushed_step=flushed, rows_lost=0)


def test_a_disk_that_is_full_at_start(small_disk):
    fill(small_disk, leave=0)
    with pytest.raises(ScorevizError, match=r"scores\.h5: .*No space left on device \(errno 28, ENOSPC\)"):
        Recorder(small_disk / "run")
    assert not (small_disk / "run" / "scores.h5").exists()  # nothing half-made left behind
    (small_disk / "filler").unlink()
    with Recorder(small_disk / "run") as rec:
        rec.log_scalars(0, loss=1.0)
    assert list(open_run(small_disk / "run").scalars()["loss"]) == [1.0]


def test_a_full_disk_is_said_at_the_log_call_flush_and_close(small_disk):
    """The writer keeps writing into the room it reserved; when it cannot reserve more, the
    next flush raises, and so does every later log call and close."""
    import torch

    run_dir = small_disk / "run"
    rec = Recorder(run_dir, flush_secs=60)
    rec.log_scalars(0, loss=0.0)
    rec.flush()
    filler = fill(small_disk, leave=0)
    with pytest.raises(ScorevizError, match=r"scores\.h5: writing the run failed: No space left on device "
                                            r"\(errno 28, ENOSPC\).*Free some space, then resume"):
        for step in range(1, 100_000):
            rec.log_scores(step, torch.rand(8), torch.rand(8, 64))
            rec.log_scalars(step, loss=float(step))
            if step % 100 == 0:
                rec.flush()
    with pytest.raises(ScorevizError, match="No space left on device"):
        rec.log_scalars(step + 1, loss=1.0)
    with pytest.raises(ScorevizError, match="No space left on device"):
        rec.close()
    rec.close()  # once closed, closing again is quiet
    filler.unlink()
    loss = open_run(run_dir).scalars()["loss"]
    assert list(loss) == list(range(len(loss))) and len(loss) > 100
