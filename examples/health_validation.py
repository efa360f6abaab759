"""Which label-free health signals predict accuracy, and how often the health flags are right.

Over every run of the momentum study and the FT study (examples/momentum_study.py,
examples/ft_study.py; each run with its final kNN accuracy and its linear
accuracy), two tables:

1. For each signal the Recorder keeps without labels (the embeddings' spectrum,
   the two views, the scores, the loss): the Spearman correlation over runs of
   its final value, and of its change over training, with the run's final kNN
   and linear accuracy, each with a 95% bootstrap interval (runs resampled with
   replacement). "Final" is the last spectrum window for a signal of the
   window (RankMe and the others of the spectrum), else the mean of the last
   ``WINDOW`` records; "change" is that minus the same of the first window.
   Then each group's own rho of the final values, and the validated signals
   (validated_signals: scoreviz.health.VALIDATED_SIGNALS is that list).
2. For each health flag (scoreviz.health): on how many runs it fires among the
   runs that end within 1 point of the best accuracy of their group (false
   alarms: a healthy run flagged) and among those that end more than 5 points
   below it (hits), and the severity that follows: a flag that fires on a
   healthy run is a notice, not an alarm (beside scoreviz.health.SEVERITY). A
   group is one study's runs of one recipe (momentum v1, momentum v2, the FT
   study): runs of one recipe compare, runs of different recipes do not.

    python examples/health_validation.py                      # the studies' default folders
    python examples/health_validation.py --group "momentum v1=runs/momentum-study/v1=18" --group "FT=runs/ft-study"

It trains nothing: run the studies first. A run still training (its
results.json short of its epochs) is left out and named; a group with fewer
finished runs than its RUNS counts in the correlations, not in the flags'
table (its best accuracy is not known yet). A run without a linear accuracy
counts for kNN only.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

# The app package lives next to scoreviz at the root of the checkout; make the
# script work from a plain checkout too, not only from an installed one.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import scoreviz  # noqa: E402
from scoreviz import health  # noqa: E402
from scoreviz.errors import ScorevizError  # noqa: E402
from scoreviz.trainer import study  # noqa: E402

# NAME=FOLDER=RUNS: the studies' folders and how many runs each makes (a group with fewer finished runs
# is still training: its best accuracy is not known yet)
GROUPS = ("momentum v1=runs/momentum-study/v1=18", "momentum v2=runs/momentum-study/v2=18",
          "FT study=runs/ft-study=30")
MIN_GROUP = 10  # runs: a correlation within one group of fewer says little (3 to 9 runs give rho of +-1 easily)
TAG = "raw"  # the trainers' scores before FT and their query and key projections
WINDOW = 50  # records: the Recorder's default spectrum window, so a per-step signal's "final" covers the same steps
HEALTHY, FAILED = 1.0, 5.0  # points below the group's best accuracy: within HEALTHY is healthy, beyond FAILED failed
BOOTSTRAP, LEVEL = 2000, 0.95
ACCURACIES = {"knn": "kNN", "linear": "linear"}


@dataclass(frozen=True)
class Signal:
    """A label-free signal: where it is read (``embeddings`` or ``scores`` of TAG, or ``scalars``),
    its column, and how it is named in the tables."""

    source: str
    column: str
    label: str
    per_window: bool = False  # one value per spectrum window (else one per step)


SIGNALS = (
    Signal("embeddings", "rank", "effective rank (RankMe)", per_window=True),
    Signal("embeddings", "alpha_req", "alpha-ReQ (power-law slope)", per_window=True),
    Signal("embeddings", "nesum", "NESum", per_window=True),
    Signal("embeddings", "participation_ratio", "participation ratio", per_window=True),
    Signal("embeddings", "lidar", "LiDAR (two views)", per_window=True),
    Signal("embeddings", "w2_uniformity", "Wasserstein uniformity", per_window=True),
    Signal("embeddings", "std", "std x sqrt(dim)"),
    Signal("embeddings", "uniformity", "uniformity (Wang & Isola)"),
    Signal("embeddings", "alignment", "alignment"),
    Signal("scores", "pos_mean", "positive mean"),
    Signal("scores", "neg_mean", "negative mean"),
    Signal("scores", "neg_sample_var", "negative variance (per sample)"),
    Signal("scores", "margin", "margin"),
    Signal("scores", "hard_frac", "hard fraction"),
    Signal("scalars", "loss", "loss"),
)
FLAGS = ("collapse", "instability", "non-finite", "complete collapse", "dimensional collapse")


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--group", action="append", metavar="NAME=FOLDER[=RUNS]",
                        help="a group of comparable runs: every run below FOLDER, RUNS of them when all have "
                             "finished (repeat it; default: "
                             + "; ".join(f'"{g}"' for g in GROUPS) + ")")
    parser.add_argument("--bootstrap", type=int, default=BOOTSTRAP, help=f"bootstrap resamples (default {BOOTSTRAP})")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    parser.add_argument("--csv", type=Path, metavar="FILE",
                        help="also write one row per run (group, accuracies, every signal's final value and change, "
                             "the flags) to FILE, to check the tables or study them further")
    return parser


# ---------------------------------------------------------------- one run

def run_frames(run) -> dict:
    """The frames the signals are read from, by Signal.source (None where the run has none), read once."""
    return {"scalars": run.scalars(), "scores": run.scores(TAG) if TAG in run.tags else None,
            "embeddings": run.embeddings(TAG) if TAG in run.embedding_tags else None}


def signal_series(frames: dict, signal: Signal) -> pd.Series | None:
    """The signal over steps from a run's ``run_frames``, NaN rows dropped (None when the run does not record it)."""
    frame = frames[signal.source]
    if frame is None or signal.column not in frame:
        return None
    series = frame[signal.column].astype(float)
    if signal.column == "std":  # in units of 1/sqrt(dim), the std of spread-out embeddings
        series = series * np.sqrt(frame["dim"].astype(float))
    series = series[np.isfinite(series)]
    return series if len(series) else None


