"""Every example runs and leaves a run that scoreviz.open_run reads."""

import socket
import subprocess
from pathlib import Path

import pytest

from scoreviz import open_run

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run(args, env):
    out = subprocess.run(args, env=env, capture_output=True, text=True, timeout=280)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_plain_loop(tmp_path, python, subprocess_env):
    run([python, str(EXAMPLES / "plain_loop.py"), str(tmp_path / "plain"), "--steps", "20"], subprocess_env)
    run_ = open_run(tmp_path / "plain")
    assert run_.tags == ["raw", "ft"] and run_.layers == ["0", "2"]
    raw, ft = run_.scores("raw"), run_.scores("ft")
    assert len(raw) == len(ft) == 20
    assert (ft["pos_mean"] <= raw["pos_mean"] + 1e-6).all()  # extrapolated positives are harder
    assert (ft["neg_mean"] == raw["neg_mean"]).all()
    assert list(run_.scalars().columns) == ["loss", "lr"]


def test_moco_loop_records_raw_and_transformed_scores(tmp_path, python, subprocess_env):
    run([python, str(EXAMPLES / "moco_loop.py"), str(tmp_path / "moco"), "--steps", "30", "--queue", "256"],
        subprocess_env)
    run_ = open_run(tmp_path / "moco")
    assert run_.tags == ["raw", "ft"]
    raw, ft = run_.scores("raw"), run_.scores("ft")
    assert len(raw) == len(ft) == 30
    # positive extrapolation makes positives harder: never a higher positive score
    assert (ft["pos_mean"] <= raw["pos_mean"] + 1e-6).all()


def test_ddp_script_under_torchrun(tmp_path, python, subprocess_env):
    run([python, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
         "--master_port", str(free_port()), str(EXAMPLES / "ddp.py"), str(tmp_path / "ddp"), "--steps", "10"], subprocess_env)
    assert sorted(p.name for p in (tmp_path / "ddp").iterdir()) == ["scores.h5", "scores.h5.lock"]  # rank 0 alone
    run_ = open_run(tmp_path / "ddp")
    frame = run_.scores("train")
    assert len(frame) == 10
    assert (frame["pos_count"] == 2 * 64).all()  # both ranks' batches
    assert run_.env["world_size"] == 2


def test_lightning_module_with_the_callback(tmp_path, python, subprocess_env):
    pytest.importorskip("lightning")
    run([python, str(EXAMPLES / "lightning_module.py"), str(tmp_path / "lightning"), "--epochs", "1"], subprocess_env)
    run_ = open_run(tmp_path / "lightning")
    assert list(run_.scores("train").index) == list(range(16))  # 2048 points / batch 128
    assert list(run_.gradients().index) == list(range(16))
    assert run_.config == {"temperature": 0.1, "lr": 0.1}  # the module's hyperparameters
    assert list(run_.scalars().columns) == ["loss", "lr"]
