"""The Python half of gpu_check.sh: one engine or one served configuration per call, so a crash in one
runtime (a CUDA library that fails to load, a TensorRT build that aborts) cannot take the others down.

  gpu_check.py facts
  gpu_check.py engine --engine torch --precision fp16 --batches 1,32,256 --seconds 5 [--eager]
  gpu_check.py served --engine torch --precision fp16 --batches 1,32,256 --seconds 6 [--cpu-decode]
  gpu_check.py summary RUN_LOG     (the measured engine order for --engine auto on CUDA)

Every result is one line starting with RESULT (throughput), BUILD (load / plan build / graph capture
times) or PARITY (cosine against torch fp32 on the CPU with the same weights, and nvJPEG against CPU
decoding), every skip with SKIP and a reason; exit 0 unless the harness itself is broken, so the shell
script always continues.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

log = logging.getLogger(__name__)


def cache_dir() -> Path:
    return Path(os.environ.get("PHOTODEDUP_CACHE_DIR") or tempfile.mkdtemp(prefix="photodedup-gpu-"))


def cuda_or_skip(what: str, device: str) -> bool:
    if device == "cpu":  # a dry run of the harness on a machine without a GPU
        return True
    try:
        import torch
    except ImportError as exc:
        print(f"SKIP {what}: torch is not importable ({exc})", flush=True)
        return False
    if not torch.cuda.is_available():
        print(f"SKIP {what}: torch {torch.__version__} sees no CUDA device", flush=True)
        return False
    return True


def facts() -> None:
    import platform

    print(f"FACT python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPU cores")
    try:
        import torch

        print(
            f"FACT torch {torch.__version__}, built for CUDA {torch.version.cuda}, cuDNN "
            f"{torch.backends.cudnn.version()}"
        )
        if torch.cuda.is_available():
            for i in range(torch.cuda.device_count()):
                p = torch.cuda.get_device_properties(i)
                print(
                    f"FACT cuda:{i} {p.name}, capability {p.major}.{p.minor}, "
                    f"{p.total_memory / 2**30:.1f} GiB, {p.multi_processor_count} SMs"
                )
        else:
            print("FACT torch sees no CUDA device")
    except ImportError as exc:
        print(f"FACT torch not importable: {exc}")
    try:
        import onnxruntime as ort

        print(f"FACT onnxruntime {ort.__version__}, providers {', '.join(ort.get_available_providers())}")
    except ImportError as exc:
        print(f"FACT onnxruntime not importable: {exc}")
    for mod in ("tensorrt", "torchvision", "open_clip", "grpc", "google.protobuf", "simplejpeg"):
        try:
            m = __import__(mod, fromlist=["__version__"])
            print(f"FACT {mod} {getattr(m, '__version__', '?')}")
        except ImportError:
            print(f"FACT {mod} not importable")


def settings_for(
    engine: str, precision: str, providers: str, model: str, device: str, eager: bool = False, cpu_decode: bool = False
) -> object:
    from photodedup.settings import Settings

    return Settings(
        cuda_graphs=not eager,
        gpu_decode=not cpu_decode,
        model_name=model,
        weights="random",
        engine=engine,
        devices=[device],
        precision=precision,
        onnx_providers=providers.split(","),
        cache_dir=cache_dir(),
    )


def label(engine: str, precision: str, providers: str, variant: str = "") -> str:
    return f"{engine}{'(' + providers + ')' if engine == 'onnx' else ''} {precision}{' ' + variant if variant else ''}"


PARITY_IMAGES = 16


def reference_vectors(model: str, arrays: list) -> object:
    """torch fp32 on the CPU, same (seeded random) weights: the reference every engine is held to. Cached
    in the run's cache folder, so each engine step does not recompute it."""
    import numpy as np

    from photodedup.engines import create_engine

    path = cache_dir() / f"reference-{model}-{len(arrays)}.npy"
    if path.exists():
        return np.load(path)
    settings = settings_for("torch", "fp32", "cpu", model, "cpu")
    eng = create_engine(settings, "cpu")
    try:
        ref = eng.infer(eng.preprocess(arrays))
    finally:
        eng.close()
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, ref)
    return ref


