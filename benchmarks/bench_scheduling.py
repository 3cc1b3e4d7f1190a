"""Multi-device scheduling, simulated: the real batcher and scheduler driving fake devices of set speeds.

No GPU is involved. Each simulated device sleeps for `base + per_item * n` seconds per batch (sleeping
frees the GIL, as a device call does), so what is measured is the scheduler: whether N devices serve N
times one, and whether devices of different speeds each serve at their own rate (none idles while
another holds work). A closed loop of callers keeps every device's queue full.

Usage: bench_scheduling.py [--seconds 3] [--batch 32] [--no-write]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import ClassVar

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from record import machine_line, write_section  # noqa: E402

from photodedup.engines.base import EngineStatus, ModelInfo  # noqa: E402
from photodedup.server.batcher import DynamicBatcher  # noqa: E402
from photodedup.server.metrics import Metrics  # noqa: E402

log = logging.getLogger(__name__)

BASE_S = 0.008  # per batch: launch and synchronisation
PER_ITEM_S = 0.0001  # per image


class SimulatedDevice:
    """An engine whose batch takes `(BASE_S + PER_ITEM_S * n) / speed` seconds."""

    name: ClassVar[str] = "simulated"

    def __init__(self, device: str, speed: float) -> None:
        self.device = device
        self.speed = speed
        self.precision = "fp32"
        self.info = ModelInfo("simulated", "none", 1)

    def load(self) -> None: ...
    def warmup(self, batch_sizes: Sequence[int]) -> None: ...
    def close(self) -> None: ...
    def status(self) -> EngineStatus:
        return EngineStatus()

    def preprocess(self, images: Sequence[np.ndarray]) -> int:
        return len(images)

    def infer(self, n: int) -> np.ndarray:
        time.sleep((BASE_S + PER_ITEM_S * n) / self.speed)
        return np.ones((n, 1), np.float32)


async def run(speeds: Sequence[float], batch: int, seconds: float) -> dict:
    """Images per second over `seconds` of saturating load, and each device's share and busy fraction."""
    engines = [SimulatedDevice(f"cuda:{i}", s) for i, s in enumerate(speeds)]
    metrics = Metrics()
    executors = {e.device: ThreadPoolExecutor(1) for e in engines}
    batcher = DynamicBatcher(
        engines,  # type: ignore[arg-type]
        executors,
        ThreadPoolExecutor(2),
        metrics,
        max_batch_size=batch,
        max_queue_delay_s=0.002,
        max_queue_size=100_000,
    )
    batcher.start()
    image = np.zeros((1, 1, 3), np.uint8)
    done = 0
    stop = time.perf_counter() + seconds

    async def caller() -> None:
        nonlocal done
        while time.perf_counter() < stop:
            await asyncio.gather(*batcher.submit([image] * batch))
            done += batch

    start = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(3 * len(engines))))
    elapsed = time.perf_counter() - start
    await batcher.close()
    per_device = []
    for e in engines:
        labels = {"device": e.device}
        items = metrics.registry.get_sample_value("photodedup_inference_items_total", labels) or 0.0
        busy = metrics.registry.get_sample_value("photodedup_inference_duration_seconds_sum", labels) or 0.0
        per_device.append({"device": e.device, "speed": e.speed, "items": items, "busy": busy / elapsed})
    return {"rate": done / elapsed, "devices": per_device}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--no-write", action="store_true", help="print the section, do not touch docs/BENCHMARKS.md")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    configs = {
        "1 device": [1.0],
        "4 equal devices": [1.0, 1.0, 1.0, 1.0],
        "4 mixed devices (1, 1, 0.5, 0.25)": [1.0, 1.0, 0.5, 0.25],
    }
    results = {name: asyncio.run(run(speeds, args.batch, args.seconds)) for name, speeds in configs.items()}
    one = results["1 device"]["rate"]
    lines = [
        "## Multi-device scheduling, simulated (`benchmarks/bench_scheduling.py`)",
        "",
        f"A simulation, not a GPU run: the real batcher and scheduler drive fake devices whose batch of n takes "
        f"({BASE_S * 1e3:.0f} ms + {PER_ITEM_S * 1e3:.1f} ms x n) / speed (a sleep, which frees the GIL as a "
        f"device call does), batch {args.batch}, {args.seconds:.0f} s of saturating load each. Ideal for the "
        "mixed set is the sum of speeds (2.75x one). Busy = the device's inference time / wall time.",
        "",
        "| devices | img/s | vs 1 device | ideal | per device: speed, share of images, busy |",
        "|---|---:|---:|---:|---|",
    ]
    for name, res in results.items():
        total = sum(d["items"] for d in res["devices"]) or 1.0
        ideal = sum(configs[name])
        share = "; ".join(f"{d['speed']:g}x: {d['items'] / total:.0%}, {d['busy']:.0%}" for d in res["devices"])
        lines.append(f"| {name} | {res['rate']:,.0f} | {res['rate'] / one:.2f}x | {ideal:.2f}x | {share} |")
    lines += ["", f"_{machine_line()}_"]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        write_section("bench_scheduling", text)


if __name__ == "__main__":
    main()
