"""Studies with the reference trainer: a grid of ``scoreviz train`` runs, one folder each,
trained a few at a time, resumable, optionally followed by their linear evaluation.

The momentum study and the FT study (examples/) are built on it:

    jobs = [(out / f"m{m:g}-s{s}", dict(dataset="digits", moco_m=m, seed=s, epochs=40)) for m in ... for s in ...]
    for run_dir, wanted in jobs:
        plan(run_dir, wanted)                    # refuse a folder recorded with other settings, before any training
    train_all(jobs, workers=2, desc="momentum study", linear=100)

``wanted`` holds ``scoreviz train`` options by their config names (``moco_m`` for
``--moco-m``; None: the trainer's default). A run that finished with those
settings is reused, one that was stopped continues from its last checkpoint,
and ``linear=EPOCHS`` runs ``scoreviz lincls --epochs EPOCHS`` on every run
that has no linear accuracy of that length yet, so re-running a study only
redoes what is missing.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from scoreviz.errors import ScorevizError

VERBS = {"reuse": "reused", "resume": "resumed", "new": "trained", "linear": "reused, linear evaluation added"}
LINEAR_EPOCHS = 100  # scoreviz lincls's default on digits (MoCo's protocol)


def add_arguments(parser: argparse.ArgumentParser, out: str, epochs: int, seeds: int) -> argparse.ArgumentParser:
    """The options every study has: where its runs go, how many seeds and epochs, how many at once."""
    parser.add_argument("--out", default=out, help=f"folder of the runs (default {out})")
    parser.add_argument("--seeds", type=int, default=seeds, help=f"seeds per setting: 0, 1, ... (default {seeds})")
    parser.add_argument("--epochs", type=int, default=epochs, help=f"epochs per run (default {epochs})")
    parser.add_argument("--steps-per-epoch", type=int, help="stop each epoch after this many steps (quick checks)")
    parser.add_argument("--linear-epochs", type=int, default=LINEAR_EPOCHS,
                        help=f"epochs of each run's linear evaluation, scoreviz lincls (default {LINEAR_EPOCHS}; "
                             f"0: none, the linear column is left empty)")
    parser.add_argument("--jobs", type=int, default=2,
                        help="runs trained at once, one CPU thread each (default 2); 1 trains in this process")
    return parser


def check_arguments(args: argparse.Namespace) -> None:
    """ScorevizError naming the option when a common option is out of range."""
    for name in ("epochs", "seeds", "jobs"):
        if getattr(args, name) <= 0:
            raise ScorevizError(f"--{name}: must be positive, got {getattr(args, name)}")
    if args.steps_per_epoch is not None and args.steps_per_epoch <= 0:
        raise ScorevizError(f"--steps-per-epoch: must be positive, got {args.steps_per_epoch}")
    if args.linear_epochs < 0:
        raise ScorevizError(f"--linear-epochs: must be 0 or more, got {args.linear_epochs}")


def digits_knn_k() -> int:
    """The kNN monitor's k the trainer takes on the bundled digits (the smallest class's training images)."""
    from scoreviz.trainer.data import load_dataset
    from scoreviz.trainer.evaluate import knn_k_for
    from scoreviz.trainer.options import KNN_K

    return knn_k_for(load_dataset("digits").train.labels, KNN_K)


def results(run_dir: Path) -> dict:
    """A run's results.json as a dict (empty when there is none or it cannot be read)."""
    try:
        found = json.loads((Path(run_dir) / "results.json").read_text())
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def finished_epochs(run_dir: Path) -> int:
    """Epochs a run has completed, from its results.json (0 when there is none)."""
    try:
        return int(results(run_dir).get("epoch", 0))
    except (TypeError, ValueError):
        return 0


