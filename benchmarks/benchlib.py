"""Small helpers the benchmark scripts share: run one `photodedup bench` measurement in-process and
format numbers for the Markdown tables."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

from photodedup.loadgen.command import BenchOptions, run_bench

BENCH_DIR = Path(__file__).resolve().parent


def options(**overrides: Any) -> BenchOptions:
    """BenchOptions with the defaults the recorded tables use; overrides name BenchOptions fields."""
    base: dict[str, Any] = {
        "mode": "stream",
        "concurrency": [16],
        "batches": [1],
        "items_per_message": 8,
        "streams": 1,
        "duration": 4.0,
        "requests": None,
        "warmup": 1.0,
        "payload": "thumbnail",
        "photos": None,
        "images": 64,
        "photo_size": (1600, 1200),
        "dtype": "float32",
        "timeout": 120.0,
    }
    base.update(overrides)
    return BenchOptions(**base)


def served(address: str, metrics: str, **overrides: Any) -> list[dict[str, Any]]:
    """Steps of one remote run; fails loudly on any error, since a table built on errors is wrong."""
    report = run_bench([address], [metrics], None, options(**overrides))
    if report["unexpected_errors"]:
        raise RuntimeError(f"errors during the benchmark: {report['unexpected_errors']}")
    return list(report["steps"])


def local(settings: Any, **overrides: Any) -> list[dict[str, Any]]:
    """Steps of one engine-only run."""
    report = run_bench([], [], settings, options(**overrides))
    if report["unexpected_errors"]:
        raise RuntimeError(f"errors during the benchmark: {report['unexpected_errors']}")
    return list(report["steps"])


def num(x: Any, digits: int = 0) -> str:
    """1234.5 -> '1,234' (digits=0); None/NaN -> 'n/a'."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:,.{digits}f}"


def srv(step: dict[str, Any], key: str) -> Any:
    return (step.get("server") or {}).get(key)


def say(msg: str) -> None:
    """Progress on stderr, so stdout stays the Markdown."""
    print(msg, file=sys.stderr, flush=True)