def final_and_change(series: pd.Series, per_window: bool) -> tuple[float, float]:
    """(final, change): the last window's value, and that minus the first window's.

    A signal of the spectrum has one value per window; a signal of every step is
    averaged over the first and the last WINDOW records.
    """
    first, last = (series.iloc[0], series.iloc[-1]) if per_window else \
        (series.iloc[:WINDOW].mean(), series.iloc[-WINDOW:].mean())
    return float(last), float(last - first)


def finished(run_dir: Path) -> bool:
    """Whether a run has trained all its epochs (its results.json's epoch reaches its settings' epochs):
    a run still training has a kNN accuracy of its latest epoch, not a final one."""
    wanted = scoreviz.open_run(run_dir).config.get("epochs")
    return wanted is not None and study.finished_epochs(run_dir) >= int(wanted)


def measure(run_dir: Path) -> dict:
    """One run's accuracies, every signal's final value and change, and which flags fired."""
    run = scoreviz.open_run(run_dir)
    found = study.results(run_dir)
    if "knn_acc_final" not in found:
        raise ScorevizError(f"{run_dir}: no final kNN accuracy in its results.json; has it finished training?")
    row = {"run": str(run_dir), "knn": float(found["knn_acc_final"]),
           "linear": float(found.get("lincls_acc", np.nan))}
    frames = run_frames(run)
    for signal in SIGNALS:
        series = signal_series(frames, signal)
        final, change = final_and_change(series, signal.per_window) if series is not None else (np.nan, np.nan)
        row[f"{signal.column}/final"], row[f"{signal.column}/change"] = final, change
    flags = health.run_health(frames["scores"], frames["scalars"], run.total_gradient_norm()) + \
        health.representation_health(frames["embeddings"])
    row.update({f"flag/{f.check}": bool(f.fired) for f in flags})
    return row


