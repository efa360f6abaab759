"""`scoreviz demo`: MoCo v2 on the bundled digits twice, a baseline and a run with
both feature transformations (from epoch 10, after a warm-up without them),
trained in the background while the app serves them: the page shows both runs
from their first steps and they grow live.

Each run trains in a process of its own (``python -m scoreviz.demo _train``,
the trainer through its public API), with an equal share of the CPU threads,
and reports each finished epoch on a pipe for its progress bar. Ctrl+C stops
the server and both trainings; a run keeps every epoch it finished, and the
next ``scoreviz demo`` resumes it from there (a finished run is reused).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from scoreviz.trainer.study import finished_epochs

# name -> extra `scoreviz train` options
RUNS = {
    "baseline": [],
    # The paper's best alphas, from epoch 10 (the digits' default --ft-start-epoch): from the first step FT
    # traps the small encoder in one cone and ends below the baseline (docs/trainer.md, docs/ft_study.md).
    "ft": ["--pos-alpha", "2.0", "--neg-alpha", "1.6"],
}
DEFAULT_EPOCHS = 100
# One digits epoch of each run while both train side by side, one thread each, on
# 2 CPU cores (kNN included): benchmarks/demo_time.py. --minutes is turned into
# epochs with this, so it is approximate (and slower on a busy machine).
SECONDS_PER_EPOCH = 1.0
STOP_SECONDS = 20  # how long a stopped training may take to close its record before it is killed

DESCRIPTION = ("Train MoCo v2 on the bundled digits twice (a baseline, and both feature "
               "transformations from epoch 10) in the background and serve the two runs at once: they grow on the "
               "page while they train. Ctrl+C stops the server and the training; running it again "
               "reuses finished runs and resumes stopped ones from their last epoch.")


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    from scoreviz.app_options import port_number  # argparse only, no Dash

    parser.add_argument("--out", default="runs/demo", help="folder of the two runs")
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=int, default=None,
                        help=f"epochs per run (default {DEFAULT_EPOCHS}: about "
                             f"{DEFAULT_EPOCHS * SECONDS_PER_EPOCH / 60:.0f} minutes on 2 idle CPU cores)")
    length.add_argument("--minutes", type=float, default=None,
                        help="about how long the two runs train (side by side) instead of --epochs")
    parser.add_argument("--host", default="127.0.0.1", help="address to serve on")
    parser.add_argument("--port", type=port_number, default=8050, help="port")
    parser.add_argument("--no-serve", action="store_true", help="train (or reuse) the runs, do not serve them")
    parser.add_argument("--verbose", action="store_true", help="print one line per request on stderr")
    return parser


def epochs_for(minutes=None, epochs=None) -> int:
    from scoreviz.errors import ScorevizError

    if epochs is not None:
        if epochs < 1:
            raise ScorevizError(f"--epochs: must be at least 1, got {epochs}")
        return epochs
    if minutes is None:
        return DEFAULT_EPOCHS
    if not minutes > 0:
        raise ScorevizError(f"--minutes: must be positive, got {minutes}")
    return max(1, int(minutes * 60 / SECONDS_PER_EPOCH))


def train_argv(run_dir: Path, epochs: int, extra: list) -> list:
    """`scoreviz train` options for one demo run: resumed where it has a checkpoint."""
    argv = ["--dataset", "digits", "--epochs", str(epochs), "--run-dir", str(run_dir), "--quiet"]
    return argv + (["--resume"] if (run_dir / "checkpoint.pt").exists() else list(extra))


class Training:
    """One run training in a child process, with a progress bar fed from its pipe."""

    def __init__(self, name: str, run_dir: Path, epochs: int, extra: list, threads: int, position: int):
        self.name, self.run_dir, self.epochs = name, run_dir, epochs
        self.argv = train_argv(run_dir, epochs, extra)
        self.threads, self.position = threads, position
        self.process = None
        self.last_acc = None

    def start(self):
        from tqdm import tqdm

        env = dict(os.environ)
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env.setdefault(var, str(self.threads))
        # Its own session: a Ctrl+C in the terminal reaches the demo only, which stops
        # each training exactly once (stop()).
        self.process = subprocess.Popen([sys.executable, "-m", "scoreviz.demo", "_train", *self.argv],
                                        stdout=subprocess.PIPE, text=True, env=env, start_new_session=True)
        self.bar = tqdm(total=self.epochs, initial=finished_epochs(self.run_dir), desc=f"{self.name:>8}",
                        unit="epoch", position=self.position, dynamic_ncols=True)
        self.reader = threading.Thread(target=self._follow, name=f"demo-{self.name}", daemon=True)
        self.reader.start()

    def _follow(self):
        for line in self.process.stdout:
            parts = line.split()
            if len(parts) == 3 and parts[0] == "epoch":
                self.last_acc = float(parts[2])
                self.bar.update(int(parts[1]) - self.bar.n)
                self.bar.set_postfix(knn_acc=f"{self.last_acc:.1f}%")

    def wait(self) -> int:
        code = self.process.wait()
        self.reader.join(timeout=5)
        self.bar.close()
        return code

    def stop(self):
        """Ask the training to stop (it closes its record), kill it if it does not; its exit code."""
        if self.process is None:
            return None  # never started
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=STOP_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.wait()


def main(args: argparse.Namespace) -> int:
    out = Path(args.out)
    epochs = epochs_for(args.minutes, args.epochs)
    todo = {}
    for name, extra in RUNS.items():
        done = finished_epochs(out / name)
        if done >= epochs:
            print(f"scoreviz demo: reusing {out / name} ({done} epochs)")
        else:
            todo[name] = extra
    threads = max(1, (os.cpu_count() or 2) // max(1, len(todo)))
    trainings = [Training(name, out / name, epochs, extra, threads, i) for i, (name, extra) in enumerate(todo.items())]
    if trainings:
        print(f"scoreviz demo: training {' and '.join(todo)} (MoCo v2 on the bundled digits, {epochs} epochs "
              f"each) in the background into {out}/", flush=True)
    if args.no_serve:
        for training in trainings:
            training.start()
        try:
            for training in trainings:
                training.process.wait()
        finally:  # also on Ctrl+C: stop the other one cleanly
            codes = [t.stop() for t in trainings]
        print(f"scoreviz demo: runs in {out}/; serve them with: scoreviz serve {out}")
        return _report(trainings, codes)

    from app import serve

    out.mkdir(parents=True, exist_ok=True)  # the server watches it before the first run appears
    watcher = None

    def start(url):
        nonlocal watcher
        for training in trainings:
            training.start()
        watcher = threading.Thread(target=_announce_end, args=(trainings, url), daemon=True)
        watcher.start()

    try:
        serve(str(out), host=args.host, port=args.port, verbose=args.verbose, on_start=start)
    finally:
        codes = [t.stop() for t in trainings]
    stopped = [t.name for t, c in zip(trainings, codes) if c not in (0, None)]
    if stopped:
        print(f"scoreviz demo: stopped; `scoreviz demo --out {out}` resumes {' and '.join(stopped)} "
              "from the last finished epoch", file=sys.stderr)
    return 0


def _announce_end(trainings, url):
    codes = [t.process.wait() for t in trainings]
    for training in trainings:
        training.reader.join(timeout=5)
    if all(c == 0 for c in codes):
        from tqdm import tqdm

        tqdm.write(f"scoreviz demo: training finished; still serving {url} (Ctrl+C to stop)")


def _report(trainings, codes) -> int:
    failed = [t.name for t, c in zip(trainings, codes) if c != 0]
    if failed:
        print(f"scoreviz demo: {' and '.join(failed)} did not finish", file=sys.stderr)
        return 1
    return 0


# ---- the child process: one run --------------------------------------------------------


def _train_child(argv) -> int:
    """Train one run (`scoreviz train` options in argv), printing 'epoch N ACC' per epoch."""
    from scoreviz.errors import ScorevizError
    from scoreviz.trainer import train

    parent = os.getppid()

    def orphaned():  # the demo was killed (not Ctrl+C): stop too, closing the record
        while os.getppid() == parent:
            threading.Event().wait(1.0)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=orphaned, daemon=True).start()
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # terminate: close the record as on Ctrl+C
    args = train.add_arguments(argparse.ArgumentParser()).parse_args(argv)
    try:
        train.main(args, on_epoch=lambda epoch, total, acc: print(f"epoch {epoch} {acc:.4f}", flush=True))
    except KeyboardInterrupt:
        return 130
    except ScorevizError as err:
        print(f"scoreviz demo: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__" and sys.argv[1:2] == ["_train"]:
    sys.exit(_train_child(sys.argv[2:]))