def parity(name: str, eng: object, model: str, size: int) -> None:
    """Cosine of the engine's vectors to the CPU fp32 reference; for a torch engine that decodes JPEG on
    its GPU, also nvJPEG-decoded against CPU-decoded thumbnails through the same engine."""
    import numpy as np

    from photodedup.engines.jpeg_route import DeviceJpeg
    from photodedup.imaging import decode_for_model, encode_jpeg
    from photodedup.testing import synthetic_photo

    arrays = [synthetic_photo(1000 + i, (size, size)) for i in range(PARITY_IMAGES)]
    ref = reference_vectors(model, arrays)
    out = eng.infer(eng.preprocess(arrays))  # type: ignore[attr-defined]
    cos = (np.asarray(out) * ref).sum(axis=1)
    print(
        f"PARITY {name}: min cosine {cos.min():.6f} (mean {cos.mean():.6f}) vs torch fp32 on CPU, "
        f"{PARITY_IMAGES} images",
        flush=True,
    )
    if getattr(eng, "decodes_jpeg", False):
        jpegs = [encode_jpeg(a, quality=80) for a in arrays]
        cpu = eng.infer(eng.preprocess([decode_for_model(j, size, 10**8) for j in jpegs]))  # type: ignore[attr-defined]
        gpu = eng.infer(eng.preprocess([DeviceJpeg(j) for j in jpegs]))  # type: ignore[attr-defined]
        gpu = getattr(gpu, "vectors", gpu)
        cos = (np.asarray(gpu) * np.asarray(cpu)).sum(axis=1)
        print(f"PARITY {name} nvJPEG vs CPU decode: min cosine {cos.min():.6f}", flush=True)


def engine_only(
    engine: str,
    precision: str,
    providers: str,
    batches: list[int],
    seconds: float,
    model: str,
    device: str,
    eager: bool = False,
) -> None:
    name = label(engine, precision, providers, "eager" if eager else "")
    if not cuda_or_skip(f"engine {name}", device):
        return
    from photodedup.engines import create_engine
    from photodedup.errors import PhotodedupError
    from photodedup.loadgen import load as bl
    from photodedup.testing import synthetic_photo

    settings = settings_for(engine, precision, providers, model, device, eager=eager)
    settings = settings.replace(max_batch_size=max(batches))  # type: ignore[attr-defined]
    t0 = time.monotonic()
    try:
        eng = create_engine(settings, device)
    except PhotodedupError as exc:
        print(f"SKIP engine {name}: {exc}", flush=True)
        return
    load_s = time.monotonic() - t0
    try:
        t0 = time.monotonic()
        eng.warmup([1])  # captures every CUDA graph bucket (torch), builds nothing else
        print(
            f"BUILD engine {name}: load (export, plan build) {load_s:.1f} s, first warm-up "
            f"(graph capture) {time.monotonic() - t0:.1f} s; {eng.status().detail}",
            flush=True,
        )
        size = eng.info.preprocessing.input_size
        try:
            parity(name, eng, model, size)
        except Exception as exc:  # noqa: BLE001 - a failed parity check must not hide the throughput
            print(f"SKIP parity {name}: {type(exc).__name__}: {exc}", flush=True)
        arrays = [synthetic_photo(i, (size, size)) for i in range(64)]
        got = f"{eng.precision}, {eng.status().detail}"
        for b in batches:
            try:
                eng.warmup([b, b])
                rec = bl.Recorder()
                bl.run_local(eng, arrays, b, bl.Budget(seconds, None), rec)
            except Exception as exc:  # out of memory at 256 must not hide the smaller batches' results
                print(f"SKIP engine {name} batch {b}: {type(exc).__name__}: {exc}", flush=True)
                continue
            from photodedup.loadgen.stats import percentiles

            p50 = percentiles(rec.request_latencies, (50,))["p50"] * 1e3
            print(
                f"RESULT engine-only {name:<22} batch {b:>3}: {rec.images_ok / rec.seconds:>9,.0f} img/s  "
                f"p50 {p50:8.2f} ms/batch  ({rec.requests} calls; running {got})",
                flush=True,
            )
    finally:
        eng.close()


