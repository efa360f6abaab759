"""The paper's momentum experiment (Zhu et al. 2021, Table 1) in small.

MoCo v2 on the bundled digits, once per key-encoder momentum m, each run in its
own folder (``<out>/m<value>``); then the app's 3D waterfall of the per-sample
negative-score variance over m, a 2D plot of the same curves, and a markdown
table per m of kNN accuracy, score statistics and the app's health flags.

    python examples/momentum_study.py                       # 5 momenta, about 5 minutes on 2 CPU cores
    python examples/momentum_study.py --momenta 0.6 0.99 --epochs 20

Re-running reuses every run that already finished with the requested epochs
and continues an interrupted one from its last checkpoint, so only the table
and the figures are made again.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

# The app package lives next to scoreviz at the root of the checkout; make the
# script work from a plain checkout too, not only from an installed one.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import scoreviz  # noqa: E402
from scoreviz.errors import ScorevizError  # noqa: E402

MOMENTA = (0.5, 0.6, 0.9, 0.99, 0.999)
# One digits epoch (11 steps of batch 128, kNN evaluation included) took about
# 0.3 s on 2 shared CPU cores: 5 runs x 150 epochs measured 3 min 55 s in all,
# figures included, which leaves room for a busier machine within 5 minutes.
DEFAULT_EPOCHS = 150
TAG = "raw"  # no feature transformation here, so raw is what the loss saw
STAT = "neg_sample_var"  # the paper's curve: mean over samples of each sample's negative variance


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--out", default="runs/momentum-study",
                        help="folder of the runs, one m<value> folder per momentum (default runs/momentum-study)")
    parser.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS,
                        help=f"epochs per run (default {DEFAULT_EPOCHS}: the whole study in about 5 minutes on 2 CPU cores)")
    parser.add_argument("--momenta", type=float, nargs="+", default=list(MOMENTA),
                        help="key-encoder momenta m (default: " + " ".join(f"{m:g}" for m in MOMENTA) + ")")
    parser.add_argument("--steps-per-epoch", type=int, help="stop each epoch after this many steps (quick checks)")
    parser.add_argument("--figures", default="docs",
                        help="folder for momentum_waterfall.png and momentum_neg_var.png (default docs)")
    return parser


def run_dir_for(out: Path, m: float) -> Path:
    return out / f"m{m:g}"


def finished_epochs(run_dir: Path) -> int:
    """Epochs a run has completed, from its results.json (0 when there is none)."""
    try:
        return int(json.loads((run_dir / "results.json").read_text()).get("epoch", 0))
    except (OSError, ValueError):
        return 0


def plan(run_dir: Path, m: float, epochs: int, steps_per_epoch: int | None) -> str:
    """What to do with ``run_dir``: "new", "resume" or "reuse".

    A folder recorded with other settings is an error rather than something to
    overwrite or append to: the curves of two different runs would mix.
    """
    if not (run_dir / "scores.h5").exists():
        return "new"
    config = scoreviz.open_run(run_dir).config
    wanted = dict(moco_m=m, epochs=epochs, steps_per_epoch=steps_per_epoch)
    differ = {k: config.get(k) for k, v in wanted.items() if config.get(k) != v}
    if differ:
        raise ScorevizError(f"{run_dir}: recorded with {differ}, not {wanted}; delete it or choose another --out")
    if finished_epochs(run_dir) >= epochs:
        return "reuse"
    # Killed before its first checkpoint: train afresh; the rows it wrote are
    # replaced, since a step recorded twice keeps its later row.
    return "resume" if (run_dir / "checkpoint.pt").exists() else "new"


def train_run(run_dir: Path, m: float, epochs: int, steps_per_epoch: int | None) -> str:
    """Train (or reuse, or resume) the run of momentum ``m``; returns what was done."""
    from scoreviz.trainer import train  # torch is imported only when something trains

    action = plan(run_dir, m, epochs, steps_per_epoch)
    if action == "reuse":
        return action
    argv = ["--dataset", "digits", "--run-dir", str(run_dir), "--epochs", str(epochs), "--quiet"]
    if action == "resume":
        argv.append("--resume")  # the run's own saved settings, including m
    else:
        argv += ["--moco-m", str(m)]
        if steps_per_epoch:
            argv += ["--steps-per-epoch", str(steps_per_epoch)]
    # In-process rather than a subprocess: one torch import for the whole study,
    # and a trainer error arrives as a ScorevizError with its message.
    train.main(train.add_arguments(argparse.ArgumentParser()).parse_args(argv))
    return action


def summarize(run_dir: Path) -> dict:
    """One row of the table: accuracies, final/max statistics and health flags of a run."""
    from app import health

    run = scoreviz.open_run(run_dir)
    results = json.loads((run_dir / "results.json").read_text())
    scores = run.scores(TAG)
    flags = {f.check: f for f in health.run_health(scores, run.scalars(), run.total_gradient_norm())}
    return dict(
        m=run.config["moco_m"], name=run_dir.name, steps=int(scores.index[-1]),
        knn_init=results["knn_acc_init"], knn_final=results["knn_acc_final"], knn_max=max(results["knn_acc"]),
        var_final=float(scores[STAT].iloc[-1]), var_max=float(scores[STAT].max()),
        var_max_step=int(scores[STAT].idxmax()),
        pos_final=float(scores["pos_mean"].iloc[-1]), neg_final=float(scores["neg_mean"].iloc[-1]),
        collapse=flags["collapse"], instability=flags["instability"], nonfinite=flags["non-finite"],
        series=scores[STAT],
    )


def _flag_text(flag) -> str:
    return f"step {flag.step}" if flag.fired else "no"


def _mean_text(value: float) -> str:
    return f"{value:.3f}".replace("-0.000", "0.000")  # a mean of -0.0001 is no news


def markdown_table(rows: list) -> str:
    """The per-m results as a markdown table (rows in the order given)."""
    lines = [
        "| m | kNN final (%) | kNN max (%) | kNN at init (%) | neg var final | neg var max (step) "
        "| pos mean final | neg mean final | collapse | instability |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['m']:g} | {r['knn_final']:.1f} | {r['knn_max']:.1f} | {r['knn_init']:.1f} "
            f"| {r['var_final']:.2e} | {r['var_max']:.2e} ({r['var_max_step']}) "
            f"| {_mean_text(r['pos_final'])} | {_mean_text(r['neg_final'])} "
            f"| {_flag_text(r['collapse'])} | {_flag_text(r['instability'])} |")
    return "\n".join(lines)


def write_figures(rows: list, folder: Path) -> list:
    """The app's waterfall and curve figures of the runs as PNG; returns the paths written.

    Uses the figure functions the app's views use, and the app's kaleido
    export with the local Chromium; when that is unavailable, says why and
    writes nothing.
    """
    from app import figures, images

    reason = images.unavailable_reason()
    if reason:
        print(f"momentum study: no PNG written. {reason}", file=sys.stderr)
        return []
    folder.mkdir(parents=True, exist_ok=True)
    series = {r["name"]: r["series"] for r in rows}
    # Ordered by the config key, exactly as the app's waterfall view does it.
    waterfall = figures.waterfall_figure(series, {r["name"]: r["m"] for r in rows}, key="moco_m", stat=STAT)
    # A still image cannot be turned, so pick the view here: the largest m in
    # front, steps left to right, a wide box; the step axis is reversed because
    # the camera looks from the far side of the m axis.
    waterfall.update_layout(scene_camera=dict(eye=dict(x=1.0, y=2.5, z=1.2)), scene_xaxis_autorange="reversed",
                            scene_aspectratio=dict(x=2, y=1.2, z=0.8), legend=dict(x=0.02, y=0.95))
    # Log scale: a collapsed run's variance falls by orders of magnitude.
    curves = figures.curves_figure({f"m={r['m']:g}": r["series"].to_frame() for r in rows}, [STAT], log_y=True,
                                   title="Negative-score variance (per sample) over steps, by key-encoder momentum m")
    curves.update_layout(height=450)
    written = []
    for fig, name in ((waterfall, "momentum_waterfall.png"), (curves, "momentum_neg_var.png")):
        path = folder / name
        path.write_bytes(images.to_image(fig.to_dict(), "png"))
        written.append(path)
    return written


def main(args: argparse.Namespace) -> int:
    if args.epochs <= 0:
        raise ScorevizError(f"--epochs: must be positive, got {args.epochs}")
    if any(not 0 <= m <= 1 for m in args.momenta):
        raise ScorevizError(f"--momenta: each must lie in [0, 1], got {args.momenta}")
    out = Path(args.out)
    momenta = sorted(set(args.momenta))
    print(f"momentum study: MoCo v2 on digits, {args.epochs} epochs per run, m in "
          f"{', '.join(f'{m:g}' for m in momenta)}, into {out}/", flush=True)
    start = time.perf_counter()
    for m in momenta:
        run_dir = run_dir_for(out, m)
        t0 = time.perf_counter()
        action = train_run(run_dir, m, args.epochs, args.steps_per_epoch)
        verb = {"reuse": "reused", "resume": "resumed", "new": "trained"}[action]
        print(f"  m={m:g}: {verb} {run_dir} in {time.perf_counter() - t0:.1f} s", flush=True)
    rows = [summarize(run_dir_for(out, m)) for m in momenta]
    for path in write_figures(rows, Path(args.figures)):
        print(f"  wrote {path}")
    print(f"momentum study: done in {time.perf_counter() - start:.0f} s\n")
    print(markdown_table(rows))
    # What the flags' steps mean, under the table; non-finite is no column as it
    # is rare, but it is reported when it fires.
    notes = [f"- m={r['m']:g}: {flag.check} from step {flag.step}: {flag.detail}"
             for r in rows for flag in (r["collapse"], r["instability"], r["nonfinite"]) if flag.fired]
    if notes:
        print("\n" + "\n".join(notes))
    return 0


if __name__ == "__main__":
    parser = add_arguments(argparse.ArgumentParser(description=__doc__.split("\n\n")[0]))
    try:
        sys.exit(main(parser.parse_args()))
    except ScorevizError as err:
        # One line on stderr, like every scoreviz command.
        sys.exit(f"momentum_study.py: {err}")
