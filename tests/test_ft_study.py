"""examples/ft_study.py and examples/health_validation.py end to end at a tiny size: the baseline and FT
from two start epochs, one seed, two steps an epoch; then the validation's tables over those runs."""

import subprocess
from pathlib import Path

import pytest

from scoreviz import open_run

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
TINY = ["--parts", "both", "--starts", "0", "1", "--seeds", "1", "--epochs", "2", "--steps-per-epoch", "2",
        "--linear-epochs", "1", "--jobs", "2"]


def test_ft_study_tables_each_start_epoch_and_the_validation_reads_its_runs(tmp_path, python, subprocess_env):
    out = tmp_path / "ft"
    done = subprocess.run([python, str(EXAMPLES / "ft_study.py"), "--out", str(out), *TINY], env=subprocess_env,
                          capture_output=True, text=True, timeout=280)
    assert done.returncode == 0, done.stderr
    baseline, early, late = (open_run(out / name) for name in ("baseline-s0", "both-e0-s0", "both-e1-s0"))
    assert baseline.config["pos_alpha"] is None and baseline.tags == ["raw"]
    assert (late.config["pos_alpha"], late.config["neg_alpha"], late.config["ft_start_epoch"]) == (2.0, 1.6, 1)
    assert late.config["knn_k"] == 139  # the smallest digit class's training images
    assert early.config["ft_start_epoch"] == 0
    tables = [part.splitlines() for part in done.stdout.split("\n\n") if part.startswith("| setting")]
    assert len(tables) == 2  # the settings' results, then what FT meets when switched on
    rows = tables[0]
    assert [row.split(" | ")[0] for row in rows[2:]] == ["| baseline (no FT)", "| both from epoch 0",
                                                          "| both from epoch 1"]
    # mean ± sd of kNN, linear and three statistics; the cone's (steps 11-66) is "-": these runs have 4 steps
    assert len(rows) == 5 and all(row.count("±") == 5 and " | - | " in row for row in rows[2:])
    # switched on at epoch 1 (step 2 of 2 an epoch), and the baseline at the same steps
    assert [row.split(" | ")[:2] for row in tables[1][2:]] == [["| both from epoch 1", "2"],
                                                               ["| baseline (no FT), the same steps", "2"]]

    validation = subprocess.run([python, str(EXAMPLES / "health_validation.py"), "--group", f"FT={out}",
                                 "--bootstrap", "100"], env=subprocess_env, capture_output=True, text=True,
                                timeout=120)
    assert validation.returncode == 0, validation.stderr
    text = validation.stdout
    assert text.startswith("3 finished runs (FT 3); 3 with a linear accuracy.\n\n")
    for signal in ("effective rank (RankMe)", "alpha-ReQ", "LiDAR (two views)", "Wasserstein uniformity", "loss"):
        assert f"| {signal}" in text
    assert "| dimensional collapse |" in text and "(false alarms)" in text

    # a run still training (its results.json an epoch short) has no final accuracy: left out, and said so
    results = out / "both-e1-s0" / "results.json"
    results.write_text(results.read_text().replace('"epoch": 2', '"epoch": 1'))
    partial = subprocess.run([python, str(EXAMPLES / "health_validation.py"), "--group", f"FT={out}",
                              "--bootstrap", "100"], env=subprocess_env, capture_output=True, text=True, timeout=120)
    assert partial.returncode == 0, partial.stderr
    assert partial.stdout.startswith("2 finished runs (FT 2); 2 with a linear accuracy.\n"
                                     f"Left out, not finished training (1): {out / 'both-e1-s0'}.")

    (tmp_path / "empty").mkdir()
    for folder, why in (("empty", "no runs below it"), ("missing", "no such folder")):
        refused = subprocess.run([python, str(EXAMPLES / "health_validation.py"), "--group", f"x={tmp_path / folder}"],
                                 env=subprocess_env, capture_output=True, text=True, timeout=60)
        assert refused.returncode != 0 and f"--group x={tmp_path / folder}: " in refused.stderr
        assert why in refused.stderr.strip().splitlines()[-1]
