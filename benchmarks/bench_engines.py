"""Engine-only throughput on CPU: PyTorch eager vs ONNX Runtime, ViT-B-32 with random weights.

Random weights cost exactly what trained ones do and need no download. Each engine is loaded in this
process and fed 224 px uint8 images (preprocess + infer, as the server calls them), batch 1, 8 and 32.
This is `photodedup bench --local --engine E --batch 1,8,32` in table form.

Usage: bench_engines.py [--duration 10] [--engines torch,onnx] [--batches 1,8,32] [--no-write]
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import local, num, say  # noqa: E402
from record import machine_line, write_section  # noqa: E402

from photodedup.settings import Settings  # noqa: E402

log = logging.getLogger(__name__)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="ViT-B-32")
    ap.add_argument("--duration", type=float, default=10.0, help="measured seconds per batch size")
    ap.add_argument("--engines", default="torch,onnx")
    ap.add_argument("--batches", default="1,8,32")
    ap.add_argument("--cache-dir", type=Path, default=None, help="ONNX export cache [default: a temp dir]")
    ap.add_argument("--no-write", action="store_true", help="print the section, do not touch docs/BENCHMARKS.md")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    batches = [int(b) for b in args.batches.split(",")]
    cache = args.cache_dir or Path(tempfile.mkdtemp(prefix="photodedup-bench-"))
    rows: dict[str, dict[int, dict]] = {}
    for engine in args.engines.split(","):
        say(f"engine {engine}: {args.model}, batches {batches}")
        settings = Settings(model_name=args.model, weights="random", engine=engine, cache_dir=cache)
        steps = local(settings, batches=batches, duration=args.duration, warmup=0.0)
        rows[engine] = {s["batch"]: s for s in steps}
    names = list(rows)
    head = "| batch | " + " | ".join(f"{e} img/s | {e} p50 ms/batch" for e in names)
    lines = [head + (" | onnx/torch |" if {"torch", "onnx"} <= set(names) else " |")]
    lines.append("|" + "---|" * (1 + 2 * len(names) + (1 if {"torch", "onnx"} <= set(names) else 0)))
    for b in batches:
        cells = [
            f"{num(rows[e][b]['images_per_s'], 1)} | {num(rows[e][b]['request_latency_ms']['p50'], 1)}" for e in names
        ]
        ratio = ""
        if {"torch", "onnx"} <= set(names):
            ratio = f" | {rows['onnx'][b]['images_per_s'] / rows['torch'][b]['images_per_s']:.2f}"
        lines.append(f"| {b} | " + " | ".join(cells) + ratio + " |")
    section = "\n".join(
        [
            "## Engine only, CPU (`benchmarks/bench_engines.py`)",
            "",
            f"{machine_line()}. {args.model} image tower, random weights, fp32, each engine's default thread count; "
            f"preprocess + infer on 224 px uint8 images in this process, {args.duration:g} s per batch size after a "
            "warm-up call. Same as `photodedup bench --local --engine E --batch 1,8,32`. "
            "One run on a noisy 2-core machine: absolute figures vary between runs; the ratio is the result.",
            "",
            *lines,
        ]
    )
    print(section)
    if not args.no_write:
        write_section("bench_engines", section)


if __name__ == "__main__":
    main()
