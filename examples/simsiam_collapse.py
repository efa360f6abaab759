"""SimSiam with and without the stop-gradient (Chen & He, CVPR 2021, Fig. 2), recorded.

SimSiam has no negatives: it pulls two views of an image together through a
predictor, and the stop-gradient on the target branch is what keeps it from a
degenerate solution. Each pair of runs here trains the same network from the
same initialisation on scikit-learn's bundled digits, with and without the
stop-gradient, and records its positive scores (positives only:
`log_scores(step, pos)`) and its projections (`log_embeddings(step, z1, z2)`).
The app's health checks then flag the run without stop-gradient, with the step
where its collapse began, and not the other. Two projector heads:

- ``linear``: the projector ends with a linear layer (with bias). Without the
  stop-gradient the outputs crowd around one point (the std of the
  l2-normalised output falls, as in the paper's Fig. 2): *complete collapse*.
- ``simsiam``: the official head, ending with BatchNorm1d(affine=False). Batch-
  standardised outputs keep unit variance per channel, so they cannot meet at
  one point: without the stop-gradient they collapse into a few directions
  instead (the effective rank falls): *dimensional collapse*.

    python examples/simsiam_collapse.py                  # four runs, 8 to 14 minutes on 2 busy CPU cores
    scoreviz serve runs/simsiam-collapse                 # the Representation and Health views

It prints a table (onset steps, std and rank, kNN accuracy) and writes
docs/simsiam_collapse.png with the app's own figure function (when kaleido and
a Chromium are there). Finished runs are reused, so a second call only makes
the table and the figure again.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

# The app package lives next to scoreviz at the root of the checkout.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import scoreviz  # noqa: E402
from scoreviz.errors import ScorevizError  # noqa: E402
from scoreviz.trainer import study  # noqa: E402

# SimSiam's ImageNet recipe (SGD, lr 0.05 x batch / 256, momentum 0.9, weight decay 1e-4, cosine),
# at digit size: a small conv net, 64-d projections, a 16-d predictor bottleneck.
DEFAULTS = dict(epochs=40, batch_size=128, dim=64, pred_dim=16, lr=0.05, wd=1e-4, seed=0, spectrum_window=10)
HEADS = ("linear", "simsiam")
RUNS = {"stop-gradient": True, "no-stop-gradient": False}


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--out", default="runs/simsiam-collapse", help="folder of the two runs (default %(default)s)")
    parser.add_argument("--epochs", type=int, default=DEFAULTS["epochs"], help="epochs per run (default %(default)s)")
    parser.add_argument("--steps-per-epoch", type=int, help="stop each epoch after this many steps (quick checks)")
    parser.add_argument("--lr", type=float, default=DEFAULTS["lr"], help="base learning rate, times batch / 256 "
                        "(default %(default)s, SimSiam's)")
    parser.add_argument("--heads", nargs="+", choices=HEADS, default=list(HEADS),
                        help="projector heads to train, a pair of runs each (default: both)")
    parser.add_argument("--figures", default="docs", help="folder for simsiam_collapse.png (default %(default)s)")
    return parser


# ---------------------------------------------------------------- the model


def build_simsiam(dim, pred_dim, head="simsiam"):
    """SimSiam's shape at digit size: backbone, 3-layer projector with BN, 2-layer bottleneck predictor.
    The projector's last layer: SimSiam's linear layer and BatchNorm1d(affine=False) ("simsiam"),
    or a linear layer with bias ("linear")."""
    import torch.nn as nn

    from scoreviz.trainer.model import build_backbone

    backbone = build_backbone("small", in_channels=1, image_size=8)
    width = backbone.out_dim
    last = [nn.Linear(width, dim, bias=False), nn.BatchNorm1d(dim, affine=False)] if head == "simsiam" \
        else [nn.Linear(width, dim)]
    projector = nn.Sequential(
        nn.Linear(width, width, bias=False), nn.BatchNorm1d(width), nn.ReLU(inplace=True),
        nn.Linear(width, width, bias=False), nn.BatchNorm1d(width), nn.ReLU(inplace=True), *last)
    predictor = nn.Sequential(nn.Linear(dim, pred_dim, bias=False), nn.BatchNorm1d(pred_dim), nn.ReLU(inplace=True),
                              nn.Linear(pred_dim, dim))
    return nn.ModuleDict(dict(backbone=backbone, projector=projector, predictor=predictor))


def simsiam_step(model, x1, x2, stop_gradient):
    """(loss, z1, z2, positive scores): the symmetric negative cosine of predictions and targets."""
    import torch
    import torch.nn.functional as F

    z1, z2 = (model["projector"](model["backbone"](x)) for x in (x1, x2))
    p1, p2 = model["predictor"](z1), model["predictor"](z2)
    t1, t2 = (z1.detach(), z2.detach()) if stop_gradient else (z1, z2)
    pos = torch.cat([F.cosine_similarity(p1, t2, dim=1), F.cosine_similarity(p2, t1, dim=1)])
    return -pos.mean(), z1, z2, pos


def train(run_dir: Path, head: str, stop_gradient: bool, args) -> dict:
    """Train one SimSiam run on digits, recording it; returns its results (also in results.json)."""
    import torch

    from scoreviz.trainer.augment import Augment
    from scoreviz.trainer.data import epoch_indices, load_digits
    from scoreviz.trainer.evaluate import knn_accuracy

    settings = settings_for(args, head, stop_gradient)
    data = load_digits()
    torch.manual_seed(settings["seed"])  # the same initial weights for both runs of a head
    model = build_simsiam(settings["dim"], settings["pred_dim"], head)
    lr = settings["lr"] * settings["batch_size"] / 256  # SimSiam's linear scaling
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=settings["wd"])
    augment = Augment(2, data.image_size, data.mean, data.std, crop_min=0.5, flip=False)
    knn = lambda: knn_accuracy(model["backbone"], data, torch.device("cpu"), k=200, t=0.1)  # noqa: E731
    results = {"knn_acc_init": knn(), "knn_acc": []}
    step = 0
    with scoreviz.Recorder(run_dir, config=settings, spectrum_window=settings["spectrum_window"]) as rec:
        for epoch in range(settings["epochs"]):
            epoch_lr = lr * 0.5 * (1 + math.cos(math.pi * epoch / settings["epochs"]))
            for group in optimizer.param_groups:
                group["lr"] = epoch_lr
            indices = epoch_indices(len(data.train), epoch, settings["seed"], batch_size=settings["batch_size"])
            for batch in indices[:args.steps_per_epoch]:
                images = data.train.images[batch]
                loss, z1, z2, pos = simsiam_step(model, augment(images), augment(images), stop_gradient)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                rec.log_scores(step, pos.detach())              # positives only: SimSiam has no negatives
                rec.log_embeddings(step, z1.detach(), z2.detach())  # std, uniformity, alignment, rank
                rec.log_scalars(step, loss=loss.detach(), lr=epoch_lr)
                step += 1
            results["knn_acc"].append(knn())
            rec.log_scalars(step, knn_acc=results["knn_acc"][-1])
    results.update(epochs=settings["epochs"], steps=step, knn_acc_final=results["knn_acc"][-1])
    (run_dir / "results.json").write_text(json.dumps(results, indent=2))
    return results


def settings_for(args, head, stop_gradient) -> dict:
    return dict(DEFAULTS, epochs=args.epochs, steps_per_epoch=args.steps_per_epoch, lr=args.lr, head=head,
                stop_gradient=stop_gradient)


def finished(run_dir: Path, settings: dict) -> bool:
    """Whether the run in `run_dir` completed with these settings (then it is reused). A run
    recorded with other settings is an error: its curves and the new ones would mix."""
    if not (run_dir / "scores.h5").exists():
        return False
    config = scoreviz.open_run(run_dir).config
    differ = {k: config.get(k) for k, v in settings.items() if config.get(k) != v}
    if differ:
        raise ScorevizError(f"{run_dir}: recorded with {differ}; delete it or choose another --out")
    try:
        return json.loads((run_dir / "results.json").read_text()).get("epochs") == settings["epochs"]
    except (OSError, ValueError):
        return False  # killed before the end: trained again, its rows replaced (a step's later row wins)


# ---------------------------------------------------------------- reading the runs back


def summarize(run_dir: Path) -> dict:
    """One row of the table: the app's representation health flags and the final statistics."""
    from scoreviz import health

    run = scoreviz.open_run(run_dir)
    embeddings = run.embeddings("train")
    flags = {f.check: f for f in health.representation_health(embeddings)}
    results = json.loads((run_dir / "results.json").read_text())
    dim = int(embeddings["dim"].iloc[-1])
    ranks = embeddings["rank"].dropna()
    return dict(
        name=f"{run.config['head']}/{run_dir.name}", dim=dim, steps=int(embeddings.index[-1]) + 1,
        std_first=float(embeddings["std"].iloc[0]), std_final=float(embeddings["std"].iloc[-1]),
        rank_first=float(ranks.iloc[0]), rank_final=float(ranks.iloc[-1]),
        pos_final=float(run.scores("train")["pos_mean"].iloc[-1]),
        knn_init=results["knn_acc_init"], knn_final=results["knn_acc_final"],
        complete=flags["complete collapse"], dimensional=flags["dimensional collapse"], embeddings=embeddings,
    )


