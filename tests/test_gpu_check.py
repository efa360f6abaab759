"""benchmarks/gpu_check.sh: the GPU machine's one prepared check, run here at tiny sizes on the CPU."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.sh"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def gpu_check(*args, env=None):
    return subprocess.run(["bash", str(SCRIPT), "--python", sys.executable, *args], capture_output=True, text=True,
                          timeout=560, env=env)


def test_gpu_check_on_the_cpu_writes_every_table(tmp_path, subprocess_env):
    out = tmp_path / "check" / "gpu_check.md"
    done = gpu_check("--device", "cpu", "--out", str(out), env=subprocess_env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = out.read_text()
    assert report.startswith("# scoreviz GPU check (cpu)")
    for section in ("## CUDA-only tests", "## Recorder overhead", "## Trainer throughput"):
        assert section in report
    assert "skipped" in report  # the CUDA tests were collected, and skip without a GPU
    assert "| scoreviz Recorder |" in report and "| no recording |" in report
    assert "| tiny: small 8x8, B 16, K 64 | scoreviz (8 BN groups) |" in report
    assert "every step passed" in report and "(exit 1" not in report


def test_gpu_check_refuses_bad_arguments_and_a_missing_gpu(tmp_path):
    bad = gpu_check("--device", "tpu")
    assert bad.returncode == 2 and "--device must be cuda or cpu" in bad.stderr
    assert gpu_check("--frobnicate").returncode == 2
    assert "bash benchmarks/gpu_check.sh" in gpu_check("--help").stdout
    if not torch.cuda.is_available():
        none = gpu_check("--out", str(tmp_path / "x.md"))
        assert none.returncode == 1 and "sees no CUDA device" in none.stderr
        assert not (tmp_path / "x.md").exists()
