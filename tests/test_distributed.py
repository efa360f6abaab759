"""Recording under torch.distributed (gloo): one file, statistics of the global batch.

The embedding statistics of two ranks equal those of one process given the
concatenated batch: sums add up, uniformity pairs every rank's samples with all
(gathered) samples, and the spectrum's second-moment sums (and LiDAR's pair sums) are
all-reduced, so the window's health signals are those of the global batch too."""

import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from scoreviz import Recorder, ScorevizError, open_run
from scoreviz.stats import RowLayout, score_row, summarize

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

WORLD = 2
STEPS = 5
WINDOW = 2  # spectra at steps 1 and 3; under torch.distributed the incomplete last window is dropped


def global_batch(step):
    """The whole batch of a step; rank r holds rows r::WORLD of it."""
    g = torch.Generator().manual_seed(step)
    pos = torch.rand(16, generator=g)
    neg = 0.3 * torch.randn(16, 200, generator=g)
    neg[5, 3] = float("nan")  # non-finite values are counted across ranks too
    return pos, neg


def global_embeddings(step):
    """Two views of the whole batch's embeddings (dim 12); rank r holds rows r::WORLD."""
    g = torch.Generator().manual_seed(100 + step)
    z = torch.randn(16, 12, generator=g) + torch.randn(12, generator=g)
    z2 = z + 0.2 * torch.randn(16, 12, generator=g)
    z[3, 0] = float("nan")  # left out on the rank that holds it, counted over all
    return z, z2


def worker(rank, port, run_dir, before_init=False):
    """Every rank logs its part of the global batch; with `before_init`, every rank builds
    its Recorder before init_process_group, as torchrun launches it (RANK in the environment)."""
    if before_init:
        import os

        os.environ.update(RANK=str(rank), WORLD_SIZE=str(WORLD))  # what torchrun sets
        rec = Recorder(run_dir, config={"world": WORLD}, spectrum_window=WINDOW)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        model = torch.nn.Linear(3, 1)
        model(torch.ones(1, 3)).sum().backward()
        if not before_init:
            rec = Recorder(run_dir, config={"world": WORLD}, spectrum_window=WINDOW)
        with rec:
            for step in range(STEPS):
                pos, neg = global_batch(step)
                rec.log_scores(step, pos[rank::WORLD], neg[rank::WORLD])
                z, z2 = global_embeddings(step)
                rec.log_embeddings(step, z[rank::WORLD], z2[rank::WORLD])
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
    one_process = tmp_path / "one"
    with Recorder(one_process, spectrum_window=WINDOW) as rec:
        for step in range(STEPS - 1):
            rec.log_embeddings(step, *global_embeddings(step))
    expected = open_run(one_process).embeddings()
    embeddings = run.embeddings()
    assert list(embeddings.index) == list(range(STEPS)) and embeddings["nonfinite"].tolist() == [1] * STEPS
    for column in expected.columns:
        np.testing.assert_allclose(embeddings[column].iloc[:-1], expected[column], rtol=1e-6, err_msg=column)
    steps, eigenvalues = run.spectrum()
    assert list(steps) == [1, 3] and embeddings["rank"].notna().sum() == 2
    signals = ["alpha_req", "alpha_req_r2", "nesum", "participation_ratio", "w2_uniformity", "lidar"]
    assert embeddings.loc[[1, 3], signals].notna().all().all()  # compared above: the window sums all-reduced
    assert embeddings.loc[[1, 3], "lidar_pairs"].tolist() == [30, 30]  # 2 steps x 16 samples, 1 left out each
    np.testing.assert_allclose(eigenvalues, open_run(one_process).spectrum()[1], rtol=1e-6, atol=1e-12)
    assert run.scalars()["rank"].tolist() == [0.0] * STEPS  # rank 0 alone writes
    assert run.env["world_size"] == WORLD
    assert len(run.gradients()) == STEPS


def mismatched_worker(rank, port, run_dir, out):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        with Recorder(run_dir) as rec:
            try:
                rec.log_embeddings(0, torch.randn(4 + rank, 8))
                message = "no error"
            except ScorevizError as err:
                message = str(err)
            rec.log_embeddings(1, torch.randn(4, 8))  # both ranks go on
        with open(f"{out}.{rank}", "w") as f:
            f.write(message)
    finally:
        dist.destroy_process_group()


def test_ranks_passing_different_shapes_get_a_scoreviz_error_not_an_abort(tmp_path):
    mp.start_processes(mismatched_worker, args=(free_port(), str(tmp_path / "run"), str(tmp_path / "message")),
                       nprocs=WORLD, start_method="spawn", join=True)
    for rank in range(WORLD):
        assert "every rank must pass embeddings of the same shape at a step; the ranks passed [(4, 8), (5, 8)]" \
            in (tmp_path / f"message.{rank}").read_text()
    assert list(open_run(tmp_path / "run").embeddings().index) == [1]
