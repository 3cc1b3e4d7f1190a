"""benchmarks/gpu_check.sh and its Python half on a machine without a GPU: the script parses, and an
engine step ends in one SKIP line with the reason instead of an error."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"


def test_the_shell_script_parses() -> None:
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


def test_without_cuda_an_engine_step_skips_with_a_reason() -> None:
    engine = "tensorrt"  # the step with the most to be missing (once refused by the argument parser)
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device: the steps would run")
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "engine", "--engine", engine, "--precision=fp16"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"SKIP engine {engine}") and "sees no CUDA device" in out.stdout, out.stdout
