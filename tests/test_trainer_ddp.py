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
    stop = os.environ.get("STOP_BEFORE_EPOCH")
    if stop:  # simulate a killed job: every rank dies at the start of that epoch
        real, done = train.train_one_epoch, []

        def flaky(*a, **kw):
            if len(done) == int(stop):
                raise SystemExit(3)
            done.append(1)
            return real(*a, **kw)

        train.train_one_epoch = flaky
    args = train.add_arguments(argparse.ArgumentParser()).parse_args(sys.argv[2:])
    moco = train.main(args)
    state = {name: p.detach().clone() for name, p in moco.named_parameters()}
    state.update(queue=moco.queue.clone(), queue_ptr=moco.queue_ptr.clone())
    torch.save(state, os.path.join(out, f"rank{os.environ['RANK']}.pt"))
""")


OPTIONS = ["--epochs", "2", "--batch-size", "32", "--moco-k", "256", "--steps-per-epoch", "2", "--knn-k", "20",
           "--pos-alpha", "2.0", "--neg-alpha", "1.6", "--ft-start-epoch", "0", "--quiet"]


def torchrun(tmp_path, out, env, *args):
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    out.mkdir(exist_ok=True)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(worker), str(out), *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)


def test_two_gloo_ranks_hold_identical_queues_and_weights(tmp_path, subprocess_env):
    run_dir = tmp_path / "run"
    proc = torchrun(tmp_path, tmp_path, subprocess_env, "--run-dir", str(run_dir), *OPTIONS)
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
    assert run.config["bn_splits"] == 1  # shuffle-BN across the processes, plain BN in each
    assert (run_dir / "checkpoint.pt").is_file()
    assert len(torch.load(run_dir / "checkpoint.pt", weights_only=False)["rng"]) == 2  # every rank's RNG, for resume


def test_ddp_resume_is_bit_identical(tmp_path, subprocess_env):
    proc = torchrun(tmp_path, tmp_path / "a", subprocess_env, "--run-dir", str(tmp_path / "a"), *OPTIONS)
    assert proc.returncode == 0, proc.stderr[-3000:]
    killed = torchrun(tmp_path, tmp_path / "b", {**subprocess_env, "STOP_BEFORE_EPOCH": "1"},
                      "--run-dir", str(tmp_path / "b"), *OPTIONS)
    assert killed.returncode != 0
    assert torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=False)["epoch"] == 1
    proc = torchrun(tmp_path, tmp_path / "b", subprocess_env, "--run-dir", str(tmp_path / "b"), "--resume")
    assert proc.returncode == 0, proc.stderr[-3000:]
    for rank in (0, 1):  # each rank continues its own augmentation stream
        a, b = torch.load(tmp_path / "a" / f"rank{rank}.pt"), torch.load(tmp_path / "b" / f"rank{rank}.pt")
        for key in a:
            assert torch.equal(a[key], b[key]), (rank, key)


def test_module_entry_point(tmp_path, subprocess_env):
    cmd = [sys.executable, "-m", "scoreviz.trainer", "--run-dir", str(tmp_path / "run"), "--epochs", "1", "--batch-size", "32",
           "--moco-k", "64", "--steps-per-epoch", "2", "--knn-k", "20"]
    proc = subprocess.run(cmd, env=subprocess_env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "knn_acc" in proc.stdout and "img_s=" in proc.stderr  # epoch summary; progress bar
    bad = subprocess.run([sys.executable, "-m", "scoreviz.trainer", "--run-dir", str(tmp_path / "none"), "--resume"],
                         env=subprocess_env, capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "no checkpoint" in bad.stderr and "Traceback" not in bad.stderr
