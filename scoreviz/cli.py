"""The `scoreviz` command line. Heavy imports (Dash, the trainer) happen inside
the command that needs them, so `scoreviz info` stays quick."""

from __future__ import annotations

import argparse
import json
import sys

from scoreviz.errors import ScorevizError


def _info(args):
    from scoreviz.run import open_run

    run = open_run(args.run_dir)
    summary = run.summary()
    if args.json:
        print(json.dumps({**summary, "config": run.config, "env": run.env}, indent=2, default=str))
        return
    print(f"run      {summary['name']}  ({summary['path']})")
    if summary["steps"]:
        print(f"steps    {summary['steps']} recorded, {summary['first_step']} to {summary['last_step']}")
    else:
        print("steps    none recorded yet")
    print(f"tags     {', '.join(summary['tags']) or '-'}")
    if summary["embedding tags"]:
        print(f"embedded {', '.join(summary['embedding tags'])}")
    print(f"layers   {summary['layers']}")
    env = run.env
    print(f"recorded {env.get('start_time', '?')} on {env.get('hostname', '?')} ({env.get('device', '?')}, "
          f"torch {env.get('torch', '?')}, {env.get('world_size', 1)} process(es))")
    if run.config:
        print("config   " + ", ".join(f"{k}={v}" for k, v in run.config.items()))
    for key, values in summary.items():
        if key.startswith("last "):
            print(f"{key:<8} " + ", ".join(f"{k}={v:.4g}" for k, v in values.items()))


class _Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors: the problem and where to read more."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="scoreviz", description="Record and view the score distributions of contrastive learning.")
    from scoreviz import __version__

    parser.add_argument("--version", action="version", version=f"scoreviz {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    info = commands.add_parser("info", help="summarise a recorded run",
                               description="Print a short summary of a run: steps, tags, layers, config, last values.")
    info.add_argument("run_dir", metavar="RUN_DIR", help="the run's folder (or its scores.h5)")
    info.add_argument("--json", action="store_true", help="print the summary as JSON")
    info.set_defaults(func=_info)

    from scoreviz.trainer import lincls, train  # light: torch is already loaded by scoreviz

    train_cmd = commands.add_parser("train", help="train MoCo(+FT) and record its scores",
                                    description="Train MoCo v1/v2 with optional feature transformation; "
                                                "the record, checkpoints and results go to --run-dir.")
    train.add_arguments(train_cmd).set_defaults(func=train.main)
    lincls_cmd = commands.add_parser("lincls", help="linear evaluation of a trained run",
                                     description="Train a linear layer on the frozen encoder of RUN_DIR; "
                                                 "the accuracy is written into the run.")
    lincls.add_arguments(lincls_cmd).set_defaults(func=lincls.main)

    from scoreviz import demo

    demo_cmd = commands.add_parser("demo", help="train a baseline and an FT run on digits, then serve them",
                                   description="Train MoCo v2 on the bundled digits twice (a baseline, and "
                                               "both feature transformations), then serve the two runs. "
                                               "Re-running reuses finished runs.")
    demo.add_arguments(demo_cmd).set_defaults(func=demo.main)

    from scoreviz.bridges import tensorboard_import  # tensorboard itself is imported when the command runs

    import_cmd = commands.add_parser("import-tensorboard", help="turn TensorBoard event files into scoreviz runs",
                                     description="Read every TensorBoard run below LOGDIR (histograms and "
                                                 "scalars, every event) and write it as a scoreviz run under "
                                                 "--out, histograms re-binned onto [-1, 1].")
    tensorboard_import.add_arguments(import_cmd).set_defaults(func=tensorboard_import.main)

    from app import cli_commands  # argparse only: Dash is imported when serve/export runs

    for name, (add_arguments, run_command, help_text) in cli_commands.COMMANDS.items():
        command = commands.add_parser(name, help=help_text, description=help_text)
        add_arguments(command)
        command.set_defaults(func=run_command)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except ScorevizError as err:
        print(f"scoreviz: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("scoreviz: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
