"""benchmarks/gpu_check.sh and its Python half on a machine without a GPU: the script parses, and an
engine step ends in one SKIP line with the reason instead of an error."""

from __future__ import annotations

import importlib.util
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


def test_the_summary_orders_engines_by_their_best_rate_at_the_largest_batch() -> None:
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    assert spec is not None and spec.loader is not None
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    lines = [
        "RESULT engine-only torch fp16             batch 256:    20,000 img/s  p50    12.80 ms/batch",
        "RESULT engine-only torch fp16 eager       batch 256:    14,000 img/s  p50    18.28 ms/batch",
        "RESULT engine-only onnx(cuda) fp16        batch 256:    16,500 img/s  p50    15.51 ms/batch",
        "RESULT engine-only onnx(tensorrt) fp16    batch 256:    25,000 img/s  p50    10.24 ms/batch",
        "RESULT engine-only tensorrt fp16          batch  32:    90,000 img/s  p50     0.35 ms/batch",
        "SKIP engine tensorrt fp16 batch 256: OutOfMemoryError",
        "RESULT served      torch fp16             batch 256:    99,999 img/s  mean batch  255.0",
    ]
    assert gpu_check.engine_order(lines) == (256, [("onnx", 25_000.0), ("torch", 20_000.0)])
    assert gpu_check.engine_order([]) == (0, [])
