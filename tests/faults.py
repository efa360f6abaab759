"""Shared pieces of the fault suite (tests/test_fault_*.py): a writer process whose rows
can be checked one by one, reading its progress, and the suite's measurements.

Every row the writer records encodes its step, so a lost, duplicated or shifted row
is seen: the positive scores of step s all equal value(s), the negative scores
-value(s), the scalar `at` equals s, every gradient element equals s, and the
embeddings are embedding(s), a batch drawn from a generator seeded with s.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

WRITER = r'''
import sys, time
print("started", flush=True)
import torch, scoreviz
run_dir, steps, pause, flush_every = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
for line in sys.argv[5:]:
    exec(line)  # a fault to set up, e.g. a smaller disk headroom
try:  # after the last step every stream has: a kill between two streams' commits leaves no hole
    run = scoreviz.open_run(run_dir)
    start = min(int(frame.index[-1]) for frame in (run.scores("train"), run.embeddings("train"), run.scalars(),
                                                   run.gradients())) + 1
except (scoreviz.ScorevizError, IndexError):
    start = 0
model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 2))
print("imported", start, flush=True)
rec = scoreviz.Recorder(run_dir, config={"writer": "fault suite"}, flush_secs=0.05, spectrum_window=4)
print("opened", flush=True)
def value(step):
    return ((step * 7919) % 1000) / 1000
def embedding(step):
    return torch.randn(6, 4, generator=torch.Generator().manual_seed(step))
try:
    for step in range(start, start + steps):
        rec.log_scores(step, torch.full((8,), value(step)), torch.full((8, 4), -value(step)))
        rec.log_embeddings(step, embedding(step), embedding(step) + 0.1)
        rec.log_scalars(step, at=float(step))
        for p in model.parameters():
            p.grad = torch.full_like(p, float(step))
        rec.log_gradients(step, model)
        if (step + 1) % flush_every == 0:
            rec.flush()
            print("flushed", step, flush=True)
        time.sleep(pause)
    rec.close()
    print("closed", flush=True)
except scoreviz.ScorevizError as err:
    print("error", err, flush=True)
    try:
        rec.close()
    except scoreviz.ScorevizError:
        pass
    print("closed after error", flush=True)
'''


def value(step):
    return ((np.asarray(step) * 7919) % 1000) / 1000


def embedding_std(step):
    """The std statistic of the writer's embeddings at `step` (torch's generator, numpy's arithmetic)."""
    import torch

    z = torch.randn(6, 4, generator=torch.Generator().manual_seed(int(step))).double().numpy()
    x = z / np.linalg.norm(z, axis=1, keepdims=True)
    return x.std(axis=0, ddof=1).mean()


def start_writer(run_dir, env, steps=10 ** 6, pause=0.002, flush_every=5, setup=()):
    """A writer process; its stdout lines arrive on `.lines` (a queue), None at the end."""
    process = subprocess.Popen([sys.executable, "-c", WRITER, str(run_dir), str(steps), str(pause),
                                str(flush_every), *setup], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    process.lines = queue.Queue()

    def pump():
        for line in process.stdout:
            process.lines.put(line.strip())
        process.lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return process


def wait_for(process, prefix, timeout=60.0):
    """Lines up to and including the first one that starts with `prefix`."""
    seen, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = process.lines.get(timeout=max(0.01, deadline - time.monotonic()))
        except queue.Empty:
            break
        if line is None:
            break
        seen.append(line)
        if line.startswith(prefix):
            return seen
    raise AssertionError(f"the writer never printed {prefix!r}; it printed {seen[-5:]}, "
                         f"stderr: {process.stderr.read()[-2000:] if process.poll() is not None else '(running)'}")


def drain(process):
    """Every line the (ended) process printed that was not read yet."""
    lines = []
    while True:
        line = process.lines.get(timeout=30)
        if line is None:
            return lines
        lines.append(line)


def last_flushed(lines, before=-1):
    flushed = [int(line.split()[1]) for line in lines if line.startswith("flushed ")]
    return max(flushed, default=before)


def check_rows(run_dir, flushed_up_to):
    """Every row is where its step says, and every step up to `flushed_up_to` is there once.
    Returns the number of steps recorded."""
    from scoreviz import open_run

    if flushed_up_to < 0 and not (Path(run_dir) / "scores.h5").exists():
        return 0  # killed before the file was created
    run = open_run(run_dir)
    if flushed_up_to < 0 and "train" not in run.tags:
        return 0  # killed before the first flush
    scores = run.scores("train")
    steps = scores.index.to_numpy()
    assert (steps == np.arange(len(steps))).all(), f"steps with holes or out of order: {steps[:20]}..."
    assert len(steps) >= flushed_up_to + 1, f"{len(steps)} steps on disk, but steps up to {flushed_up_to} were flushed"
    np.testing.assert_allclose(scores["pos_mean"], value(steps), atol=1e-6)
    np.testing.assert_allclose(scores["neg_mean"], -value(steps), atol=1e-6)
    assert (scores["pos_count"] == 8).all() and (scores["neg_count"] == 32).all()
    scalars = run.scalars()
    assert (scalars.index.to_numpy() == np.arange(len(scalars))).all() and len(scalars) >= flushed_up_to + 1
    np.testing.assert_array_equal(scalars["at"].to_numpy(), scalars.index.to_numpy())
    grads = run.gradients()
    assert (grads.index.to_numpy() == np.arange(len(grads))).all() and len(grads) >= flushed_up_to + 1
    # layer "0" has a 2x3 weight and 2 biases: 8 elements equal to the step
    np.testing.assert_allclose(grads["0"].to_numpy(), grads.index.to_numpy() * np.sqrt(8), rtol=1e-5)
    if flushed_up_to < 0 and "train" not in run.embedding_tags:
        return len(steps)  # killed before its embeddings were flushed with its first scores
    embeddings = run.embeddings("train")
    assert (embeddings.index.to_numpy() == np.arange(len(embeddings))).all(), \
        f"embedding steps with holes or out of order: {embeddings.index[:20]}..."
    assert len(embeddings) >= flushed_up_to + 1, f"{len(embeddings)} embedding steps, flushed up to {flushed_up_to}"
    np.testing.assert_allclose(embeddings["std"], [embedding_std(s) for s in embeddings.index], rtol=1e-6)
    spectrum_steps, eigenvalues = run.spectrum("train")
    assert set(spectrum_steps) <= set(embeddings.index), f"spectra at {spectrum_steps} without embeddings"
    assert eigenvalues.shape == (len(spectrum_steps), 4), eigenvalues.shape
    assert np.isfinite(eigenvalues).all() and (eigenvalues >= 0).all(), eigenvalues
    return len(steps)


def report(name, **figures):
    """Append the suite's measurements to $SCOREVIZ_FAULT_REPORT (benchmarks/fault_report.py reads them)."""
    path = os.environ.get("SCOREVIZ_FAULT_REPORT")
    if path:
        with open(path, "a") as out:
            out.write(json.dumps({"case": name, **figures}) + "\n")


def repetitions(default):
    """How often a randomised fault is tried: the test's default, or $SCOREVIZ_FAULT_SCALE times it."""
    return int(default * float(os.environ.get("SCOREVIZ_FAULT_SCALE", "1")))
