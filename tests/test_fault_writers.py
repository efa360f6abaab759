"""Fault suite: two writers on one run, and writers killed at any moment.

A second writer must get a ScorevizError naming the first and touch nothing; a
writer killed with SIGKILL anywhere (inside Recorder(), while rebuilding a file
left open, while writing) must leave a run that can be read and recorded into
again, with every flushed row in place and no row shifted.
"""

import os
import random
import signal
import time

import pytest
import torch

from faults import check_rows, drain, last_flushed, report, repetitions, start_writer, wait_for
from scoreviz import Recorder, ScorevizError, open_run

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def test_a_second_writer_is_refused_and_the_first_loses_nothing(tmp_path, subprocess_env):
    hold = tmp_path.parent / f"{tmp_path.name}-hold"  # the first stays open until the second is done
    hold.touch()
    first = start_writer(tmp_path, subprocess_env, steps=400, pause=0.005, flush_every=10,
                         setup=[f"HOLD = {str(hold)!r}"])
    wait_for(first, "flushed")
    inode = os.stat(tmp_path / "scores.h5").st_ino
    second = start_writer(tmp_path, subprocess_env, steps=400, pause=0.0, flush_every=10)
    second.wait(timeout=120)
    hold.unlink()
    err = second.stderr.read()
    assert second.returncode != 0
    assert "scores.h5: already being recorded by another Recorder (pid" in err and f"pid {first.pid} on" in err
    assert first.wait(timeout=120) == 0
    assert "closed" in drain(first)
    assert os.stat(tmp_path / "scores.h5").st_ino == inode  # the file was never replaced
    assert check_rows(tmp_path, flushed_up_to=399) == 400  # all 400 rows of the first writer


def test_two_writers_starting_at_once_on_a_new_run(tmp_path, subprocess_env):
    """Both start the same moment (as every rank would before init_process_group): one
    records, the other is refused, and no row is lost; five times."""
    for attempt in range(repetitions(5)):
        run_dir = tmp_path / f"run{attempt}"
        ready = tmp_path / f"ready{attempt}"
        ready.mkdir()
        setup = [  # after its imports, each waits for the other, then both go at once
            f"import os, time; open(os.path.join({str(ready)!r}, str(os.getpid())), 'w').close()",
            f"while len(os.listdir({str(ready)!r})) < 2: time.sleep(0.001)"]
        writers = [start_writer(run_dir, subprocess_env, steps=100, pause=0.01, flush_every=10, setup=setup)
                   for _ in range(2)]
        codes = [w.wait(timeout=180) for w in writers]
        errors = [w.stderr.read() for w in writers]
        assert sorted(codes) == [0, 1], (codes, errors)
        loser = codes.index(1)
        assert "already being recorded by another Recorder" in errors[loser]
        assert check_rows(run_dir, flushed_up_to=99) == 100
    report("two writers at once", tries=repetitions(5), rows_lost=0)


def test_a_second_recorder_in_the_same_process_is_refused(tmp_path):
    with Recorder(tmp_path) as rec:
        rec.log_scalars(0, loss=1.0)
        with pytest.raises(ScorevizError, match=r"already being recorded by another Recorder \(this process"):
            Recorder(tmp_path)
        rec.log_scalars(1, loss=2.0)
    assert list(open_run(tmp_path).scalars()["loss"]) == [1.0, 2.0]
    with Recorder(tmp_path) as rec:  # closed: the run is free again
        rec.log_scalars(2, loss=3.0)


def test_a_rank_other_than_0_never_opens_the_file(tmp_path, monkeypatch):
    """Built before init_process_group, a Recorder takes the launcher's rank (torchrun sets RANK)."""
    monkeypatch.setenv("RANK", "1")
    with Recorder(tmp_path / "run") as rec:
        rec.log_scalars(0, loss=1.0)
        rec.log_gradients(0, torch.nn.Linear(2, 2))
    assert not (tmp_path / "run" / "scores.h5").exists()


def test_writers_killed_at_random_moments_lose_no_flushed_row(tmp_path, subprocess_env):
    """20 writers, each SIGKILLed at a random moment: inside Recorder() (creating the file,
    or rebuilding the one its killed predecessor left open), between log calls, inside a
    flush. After each kill the run reads, every flushed row is there and in its place, and
    the next writer resumes it."""
    rng = random.Random(0)
    kills = repetitions(20)
    flushed, phases, rows = -1, {}, 0
    for attempt in range(kills):
        writer = start_writer(tmp_path, subprocess_env, pause=0.001, flush_every=rng.choice([1, 5, 20]))
        where = attempt % 4
        if where == 0:  # inside Recorder(): opening, rebuilding the killed writer's file
            lines = wait_for(writer, "imported")
            time.sleep(rng.uniform(0.0, 0.05))
        elif where == 1:  # right after it opened: the first rows
            lines = wait_for(writer, "opened")
            time.sleep(rng.uniform(0.0, 0.2))
        else:  # while it writes and flushes
            lines = wait_for(writer, "flushed")
            time.sleep(rng.uniform(0.0, 0.5))
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=30)
        lines += drain(writer)
        phase = lines[-1].split()[0]
        phases[phase] = phases.get(phase, 0) + 1
        flushed = last_flushed(lines, flushed)
        rows = check_rows(tmp_path, flushed)
    leftovers = sorted(p.name for p in tmp_path.iterdir() if p.name not in ("scores.h5", "scores.h5.lock"))
    final = start_writer(tmp_path, subprocess_env, steps=10, pause=0.0, flush_every=5)
    assert final.wait(timeout=120) == 0, final.stderr.read()
    assert check_rows(tmp_path, flushed) == rows + 10
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scores.h5", "scores.h5.lock"]  # temporary files cleaned up
    report("SIGKILL at random moments", kills=kills, phases=phases, rows_lost=0, last_flushed_step=flushed,
           rows=rows + 10, leftovers_before_cleanup=leftovers)
    assert "imported" in phases  # some kills did land inside Recorder()


def test_a_file_left_open_outside_swmr_mode_is_repaired_by_the_next_writer(tmp_path, python, subprocess_env):
    """What scoreviz 0.1 left when killed between creating a file and switching to SWMR."""
    import subprocess

    with Recorder(tmp_path) as rec:
        rec.log_scalars(0, loss=1.0)
    code = "import h5py, os, sys; f = h5py.File(sys.argv[1], 'r+'); os.kill(os.getpid(), 9)"
    subprocess.run([python, "-c", code, str(tmp_path / "scores.h5")], env=subprocess_env)
    with pytest.raises(ScorevizError, match="marked as open by a writer outside SWMR mode"):
        open_run(tmp_path)
    with Recorder(tmp_path) as rec:
        rec.log_scalars(1, loss=2.0)
    assert list(open_run(tmp_path).scalars()["loss"]) == [1.0, 2.0]


def test_leftovers_of_killed_writers_are_cleaned_and_a_zero_byte_file_is_recorded_into(tmp_path):
    (tmp_path / "scores.h5").write_bytes(b"")  # a disk that was full when the file was created
    (tmp_path / "scores.h5.creating-12345").write_bytes(b"half a file")
    (tmp_path / "scores.h5.rebuild-12345").write_bytes(b"half a copy")
    with Recorder(tmp_path) as rec:
        rec.log_scalars(0, loss=1.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scores.h5", "scores.h5.lock"]
    assert list(open_run(tmp_path).scalars()["loss"]) == [1.0]
