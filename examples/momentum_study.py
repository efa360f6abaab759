"""The paper's momentum experiment (Zhu et al. 2021, Table 1) in small.

MoCo on the bundled digits for each key-encoder momentum m, with MoCo v1's
settings (t 0.07, linear head, v1 augmentation, step lr; the paper's momentum
runs) and v2's (t 0.2, MLP head, blur, cosine lr), several seeds each,
shuffle-BN on, a queue 32 batches deep. Every run is a `scoreviz train` run in
its own folder (``<out>/v<version>/m<m>-s<seed>``). Then, per version, a
markdown table of kNN accuracy, score statistics, gradient roughness and the
app's health flags as mean and spread over the seeds, the app's 3D waterfall
of the per-sample negative variance (seed means) and the same curves with
their spread over seeds.

    python examples/momentum_study.py                  # 2 versions x 6 momenta x 3 seeds; 36 to 110 minutes on 2 cores
    python examples/momentum_study.py --versions 1 --momenta 0.6 0.99 --seeds 2 --epochs 10

Re-running reuses every run that finished with the requested settings and
continues an interrupted one from its last checkpoint, so only the tables and
the figures are made again. The seeds are folded together as the app's grouped
views do it (``scoreviz.groups``: group by ``moco_m``, every other key such as
``seed`` ignored; the curves' band is the min-max over seeds).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

# The app package lives next to scoreviz at the root of the checkout; make the
# script work from a plain checkout too, not only from an installed one.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scoreviz.errors import ScorevizError  # noqa: E402
from scoreviz.trainer import study  # noqa: E402

VERSIONS = (1, 2)
MOMENTA = (0.5, 0.6, 0.9, 0.99, 0.999, 1.0)
SEEDS = 3
# Batch 32 and queue 1024: the queue holds the keys of the last 32 batches
# (8 in the trainer's digits default, 256 in the paper's ImageNet-100 runs) and
# 71% of the 1,438 training images (the paper's: 52% of ImageNet-100). The lr
# is the digits default scaled with the batch (0.06 x 32 / 128); 4 BN groups
# of 8 images each, the keys shuffled (shuffle-BN on one device).
DEFAULT_EPOCHS = 40  # 44 steps each: 1,760 steps per run
BATCH, QUEUE, BN_SPLITS, LR = 32, 1024, 4, 0.015
TAG = "raw"  # no feature transformation here, so raw is what the loss saw
STAT = "neg_sample_var"  # the paper's curve: mean over samples of each sample's negative variance
# The paper's ImageNet-100 linear accuracy by m (MoCo, t 0.07, Table 1); m = 0.5 collapsed.
PAPER = {0.5: "collapse", 0.6: "21.2", 0.7: "32.8", 0.8: "39.3", 0.9: "46.5", 0.99: "56.2", 0.999: "53.1", 1.0: "31.2"}


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    study.add_arguments(parser, "runs/momentum-study", DEFAULT_EPOCHS, SEEDS)  # its runs: <out>/v<version>/m<m>-s<seed>
    parser.add_argument("--versions", type=int, nargs="+", default=list(VERSIONS), choices=[1, 2],
                        help="MoCo versions (default: 1 2)")
    parser.add_argument("--momenta", type=float, nargs="+", default=list(MOMENTA),
                        help="key-encoder momenta m (default: " + " ".join(f"{m:g}" for m in MOMENTA) + ")")
    parser.add_argument("--figures", default="docs",
                        help="folder for momentum_v<version>_waterfall.png and momentum_v<version>_neg_var.png (default docs)")
    return parser


def run_dir_for(out: Path, version: int, m: float, seed: int) -> Path:
    return out / f"v{version}" / f"m{m:g}-s{seed}"


def settings(version: int, m: float, seed: int, epochs: int, steps_per_epoch: int | None, knn_k: int) -> dict:
    """The trainer settings of one run, as its config records them."""
    return dict(dataset="digits", moco_version=version, moco_m=m, seed=seed, epochs=epochs,
                steps_per_epoch=steps_per_epoch, batch_size=BATCH, moco_k=QUEUE, bn_splits=BN_SPLITS, lr=LR,
                knn_k=knn_k)


# ---------------------------------------------------------------- one run, then a group of seeds

def summarize(run_dir: Path) -> dict:
    """Accuracies, final statistics, gradient roughness and health flags of one run (study.summarize),
    with complete and dimensional collapse as one "representation" flag."""
    row = study.summarize(run_dir, TAG, STAT)
    row["flags"]["representation"] = study.first_fired(row["flags"]["complete collapse"],
                                                        row["flags"]["dimensional collapse"])
    return row


def group_by_momentum(summaries: dict) -> list:
    """The runs of one version (run folder -> :func:`summarize`) grouped by ``moco_m`` as the
    app groups them (``scoreviz.groups``: the seed and every other key ignored), each group
    folded into means, spreads and flag counts."""
    return [_folded(group, rows, curve) for group, rows, curve in study.group_seeds(summaries, ["moco_m"])]


def _folded(group, rows: list, curve) -> dict:
    def values(key):
        return [r[key] for r in rows]

    # Runs whose scores were all alike early and then left: the app shows that as warm-up, not collapse.
    early = [r["flags"]["collapse"].warmup[0] for r in rows
             if not r["flags"]["collapse"].fired and r["flags"]["collapse"].warmup]
    return dict(version=rows[0]["config"]["moco_version"], m=group.key[0], n=len(rows), values=values,
                collapse=study.fired_steps(rows, "collapse"), early_collapse=early,
                instability=study.fired_steps(rows, "instability"), nonfinite=study.fired_steps(rows, "non-finite"),
                representation=study.fired_steps(rows, "representation"),
                mean_curve=curve["mean"], low=curve["lower"], high=curve["upper"])


def _collapse_text(g: dict) -> str:
    """The collapse flags, then the runs that collapsed early and left (the app's warm-up), if any."""
    text = study.flag_count(g["collapse"], g["n"])
    if g["early_collapse"]:
        text += f"; early and left: {study.flag_count(g['early_collapse'], g['n'])}"
    return text


def markdown_table(groups: list) -> str:
    """One version's results per m: mean ± sample sd over the seeds, flags as runs flagged / runs."""
    mean_sd = study.mean_sd
    lines = [
        "| m | kNN final (%) | kNN best (%) | kNN range (%) | linear (%) | neg var final | pos mean final "
        "| neg mean final | grad p99/median | rank final (of 128) | std x sqrt(dim) final | collapse "
        "| representation collapse | instability | paper, IN-100 linear (%) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---|---:|",
    ]
    for g in groups:
        v = g["values"]
        lines.append(
            f"| {g['m']:g} | {mean_sd(v('knn_final'))} | {mean_sd(v('knn_best'))} "
            f"| {min(v('knn_final')):.1f}-{max(v('knn_final')):.1f} | {mean_sd(v('linear'))} "
            f"| {mean_sd(v('var_final'), 2, 'e')} "
            f"| {mean_sd(v('pos_final'), 3)} | {mean_sd(v('neg_final'), 3)} | {mean_sd(v('grad_rough'), 2)} "
            f"| {mean_sd(v('rank_final'), 1)} | {mean_sd(v('std_final'), 2)} "
            f"| {_collapse_text(g)} | {study.flag_count(g['representation'], g['n'])} "
            f"| {study.flag_count(g['instability'], g['n'])} "
            f"| {PAPER.get(g['m'], '')} |")
    return "\n".join(lines)


# ---------------------------------------------------------------- figures

def spread_figure(groups: list, title: str):
    """Seed-mean curves of the statistic per m, each with its min-max band over seeds, log scale."""
    import plotly.graph_objects as go

    from app.plot.axes import TEMPLATE, stat_label
    from app.plot.palette import fallback
    from app.plot.reduce import downsample_minmax

    fig = go.Figure()
    for i, g in enumerate(groups):
        color = fallback(i)
        x, low = downsample_minmax(g["low"].index.to_numpy(), g["low"].to_numpy(), 1000)
        _, high = downsample_minmax(g["high"].index.to_numpy(), g["high"].to_numpy(), 1000)
        xm, mean = downsample_minmax(g["mean_curve"].index.to_numpy(), g["mean_curve"].to_numpy(), 1000)
        name = f"m={g['m']:g}"
        fig.add_trace(go.Scatter(x=x, y=high, mode="lines", line=dict(width=0), legendgroup=name, showlegend=False,
                                 hoverinfo="skip"))
        fig.add_trace(go.Scatter(x=x, y=low, mode="lines", line=dict(width=0), fill="tonexty",
                                 fillcolor=_transparent(color), legendgroup=name, showlegend=False, hoverinfo="skip"))
        fig.add_trace(go.Scatter(x=xm, y=mean, mode="lines", name=name, legendgroup=name,
                                 line=dict(color=color, width=1.5)))
    fig.update_yaxes(type="log", title_text=stat_label(STAT))
    fig.update_xaxes(title_text="step")
    fig.update_layout(template=TEMPLATE, title=title, height=480, margin=dict(l=70, r=20, t=70, b=50))
    return fig


def _transparent(color: str, alpha: float = 0.18) -> str:
    """A plotly colour ("#rrggbb" or "rgb(r, g, b)") as rgba with ``alpha``."""
    if color.startswith("#"):
        r, g, b = (int(color[i:i + 2], 16) for i in (1, 3, 5))
    else:
        r, g, b = (int(float(c)) for c in color[color.index("(") + 1:color.index(")")].split(",")[:3])
    return f"rgba({r}, {g}, {b}, {alpha})"


def write_figures(groups: list, version: int, folder: Path) -> list:
    """The waterfall (the app's figure, seed means) and the spread curves of one version as PNG.

    Uses the app's kaleido export with the local Chromium; when that is
    unavailable, says why and writes nothing.
    """
    from app.shell import images
    from app.views.waterfall import figures

    reason = images.unavailable_reason()
    if reason:
        print(f"momentum study: no PNG written. {reason}", file=sys.stderr)
        return []
    folder.mkdir(parents=True, exist_ok=True)
    names = {f"m={g['m']:g}": g for g in groups}
    waterfall = figures.waterfall_figure({k: g["mean_curve"] for k, g in names.items()},
                                         {k: g["m"] for k, g in names.items()}, key="moco_m", stat=STAT)
    # A still image cannot be turned, so pick the view here: the largest m in
    # front, steps left to right, a wide box; the step axis is reversed because
    # the camera looks from the far side of the m axis.
    waterfall.update_layout(title=f"MoCo v{version}: {waterfall.layout.title.text} (mean of {groups[0]['n']} seeds)",
                            scene_camera=dict(eye=dict(x=1.0, y=2.5, z=1.2)), scene_xaxis_autorange="reversed",
                            scene_aspectratio=dict(x=2, y=1.2, z=0.8), legend=dict(x=0.02, y=0.95))
    curves = spread_figure(groups, f"MoCo v{version}: negative-score variance (per sample) by momentum m, "
                                   f"mean and min-max of {groups[0]['n']} seeds")
    written = []
    for fig, name in ((waterfall, f"momentum_v{version}_waterfall.png"), (curves, f"momentum_v{version}_neg_var.png")):
        path = folder / name
        path.write_bytes(images.to_image(fig.to_dict(), "png"))
        written.append(path)
    return written


# ---------------------------------------------------------------- main

def main(args: argparse.Namespace) -> int:
    study.check_arguments(args)
    if any(not 0 <= m <= 1 for m in args.momenta):
        raise ScorevizError(f"--momenta: each must lie in [0, 1], got {args.momenta}")
    out = Path(args.out)
    versions, momenta, seeds = sorted(set(args.versions)), sorted(set(args.momenta)), range(args.seeds)
    print(f"momentum study: MoCo v{' and v'.join(map(str, versions))} on digits, m in "
          f"{', '.join(f'{m:g}' for m in momenta)}, {args.seeds} seeds, {args.epochs} epochs of batch {BATCH}, "
          f"queue {QUEUE}, {BN_SPLITS} BN groups; {args.jobs} at a time, into {out}/", flush=True)
    start = time.perf_counter()
    knn_k = study.digits_knn_k()
    jobs = [(run_dir_for(out, v, m, s), settings(v, m, s, args.epochs, args.steps_per_epoch, knn_k))
            for v in versions for m in momenta for s in seeds]
    for run_dir, wanted in jobs:  # refuse a clash before hours of training, not after
        study.plan(run_dir, wanted)
    study.train_all(jobs, args.jobs, "momentum study", args.linear_epochs or None)

    tables = []
    for v in versions:
        groups = group_by_momentum({str(run_dir_for(out, v, m, s)): summarize(run_dir_for(out, v, m, s))
                                    for m in momenta for s in seeds})
        for path in write_figures(groups, v, Path(args.figures)):
            print(f"  wrote {path}")
        init = statistics.fmean(x for g in groups for x in g["values"]("knn_init"))
        notes = [f"- m={g['m']:g}: non-finite values in {len(g['nonfinite'])} of {g['n']} runs"
                 for g in groups if g["nonfinite"]]
        tables.append(f"### MoCo v{v}\n\nkNN accuracy of the encoder at random initialisation: {init:.1f}% "
                      f"(mean over the runs).\n\n{markdown_table(groups)}" + ("\n\n" + "\n".join(notes) if notes else ""))
    print(f"momentum study: done in {time.perf_counter() - start:.0f} s\n")
    print("\n\n".join(tables))
    return 0


if __name__ == "__main__":
    study.run_script(main, add_arguments, __doc__, "momentum_study.py")
