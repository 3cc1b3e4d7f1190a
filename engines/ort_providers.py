"""All ONNX Runtime execution-provider choice in one pure function, testable by faking what is available."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from photodedup.engines.base import Device
from photodedup.errors import EngineUnavailableError

log = logging.getLogger(__name__)

PROVIDER_NAMES = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}

Provider = str | tuple[str, dict[str, Any]]


def choose_providers(
    device: Device, wanted: Sequence[str], available: Iterable[str], precision: str, trt_cache: Path
) -> list[Provider]:
    """The provider list for `InferenceSession(providers=...)`, in order of preference.

    Args:
        device: where the engine runs; CPU always gets the CPU provider only.
        wanted: short names from settings (`tensorrt`, `cuda`, `cpu`), in order of preference.
        available: `onnxruntime.get_available_providers()` (faked in tests).
        precision: `fp16` turns on the TensorRT provider's FP16 mode.
        trt_cache: folder for the TensorRT provider's engine and timing caches.

    Raises:
        EngineUnavailableError: unknown names, MPS, or a CUDA device without a GPU provider.
    """
    if device.kind == "mps":
        raise EngineUnavailableError("ONNX Runtime has no MPS provider; use --engine torch")
    unknown = [p for p in wanted if p not in PROVIDER_NAMES]
    if unknown:
        raise EngineUnavailableError(f"unknown ONNX providers {unknown}; use {', '.join(PROVIDER_NAMES)}")
    available = set(available)
    order = ["cpu"] if device.kind == "cpu" else list(wanted)
    out: list[Provider] = []
    for short in order:
        full = PROVIDER_NAMES[short]
        if full not in available:
            if device.kind == "cuda" and short != "cpu":
                log.info("ONNX Runtime here has no %s", full)
            continue
        if short == "tensorrt":
            options = {
                "device_id": device.index,
                "trt_fp16_enable": precision == "fp16",
                "trt_engine_cache_enable": True,
                "trt_engine_cache_path": str(trt_cache),
                "trt_timing_cache_enable": True,
                "trt_timing_cache_path": str(trt_cache),
            }
            out.append((full, options))
        elif short == "cuda":
            out.append((full, {"device_id": device.index}))
        else:
            out.append(full)
    if device.kind == "cuda" and not any(isinstance(p, tuple) for p in out):
        raise EngineUnavailableError(
            f"this ONNX Runtime build has no CUDA or TensorRT provider for {device} "
            f"(available: {', '.join(sorted(available))}); install onnxruntime-gpu or use --engine torch"
        )
    if not out:
        raise EngineUnavailableError("no usable ONNX Runtime execution provider")
    return out