def served(
    engine: str,
    precision: str,
    providers: str,
    batches: list[int],
    seconds: float,
    model: str,
    device: str,
    cpu_decode: bool = False,
) -> None:
    name = label(engine, precision, providers, "cpu-decode" if cpu_decode else "")
    if not cuda_or_skip(f"served {name}", device):
        return
    from benchlib import options
    from serverproc import ServerProcess

    from photodedup.loadgen.command import run_bench

    for b in batches:
        flags = [
            "--model", model, "--weights", "random", "--engine", engine, "--devices", device,
            "--precision", precision, "--onnx-providers", providers, "--cache-dir", str(cache_dir()),
            "--max-batch-size", str(b), "--max-queue-delay-ms", "2",
        ]  # fmt: skip
        if cpu_decode:
            flags.append("--no-gpu-decode")
        # Enough images in flight to fill two batches, sent the way a real client does (a stream).
        per_msg = min(32, b) if b > 1 else 1
        conc = max(4, (2 * b) // per_msg)
        try:
            with ServerProcess(flags, ready_timeout=240) as srv:
                opts = options(
                    mode="stream", concurrency=[conc], items_per_message=per_msg, duration=seconds, warmup=2.0
                )
                report = run_bench([srv.address], [srv.metrics_address], None, opts)
        except Exception as exc:
            msg = str(exc).strip().splitlines()
            print(f"SKIP served {name} batch {b}: {type(exc).__name__}: {msg[-1] if msg else ''}", flush=True)
            continue
        (st,) = report["steps"]
        engines = ", ".join(report["meta"].get("engines", []))
        print(
            f"RESULT served      {name:<22} batch {b:>3}: {st['images_per_s'] or 0:>9,.0f} img/s  "
            f"mean batch {st['mean_batch'] or 0:6.1f}  img p50 "
            f"{(st['image_latency_ms'] or {}).get('p50') or 0:8.1f} ms  "
            f"server CPU {st['server_cpu_ms_per_image'] or 0:.3f} ms/img  errors {st['errors'] or 'none'}  ({engines})",
            flush=True,
        )


_ENGINE_LINE = re.compile(r"^RESULT engine-only (\S+) (\S+)(?: (\S+))?\s+batch\s+(\d+):\s+([\d,]+) img/s")


def engine_order(lines: list[str]) -> tuple[int, list[tuple[str, float]]]:
    """From engine-only RESULT lines: the largest batch measured and, at that batch, each engine's best
    rate (any precision, CUDA graphs or not), fastest first: the measured order for `--engine auto`."""
    best: dict[int, dict[str, float]] = {}
    for line in lines:
        m = _ENGINE_LINE.match(line)
        if m is None:
            continue
        engine = m.group(1).split("(")[0]
        batch, rate = int(m.group(4)), float(m.group(5).replace(",", ""))
        per = best.setdefault(batch, {})
        per[engine] = max(rate, per.get(engine, 0.0))
    if not best:
        return 0, []
    batch = max(best)
    return batch, sorted(best[batch].items(), key=lambda kv: -kv[1])


def summary(log_path: Path) -> None:
    batch, order = engine_order(log_path.read_text(errors="replace").splitlines())
    if not order:
        print("SKIP engine order: no engine-only result to order", flush=True)
        return
    ranked = " > ".join(f"{name} {rate:,.0f}" for name, rate in order)
    print(f"ORDER engine-only at batch {batch}, img/s: {ranked}", flush=True)
    print(f"ORDER for engines/__init__.py: AUTO_ORDER['cuda'] = {[name for name, _ in order]}", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["facts", "engine", "served", "summary"])
    ap.add_argument("log", nargs="?", type=Path, help="summary: the run's output to read")
    ap.add_argument("--engine", default="torch", choices=["torch", "onnx", "tensorrt"])
    ap.add_argument("--precision", default="fp32", choices=["fp32", "fp16"])
    ap.add_argument("--providers", default="cuda", help="ONNX Runtime providers for --engine onnx (tensorrt, cuda)")
    ap.add_argument("--batches", default="1,32,256")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--model", default="ViT-B-32")
    ap.add_argument("--device", default="cuda:0", help="cpu only for a dry run of this harness; served takes a list")
    ap.add_argument("--eager", action="store_true", help="engine: torch without CUDA graphs, to compare")
    ap.add_argument("--cpu-decode", action="store_true", help="served: JPEG thumbnails decoded on the CPU")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    batches = [int(b) for b in args.batches.split(",")]
    start = time.monotonic()
    try:
        if args.what == "facts":
            facts()
        elif args.what == "summary":
            summary(args.log)
        elif args.what == "engine":
            engine_only(
                args.engine, args.precision, args.providers, batches, args.seconds, args.model, args.device, args.eager
            )
        else:
            served(
                args.engine,
                args.precision,
                args.providers,
                batches,
                args.seconds,
                args.model,
                args.device,
                args.cpu_decode,
            )
    except ImportError as exc:
        print(f"SKIP {args.what} {args.engine} {args.precision}: a library is missing: {exc}", flush=True)
    except Exception as exc:
        traceback.print_exc()
        print(f"SKIP {args.what} {args.engine} {args.precision}: {type(exc).__name__}: {exc}", flush=True)
    log.info("%s took %.0f s", args.what, time.monotonic() - start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