def measure_groups(groups: dict) -> tuple[pd.DataFrame, list, set]:
    """Every finished run below each group's folder (name -> (folder, runs expected or None)), one row
    each, with its group and how far its accuracies end below the group's best; the runs left out as
    unfinished; and the groups not complete.

    A group's best is known only when it is complete (no run unfinished, and as many finished runs as
    expected) and every run has that accuracy: until then its runs' distance below the best is NaN
    (they count in the correlations, not in the flags' table).
    """
    from tqdm import tqdm

    rows, unfinished, incomplete = [], [], set()
    for name, (folder, expected) in groups.items():
        try:
            runs = scoreviz.find_runs(folder)
        except ScorevizError as err:
            raise ScorevizError(f"--group {name}={folder}: {err}") from err
        if not runs:
            raise ScorevizError(f"--group {name}={folder}: no runs below it; run the study first")
        for run_dir in tqdm(runs, desc=name, unit="run", leave=False):
            if not finished(Path(run_dir)):
                unfinished.append(str(run_dir))  # still training (or stopped): its accuracy is not final
                incomplete.add(name)
                continue
            rows.append({"group": name, **measure(Path(run_dir))})
        if expected is not None and sum(r["group"] == name for r in rows) < expected:
            incomplete.add(name)  # runs not even started yet
    if not rows:
        raise ScorevizError("no finished run in any group; run the studies first")
    frame = pd.DataFrame(rows)
    for acc in ACCURACIES:
        complete = frame.groupby("group")[acc].transform(lambda a: a.notna().all()) & \
            ~frame["group"].isin(incomplete)
        frame[f"{acc}/below_best"] = (frame.groupby("group")[acc].transform("max") - frame[acc]).where(complete)
    return frame, unfinished, incomplete


# ---------------------------------------------------------------- statistics