def plan(run_dir: Path, wanted: dict) -> str:
    """What training ``run_dir`` needs: "new", "resume" or "reuse".

    A folder recorded with other settings is an error rather than something to
    overwrite or append to: the curves of two different runs would mix.
    """
    import scoreviz

    run_dir = Path(run_dir)
    if not (run_dir / "scores.h5").exists():
        return "new"
    config = scoreviz.open_run(run_dir).config
    differ = {k: config.get(k) for k, v in wanted.items() if config.get(k) != v}
    if differ:
        raise ScorevizError(f"{run_dir}: recorded with {differ}, not {wanted}; delete it or choose another --out")
    if finished_epochs(run_dir) >= wanted["epochs"]:
        return "reuse"
    # Killed before its first checkpoint: train afresh; the rows it wrote are
    # replaced, since a step recorded twice keeps its later row.
    return "resume" if (run_dir / "checkpoint.pt").exists() else "new"


def train_argv(run_dir: Path, wanted: dict, action: str) -> list:
    """The ``scoreviz train`` options for ``action`` ("new" or "resume") of one run."""
    argv = ["--run-dir", str(run_dir), "--epochs", str(wanted["epochs"]), "--quiet"]
    if action == "resume":
        return argv + ["--resume"]  # the run's own saved settings
    for key, value in wanted.items():
        if value is not None and key != "epochs":
            argv += [f"--{key.replace('_', '-')}", str(value)]
    return argv


def needs_linear(run_dir: Path, epochs: int | None) -> bool:
    """Whether a run lacks a linear accuracy of ``epochs`` epochs (None: no linear evaluation wanted)."""
    found = results(run_dir)
    return epochs is not None and (found.get("lincls") or {}).get("epochs") != epochs


def train_run(run_dir: Path, wanted: dict, threads: int | None = None, linear: int | None = None) -> tuple[str, float]:
    """Train (or reuse, or resume) one run, then its linear evaluation of ``linear`` epochs when asked
    and not done yet; returns what was done (a key of VERBS) and the seconds it took."""
    import torch

    from scoreviz.trainer import lincls, train

    if threads:
        torch.set_num_threads(threads)  # parallel runs on a small machine: one thread each, no oversubscription
    start = time.perf_counter()
    action = plan(run_dir, wanted)
    if action != "reuse":
        train.main(train.add_arguments(argparse.ArgumentParser()).parse_args(train_argv(run_dir, wanted, action)))
    if needs_linear(run_dir, linear):
        options = [str(run_dir), "--epochs", str(linear), "--quiet"]
        lincls.main(lincls.add_arguments(argparse.ArgumentParser()).parse_args(options))
        action = "linear" if action == "reuse" else action
    return action, time.perf_counter() - start


def train_all(jobs: list, workers: int, desc: str = "study", linear: int | None = None) -> None:
    """Train every (run_dir, wanted) job, ``workers`` at a time (one CPU thread each), with a progress bar."""
    from tqdm import tqdm

    with tqdm(total=len(jobs), desc=desc, unit="run") as bar:
        def done(run_dir, action, seconds):
            bar.update(1)
            bar.write(f"  {run_dir}: {VERBS[action]}" + (f", {seconds:.0f} s" if action != "reuse" else ""))

        if workers <= 1:
            for run_dir, wanted in jobs:
                done(run_dir, *train_run(run_dir, wanted, linear=linear))
            return
        # Fresh interpreters (spawn): forking a process that already holds torch's thread pools is unsafe.
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {pool.submit(train_run, run_dir, wanted, 1, linear): run_dir for run_dir, wanted in jobs}
            try:
                for future in as_completed(futures):
                    done(futures[future], *future.result())
            except BaseException:  # one run failed: report it now, not after every other run
                pool.shutdown(wait=False, cancel_futures=True)
                raise


# ---------------------------------------------------------------- tables

def mean_sd(numbers: list, digits: int = 1, fmt: str = "f") -> str:
    """"mean ± sample sd" of ``numbers`` (sd 0 for one number); NaNs left out, "-" when none is left."""
    numbers = [x for x in numbers if x == x]
    if not numbers:
        return "-"
    mean = statistics.fmean(numbers)
    sd = statistics.stdev(numbers) if len(numbers) > 1 else 0.0
    if float(f"{mean:.{digits}{fmt}}") == 0:
        mean = 0.0  # a mean of -0.0001 is no news: "0.000", not "-0.000"
    return f"{mean:.{digits}{fmt}} ± {sd:.{digits}{fmt}}"


