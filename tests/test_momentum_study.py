"""examples/momentum_study.py end to end at a tiny size: two momenta, one short epoch each."""

import subprocess
from pathlib import Path

import pytest

from app import images
from scoreviz import open_run

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "momentum_study.py"
TINY = ["--momenta", "0.5", "0.99", "--epochs", "1", "--steps-per-epoch", "2"]


def study(tmp_path, python, env, *extra):
    return subprocess.run([python, str(SCRIPT), "--out", str(tmp_path / "runs"), "--figures", str(tmp_path / "docs"),
                           *TINY, *extra], env=env, capture_output=True, text=True, timeout=100)


def test_momentum_study_records_one_run_per_m_and_draws_the_waterfall(tmp_path, python, subprocess_env):
    done = study(tmp_path, python, subprocess_env)
    assert done.returncode == 0, done.stderr
    for m in (0.5, 0.99):
        run = open_run(tmp_path / "runs" / f"m{m:g}")
        assert run.config["moco_m"] == m and run.config["epochs"] == 1
        assert len(run.scores("raw")) == 2
    # the markdown table: a header, a rule and one row per m, in order of m
    rows = [line for line in done.stdout.splitlines() if line.startswith("| ")]
    assert len(rows) == 3 and rows[1].startswith("| 0.5 |") and rows[2].startswith("| 0.99 |")

    reason = images.unavailable_reason()
    if reason is None:
        png = (tmp_path / "docs" / "momentum_waterfall.png").read_bytes()
        assert png.startswith(b"\x89PNG") and len(png) > 10_000
    else:
        assert "no PNG written" in done.stderr

    again = study(tmp_path, python, subprocess_env)  # finished runs are reused, not retrained
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("reused") == 2


def test_momentum_study_refuses_a_folder_recorded_with_other_settings(tmp_path, python, subprocess_env):
    assert study(tmp_path, python, subprocess_env).returncode == 0
    clash = study(tmp_path, python, subprocess_env, "--epochs", "2")
    assert clash.returncode != 0
    assert "delete it or choose another --out" in clash.stderr.strip().splitlines()[-1]
