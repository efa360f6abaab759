"""When feature transformation starts, and which part of it matters: an FT study on the digits.

MoCo v2 with the digits' defaults (the recipe ``scoreviz demo`` trains) and
feature transformation (Zhu et al. 2021) from epoch 0, 2 or 10 (the trainer's
``--ft-start-epoch``, the authors' ``--mix_start_epoch``), for positive
extrapolation only (alpha 2.0), negative interpolation only (alpha 1.6) and
both, plus the baseline without FT, several seeds each. Every run is a
``scoreviz train`` run in its own folder (``<out>/baseline-s<seed>``,
``<out>/<pos|neg|both>-e<start>-s<seed>``), followed by its linear evaluation
(``scoreviz lincls``). Then one markdown table, one row per setting: kNN and
linear accuracy, how deep the early cone of the embeddings is (the negative
mean over steps 11-66), the final negative mean, uniformity and effective rank,
and the app's health flags, as mean and spread over the seeds.

    python examples/ft_study.py                # 10 settings x 3 seeds, 30 epochs each: about 2 hours on 2 busy cores
    python examples/ft_study.py --starts 0 2 --parts both --seeds 1 --epochs 5

Re-running reuses every finished run and continues an interrupted one from its
last checkpoint. The seeds are folded together as the app's grouped views do
it (``scoreviz.groups``: group by ``pos_alpha``, ``neg_alpha`` and
``ft_start_epoch``); in the app, ``scoreviz serve runs/ft-study`` with *Group
by* those three keys shows the same groups.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

# The app package lives next to scoreviz at the root of the checkout; make the
# script work from a plain checkout too, not only from an installed one.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scoreviz.errors import ScorevizError  # noqa: E402
from scoreviz.trainer import study  # noqa: E402

POS_ALPHA, NEG_ALPHA = 2.0, 1.6  # the paper's best alphas
PARTS = {"pos": dict(pos_alpha=POS_ALPHA), "neg": dict(neg_alpha=NEG_ALPHA),
         "both": dict(pos_alpha=POS_ALPHA, neg_alpha=NEG_ALPHA)}
STARTS = (0, 2, 10)
SEEDS = 3
# 30 epochs of the digits' 11 steps: 330 steps. The trap FT from step 0 falls into forms in the
# first epochs (docs/trainer.md), so a start epoch means the same in a 30-epoch run as in the demo's 100.
DEFAULT_EPOCHS = 30
GROUP_BY = ["pos_alpha", "neg_alpha", "ft_start_epoch"]
TAG = "raw"  # the scores before FT: what the encoders make of the images
CONE_STEPS = (11, 66)  # epochs 2-6 of 11 steps: where FT from step 0 keeps every embedding in one cone
NAMES = {"pos": "positive extrapolation", "neg": "negative interpolation", "both": "both"}
SWITCH_AFTER = 10  # steps after FT is switched on where the second table looks


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    study.add_arguments(parser, "runs/ft-study", DEFAULT_EPOCHS, SEEDS)
    parser.add_argument("--starts", type=int, nargs="+", default=list(STARTS),
                        help="first epochs with FT, --ft-start-epoch (default: " + " ".join(map(str, STARTS)) + ")")
    parser.add_argument("--parts", nargs="+", default=list(PARTS), choices=list(PARTS),
                        help="which transformations: pos (extrapolated positives, alpha 2.0), neg (interpolated "
                             "negatives, alpha 1.6), both (default: all three)")
    parser.add_argument("--no-baseline", action="store_true", help="leave out the runs without FT")
    return parser


def settings(part: str | None, start: int, seed: int, epochs: int, steps_per_epoch: int | None, knn_k: int) -> dict:
    """The trainer settings of one run (part None: the baseline), as its config records them."""
    alphas = {"pos_alpha": None, "neg_alpha": None} | PARTS.get(part, {})  # None: off, also in the plan's check
    return dict(dataset="digits", seed=seed, epochs=epochs, steps_per_epoch=steps_per_epoch, knn_k=knn_k,
                ft_start_epoch=start, **alphas)


def run_dir_for(out: Path, part: str | None, start: int, seed: int) -> Path:
    return out / (f"baseline-s{seed}" if part is None else f"{part}-e{start}-s{seed}")


def cone_depth(row: dict) -> float:
    """The mean negative score over steps 11-66: near 1 while every embedding sits in one cone."""
    neg = row["scores"]["neg_mean"]
    inside = neg.loc[CONE_STEPS[0]:CONE_STEPS[1]]
    return float(inside.mean()) if len(inside) else float("nan")


def part_of(config: dict) -> str | None:
    """Which transformations a run's config turns on: "pos", "neg", "both", or None (the baseline)."""
    return {(True, False): "pos", (False, True): "neg", (True, True): "both"}.get(
        (config.get("pos_alpha") is not None, config.get("neg_alpha") is not None))


def setting_name(config: dict) -> str:
    """"both from epoch 2", "positive extrapolation from epoch 0", or "baseline (no FT)"."""
    part = part_of(config)
    return "baseline (no FT)" if part is None else f"{NAMES[part]} from epoch {config['ft_start_epoch']}"


