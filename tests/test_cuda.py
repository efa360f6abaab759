"""What only a CUDA device can show: no host sync on the training thread, half-precision
scores, FT drawn from a CUDA generator, and a one-GPU trainer run (bf16, channels_last).

Skipped without CUDA; `bash benchmarks/gpu_check.sh` runs them on a GPU machine.
"""

import argparse
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import scoreviz
from scoreviz.ft import negative_interpolation, positive_extrapolation
from scoreviz.trainer import train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


class sync_is_an_error:
    """Within the block, any operation that makes the host wait for the GPU raises."""

    def __enter__(self):
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")

    def __exit__(self, *exc):
        torch.cuda.set_sync_debug_mode("default")
        return False


def test_sync_debug_mode_catches_a_sync():
    # The check below would prove nothing if the mode did not fire on this build.
    x = torch.ones(4, device="cuda")
    with pytest.raises(RuntimeError):
        with sync_is_an_error():
            x.sum().item()


def test_recorder_makes_no_host_sync_on_the_training_thread(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 16)).cuda()
    x = torch.randn(256, 32, device="cuda")

    def step_tensors():
        out = F.normalize(model(x), dim=1)
        loss = out.square().mean()
        model.zero_grad(set_to_none=True)
        loss.backward()
        queue = F.normalize(torch.randn(4096, 16, device="cuda"), dim=1)
        return (out[:, :1].squeeze(1), out @ queue.T, torch.cat([out.sum(1, keepdim=True), out @ queue.T], 1) / 0.2,
                loss.detach())

    # A writer that never wakes during the checked steps: its copies to the host are
    # meant to wait, on its own thread; only the training thread is checked here.
    with scoreviz.Recorder(tmp_path / "run", flush_secs=3600) as rec:
        pos, neg, logits, loss = step_tensors()
        for step in range(2):  # first calls build per-model caches (one copy of layer indices)
            rec.log_scores(step, pos, neg, tag="raw")
            rec.log_logits(step, logits, 0.2, tag="logits")
            rec.log_gradients(step, model)
            rec.log_scalars(step, loss=loss, lr=0.1)
        with sync_is_an_error():
            for step in range(2, 20):
                pos, neg, logits, loss = step_tensors()
                rec.log_scores(step, pos, neg, tag="raw")
                rec.log_logits(step, logits, 0.2, tag="logits")
                rec.log_gradients(step, model)
                rec.log_scalars(step, loss=loss, lr=0.1)
    run = scoreviz.open_run(tmp_path / "run")
    assert run.steps().tolist() == list(range(20))
    assert len(run.scores("raw")) == len(run.scores("logits")) == len(run.gradients()) == 20


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_scores_give_the_statistics_of_their_values(tmp_path, dtype):
    g = torch.Generator(device="cuda").manual_seed(0)
    pos = (torch.rand(256, device="cuda", generator=g) * 0.5 + 0.5).to(dtype)
    neg = (torch.rand(256, 4096, device="cuda", generator=g) * 1.2 - 0.6).to(dtype)
    with scoreviz.Recorder(tmp_path / "run") as rec:
        rec.log_scores(0, pos, neg, tag="half")
        rec.log_logits(0, torch.cat([pos[:, None], neg], 1) / 0.1, 0.1, tag="logits")
    run = scoreviz.open_run(tmp_path / "run")
    p, n = pos.float().cpu().double().numpy(), neg.float().cpu().double().numpy()
    for tag in ("half", "logits"):
        row = run.scores(tag).iloc[0]
        rtol = 1e-5 if tag == "half" else 1e-2  # logits in half precision lose digits before they are rescaled
        assert row["pos_count"] == 256 and row["neg_count"] == 256 * 4096
        np.testing.assert_allclose([row["pos_mean"], row["neg_mean"]], [p.mean(), n.mean()], rtol=rtol, atol=1e-4)
        np.testing.assert_allclose([row["pos_var"], row["neg_var"]], [p.var(), n.var()], rtol=max(rtol, 1e-4))
        np.testing.assert_allclose(row["neg_sample_var"], n.var(axis=1).mean(), rtol=max(rtol, 1e-4))
        assert row["pos_nonfinite"] == row["neg_nonfinite"] == 0
    _, _, counts = run.histograms("half", "neg")
    assert counts[0].sum() == pytest.approx(256 * 4096, rel=1e-6)


