"""Every example runs and leaves a run that scoreviz.open_run reads."""

import socket
import subprocess
from pathlib import Path

import numpy as np
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
    embeddings = run_.embeddings("raw")
    assert len(embeddings) == 20 and embeddings[["std", "uniformity", "alignment"]].notna().all().all()
    assert embeddings["rank"].notna().sum() == 1  # 20 steps: the incomplete window, stored at close


def test_moco_loop_records_raw_and_transformed_scores(tmp_path, python, subprocess_env):
    run([python, str(EXAMPLES / "moco_loop.py"), str(tmp_path / "moco"), "--steps", "30", "--queue", "256"],
        subprocess_env)
    run_ = open_run(tmp_path / "moco")
    assert run_.tags == ["raw", "ft"]
    raw, ft = run_.scores("raw"), run_.scores("ft")
    assert len(raw) == len(ft) == 30
    # positive extrapolation makes positives harder: never a higher positive score
    assert (ft["pos_mean"] <= raw["pos_mean"] + 1e-6).all()
    # alignment of the normalised query and key is 2 - 2 x their positive score
    np.testing.assert_allclose(run_.embeddings("raw")["alignment"], 2 - 2 * raw["pos_mean"], atol=1e-5)
    assert raw["margin"].notna().all() and raw["hard_frac"].between(0, 1).all()  # from the logits


def test_ddp_script_under_torchrun(tmp_path, python, subprocess_env):
    run([python, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
         "--master_port", str(free_port()), str(EXAMPLES / "ddp.py"), str(tmp_path / "ddp"), "--steps", "10"], subprocess_env)
    assert sorted(p.name for p in (tmp_path / "ddp").iterdir()) == ["scores.h5", "scores.h5.lock"]  # rank 0 alone
    run_ = open_run(tmp_path / "ddp")
    frame = run_.scores("train")
    assert len(frame) == 10
    assert (frame["pos_count"] == 2 * 64).all()  # both ranks' batches
    assert run_.env["world_size"] == 2
    assert (run_.embeddings()["samples"] == 2 * 64).all()


def test_lightning_module_with_the_callback(tmp_path, python, subprocess_env):
    pytest.importorskip("lightning")
    run([python, str(EXAMPLES / "lightning_module.py"), str(tmp_path / "lightning"), "--epochs", "1"], subprocess_env)
    run_ = open_run(tmp_path / "lightning")
    scores = run_.scores("train")
    assert list(scores.index) == list(range(16))  # 2048 points / batch 128
    assert (scores["pos_count"] == 128).all() and (scores["neg_count"] == 128 * 127).all()  # the diagonal layout
    assert list(run_.gradients().index) == list(range(16))
    assert run_.config == {"temperature": 0.1, "lr": 0.1}  # the module's hyperparameters
    assert list(run_.scalars().columns) == ["loss", "lr"]
    assert list(run_.embeddings("train").index) == list(range(16))


def test_simsiam_collapse_example_trains_four_runs_then_reuses_them(tmp_path, python, subprocess_env):
    """At a tiny size: the two heads with and without stop-gradient, a table row each, the figure
    (where kaleido works), and a second call that only reads. That the collapse is flagged is
    checked at a size where it happens, in the browser test of the health panel."""
    args = [python, str(EXAMPLES / "simsiam_collapse.py"), "--out", str(tmp_path / "simsiam"), "--epochs", "2",
            "--steps-per-epoch", "3", "--figures", str(tmp_path / "figures")]
    out = run(args, subprocess_env).stdout
    rows = [line.split("|")[1].strip() for line in out.splitlines()
            if line.startswith("| ") and not line.startswith("| run |")]
    assert rows == ["linear/stop-gradient", "linear/no-stop-gradient", "simsiam/stop-gradient",
                    "simsiam/no-stop-gradient"], out
    for name in rows:
        embeddings = open_run(tmp_path / "simsiam" / name).embeddings()
        assert list(embeddings.index) == list(range(6)) and embeddings["rank"].notna().sum() == 1
        assert open_run(tmp_path / "simsiam" / name).scores()["neg_count"].eq(0).all()  # positives only
    assert run(args, subprocess_env).stdout.count("reused") == 4
