"""The core install, without extras, is enough for the README's first training command."""

import os
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_pip_install_without_extras_trains_on_digits(tmp_path):
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["OMP_NUM_THREADS"] = "1"
    install = subprocess.run([str(python), "-m", "pip", "install", "-q", "torch==2.13.0", "-e", str(ROOT)],
                             env=env, capture_output=True, text=True, timeout=800)
    assert install.returncode == 0, install.stderr[-3000:]
    # no extra leaked in: scikit-learn (the dev extra) is not there
    assert subprocess.run([str(python), "-c", "import sklearn"], env=env, capture_output=True).returncode != 0

    run_dir = tmp_path / "run"
    trained = subprocess.run([str(env_dir / "bin" / "scoreviz"), "train", "--dataset", "digits", "--epochs", "1",
                              "--run-dir", str(run_dir), "--quiet"], env=env, capture_output=True, text=True,
                             cwd=tmp_path, timeout=300)
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert (run_dir / "scores.h5").is_file() and (run_dir / "results.json").is_file()
    assert "outside [-1, 1]" not in trained.stderr  # the ft tag's warning is not for the trainer's users


@pytest.mark.slow
def test_the_wheel_carries_the_digits(tmp_path):
    source = tmp_path / "src"  # a copy: building writes build/ into the source folder
    source.mkdir()
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for package in ("scoreviz", "app"):
        shutil.copytree(ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                            "-w", str(tmp_path), str(source)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = tmp_path.glob("scoreviz-*.whl")
    assert "scoreviz/trainer/digits.npz" in zipfile.ZipFile(wheel).namelist()
