"""The `scoreviz` command line.

The parser is built from light modules only (argparse and the option tables);
torch, Dash and pandas are imported by the command that runs, so `scoreviz
--help` and every `scoreviz COMMAND --help` answer in well under a second.
"""

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


class HelpFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default, unless the help already says it."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if (not text or "default" in text or default is None or default is False or default == []
                or default == argparse.SUPPRESS or not action.option_strings):
            return text
        shown = " ".join(map(str, default)) if isinstance(default, (list, tuple)) else "%(default)s"
        return f"{text} (default: {shown})"


class _Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors (the problem and where to read more) and defaults in --help."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class _Lazy:
    """A command's main, imported when the command runs ("module:function"): torch, Dash and
    pandas load only for the command that uses them, so every --help answers at once.
    A plain object, so it pickles with the arguments (the trainer saves them in its checkpoint)."""

    def __init__(self, target: str):
        self.target = target

    def __call__(self, args):
        import importlib

        module, function = self.target.split(":")
        return getattr(importlib.import_module(module), function)(args)

    def __repr__(self):
        return f"<scoreviz command {self.target}>"


def build_parser() -> argparse.ArgumentParser:
    """The whole command line; builds from light modules only (no torch, numpy or Dash)."""
    from scoreviz import __version__
    from scoreviz.bridges.options import add_import_arguments
    from scoreviz.trainer.options import add_arguments as add_train_arguments
    from scoreviz.trainer.options import add_lincls_arguments

    from scoreviz import app_options, demo

    parser = _Parser(
        prog="scoreviz", description="Record and view the score distributions of contrastive learning.")
    parser.add_argument("--version", action="version", version=f"scoreviz {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True,
                                     parser_class=_Parser)

    def command(name, help_text, description, add_arguments, target):
        sub = commands.add_parser(name, help=help_text, description=description)
        add_arguments(sub)
        sub.set_defaults(func=_Lazy(target) if isinstance(target, str) else target)

    command("info", "summarise a recorded run",
            "Print a short summary of a run: steps, tags, layers, config, last values.", _info_arguments, _info)
    command("train", "train MoCo(+FT) and record its scores",
            "Train MoCo v1/v2 with optional feature transformation; the record, checkpoints and results "
            "go to --run-dir.", add_train_arguments, "scoreviz.trainer.train:main")
    command("lincls", "linear evaluation of a trained run",
            "Train a linear layer on the frozen encoder of RUN_DIR; the accuracy is written into the run.",
            add_lincls_arguments, "scoreviz.trainer.lincls:main")
    command("demo", "serve a baseline and an FT run on digits while they train",
            demo.DESCRIPTION, demo.add_arguments, "scoreviz.demo:main")
    command("import-tensorboard", "turn TensorBoard event files into scoreviz runs",
            "Read every TensorBoard run below LOGDIR (histograms and scalars, every event) and write it as "
            "a scoreviz run under --out, histograms re-binned onto [-1, 1].",
            add_import_arguments, "scoreviz.bridges.tensorboard_import:main")
    for name, (add_arguments, target, help_text) in app_options.COMMANDS.items():
        command(name, help_text, help_text, add_arguments, target)  # app/ imported when it runs
    return parser


def _info_arguments(info):
    info.add_argument("run_dir", metavar="RUN_DIR", help="the run's folder (or its scores.h5)")
    info.add_argument("--json", action="store_true", help="print the summary as JSON")


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
    except BrokenPipeError:  # `scoreviz info RUN | head`: the reader left, nothing to say
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 141
    return 0


if __name__ == "__main__":
    sys.exit(main())
