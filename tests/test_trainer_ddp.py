"""The trainer under torchrun: two gloo processes on the CPU stay in lockstep."""

import subprocess
import sys
import textwrap

import pytest
import torch

import scoreviz

pytestmark = pytest.mark.slow

# Runs the real trainer in every process, then saves what that rank holds.
WORKER = textwrap.dedent("""
    import argparse, os, sys
    import torch
    from scoreviz.trainer import train

    out = sys.argv[1]
    args = train.add_arguments(argparse.ArgumentParser()).parse_args(sys.argv[2:])
    moco = train.main(args)
    state = {name: p.detach().clone() for name, p in moco.named_parameters()}
    state.update(queue=moco.queue.clone(), queue_ptr=moco.queue_ptr.clone())
    torch.save(state, os.path.join(out, f"rank{os.environ['RANK']}.pt"))
""")


def test_two_gloo_ranks_hold_identical_queues_and_weights(tmp_path, subprocess_env):
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(worker), str(tmp_path),
           "--run-dir", str(run_dir), "--epochs", "2", "--batch-size", "32", "--moco-k", "256", "--steps-per-epoch", "2",
           "--knn-k", "20", "--pos-alpha", "2.0", "--neg-alpha", "1.6", "--quiet"]
    proc = subprocess.run(cmd, env=subprocess_env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]

    r0, r1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    assert r0.keys() == r1.keys()
    for key in r0:
        assert torch.equal(r0[key], r1[key]), key
    # Global queue: each step enqueued the keys of both ranks (2 x 16).
    assert int(r0["queue_ptr"]) == 4 * 32
    # The key encoder moved away from its copy of the query encoder and both trained.
    assert not torch.equal(r0["encoder_q.head.0.weight"], r0["encoder_k.head.0.weight"])

    run = scoreviz.open_run(run_dir)  # rank 0 wrote one record for both
    assert list(run.scores("ft").index) == [1, 2, 3, 4]
    assert (run_dir / "checkpoint.pt").is_file()
    assert len(torch.load(run_dir / "checkpoint.pt", weights_only=False)["rng"]) == 2  # every rank's RNG, for resume


def test_module_entry_point(tmp_path, subprocess_env):
    cmd = [sys.executable, "-m", "scoreviz.trainer", "--run-dir", str(tmp_path / "run"), "--epochs", "1", "--batch-size", "32",
           "--moco-k", "64", "--steps-per-epoch", "2", "--knn-k", "20"]
    proc = subprocess.run(cmd, env=subprocess_env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "knn_acc" in proc.stdout and "img_s=" in proc.stderr  # epoch summary; progress bar
    bad = subprocess.run([sys.executable, "-m", "scoreviz.trainer", "--run-dir", str(tmp_path / "none"), "--resume"],
                         env=subprocess_env, capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "no checkpoint" in bad.stderr and "Traceback" not in bad.stderr
