"""Recording under torch.distributed (gloo): one file, statistics of the global batch."""

import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from scoreviz import Recorder, open_run
from scoreviz.stats import RowLayout, score_row, summarize

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

WORLD = 2
STEPS = 4


def global_batch(step):
    """The whole batch of a step; rank r holds rows r::WORLD of it."""
    g = torch.Generator().manual_seed(step)
    pos = torch.rand(16, generator=g)
    neg = 0.3 * torch.randn(16, 200, generator=g)
    neg[5, 3] = float("nan")  # non-finite values are counted across ranks too
    return pos, neg


def worker(rank, port, run_dir, before_init=False):
    """Every rank logs its part of the global batch; with `before_init`, every rank builds
    its Recorder before init_process_group, as torchrun launches it (RANK in the environment)."""
    if before_init:
        import os

        os.environ.update(RANK=str(rank), WORLD_SIZE=str(WORLD))  # what torchrun sets
        rec = Recorder(run_dir, config={"world": WORLD})
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        model = torch.nn.Linear(3, 1)
        model(torch.ones(1, 3)).sum().backward()
        if not before_init:
            rec = Recorder(run_dir, config={"world": WORLD})
        with rec:
            for step in range(STEPS):
                pos, neg = global_batch(step)
                rec.log_scores(step, pos[rank::WORLD], neg[rank::WORLD])
                rec.log_gradients(step, model)
                rec.log_scalars(step, rank=float(rank))
    finally:
        dist.destroy_process_group()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("before_init", [False, True], ids=["after init", "before init_process_group"])
def test_two_ranks_write_one_file_with_the_global_statistics(tmp_path, before_init):
    run_dir = tmp_path / "ddp"
    mp.start_processes(worker, args=(free_port(), str(run_dir), before_init), nprocs=WORLD, start_method="spawn",
                       join=True)
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["scores.h5", "scores.h5.lock"]
    run = open_run(run_dir)
    frame = run.scores("train")
    assert list(frame.index) == list(range(STEPS))
    layout = RowLayout(run.bins)
    for step in range(STEPS):
        expected = summarize(score_row(*global_batch(step), run.bins)[None].numpy(), layout)
        for column in frame.columns:
            np.testing.assert_allclose(frame.loc[step, column], expected[column][0], rtol=1e-6, atol=1e-9,
                                       err_msg=f"{column} at step {step}")
        _, _, counts = run.histograms("train", "neg")
        np.testing.assert_array_equal(counts[step], expected["neg_hist"][0])
    assert frame["neg_nonfinite"].tolist() == [1] * STEPS
    assert run.scalars()["rank"].tolist() == [0.0] * STEPS  # rank 0 alone writes
    assert run.env["world_size"] == WORLD
    assert len(run.gradients()) == STEPS
