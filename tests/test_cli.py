"""`scoreviz info` and the command line's error handling."""

import json
import subprocess

import pytest

import torch

from scoreviz import Recorder


def scoreviz(python, env, *args):
    return subprocess.run([python, "-m", "scoreviz.cli", *args], env=env, capture_output=True, text=True, timeout=120)


def test_info_summarises_a_run(tmp_path, python, subprocess_env):
    with Recorder(tmp_path / "moco-ft", config={"m": 0.99, "pos_alpha": 2.0}) as rec:
        for step in range(12):
            rec.log_scores(step, torch.full((4,), 0.8), torch.zeros(4, 10))
            rec.log_scalars(step, loss=3.5)
    out = scoreviz(python, subprocess_env, "info", str(tmp_path / "moco-ft"))
    assert out.returncode == 0, out.stderr
    assert "moco-ft" in out.stdout
    assert "12 recorded, 0 to 11" in out.stdout
    assert "tags     train" in out.stdout
    assert "m=0.99" in out.stdout and "pos_alpha=2.0" in out.stdout
    assert "pos_mean=0.8" in out.stdout and "loss=3.5" in out.stdout
    as_json = json.loads(scoreviz(python, subprocess_env, "info", "--json", str(tmp_path / "moco-ft")).stdout)
    assert as_json["steps"] == 12 and as_json["config"]["m"] == 0.99


def test_info_on_bad_input_is_one_line_on_stderr(tmp_path, python, subprocess_env):
    (tmp_path / "scores.h5").write_text("not hdf5")
    for target in (tmp_path / "missing", tmp_path):
        out = scoreviz(python, subprocess_env, "info", str(target))
        assert out.returncode == 1
        assert out.stdout == ""
        assert out.stderr.count("\n") == 1 and out.stderr.startswith("scoreviz: error: ")
        assert str(target) in out.stderr


COMMANDS = ("info", "serve", "export", "train", "lincls", "demo", "import-tensorboard")
# (app: the CLI reaches the app only when serve or export runs, never to build its parser)
HEAVY = ("torch", "numpy", "pandas", "dash", "plotly", "h5py", "tensorboard", "tqdm", "app")

# Which heavy packages answering `scoreviz [COMMAND] --help` imports (it exits through SystemExit).
HELP_IMPORTS = """
import sys
from scoreviz.cli import main
try:
    main(sys.argv[1:] + ["--help"])
except SystemExit:
    pass
print(sorted(m for m in {heavy!r} if m in sys.modules), file=sys.stderr)
"""


def test_every_command_has_help(python, subprocess_env):
    out = scoreviz(python, subprocess_env, "--help")
    assert out.returncode == 0
    for command in COMMANDS:
        assert command in out.stdout
        sub = scoreviz(python, subprocess_env, command, "--help")
        assert sub.returncode == 0 and f"usage: scoreviz {command}" in sub.stdout, command


@pytest.mark.parametrize("command", ("",) + COMMANDS)
def test_help_imports_no_heavy_package(python, subprocess_env, command):
    """--help answers without torch, numpy, pandas or Dash: 0.1-0.2 s instead of 3-7 s
    (issue 11, defect 9; benchmarks/cli_help.py times it)."""
    out = subprocess.run([python, "-c", HELP_IMPORTS.format(heavy=HEAVY), *([command] if command else [])],
                         env=subprocess_env, capture_output=True, text=True, timeout=120)
    assert "usage: scoreviz" in out.stdout
    assert out.stderr.strip().splitlines()[-1] == "[]", out.stderr


def test_help_shows_defaults(python, subprocess_env):
    train_help = scoreviz(python, subprocess_env, "train", "--help").stdout
    for text in ("(default: 0.9)", "(default: digits, bundled)", "digits 100", "digits 128", "(default: 200)",
                 "(default: v1 0.07, v2 0.2; cifar10/cifar100 without --moco-version: 0.1",
                 "(default: 0)"):
        assert text in " ".join(train_help.split()), text
    assert "(default: 60 80)" in scoreviz(python, subprocess_env, "lincls", "--help").stdout
    demo_help = " ".join(scoreviz(python, subprocess_env, "demo", "--help").stdout.split())
    assert "(default: runs/demo)" in demo_help and "(default: 8050)" in demo_help


def test_importing_scoreviz_is_light_until_a_name_is_used(python, subprocess_env):
    code = ("import sys, scoreviz; light = 'torch' not in sys.modules; "
            "from scoreviz import Recorder, open_run, Run, find_runs, ScorevizError; "
            "print(light, 'torch' in sys.modules, Recorder.__module__, scoreviz.store.FILE_NAME)")
    out = subprocess.run([python, "-c", code], env=subprocess_env, capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["True", "True", "scoreviz.recorder", "scores.h5"], out.stderr


@pytest.mark.parametrize("args", [
    ("info",), ("serve",), ("export",), ("lincls",),          # a required path left out
    ("train", "--bogus"), ("demo", "--minutes", "soon"), ("nosuch",),
    ("serve", "runs", "--port", "99999"), ("serve", "runs", "--refresh", "nan"), ("demo", "--port", "-1"),
])
def test_wrong_arguments_are_one_line_on_stderr(python, subprocess_env, args):
    out = scoreviz(python, subprocess_env, *args)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and ": error: " in out.stderr and "--help" in out.stderr


@pytest.mark.parametrize("args", [
    ("serve", "{missing}"), ("export", "{missing}", "--out", "{tmp}/r.html"), ("lincls", "{missing}"),
    ("train", "--dataset", "cifar10", "--data", "{missing}", "--run-dir", "{tmp}/run"),
    ("train", "--epochs", "-3", "--run-dir", "{tmp}/run"), ("demo", "--minutes", "-1", "--no-serve"),
])
def test_missing_paths_and_bad_values_are_one_line_on_stderr(tmp_path, python, subprocess_env, args):
    args = [a.format(missing=tmp_path / "missing", tmp=tmp_path) for a in args]
    out = scoreviz(python, subprocess_env, *args)
    assert out.returncode == 1, out.stderr
    assert out.stderr.count("\n") == 1 and out.stderr.startswith("scoreviz: error: ")
    assert not (tmp_path / "run").exists()  # nothing half-made
