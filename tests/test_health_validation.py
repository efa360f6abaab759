"""examples/health_validation.py's statistics and tables on small frames made here (the end-to-end run on
trained runs is in tests/test_ft_study.py): Spearman's rho with ties, the bootstrap interval, which
runs count as healthy or failed, the severity a flag's record calls for, and the validated signals."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from scoreviz import health

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "health_validation.py"
spec = importlib.util.spec_from_file_location("health_validation", SCRIPT)
hv = sys.modules["health_validation"] = importlib.util.module_from_spec(spec)  # (its dataclasses look it up)
spec.loader.exec_module(hv)


def test_spearman_is_pearson_of_mean_ranks():
    x = np.array([1.0, 2.0, 2.0, 5.0, 3.0])  # a tie: both get rank 2.5
    y = np.array([10.0, 30.0, 20.0, 50.0, 40.0])
    rx, ry = np.array([1, 2.5, 2.5, 5, 4]), np.array([1, 3, 2, 5, 4])
    assert hv.spearman(x, y) == pytest.approx(np.corrcoef(rx, ry)[0, 1])
    assert hv.spearman(x, -y) == pytest.approx(-hv.spearman(x, y))
    assert np.isnan(hv.spearman(np.ones(5), y))  # a constant side has no rank order


def test_bootstrap_interval_is_the_percentiles_of_rho_over_resampled_runs():
    rng = np.random.default_rng(3)
    x = rng.normal(size=30)
    y = x + rng.normal(size=30)
    low, high = hv.bootstrap_interval(x, y, 500, np.random.default_rng(0))
    # the same resamples, one spearman() each (NaN draws, all-equal resamples, left out)
    draws = [hv.spearman(x[i], y[i]) for i in np.random.default_rng(0).integers(0, 30, size=(500, 30))]
    assert (low, high) == pytest.approx(tuple(np.quantile([d for d in draws if d == d], [0.025, 0.975])))
    assert low < hv.spearman(x, y) < high


def runs(knn, fired, group="g"):
    frame = pd.DataFrame({"group": group, "knn": knn, "linear": np.nan})
    frame["knn/below_best"] = frame["knn"].max() - frame["knn"]
    frame["linear/below_best"] = np.nan
    for check in hv.FLAGS:
        frame[f"flag/{check}"] = False
    frame["flag/instability"] = fired
    return frame


def test_flag_table_counts_false_alarms_on_healthy_runs_and_hits_on_failed_ones():
    # best 98: 97.5 is healthy (within 1 point), 96 neither, 90 and 80 failed (more than 5 below)
    knn = [98.0, 97.5, 96.0, 90.0, 80.0]
    row = next(r for r in hv.flag_table(runs(knn, [False, False, True, True, False])).splitlines()
               if r.startswith("| instability"))
    assert row.split(" | ")[1:3] == ["0/2 (0%)", "1/2 (50%)"] and row.endswith(f"| alarm | {health.NOTICE} |")
    row = next(r for r in hv.flag_table(runs(knn, [False, True, False, True, True])).splitlines()
               if r.startswith("| instability"))
    assert row.split(" | ")[1:3] == ["1/2 (50%)", "2/2 (100%)"] and "| notice |" in row  # a healthy run flagged


def test_validated_signals_need_an_interval_without_0_and_the_same_sign_in_every_large_group():
    rng = np.random.default_rng(0)
    knn = np.concatenate([rng.uniform(90, 98, size=12), rng.uniform(80, 88, size=12)])  # group a above b
    frame = pd.DataFrame({"group": ["a"] * 12 + ["b"] * 12, "knn": knn})
    for signal in hv.SIGNALS:
        frame[f"{signal.column}/final"] = rng.normal(size=24)  # unrelated to accuracy: not validated
    frame["rank/final"] = knn + rng.normal(scale=0.5, size=24)  # follows it in both groups
    frame["nesum/final"] = -knn  # follows it the other way round: validated, "lower is better"
    # over all runs it follows accuracy (group a sits higher), but within group b it runs against it
    frame["lidar/final"] = np.where(frame["group"] == "a", knn, 100 - knn)
    assert hv.spearman(frame["lidar/final"].to_numpy(), knn) > 0.5
    found = hv.validated_signals(frame, 500, 0)
    assert [column for _, column, _, _ in found] == ["nesum", "rank"]  # strongest first
    assert found[0][2] == pytest.approx(-1.0) and found[0][3][1] < 0
    assert {s.column for s in health.VALIDATED_SIGNALS} <= {s.column for s in hv.SIGNALS if s.per_window}


def test_groups_parse_with_and_without_their_number_of_runs():
    assert hv.parse_groups(["v1=runs/m/v1=18", "FT=runs/ft"]) == {"v1": ("runs/m/v1", 18), "FT": ("runs/ft", None)}
    assert hv.parse_groups(None)["momentum v2"] == ("runs/momentum-study/v2", 18)
    for bad in ("runs/ft", "=runs/ft", "x=", "x=runs=0"):
        with pytest.raises(hv.ScorevizError, match="--group"):
            hv.parse_groups([bad])
