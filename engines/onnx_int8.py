"""INT8 for the ONNX Runtime engine on CPU: the cached fp32 export, dynamically quantised, with its self-check.

The quantised model sits beside the fp32 export under the same cache key (plus precision and recipe) and
the same lock. Its self-check (fp32 vs INT8 on fixed photo-like images, `selfcheck.py`) and the measured
INT8/fp32 speed-up are cached with it, keyed also by ONNX Runtime version and CPU features: integer
kernels differ by instruction set (VNNI vs AVX2), so a verdict from one machine says nothing about another.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from photodedup.engines.onnx_export import atomic_write_bytes, ensure_onnx, export_lock
from photodedup.engines.selfcheck import ParityResult, check_images, check_parity

if TYPE_CHECKING:
    from photodedup.engines.base import ModelInfo
    from photodedup.settings import Settings

log = logging.getLogger(__name__)

# Chosen by measurement (benchmarks/bench_int8.py, docs/BENCHMARKS.md): QInt8 weights with 7-bit range,
# per-tensor scales, no pre-processing step. Full 8-bit weights fail the self-check on CPUs without VNNI
# (min cosine 0.981 on the check photos, ViT-B-32): AVX2's u8*s8 multiply-add saturates int16 sums.
PER_CHANNEL = False
PREPROCESS = False
REDUCE_RANGE = True
AUTO_MIN_SPEEDUP = 1.5
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8", "asimddp")  # asimddp: Arm's int8 dot product


@dataclass(frozen=True)
class Recipe:
    per_channel: bool = PER_CHANNEL
    preprocess: bool = PREPROCESS
    reduce_range: bool = REDUCE_RANGE

    @property
    def tag(self) -> str:
        flags = ("-pc", self.per_channel), ("-pre", self.preprocess), ("-rr", self.reduce_range)
        return "qint8" + "".join(f for f, on in flags if on)


@dataclass(frozen=True)
class Int8Model:
    """A quantised model ready to load, with the verdict of its self-check on this machine."""

    path: Path
    fp32_path: Path
    info: ModelInfo
    check: ParityResult
    speedup: float  # INT8 / fp32 images per second, measured once at batch 8 on this machine


def cpu_flags(cpuinfo: str | None = None) -> frozenset[str]:
    """CPU feature flags from /proc/cpuinfo (x86 `flags`, Arm `Features`); empty where unreadable."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return frozenset()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def has_vnni(flags: frozenset[str]) -> bool:
    return any(f in flags for f in VNNI_FLAGS)


def int8_path(fp32_path: Path, recipe: Recipe) -> Path:
    return fp32_path.with_name(f"{fp32_path.stem}-{recipe.tag}.onnx")


def check_path(path: Path, flags: frozenset[str]) -> Path:
    """Where the self-check of `path` on this runtime and CPU is cached."""
    from photodedup.engines.openclip_loader import package_version

    cpu = hashlib.sha256(" ".join(sorted(flags)).encode()).hexdigest()[:10]
    return path.with_name(f"{path.stem}.check-ort{package_version('onnxruntime')}-cpu{cpu}.json")