def flag_count(steps: list, n: int) -> str:
    """How many of ``n`` runs a check flagged and where it began: "2/3 (steps 100-250)", or "0/3"."""
    if not steps:
        return f"0/{n}"
    where = f"step {min(steps)}" if min(steps) == max(steps) else f"steps {min(steps)}-{max(steps)}"
    return f"{len(steps)}/{n} ({where})"


# ---------------------------------------------------------------- one run, then a group of seeds

def summarize(run_dir: Path, tag: str = "raw", curve: str = "neg_sample_var") -> dict:
    """One run of a study: its config, accuracies, final statistics of ``tag``, gradient roughness,
    the app's health flags (``Flag`` objects by check name) and the ``curve`` statistic over steps."""
    import numpy as np

    import scoreviz
    from scoreviz import health

    run = scoreviz.open_run(run_dir)
    found = results(run_dir)
    scores, total = run.scores(tag), run.total_gradient_norm()
    flags = {f.check: f for f in health.run_health(scores, run.scalars(), total)}
    embeddings = run.embeddings(tag)  # the query projections (and the keys as the second view)
    flags.update({f.check: f for f in health.representation_health(embeddings)})
    ranks = embeddings["rank"].dropna()
    return dict(
        config=run.config,
        knn_init=found["knn_acc_init"], knn_final=found["knn_acc_final"], knn_best=max(found["knn_acc"]),
        linear=found.get("lincls_acc", float("nan")),
        var_final=float(scores["neg_sample_var"].iloc[-1]), pos_final=float(scores["pos_mean"].iloc[-1]),
        neg_final=float(scores["neg_mean"].iloc[-1]),
        # How rough the gradient landscape is: the 99th percentile of the total norm over its median.
        grad_rough=float(total.quantile(0.99) / total.median()),
        # The representation: RankMe rank of the last spectrum window, std of the last step times sqrt(dim)
        # (about 1 when the embeddings are spread out, 0 at complete collapse), uniformity of the last step.
        rank_final=float(ranks.iloc[-1]) if len(ranks) else float("nan"),
        std_final=float(embeddings["std"].iloc[-1] * np.sqrt(embeddings["dim"].iloc[-1])),
        uniformity_final=float(embeddings["uniformity"].iloc[-1]),
        flags=flags, scores=scores, embeddings=embeddings, series=scores[curve],
    )


def first_fired(*flags):
    """The earliest of the flags that fired (the first given when none did)."""
    fired = [f for f in flags if f.fired]
    return min(fired, key=lambda f: f.step) if fired else flags[0]


def group_seeds(summaries: dict, by: list, band: str = "minmax") -> list:
    """Runs (folder -> :func:`summarize`) grouped by the config keys ``by`` as the app groups them
    (``scoreviz.groups``: the seed and every other key ignored), as (group, its summaries, its curve)."""
    import scoreviz.groups

    configs = {run: row["config"] for run, row in summaries.items()}
    groups = scoreviz.groups.group_runs(configs, by=by)
    curves = scoreviz.groups.group_curves({run: row["series"] for run, row in summaries.items()}, groups, band=band)
    return [(curve.group, [summaries[run] for run in curve.group.runs], curve.frame) for curve in curves]


def fired_steps(rows: list, check: str) -> list:
    """The steps where ``check`` began in each of ``rows`` that it flagged."""
    return [r["flags"][check].step for r in rows if r["flags"][check].fired]


def run_script(main, add_arguments, doc: str, name: str) -> None:
    """Run a study script from the command line: its options (described by the docstring's first
    paragraph), then ``main(args)``; a ScorevizError is one line on stderr and exit status 1, like
    every scoreviz command."""
    parser = add_arguments(argparse.ArgumentParser(description=doc.split("\n\n")[0]))
    try:
        sys.exit(main(parser.parse_args()))
    except ScorevizError as err:
        sys.exit(f"{name}: {err}")
