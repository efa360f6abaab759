"""`scoreviz demo`: MoCo v2 on the bundled digits twice, a baseline and a run with
both feature transformations, then the app serving the two runs.

Re-running reuses what is there: a finished run is kept, an interrupted one is
resumed from its last checkpoint.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from urllib.parse import urlencode

from tqdm import tqdm

# name -> extra `scoreviz train` options
RUNS = {
    "baseline": [],
    "ft": ["--pos-alpha", "2.0", "--neg-alpha", "1.6"],  # the paper's best alphas
}
DEFAULT_EPOCHS = 100
# One digits epoch (small net, batch 128, kNN included) on 2 CPU cores, measured
# at about 0.35 s; --minutes is turned into epochs with this, so it is approximate.
SECONDS_PER_EPOCH = 0.4


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    from app.cli_commands import port_number  # argparse only, no Dash

    parser.add_argument("--out", default="runs/demo", help="folder of the two runs (default runs/demo)")
    parser.add_argument("--minutes", type=float, default=None,
                        help=f"about how long both runs train together on 2 CPU cores "
                             f"(default: {DEFAULT_EPOCHS} epochs each, about a minute or two)")
    parser.add_argument("--host", default="127.0.0.1", help="address to serve on (default 127.0.0.1)")
    parser.add_argument("--port", type=port_number, default=8050, help="port (default 8050)")
    parser.add_argument("--no-serve", action="store_true", help="train (or reuse) the runs, do not serve them")
    return parser


def epochs_for(minutes):
    if minutes is None:
        return DEFAULT_EPOCHS
    if minutes <= 0:
        from scoreviz.errors import ScorevizError

        raise ScorevizError(f"--minutes: must be positive, got {minutes}")
    return max(1, int(minutes * 60 / len(RUNS) / SECONDS_PER_EPOCH))


def finished_epochs(run_dir: Path) -> int:
    """Epochs a run has completed, from its results.json (0 when there is none)."""
    try:
        return int(json.loads((run_dir / "results.json").read_text()).get("epoch", 0))
    except (OSError, ValueError):
        return 0


def train_run(run_dir: Path, epochs: int, extra: list):
    """Train one run to `epochs`, resuming it if it has a checkpoint, with one progress bar."""
    from scoreviz.trainer import train

    done = finished_epochs(run_dir)
    if done >= epochs:
        print(f"scoreviz demo: reusing {run_dir} ({done} epochs)")
        return
    argv = ["--dataset", "digits", "--epochs", str(epochs), "--run-dir", str(run_dir), "--quiet"]
    argv += ["--resume"] if (run_dir / "checkpoint.pt").exists() else extra
    args = train.add_arguments(argparse.ArgumentParser()).parse_args(argv)
    with tqdm(total=epochs, initial=done, desc=f"{run_dir.name:>8}", unit="epoch") as bar:
        def on_epoch(epoch, total, knn_acc):
            bar.update(epoch - bar.n)
            bar.set_postfix(knn_acc=f"{knn_acc:.1f}%")
        train.main(args, on_epoch=on_epoch)


def main(args: argparse.Namespace) -> int:
    out = Path(args.out)
    epochs = epochs_for(args.minutes)
    print(f"scoreviz demo: MoCo v2 on the bundled digits, {epochs} epochs per run, into {out}/")
    for name, extra in RUNS.items():
        train_run(out / name, epochs, extra)
    if args.no_serve:
        print(f"scoreviz demo: runs in {out}/; serve them with: scoreviz serve {out}")
        return 0
    from app import serve

    selection = urlencode([("runs", name) for name in RUNS])  # the app keeps its selection in the URL
    print(f"scoreviz demo: open http://{args.host}:{args.port}/?{selection} to compare the two runs", flush=True)
    serve(str(out), host=args.host, port=args.port)
    return 0