@pytest.mark.parametrize("per_dim", [False, True])
def test_ft_is_deterministic_with_a_cuda_generator_and_stays_on_the_device(per_dim):
    q = F.normalize(torch.randn(256, 128, device="cuda"), dim=1)
    k = F.normalize(torch.randn(256, 128, device="cuda"), dim=1)
    queue = F.normalize(torch.randn(4096, 128, device="cuda"), dim=1)

    def draw(seed):
        g = torch.Generator(device="cuda").manual_seed(seed)
        return (*positive_extrapolation(q, k, 2.0, per_dim, g), negative_interpolation(queue, 1.6, per_dim, g))

    draw(0)  # warm-up: kernels load
    with sync_is_an_error():  # no lambda or permutation is read back to the host
        a = draw(7)
    b, c = draw(7), draw(8)
    for x, y, z in zip(a, b, c):
        assert x.is_cuda and torch.equal(x, y) and not torch.equal(x, z)
    apart = (q - k).abs() > 0.05  # read lambda where q and k differ enough: q_hat - k = lambda (q - k)
    lam = ((a[0] - k) / (q - k))[apart]
    assert lam.min() >= 1 - 1e-3 and lam.max() <= 2 + 1e-3
    if per_dim:
        assert lam.std() > 0.1  # one draw per element
    else:
        assert (lam - lam.median()).abs().max() < 1e-3  # one draw for the batch


def test_one_gpu_trainer_run_uses_bf16_channels_last_and_fp32_logits(tmp_path):
    argv = ["--dataset", "digits", "--arch", "resnet18", "--run-dir", str(tmp_path / "run"), "--device", "cuda",
            "--epochs", "1", "--steps-per-epoch", "5", "--batch-size", "64", "--moco-k", "256", "--knn-k", "20",
            "--pos-alpha", "2.0", "--neg-alpha", "1.6", "--per-dim", "both", "--ft-start-epoch", "0", "--quiet"]
    moco = train.main(train.add_arguments(argparse.ArgumentParser()).parse_args(argv))
    conv = moco.encoder_q.backbone.stem[0].weight
    assert conv.is_cuda and conv.is_contiguous(memory_format=torch.channels_last)
    assert torch.isfinite(moco.queue).all() and int(moco.queue_ptr) == 5 * 64 % 256

    # The step as the trainer takes it: bf16 autocast, channels_last input, float32 logits.
    x = torch.randn(64, 1, 8, 8, device="cuda").contiguous(memory_format=torch.channels_last)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        logits, raw, after = moco(x, x.clone())
    assert logits.dtype == raw.neg.dtype == torch.float32

    run = scoreviz.open_run(tmp_path / "run")
    assert run.env["device"] == torch.cuda.get_device_name(0)
    for tag in ("raw", "ft"):
        scores = run.scores(tag)
        assert len(scores) == 5 and np.isfinite(scores[["pos_mean", "neg_mean", "neg_sample_var"]].to_numpy()).all()
    assert (run.scores("ft")["pos_mean"] < run.scores("raw")["pos_mean"]).all()
    assert np.isfinite(run.total_gradient_norm().to_numpy()).all()
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert 0 <= results["knn_acc_final"] <= 100


def test_every_logits_layout_and_the_window_signals_on_cuda_match_the_cpu_without_a_sync(tmp_path):
    """log_logits in each layout (scoreviz.logits) and log_embeddings with two views (the window's
    signals, LiDAR's sums in float64 on a GPU): the CPU's numbers, and no host sync once warm."""
    g = torch.Generator().manual_seed(0)
    z1 = F.normalize(torch.randn(32, 16, generator=g), dim=1)
    z2 = F.normalize(z1 + 0.3 * torch.randn(32, 16, generator=g), dim=1)
    z, labels = torch.cat([z1, z2]), torch.arange(64) % 8
    layouts = {"first": (torch.cat([(z1 * z2).sum(1, keepdim=True), z1 @ z2.T], 1), {}),
               "diagonal": (z1 @ z2.T, {"positives": "diagonal"}),
               "ntxent": (z @ z.T, {"positives": "ntxent"}),
               "mask": (z @ z.T, {"positives": labels[:, None] == labels[None, :], "ignore": "diagonal"})}

    def record(folder, device):
        on = {tag: ((logits / 0.1).to(device), {k: v.to(device) if isinstance(v, torch.Tensor) else v
                                                for k, v in layout.items()})
              for tag, (logits, layout) in layouts.items()}
        views = z1.to(device), z2.to(device)
        with scoreviz.Recorder(folder, spectrum_window=2, flush_secs=3600) as rec:
            for step in range(4):
                with sync_is_an_error() if device == "cuda" and step > 0 else torch.inference_mode():
                    for tag, (logits, layout) in on.items():
                        rec.log_logits(step, logits, 0.1, tag=tag, **layout)
                    rec.log_embeddings(step, *views)
        return scoreviz.open_run(folder)

    cuda, cpu = record(tmp_path / "cuda", "cuda"), record(tmp_path / "cpu", "cpu")
    columns = ["pos_count", "pos_mean", "pos_var", "neg_count", "neg_mean", "neg_var", "neg_sample_var", "margin",
               "hard_frac"]
    for tag in layouts:
        np.testing.assert_allclose(cuda.scores(tag)[columns], cpu.scores(tag)[columns], rtol=1e-4, atol=1e-6,
                                   err_msg=tag)
    embeddings = cuda.embeddings()
    assert embeddings["lidar"].notna().sum() == 2
    np.testing.assert_allclose(embeddings.to_numpy(), cpu.embeddings().to_numpy(), rtol=1e-4, atol=1e-6)
