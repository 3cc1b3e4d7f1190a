"""CPU INT8 vs fp32: engine only, thread/spinning/batch settings, torch dynamic qint8, and a first scan.

Sections (each a table in docs/BENCHMARKS.md):
  int8_engine    ViT-B-32 (random weights) image tower, batch 32, 2 threads: ONNX Runtime fp32 vs INT8
                 (each quantisation recipe: per-tensor/per-channel, with/without ORT's pre-processing),
                 torch fp32 vs torch dynamic qint8; rounds alternate so a burst of other work hits all.
  int8_settings  INT8 session: intra-op threads 1/2, spinning on/off, batch 8/16/32/64.
  int8_served    served (EmbedStream) / engine-only with INT8: bench_served.py's table at --precision int8.
  int8_scan      a first scan of generated photos with the in-process engine, fp32 vs INT8: total time
                 and the split between hashing (a `--no-similar` scan of the same folder) and embedding.

Usage: bench_int8.py [--only int8_engine,int8_settings,int8_scan] [--rounds 3] [--photos 2000] [--no-write]
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from statistics import median
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_served import section_vs_engine  # noqa: E402
from benchlib import num, say  # noqa: E402
from record import machine_line, write_section  # noqa: E402
from serverproc import photodedup_exe  # noqa: E402

from photodedup.settings import Settings  # noqa: E402

log = logging.getLogger(__name__)

SECTIONS = ("int8_engine", "int8_settings", "int8_served", "int8_scan")
NOTE = (
    "This machine is shared with other work (load average given per table): absolute figures move, "
    "the ratios within one table are the result."
)


def load_note() -> str:
    import os

    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} / {five:.1f} (1 / 5 min) on {os.cpu_count()} cores"


def rate(fn: Callable[[], Any], n: int, repeats: int = 3) -> float:
    """Images per second of the best of `repeats` calls (each `fn()` embeds n images)."""
    fn()
    best = min(_timed(fn) for _ in range(repeats))
    return n / best


def _timed(fn: Callable[[], Any]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def section_engine(cache: Path, rounds: int) -> str:
    import torch

    from photodedup.engines.onnx_export import ensure_onnx
    from photodedup.engines.onnx_int8 import Recipe, cpu_session, ensure_int8, run_session
    from photodedup.engines.openclip_loader import load_visual
    from photodedup.engines.selfcheck import check_parity

    settings = Settings(model_name="ViT-B-32", weights="random", cache_dir=cache, intra_op_threads=2)
    fp32_path, info = ensure_onnx(settings)
    recipes = [
        Recipe(False, False, True),
        Recipe(True, False, True),
        Recipe(False, True, True),
        Recipe(False, False, False),
    ]
    sessions: dict[str, Any] = {"ONNX Runtime fp32": cpu_session(fp32_path, 2)}
    for r in recipes:
        try:
            say(f"int8_engine: quantising {r.tag}")
            sessions[f"ONNX Runtime INT8 {r.tag}"] = cpu_session(ensure_int8(settings, r).path, 2)
        except Exception as exc:  # noqa: BLE001 - a recipe the quantiser cannot do is a row saying so
            sessions[f"ONNX Runtime INT8 {r.tag}"] = exc
    torch.set_num_threads(2)
    visual, _ = load_visual(settings, "fp32")
    qvisual = torch.ao.quantization.quantize_dynamic(visual, {torch.nn.Linear}, dtype=torch.qint8)
    rng = np.random.default_rng(0)
    batch = rng.standard_normal((32, 3, 224, 224)).astype(np.float32)
    tb = torch.from_numpy(batch)

    def torch_run(m: Any) -> Callable[[], np.ndarray]:
        def go() -> np.ndarray:
            with torch.inference_mode():
                return m(tb).numpy()

        return go

    runners: dict[str, Callable[[], np.ndarray]] = {}
    for name, s in sessions.items():
        if not isinstance(s, Exception):
            runners[name] = lambda s=s: run_session(s, batch)
    runners["torch fp32"] = torch_run(visual)
    runners["torch dynamic qint8 (Linear)"] = torch_run(qvisual)
    ref = runners["ONNX Runtime fp32"]()
    parity = {n: check_parity(ref, fn()) for n, fn in runners.items()}
    rates: dict[str, list[float]] = {n: [] for n in runners}
    for r in range(rounds):
        for name, fn in runners.items():
            say(f"int8_engine: round {r + 1}/{rounds} {name}")
            rates[name].append(rate(fn, len(batch), repeats=1))
    base = median(rates["ONNX Runtime fp32"])
    lines = [
        "| runtime | img/s (median of rounds) | rounds | × ONNX fp32 | min cosine vs fp32 | neighbours changed |",
        "|---|---|---|---|---|---|",
    ]
    for name in rates:
        m = median(rates[name])
        p = parity[name]
        lines.append(
            f"| {name} | {num(m, 1)} | {', '.join(num(x, 1) for x in rates[name])} | {m / base:.2f} | "
            f"{p.min_cosine:.5f} | {p.neighbours_changed} of {len(batch)} |"
        )
    for name, s in sessions.items():
        if isinstance(s, Exception):
            lines.append(f"| {name} | failed: {str(s).splitlines()[0][:120]} | | | | |")
    return "\n".join(
        [
            "## CPU INT8 vs fp32, engine only (`benchmarks/bench_int8.py`)",
            "",
            f"{machine_line()}; {load_note()}. ViT-B-32 image tower, random weights, one batch of 32 "
            "normalised 224 px inputs, 2 intra-op threads, one timed call after a warm one per "
            f"round, {rounds} rounds alternating "
            "between runtimes. ONNX Runtime INT8 is `quantize_dynamic` (QInt8 weights) of our cached fp32 export; "
            "`-pc` = per-channel weight scales, `-pre` = after `quant_pre_process`, `-rr` = 7-bit "
            "weight range (`reduce_range`). torch qint8 is "
            "`torch.ao.quantization.quantize_dynamic` on the Linear layers. Cosines are per image against "
            f"ONNX Runtime fp32 on the same random inputs. {NOTE}",
            "",
            *lines,
        ]
    )


def section_settings(cache: Path, rounds: int) -> str:
    import onnxruntime as ort

    from photodedup.engines.onnx_int8 import ensure_int8, run_session

    settings = Settings(model_name="ViT-B-32", weights="random", cache_dir=cache)
    path = ensure_int8(settings).path
    rng = np.random.default_rng(0)
    big = rng.standard_normal((64, 3, 224, 224)).astype(np.float32)
    lines = ["| intra-op threads | spinning | batch | img/s (median of rounds) | rounds |", "|---|---|---|---|---|"]
    sessions, results = {}, {}
    for threads in (1, 2):
        for spin in ("0", "1"):
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = threads
            opts.add_session_config_entry("session.intra_op.allow_spinning", spin)
            sessions[threads, spin] = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    configs = [(t, sp, b) for (t, sp) in sessions for b in ((8, 16, 32, 64) if (t, sp) == (2, "0") else (32,))]
    for i in range(rounds):  # rounds alternate over every setting, so a burst of other work hits all
        for t, sp, b in configs:
            say(f"int8_settings: round {i + 1}/{rounds} threads {t} spin {sp} batch {b}")
            s = sessions[t, sp]
            n = max(1, 64 // b)  # the same 64 images per measurement whatever the batch
            results.setdefault((t, sp, b), []).append(
                rate(lambda s=s, b=b, n=n: [run_session(s, big[:b]) for _ in range(n)], b * n, repeats=1)
            )
    for t, sp, b in configs:
        got = results[t, sp, b]
        lines.append(
            f"| {t} | {'on' if sp == '1' else 'off'} | {b} | {num(float(np.median(got)), 1)} | "
            f"{', '.join(num(x, 1) for x in got)} |"
        )
    return "\n".join(
        [
            "## CPU INT8 session settings (`benchmarks/bench_int8.py`)",
            "",
            f"{machine_line()}; {load_note()}. ViT-B-32 INT8 (the recipe the engine uses), 64 images per "
            "measurement (one warm call first), rounds alternating over the settings. "
            "The engine keeps spinning off (idle pool threads would take the cores that decode the next batch "
            "in a server or hash the next photos in a scan) and the runtime's default thread count "
            f"(one per core); the batch is the server's `max_batch_size` / the scan's `embed_batch_size`. {NOTE}",
            "",
            *lines,
        ]
    )


def make_photos(folder: Path, n: int) -> None:
    from PIL import Image

    from photodedup.testing import synthetic_photo

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(synthetic_photo(i, (1024, 768))).save(folder / f"IMG_{i:05d}.jpg", quality=90)


def scan_seconds(photos: Path, cache: Path, db: Path, extra: list[str]) -> tuple[float, dict[str, Any]]:
    cmd = [
        *photodedup_exe(),
        "scan",
        str(photos),
        "--local",
        "--model",
        "ViT-B-32",
        "--weights",
        "random",
        "--cache-dir",
        str(cache),
        "--db",
        str(db),
        "--format",
        "json",
        *extra,
    ]
    t = time.monotonic()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return time.monotonic() - t, json.loads(out.stdout)


def section_scan(cache: Path, n: int) -> str:
    from photodedup.engines import create_engine

    work = Path(tempfile.mkdtemp(prefix="photodedup-int8-scan-"))
    photos = work / "photos"
    say(f"int8_scan: making {n} photos")
    make_photos(photos, n)
    for p in ("fp32", "int8"):  # export, quantise and self-check once, outside the timed scans
        create_engine(
            Settings(model_name="ViT-B-32", weights="random", cache_dir=cache, engine="onnx", precision=p), "cpu"
        ).close()
    rows = []
    say("int8_scan: hash-only scan")
    hash_s, _ = scan_seconds(photos, cache, work / "hash.sqlite3", ["--no-similar"])
    for p in ("fp32", "int8"):
        say(f"int8_scan: first scan, {p}")
        total, report = scan_seconds(photos, cache, work / f"{p}.sqlite3", ["--engine", "onnx", "--precision", p])
        rows.append((p, total, report))
    lines = [
        "| precision | model id | first scan s | hashing s (`--no-similar` scan) | embedding s "
        "(difference) | embedded img/s |",
        "|---|---|---|---|---|---|",
    ]
    for p, total, report in rows:
        emb = total - hash_s
        embedded = report.get("embedded") or report.get("summary", {}).get("embedded") or n
        lines.append(
            f"| {p} | `{report.get('stats', {}).get('model_id', '')}` | {total:.1f} | {hash_s:.1f} | {emb:.1f} | "
            f"{num(embedded / emb if emb > 0 else float('nan'), 1)} |"
        )
    speed = (rows[0][1] - hash_s) / max(rows[1][1] - hash_s, 1e-9)
    return "\n".join(
        [
            "## First scan, in-process engine, fp32 vs INT8 (`benchmarks/bench_int8.py`)",
            "",
            f"{machine_line()}; {load_note()}. {n} generated 1024×768 JPEG photos, `photodedup scan --local` "
            "(ViT-B-32 random weights, ONNX Runtime on CPU, default threads and batch) on a fresh index, as a "
            "subprocess. Hashing is a `--no-similar` first scan of the same folder; embedding is the rest (it "
            f"includes making the 224 px thumbnails). Embedding INT8 vs fp32: **{speed:.2f}×**. {NOTE}",
            "",
            *lines,
        ]
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default=",".join(SECTIONS))
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--photos", type=int, default=2000)
    ap.add_argument("--served-duration", type=float, default=20.0, help="seconds per served/engine round")
    ap.add_argument("--cache-dir", type=Path, default=None, help="ONNX export cache [default: a temp dir]")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    cache = args.cache_dir or Path(tempfile.mkdtemp(prefix="photodedup-bench-"))
    runs = {
        "int8_engine": lambda: section_engine(cache, args.rounds),
        "int8_settings": lambda: section_settings(cache, args.rounds),
        "int8_served": lambda: section_vs_engine(cache, args.served_duration, precision="int8"),
        "int8_scan": lambda: section_scan(cache, args.photos),
    }
    for name in args.only.split(","):
        section = runs[name]()
        print(section, flush=True)
        if not args.no_write:
            write_section(f"bench_{name}", section)


if __name__ == "__main__":
    main()