class _OnlyErrors(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR


@contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """ONNX Runtime's quantiser logs one INFO line per tensor (and generic advice) straight on the root
    logger. A filter on the root logger sees only records logged on it directly, so every other logger's
    lines still pass."""
    root, quiet = logging.getLogger(), _OnlyErrors()
    root.addFilter(quiet)
    try:
        yield
    finally:
        root.removeFilter(quiet)


def quantize(src: Path, dst: Path, recipe: Recipe) -> None:
    """Write the dynamically quantised model of `src` to `dst` atomically."""
    with _quiet_root_logger():
        _quantize(src, dst, recipe)


def _quantize(src: Path, dst: Path, recipe: Recipe) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    tmp_dir = dst.with_name(dst.name + ".work")
    tmp_dir.mkdir(exist_ok=True)
    try:
        source = src
        if recipe.preprocess:
            from onnxruntime.quantization.shape_inference import quant_pre_process

            source = tmp_dir / "pre.onnx"
            # Symbolic shape inference cannot follow the attention reshapes of open_clip's export.
            quant_pre_process(str(src), str(source), skip_symbolic_shape=True)
        out = tmp_dir / "int8.onnx"
        quantize_dynamic(
            str(source),
            str(out),
            weight_type=QuantType.QInt8,
            per_channel=recipe.per_channel,
            reduce_range=recipe.reduce_range,
        )
        atomic_write_bytes(dst, out.read_bytes())
    finally:
        for f in tmp_dir.iterdir():
            f.unlink()
        tmp_dir.rmdir()


def cpu_session(path: Path, threads: int = 0) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def run_session(session: Any, batch: np.ndarray) -> np.ndarray:
    (out,) = session.run(None, {session.get_inputs()[0].name: batch})
    return out


def measure_speedup(fp32: Any, int8: Any, batch: np.ndarray, pairs: int = 5) -> float:
    """INT8 / fp32 throughput on one batch: the median ratio of `pairs` back-to-back runs (after the
    check's own warm run), so a burst of other work on a shared machine skews one pair, not the answer."""

    def seconds(session: Any) -> float:
        t = time.perf_counter()
        run_session(session, batch)
        return time.perf_counter() - t

    return float(np.median([seconds(fp32) / seconds(int8) for _ in range(pairs)]))


def self_check(fp32_path: Path, int8_file: Path, info: ModelInfo, threads: int = 0) -> tuple[ParityResult, float]:
    """Embed the fixed check images with both models; the verdict and the measured speed-up."""
    from photodedup.imaging import normalize_batch

    prep = info.preprocessing
    batch = normalize_batch(check_images(size=prep.input_size), prep.mean, prep.std)
    fp32, int8 = cpu_session(fp32_path, threads), cpu_session(int8_file, threads)
    result = check_parity(run_session(fp32, batch), run_session(int8, batch))
    speedup = measure_speedup(fp32, int8, batch[:8])
    return result, speedup


def ensure_int8(settings: Settings, recipe: Recipe | None = None, flags: frozenset[str] | None = None) -> Int8Model:
    """The quantised model and its self-check verdict, made (once, under the export lock) if not cached."""
    recipe = recipe or Recipe()
    flags = cpu_flags() if flags is None else flags
    fp32_path, info = ensure_onnx(settings)
    path = int8_path(fp32_path, recipe)
    verdict = check_path(path, flags)
    with export_lock(fp32_path):
        if not path.is_file():
            log.info("quantising %s to INT8 (%s), once", fp32_path.name, recipe.tag)
            quantize(fp32_path, path, recipe)
        if verdict.is_file():
            saved = json.loads(verdict.read_text())
            result, speedup = ParityResult(**saved["check"]), float(saved["speedup"])
        else:
            result, speedup = self_check(fp32_path, path, info, settings.model.intra_op_threads)
            atomic_write_bytes(verdict, json.dumps({"check": asdict(result), "speedup": speedup}, indent=1).encode())
    return Int8Model(path, fp32_path, info, result, speedup)


def choose_int8(want: str, model: Int8Model, flags: frozenset[str]) -> tuple[bool, str]:
    """Serve INT8? `want` is `int8` or `auto`; returns the answer and the one-line reason."""
    if not model.check.passed:
        return False, f"INT8 self-check failed ({model.check.reason}); serving fp32"
    if want == "int8":
        return True, f"INT8 self-check passed ({model.check.summary()})"
    if has_vnni(flags) and model.speedup >= 1.0:  # VNNI, unless this model measured slower (tiny models)
        return True, f"auto: CPU has VNNI, INT8 self-check passed ({model.check.summary()})"
    if model.speedup >= AUTO_MIN_SPEEDUP:
        return True, f"auto: INT8 measured {model.speedup:.2f}x fp32 here, self-check passed"
    vnni = "VNNI" if has_vnni(flags) else "no VNNI"
    return False, f"auto: {vnni} and INT8 measured {model.speedup:.2f}x fp32 here; serving fp32"
