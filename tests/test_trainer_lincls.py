"""`scoreviz lincls`: linear evaluation of a trained run, through the CLI."""

import json

import pytest
import torch

import scoreviz
from scoreviz.cli import main as cli

pytestmark = pytest.mark.slow


def test_train_then_lincls_through_the_cli(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert cli(["train", "--run-dir", str(run_dir), "--epochs", "1", "--batch-size", "32", "--moco-k", "64",
                "--steps-per-epoch", "2", "--knn-k", "20", "--quiet"]) == 0
    # Only the run's settings are saved: the CLI's handler in the checkpoint made one trained with
    # `python -m scoreviz.cli train` unreadable in any other process (its class lived in __main__).
    saved = torch.load(run_dir / "checkpoint.pt", weights_only=False)["args"]
    assert "func" not in saved and "command" not in saved and saved["epochs"] == 1
    assert cli(["lincls", str(run_dir), "--epochs", "3", "--schedule", "2", "--quiet"]) == 0

    results = json.loads((run_dir / "results.json").read_text())
    assert 0 <= results["lincls_acc"] <= 100 and results["lincls"]["epochs"] == 3
    assert "knn_acc_init" in results  # the training results are kept
    scalars = scoreviz.open_run(run_dir).scalars()
    assert scalars["lincls_acc"].dropna().index.tolist() == [2]  # at the run's last step
    assert scalars["lincls_acc"].dropna().iloc[0] == pytest.approx(results["lincls_acc"])


def test_lincls_without_checkpoint_is_a_clean_error(tmp_path, capsys):
    assert cli(["lincls", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert f"{tmp_path}: no checkpoint.pt in it" in err
    assert "--run-dir" not in err and "resume" not in err  # options the user did not give (issue 11, defect 10)