def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rank correlation (ties share their mean rank), NaN when either side is constant."""
    rx, ry = pd.Series(x).rank().to_numpy(), pd.Series(y).rank().to_numpy()
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def bootstrap_interval(x: np.ndarray, y: np.ndarray, resamples: int, rng: np.random.Generator,
                       level: float = LEVEL) -> tuple[float, float]:
    """Percentile interval of Spearman's rho over ``resamples`` resamplings of the (x, y) pairs."""
    n = len(x)
    idx = rng.integers(0, n, size=(resamples, n))
    # every resample at once: ranks along each row (ties share their mean rank), then Pearson's r of the ranks
    rx, ry = (pd.DataFrame(v[idx]).rank(axis=1).to_numpy() for v in (x, y))
    rx, ry = rx - rx.mean(axis=1, keepdims=True), ry - ry.mean(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        draws = (rx * ry).sum(axis=1) / np.sqrt((rx ** 2).sum(axis=1) * (ry ** 2).sum(axis=1))
    draws = draws[np.isfinite(draws)]  # a resample of equal values has no rank order
    if not len(draws):
        return float("nan"), float("nan")
    tail = (1 - level) / 2
    return float(np.quantile(draws, tail)), float(np.quantile(draws, 1 - tail))


def correlation_table(frame: pd.DataFrame, resamples: int, seed: int) -> tuple[str, int]:
    """Markdown: one row per signal, rho [interval] of its final value and change with each accuracy."""
    rng = np.random.default_rng(seed)
    head = "| signal | " + " | ".join(f"{part} vs {ACCURACIES[acc]}" for part in ("final", "change")
                                      for acc in ACCURACIES) + " | runs |"
    lines = [head, "|---|" + "---:|" * (2 * len(ACCURACIES) + 1)]
    for signal in SIGNALS:
        cells, counts = [], []
        for part in ("final", "change"):
            for acc in ACCURACIES:
                pair = frame[[f"{signal.column}/{part}", acc]].dropna().to_numpy()
                counts.append(len(pair))
                if len(pair) < 3:
                    cells.append("-")
                    continue
                rho = spearman(pair[:, 0], pair[:, 1])
                if rho != rho:
                    cells.append("constant")
                    continue
                low, high = bootstrap_interval(pair[:, 0], pair[:, 1], resamples, rng)
                cells.append(f"{rho:+.2f} [{low:+.2f}, {high:+.2f}]")
        if max(counts) == 0:
            continue  # not recorded by these runs
        lines.append(f"| {signal.label} | " + " | ".join(cells) + f" | {max(counts)} |")
    return "\n".join(lines), len(frame)


def group_table(frame: pd.DataFrame) -> str:
    """Markdown: Spearman's rho of each signal's final value with each accuracy within each group alone
    (a correlation over all runs can come from the groups' differences alone); "-" for a group of fewer
    than MIN_GROUP runs."""
    names = list(dict.fromkeys(frame["group"]))
    head = "| signal | " + " | ".join(f"{g}: vs {ACCURACIES[acc]}" for g in names for acc in ACCURACIES) + " |"
    lines = [head, "|---|" + "---:|" * (len(names) * len(ACCURACIES))]
    for signal in SIGNALS:
        cells = []
        for name in names:
            members = frame[frame["group"] == name]
            for acc in ACCURACIES:
                pair = members[[f"{signal.column}/final", acc]].dropna().to_numpy()
                rho = spearman(pair[:, 0], pair[:, 1]) if len(pair) >= MIN_GROUP else float("nan")
                cells.append(f"{rho:+.2f}" if rho == rho else "-")
        if any(c != "-" for c in cells):
            lines.append(f"| {signal.label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def flag_table(frame: pd.DataFrame) -> str:
    """Markdown: one row per flag, how often it fires on healthy runs (false alarms) and on failed ones (hits),
    and the severity that follows (scoreviz.health.SEVERITY): a flag that fires on a healthy run, by either
    accuracy, is a notice; one that fires on none is an alarm."""
    head = "| flag | " + " | ".join(
        f"fires on healthy runs, {ACCURACIES[acc]} (false alarms) | fires on failed runs, {ACCURACIES[acc]} (hits)"
        for acc in ACCURACIES) + " | severity from this table | scoreviz.health.SEVERITY |"
    lines = [head, "|---|" + "---:|" * (2 * len(ACCURACIES)) + "---|---|"]
    for check in FLAGS:
        cells, false_alarms = [], 0
        for acc in ACCURACIES:
            healthy = frame[frame[f"{acc}/below_best"] <= HEALTHY]
            failed = frame[frame[f"{acc}/below_best"] > FAILED]
            for subset in (healthy, failed):
                fired = int(subset[f"flag/{check}"].sum())
                cells.append(f"{fired}/{len(subset)}" + (f" ({100 * fired / len(subset):.0f}%)" if len(subset) else ""))
            false_alarms += int(healthy[f"flag/{check}"].sum())
        severity = health.NOTICE if false_alarms else health.ALARM
        lines.append(f"| {check} | " + " | ".join(cells) + f" | {severity} | {health.SEVERITY.get(check, health.ALARM)} |")
    return "\n".join(lines)


def validated_signals(frame: pd.DataFrame, resamples: int, seed: int) -> list:
    """The signals of the spectrum window that predict final kNN accuracy: the bootstrap interval of
    rho (final value, kNN) over all runs leaves out 0 and rho has that sign within every group of at
    least MIN_GROUP runs too; strongest first. (label, column, rho, interval) each, for
    scoreviz.health.VALIDATED_SIGNALS."""
    rng = np.random.default_rng(seed)
    found = []
    for signal in (s for s in SIGNALS if s.per_window):
        pair = frame[[f"{signal.column}/final", "knn"]].dropna().to_numpy()
        if len(pair) < 3:
            continue
        rho = spearman(pair[:, 0], pair[:, 1])
        low, high = bootstrap_interval(pair[:, 0], pair[:, 1], resamples, rng)
        if rho != rho or low <= 0 <= high:
            continue
        within = [spearman(*members[[f"{signal.column}/final", "knn"]].dropna().to_numpy().T)
                  for _, members in frame.groupby("group")
                  if members[[f"{signal.column}/final", "knn"]].notna().all(axis=1).sum() >= MIN_GROUP]
        if all(r == r and np.sign(r) == np.sign(rho) for r in within):
            found.append((signal.label, signal.column, rho, (low, high)))
    return sorted(found, key=lambda f: -abs(f[2]))


def parse_groups(values: list | None) -> dict:
    """name -> (folder, the number of runs the group has when complete, or None) from NAME=FOLDER[=RUNS]."""
    groups = {}
    for value in values or GROUPS:
        name, sep, folder = value.partition("=")
        head, _, count = folder.rpartition("=")
        if head and count.strip().isdigit():
            folder, expected = head, int(count)
        else:
            expected = None
        if not sep or not name.strip() or not folder.strip() or expected == 0:
            raise ScorevizError(f"--group: {value!r} is not NAME=FOLDER or NAME=FOLDER=RUNS (RUNS at least 1)")
        groups[name.strip()] = (folder.strip(), expected)
    return groups


def main(args: argparse.Namespace) -> int:
    if args.bootstrap < 100:
        raise ScorevizError(f"--bootstrap: at least 100 resamples, got {args.bootstrap}")
    groups = parse_groups(args.group)
    frame, unfinished, incomplete = measure_groups(groups)
    if args.csv:
        try:
            frame.to_csv(args.csv, index=False)
        except OSError as err:
            raise ScorevizError(f"--csv {args.csv}: cannot write it ({err.strerror or err})") from err
    table, n = correlation_table(frame, args.bootstrap, args.seed)
    sizes = ", ".join(f"{name} {count}" for name, count in frame.groupby("group", sort=False).size().items())
    print(f"{n} finished runs ({sizes}); {int(frame['linear'].notna().sum())} with a linear accuracy.")
    if unfinished:
        print(f"Left out, not finished training ({len(unfinished)}): {', '.join(unfinished)}.")
    for name in sorted(incomplete):
        expected = groups[name][1]
        print(f"Group {name} is not complete ({int((frame['group'] == name).sum())} finished runs"
              + (f" of {expected}" if expected else "") + "): its runs count in the correlations, not in the "
              "flags' table (the best accuracy of the group is not known yet).")
    print()
    print(f"Spearman's rho over the runs, [{LEVEL:.0%} bootstrap interval, {args.bootstrap} resamples]:\n")
    print(table)
    print("\nWithin each group alone, Spearman's rho of the final value:\n")
    print(group_table(frame))
    print(f"\nValidated (window signals whose interval with final kNN leaves out 0, with the same sign in every "
          f"group of at least {MIN_GROUP} runs), strongest first: "
          + ("; ".join(f"{label} ({column}) {rho:+.2f} [{low:+.2f}, {high:+.2f}]" for label, column, rho, (low, high)
                       in validated_signals(frame, args.bootstrap, args.seed)) or "none"))
    for acc in ACCURACIES:
        known = frame[frame[f"{acc}/below_best"].notna()]
        left_out = [g for g in dict.fromkeys(frame["group"]) if g not in set(known["group"])]
        print(f"\n{ACCURACIES[acc]}: {int((known[f'{acc}/below_best'] <= HEALTHY).sum())} healthy runs (within "
              f"{HEALTHY:g} point of their group's best), {int((known[f'{acc}/below_best'] > FAILED).sum())} failed "
              f"(more than {FAILED:g} points below); best per group: "
              + ", ".join(f"{g} {v:.1f}%" for g, v in known.groupby("group", sort=False)[acc].max().items())
              + (f"; not judged (a run of the group unfinished or without this accuracy): {', '.join(left_out)}"
                 if left_out else ""))
    print()
    print(flag_table(frame))
    return 0


if __name__ == "__main__":
    study.run_script(main, add_arguments, __doc__, "health_validation.py")
