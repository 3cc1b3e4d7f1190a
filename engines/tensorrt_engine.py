"""Native TensorRT engine (FP16) built from our cached ONNX export. NOT YET RUN ON A GPU.

Import-guarded: without `tensorrt` or CUDA it fails with one clear EngineUnavailableError and `auto`
moves on. The serialised plan is cached beside the ONNX export, keyed by everything a plan depends on
(`plan_key`: ONNX content, TensorRT version, GPU name, compute capability, optimisation profile,
precision recipe), written atomically under the export lock. A loaded plan must match fp32 ONNX Runtime
on the self-check images (cosine >= 0.999) before it serves.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from photodedup.engines.base import BaseEngine, EngineStatus
from photodedup.engines.onnx_export import (
    INPUT_NAME,
    OUTPUT_NAME,
    atomic_write_bytes,
    ensure_onnx,
    export_lock,
)
from photodedup.errors import EngineUnavailableError
from photodedup.imaging import l2_normalize

if TYPE_CHECKING:
    from photodedup.settings import Settings

log = logging.getLogger(__name__)

PLAN_MIN_COSINE = 0.999
WORKSPACE_BYTES = 4 << 30  # TensorRT's default is all device memory
PRECISION_RECIPE = "fp16-builderflag"  # TRT 10: FP16 builder flag, LayerNorm left to TensorRT


@dataclass(frozen=True)
class Profile:
    """The batch axis of the one optimisation profile: min / opt / max images per call."""

    min_batch: int
    opt_batch: int
    max_batch: int

    def shapes(self, size: int) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        return tuple((b, 3, size, size) for b in (self.min_batch, self.opt_batch, self.max_batch))  # type: ignore[return-value]


def profile_for(max_batch_size: int) -> Profile:
    """Batch 1..max; optimised for a full batch, which is what a loaded batcher forms."""
    if max_batch_size < 1:
        raise ValueError("max_batch_size must be >= 1")
    return Profile(1, max_batch_size, max_batch_size)


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def plan_key(
    onnx_sha256: str, trt_version: str, gpu_name: str, capability: tuple[int, int], profile: Profile, recipe: str
) -> str:
    """A plan runs only on the TensorRT version and GPU architecture that built it: all of it is in the key."""
    text = "|".join(
        [
            onnx_sha256,
            trt_version,
            gpu_name,
            f"sm{capability[0]}{capability[1]}",
            f"b{profile.min_batch}-{profile.opt_batch}-{profile.max_batch}",
            recipe,
        ]
    )
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def plan_path(onnx_path: Path, key: str) -> Path:
    return onnx_path.with_name(f"{onnx_path.stem}-trt-{key}.plan")


class TensorRTEngine(BaseEngine):
    """One TensorRT execution context on one CUDA device, fed uint8 NHWC batches normalised on the device."""

    name: ClassVar[str] = "tensorrt"

    def __init__(self, settings: Settings, device: str) -> None:
        super().__init__(settings, device)
        self._trt: Any = None
        self._torch: Any = None
        self._engine: Any = None
        self._context: Any = None
        self._stream: Any = None
        self._mean: Any = None
        self._std: Any = None
        self.plan_file: Path | None = None

    def load(self) -> None:
        if self.dev.kind != "cuda":
            raise EngineUnavailableError(f"TensorRT needs a CUDA device, not {self.device}")
        try:
            import tensorrt as trt
            import torch
        except ImportError as exc:
            raise EngineUnavailableError(f"TensorRT is not installed here: {exc}") from None
        if not torch.cuda.is_available() or self.dev.index >= torch.cuda.device_count():
            raise EngineUnavailableError(f"{self.device} requested but torch sees no such CUDA device")
        if not hasattr(trt.BuilderFlag, "FP16"):
            raise EngineUnavailableError(
                f"TensorRT {trt.__version__} has no FP16 builder flag (TensorRT 11 needs a strongly typed FP16 "
                "ONNX, which this engine does not make yet); use TensorRT 10 or --engine onnx/torch"
            )
        self._trt, self._torch = trt, torch
        self.precision = "fp16"
        onnx_path, self.info = ensure_onnx(self.settings)
        props = torch.cuda.get_device_properties(self.dev.index)
        profile = profile_for(self.settings.server.max_batch_size)
        key = plan_key(
            file_digest(onnx_path), trt.__version__, props.name, (props.major, props.minor), profile, PRECISION_RECIPE
        )
        self.plan_file = plan_path(onnx_path, key)
        with export_lock(onnx_path):
            if not self.plan_file.is_file():
                atomic_write_bytes(self.plan_file, self._build(onnx_path, profile))
        with torch.cuda.device(self.dev.index):
            runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
            self._engine = runtime.deserialize_cuda_engine(self.plan_file.read_bytes())
            if self._engine is None:
                raise EngineUnavailableError(
                    f"TensorRT could not load its cached plan {self.plan_file}; delete it to rebuild"
                )
            self._context = self._engine.create_execution_context()
            self._stream = torch.cuda.Stream(self.dev.index)
            prep = self.info.preprocessing
            self._mean = torch.tensor(prep.mean, device=self.device).view(1, 3, 1, 1) * 255.0
            self._std = torch.tensor(prep.std, device=self.device).view(1, 3, 1, 1) * 255.0
        self._validate(onnx_path)

    def _build(self, onnx_path: Path, profile: Profile) -> bytes:
        trt = self._trt
        logger = trt.Logger(trt.Logger.WARNING)
        builder = trt.Builder(logger)
        network = builder.create_network(0)
        parser = trt.OnnxParser(network, logger)
        if not parser.parse(onnx_path.read_bytes()):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise EngineUnavailableError(f"TensorRT cannot parse {onnx_path.name}: {errors}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
        config.set_flag(trt.BuilderFlag.FP16)
        opt = builder.create_optimization_profile()
        opt.set_shape(INPUT_NAME, *profile.shapes(self.info.preprocessing.input_size))
        config.add_optimization_profile(opt)
        log.info("building a TensorRT FP16 plan for %s (batch %s); this takes minutes, once", self.device, profile)
        start = time.monotonic()
        plan = builder.build_serialized_network(network, config)
        if plan is None:
            raise EngineUnavailableError("TensorRT failed to build a plan (see its log above)")
        log.info("TensorRT plan built in %.0f s", time.monotonic() - start)
        return bytes(plan)

    def _validate(self, onnx_path: Path) -> None:
        """FP16 LayerNorm overflow is the known pitfall: compare with fp32 before serving."""
        from photodedup.engines.onnx_int8 import cpu_session, run_session
        from photodedup.engines.selfcheck import check_images, check_parity
        from photodedup.imaging import normalize_batch

        prep = self.info.preprocessing
        images = check_images(size=prep.input_size)
        reference = run_session(cpu_session(onnx_path), normalize_batch(images, prep.mean, prep.std))
        result = check_parity(reference, self.infer(self.preprocess(images)), min_cosine=PLAN_MIN_COSINE)
        if not result.passed:
            raise EngineUnavailableError(f"TensorRT FP16 plan disagrees with fp32 ({result.reason})")

    def preprocess(self, images: Sequence[np.ndarray]) -> Any:
        """uint8 NHWC, pinned: 4x fewer bytes to copy than float32; normalised on the device."""
        return self._torch.from_numpy(np.stack(images)).pin_memory()

    def infer(self, batch: Any) -> np.ndarray:
        torch = self._torch
        n = int(batch.shape[0])
        with torch.cuda.device(self.dev.index), torch.cuda.stream(self._stream):
            x = batch.to(self.device, non_blocking=True).permute(0, 3, 1, 2).float()
            x = ((x - self._mean) / self._std).contiguous()
            out = torch.empty((n, self.info.embedding_dim), dtype=torch.float32, device=self.device)
            self._context.set_input_shape(INPUT_NAME, tuple(x.shape))
            self._context.set_tensor_address(INPUT_NAME, x.data_ptr())
            self._context.set_tensor_address(OUTPUT_NAME, out.data_ptr())
            if not self._context.execute_async_v3(self._stream.cuda_stream):
                raise RuntimeError("TensorRT execution failed")
            result = out.cpu()  # synchronises the stream
        return l2_normalize(result.numpy())

    def close(self) -> None:
        self._context = self._engine = None

    def status(self) -> EngineStatus:
        trt = self._trt
        detail = f"tensorrt {trt.__version__}, plan {self.plan_file.name}" if trt is not None and self.plan_file else ""
        return EngineStatus(detail=detail)