def markdown_table(groups: list) -> str:
    """One row per setting: mean ± sample sd over the seeds, flags as runs flagged / runs."""
    mean_sd = study.mean_sd
    lines = ["| setting | kNN final (%) | kNN range (%) | linear (%) | neg mean, steps 11-66 | neg mean final "
             "| uniformity final | rank final (of 128) | collapse | all alike early, then left | dimensional collapse "
             "(a notice) |", "|---|---:|---:|---:|---:|---:|---:|---:|---|---|---|"]
    for group, rows, _ in groups:
        n = len(rows)
        knn = [r["knn_final"] for r in rows]
        early = [r["flags"]["collapse"].warmup[0] for r in rows
                 if not r["flags"]["collapse"].fired and r["flags"]["collapse"].warmup]
        lines.append(
            f"| {setting_name(rows[0]['config'])} | {mean_sd(knn)} | {min(knn):.1f}-{max(knn):.1f} "
            f"| {mean_sd([r['linear'] for r in rows])} | {mean_sd([r['cone'] for r in rows], 3)} "
            f"| {mean_sd([r['neg_final'] for r in rows], 3)} | {mean_sd([r['uniformity_final'] for r in rows], 2)} "
            f"| {mean_sd([r['rank_final'] for r in rows])} "
            f"| {study.flag_count(study.fired_steps(rows, 'collapse'), n)} | {study.flag_count(early, n)} "
            f"| {study.flag_count(study.fired_steps(rows, 'dimensional collapse'), n)} |")
    return "\n".join(lines)


def switch_rows(row: dict, start: int, after: int = SWITCH_AFTER) -> tuple:
    """(alignment and positive mean at the last step before epoch ``start``, negative mean and alignment
    ``after`` steps later) of one run: what the embeddings were when FT was switched on, and what it made
    of them. NaN where the run has no such step."""
    per_epoch = row["steps"] // row["config"]["epochs"]
    before, later = start * per_epoch, start * per_epoch + after
    scores, embeddings = row["scores"], row["embeddings"]

    def at(frame, column, step):
        return float(frame[column].get(step, float("nan")))
    return (at(embeddings, "alignment", before), at(scores, "pos_mean", before), at(scores, "neg_mean", later),
            at(embeddings, "alignment", later))


def switch_table(groups: list, starts: list) -> str:
    """Markdown: for each FT setting that starts after epoch 0, and the baseline at the same steps, the
    alignment and positive mean just before FT and the negative mean and alignment SWITCH_AFTER steps after."""
    mean_sd = study.mean_sd
    lines = [f"| setting | step before FT | alignment before | positive mean before | negative mean {SWITCH_AFTER} "
             f"steps after | alignment {SWITCH_AFTER} steps after |", "|---|---:|---:|---:|---:|---:|"]
    baseline = next((rows for _, rows, _ in groups if part_of(rows[0]["config"]) is None), None)
    for start in [e for e in starts if e > 0]:
        cells = [(setting_name(rows[0]["config"]), rows) for _, rows, _ in groups
                 if part_of(rows[0]["config"]) is not None and rows[0]["config"]["ft_start_epoch"] == start]
        if baseline:
            cells.append(("baseline (no FT), the same steps", baseline))
        for name, rows in cells:
            values = list(zip(*(switch_rows(r, start) for r in rows)))
            before = start * (rows[0]["steps"] // rows[0]["config"]["epochs"])
            lines.append(f"| {name} | {before} | {mean_sd(values[0], 2)} | {mean_sd(values[1], 2)} "
                         f"| {mean_sd(values[2], 2)} | {mean_sd(values[3], 2)} |")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    study.check_arguments(args)
    if any(start < 0 for start in args.starts):
        raise ScorevizError(f"--starts: each must be 0 or more, got {args.starts}")
    out, starts, seeds = Path(args.out), sorted(set(args.starts)), range(args.seeds)
    parts = [p for p in PARTS if p in args.parts]
    cells = ([] if args.no_baseline else [(None, 0)]) + [(p, e) for p in parts for e in starts]
    print(f"FT study: MoCo v2 on digits, {len(cells)} settings x {args.seeds} seeds, {args.epochs} epochs each; "
          f"{args.jobs} at a time, into {out}/", flush=True)
    start_time = time.perf_counter()
    knn_k = study.digits_knn_k()
    jobs = [(run_dir_for(out, p, e, s), settings(p, e, s, args.epochs, args.steps_per_epoch, knn_k))
            for p, e in cells for s in seeds]
    for run_dir, wanted in jobs:  # refuse a clash before hours of training, not after
        study.plan(run_dir, wanted)
    study.train_all(jobs, args.jobs, "FT study", args.linear_epochs or None)

    summaries = {}
    for run_dir, _ in jobs:
        row = study.summarize(run_dir, TAG, "neg_mean")
        row["cone"] = cone_depth(row)
        row["steps"] = int(study.results(run_dir)["step"])
        summaries[str(run_dir)] = row
    groups = study.group_seeds(summaries, GROUP_BY)
    # The baseline first, then by transformation and start epoch, as the table reads best.
    order = {None: -1, **{p: i for i, p in enumerate(PARTS)}}
    groups.sort(key=lambda g: (order[part_of(g[1][0]["config"])], g[1][0]["config"]["ft_start_epoch"]))
    init = study.mean_sd([r["knn_init"] for r in summaries.values()])
    print(f"FT study: done in {time.perf_counter() - start_time:.0f} s\n")
    print(f"kNN accuracy (k {knn_k}) of the encoder at random initialisation: {init} (over the runs); "
          f"{args.seeds} seeds a setting, {args.epochs} epochs.\n")
    print(markdown_table(groups))
    if any(e > 0 for e in starts):
        print(f"\nWhen FT is switched on (alignment: E |x - x2|^2 of the query and key projections, 0 when "
              f"aligned, 2 for unrelated directions):\n")
        print(switch_table(groups, starts))
    return 0


if __name__ == "__main__":
    study.run_script(main, add_arguments, __doc__, "ft_study.py")