def markdown_table(rows: list) -> str:
    lines = ["| run | complete collapse | dimensional collapse | std x sqrt(dim), first / final | rank, first / "
             "final (of dim) | pos mean final | kNN init / final (%) |",
             "|---|---|---|---:|---:|---:|---:|"]
    for r in rows:
        root = math.sqrt(r["dim"])
        lines.append(
            f"| {r['name']} | {_flag(r['complete'])} | {_flag(r['dimensional'])} "
            f"| {r['std_first'] * root:.3f} / {r['std_final'] * root:.2g} "
            f"| {r['rank_first']:.1f} / {r['rank_final']:.1f} ({r['dim']}) | {r['pos_final']:.3f} "
            f"| {r['knn_init']:.1f} / {r['knn_final']:.1f} |")
    return "\n".join(lines)


def _flag(flag) -> str:
    return f"from step {flag.step}" if flag.fired else "no"


def write_figure(rows: list, folder: Path):
    """The app's representation curves (std and rank) of both runs as PNG, or None without kaleido."""
    from app.shell import images
    from app.views.representation import figures as representation

    reason = images.unavailable_reason()
    if reason:
        print(f"simsiam_collapse: no PNG written. {reason}", file=sys.stderr)
        return None
    fig = representation.rank_std_figure({r["name"]: r["embeddings"] for r in rows},
                                         title="SimSiam on digits, two projector heads, with and without stop-gradient")
    fig.update_layout(width=1100)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "simsiam_collapse.png"
    path.write_bytes(images.to_image(fig.to_dict(), "png"))
    return path


