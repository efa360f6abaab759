"""A run read while another process writes it, and after that process is killed."""

import os
import signal
import subprocess
import textwrap
import time

import pytest

from scoreviz import Recorder, ScorevizError, open_run

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

WRITER = textwrap.dedent("""
    import sys, time, torch, scoreviz
    run_dir, steps, pause = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    model = torch.nn.Linear(4, 2)
    model(torch.randn(2, 4)).sum().backward()
    rec = scoreviz.Recorder(run_dir, config={"writer": "subprocess"}, flush_secs=0.2)
    for step in range(steps):
        rec.log_scores(step, torch.rand(8), torch.rand(8, 64) * 2 - 1)
        rec.log_gradients(step, model)
        rec.log_scalars(step, loss=1.0 / (step + 1))
        if step == 20:
            rec.log_scores(step, torch.rand(8), torch.rand(8, 64), tag="late")
        time.sleep(pause)
        print(step, flush=True)
    rec.close()
""")


def start_writer(python, env, run_dir, steps, pause):
    return subprocess.Popen([python, "-c", WRITER, str(run_dir), str(steps), str(pause)],
                            env=env, stdout=subprocess.PIPE, text=True)


def steps_so_far(run_dir):
    try:
        return len(open_run(run_dir).scores("train"))
    except ScorevizError:  # not created yet, or no tag yet
        return 0


def test_a_reader_sees_the_run_grow_while_it_is_written(tmp_path, python, subprocess_env):
    writer = start_writer(python, subprocess_env, tmp_path, steps=60, pause=0.05)
    seen = []
    deadline = time.monotonic() + 90
    while writer.poll() is None and time.monotonic() < deadline:
        seen.append(steps_so_far(tmp_path))
        if seen[-1]:
            run = open_run(tmp_path)  # every other view of a live run works too
            run.gradients(), run.scalars(), run.summary()
        time.sleep(0.1)
    assert writer.wait(timeout=60) == 0
    growing = sorted(set(n for n in seen if 0 < n < 60))
    assert len(growing) >= 3, f"saw step counts {sorted(set(seen))}"
    assert seen == sorted(seen)  # never goes back
    run = open_run(tmp_path)
    assert len(run.scores("train")) == 60 and run.tags == ["train", "late"]


def test_every_flushed_step_survives_sigkill_and_the_run_can_resume(tmp_path, python, subprocess_env):
    writer = start_writer(python, subprocess_env, tmp_path, steps=10_000, pause=0.01)
    printed = 0
    for line in writer.stdout:  # wait until it is well into the run
        printed = int(line) + 1
        if printed >= 50:
            break
    time.sleep(0.6)  # three flush intervals: the first 50 steps are on disk
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait()
    run = open_run(tmp_path)
    frame = run.scores("train")
    assert len(frame) >= 50
    assert list(frame.index) == list(range(len(frame)))  # every flushed step, in order, no holes
    assert len(run.scalars()) >= 50 and len(run.gradients()) >= 50
    # a resumed run appends to the killed run's file, losing nothing
    with Recorder(tmp_path, flush_secs=0.2) as rec:
        rec.log_scalars(len(frame), resumed=1.0)
    assert len(open_run(tmp_path).scores("train")) == len(frame)
    assert open_run(tmp_path).scalars()["resumed"].notna().sum() == 1
