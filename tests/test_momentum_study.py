"""examples/momentum_study.py end to end at a tiny size: one version, two momenta, two seeds, short epochs."""

import subprocess
from pathlib import Path

import pytest

from app.shell import images
from scoreviz import open_run

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "momentum_study.py"
TINY = ["--versions", "1", "--momenta", "0.5", "0.99", "--seeds", "2", "--epochs", "1", "--steps-per-epoch", "2",
        "--linear-epochs", "1"]


def study(tmp_path, python, env, *extra):
    return subprocess.run([python, str(SCRIPT), "--out", str(tmp_path / "runs"), "--figures", str(tmp_path / "docs"),
                           *TINY, *extra], env=env, capture_output=True, text=True, timeout=280)


def test_momentum_study_records_every_seed_and_tables_mean_and_spread(tmp_path, python, subprocess_env):
    done = study(tmp_path, python, subprocess_env, "--jobs", "2")
    assert done.returncode == 0, done.stderr
    for m in (0.5, 0.99):
        for seed in (0, 1):
            run = open_run(tmp_path / "runs" / "v1" / f"m{m:g}-s{seed}")
            c = run.config
            assert (c["moco_m"], c["seed"], c["moco_version"], c["moco_t"], c["mlp"]) == (m, seed, 1, 0.07, False)
            assert (c["batch_size"], c["moco_k"], c["bn_splits"]) == (32, 1024, 4)
            assert len(run.scores("raw")) == 2
            assert run.scalars()["lincls_acc"].notna().sum() == 1  # the linear evaluation, recorded in the run
    # the markdown table: a header, a rule and one row per m, in order of m, values as mean ± sd over 2 seeds
    rows = [line for line in done.stdout.splitlines() if line.startswith("| ")]
    assert len(rows) == 3 and rows[1].startswith("| 0.5 |") and rows[2].startswith("| 0.99 |")
    assert rows[1].count("±") == 9 and "/2" in rows[1] and rows[2].endswith("| 56.2 |")

    reason = images.unavailable_reason()
    if reason is None:
        for name in ("momentum_v1_waterfall.png", "momentum_v1_neg_var.png"):
            png = (tmp_path / "docs" / name).read_bytes()
            assert png.startswith(b"\x89PNG") and len(png) > 10_000
    else:
        assert "no PNG written" in done.stderr

    again = study(tmp_path, python, subprocess_env, "--jobs", "1")  # finished runs are reused, not retrained
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("reused") == 4


def test_momentum_study_refuses_a_folder_recorded_with_other_settings(tmp_path, python, subprocess_env):
    assert study(tmp_path, python, subprocess_env, "--jobs", "1", "--seeds", "1").returncode == 0
    clash = study(tmp_path, python, subprocess_env, "--jobs", "1", "--seeds", "1", "--epochs", "2")
    assert clash.returncode != 0
    assert "delete it or choose another --out" in clash.stderr.strip().splitlines()[-1]