def main(args: argparse.Namespace) -> int:
    if args.epochs <= 0 or (args.steps_per_epoch is not None and args.steps_per_epoch <= 0) or args.lr <= 0:
        raise ScorevizError("--epochs, --steps-per-epoch and --lr must be positive")
    out = Path(args.out)
    start = time.perf_counter()
    heads = list(dict.fromkeys(args.heads))
    for head in heads:
        for name, stop_gradient in RUNS.items():
            run_dir = out / head / name
            if finished(run_dir, settings_for(args, head, stop_gradient)):
                print(f"  {head}/{name}: reused {run_dir}", flush=True)
                continue
            t0 = time.perf_counter()
            results = train(run_dir, head, stop_gradient, args)
            print(f"  {head}/{name}: trained {results['steps']} steps into {run_dir} in "
                  f"{time.perf_counter() - t0:.0f} s", flush=True)
    rows = [summarize(out / head / name) for head in heads for name in RUNS]
    path = write_figure(rows, Path(args.figures))
    if path:
        print(f"  wrote {path}")
    print(f"simsiam_collapse: done in {time.perf_counter() - start:.0f} s\n")
    print(markdown_table(rows))
    for r in rows:
        for flag in (r["complete"], r["dimensional"]):
            if flag.fired:
                print(f"- {r['name']}: {flag.check} from step {flag.step}: {flag.detail}")
    return 0


if __name__ == "__main__":
    study.run_script(main, add_arguments, __doc__, "simsiam_collapse.py")
