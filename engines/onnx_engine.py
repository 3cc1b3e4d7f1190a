"""ONNX Runtime engine: the image tower exported once to ONNX, run with TensorRT / CUDA / CPU providers.

The export is cached under `<cache_dir>/onnx/`, keyed by model, weights, opset and open_clip version,
written atomically under a file lock. A cache hit needs no torch import at all.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from photodedup.engines.base import ModelInfo, host_memory, warmup_images
from photodedup.errors import EngineUnavailableError, ModelUnavailableError
from photodedup.imaging import Preprocessing, l2_normalize, normalize_batch

if TYPE_CHECKING:
    from photodedup.settings import Settings

log = logging.getLogger(__name__)

OPSET = 17
PROVIDER_NAMES = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}


def export_path(settings: Settings) -> Path:
    from photodedup.engines.openclip_loader import bundled_config_hash, package_version, weights_id

    key = f"{settings.model.model_name}-{weights_id(settings)}-opset{OPSET}-openclip{package_version('open_clip_torch')}"
    config = bundled_config_hash(settings.model.model_name)  # our own configs change without an open_clip release
    if config:
        key += f"-cfg{config}"
    return settings.model.cache_dir / "onnx" / (re.sub(r"[^A-Za-z0-9._-]+", "_", key) + ".onnx")


def ensure_onnx(settings: Settings) -> tuple[Path, ModelInfo]:
    """Return the exported model and its description, exporting it first if the cache lacks it.

    With `settings.model.onnx_model` the given export is served as it is: no cache, no torch (the CPU image).
    """
    if settings.model.onnx_model is not None:
        path = Path(settings.model.onnx_model)
        meta_path = path.with_suffix(".json")
        if not (path.is_file() and meta_path.is_file()):
            raise ModelUnavailableError(f"--onnx-model: {path} and {meta_path.name} beside it must both exist")
        return path, _model_info(json.loads(meta_path.read_text()))
    path = export_path(settings)
    meta_path = path.with_suffix(".json")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (path.is_file() and meta_path.is_file()):
            _export(settings, path, meta_path)
        meta = json.loads(meta_path.read_text())
    return path, _model_info(meta)


def _model_info(meta: dict[str, Any]) -> ModelInfo:
    prep = meta["preprocessing"]
    return ModelInfo(
        model_name=meta["model_name"],
        weights_id=meta["weights_id"],
        embedding_dim=int(meta["embedding_dim"]),
        preprocessing=Preprocessing(
            input_size=int(prep["input_size"]),
            mean=tuple(prep["mean"]),
            std=tuple(prep["std"]),
            interpolation=prep["interpolation"],
        ),
    )


def _export(settings: Settings, path: Path, meta_path: Path) -> None:
    import warnings

    import torch

    from photodedup.engines.openclip_loader import load_visual

    log.info("exporting %s to ONNX at %s (once)", settings.model.model_name, path)
    visual, info = load_visual(settings, "fp32")
    size = info.preprocessing.input_size
    example = torch.randn(2, 3, size, size)
    tmp = path.with_suffix(f".tmp{os.getpid()}.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            visual,
            (example,),
            str(tmp),
            input_names=["pixel_values"],
            output_names=["embedding"],
            dynamic_axes={"pixel_values": {0: "batch"}, "embedding": {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )
    meta = {
        "model_name": info.model_name,
        "weights_id": info.weights_id,
        "embedding_dim": info.embedding_dim,
        "preprocessing": asdict(info.preprocessing),
    }
    tmp_meta = meta_path.with_suffix(f".tmp{os.getpid()}")
    tmp_meta.write_text(json.dumps(meta, indent=1))
    os.replace(tmp, path)
    os.replace(tmp_meta, meta_path)


class OnnxEngine:
    """ONNX Runtime session pinned to one device."""

    name: ClassVar[str] = "onnx"

    def __init__(self, settings: Settings, device: str) -> None:
        self.settings = settings
        self.device = device
        self.precision = "fp32"
        self.info: ModelInfo
        self.providers: list[str] = []
        self._session: Any = None
        self._input = "pixel_values"

    def _provider_list(self, ort: Any) -> list[Any]:
        available = set(ort.get_available_providers())
        kind = self.device.split(":")[0]
        if kind == "mps":
            raise EngineUnavailableError("ONNX Runtime has no MPS provider; use --engine torch")
        wanted = [p for p in self.settings.model.onnx_providers if p in PROVIDER_NAMES]
        if kind == "cpu":
            wanted = ["cpu"]
        unknown = [p for p in self.settings.model.onnx_providers if p not in PROVIDER_NAMES]
        if unknown:
            raise EngineUnavailableError(f"unknown ONNX providers {unknown}; use {', '.join(PROVIDER_NAMES)}")
        device_id = int(self.device.split(":")[1]) if kind == "cuda" else 0
        trt_cache = str(self.settings.model.cache_dir / "tensorrt")
        out: list[Any] = []
        for short in wanted:
            full = PROVIDER_NAMES[short]
            if full not in available:
                if kind == "cuda" and short != "cpu":
                    log.info("ONNX Runtime here has no %s", full)
                continue
            if short == "tensorrt":
                out.append(
                    (
                        full,
                        {
                            "device_id": device_id,
                            "trt_fp16_enable": self.precision == "fp16",
                            "trt_engine_cache_enable": True,
                            "trt_engine_cache_path": trt_cache,
                            "trt_timing_cache_enable": True,
                            "trt_timing_cache_path": trt_cache,
                        },
                    )
                )
            elif short == "cuda":
                out.append((full, {"device_id": device_id}))
            else:
                out.append(full)
        if kind == "cuda" and not any(isinstance(p, tuple) for p in out):
            raise EngineUnavailableError(
                f"this ONNX Runtime build has no CUDA or TensorRT provider for {self.device} "
                f"(available: {', '.join(sorted(available))}); install onnxruntime-gpu or use --engine torch"
            )
        if not out:
            raise EngineUnavailableError("no usable ONNX Runtime execution provider")
        return out

    def load(self) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise EngineUnavailableError(f"onnxruntime is not installed: {exc}") from None
        kind = self.device.split(":")[0]
        want = self.settings.model.precision
        self.precision = ("fp16" if kind == "cuda" else "fp32") if want == "auto" else want
        if self.precision == "fp16" and kind == "cpu":
            log.warning("fp16 is not supported by the ONNX engine on CPU; using fp32")
            self.precision = "fp32"
        providers = self._provider_list(ort)
        path, self.info = ensure_onnx(self.settings)
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if self.settings.model.intra_op_threads:
            opts.intra_op_num_threads = self.settings.model.intra_op_threads
        opts.log_severity_level = 3
        # Idle intra-op threads would otherwise spin and steal the cores that decode the next batch.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self._session = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
        except Exception as exc:  # ORT raises its own Fail/RuntimeException types
            raise EngineUnavailableError(f"ONNX Runtime could not create a session: {exc}") from None
        self.providers = list(self._session.get_providers())
        if kind == "cuda" and self.providers == ["CPUExecutionProvider"]:
            # ORT quietly falls back to CPU when CUDA libraries fail to load (e.g. a CUDA 12 build on CUDA 13).
            raise EngineUnavailableError(
                "ONNX Runtime could not load its CUDA libraries (a CUDA 12 build on a CUDA 13 machine?)"
            )
        if self.precision == "fp16" and "TensorrtExecutionProvider" not in self.providers:
            self.precision = "fp32"
        self._input = self._session.get_inputs()[0].name

    def preprocess(self, images: Sequence[np.ndarray]) -> np.ndarray:
        prep = self.info.preprocessing
        return normalize_batch(images, prep.mean, prep.std)

    def infer(self, batch: np.ndarray) -> np.ndarray:
        (out,) = self._session.run(None, {self._input: batch})
        return l2_normalize(out)

    def warmup(self, batch_sizes: Sequence[int]) -> None:
        for n in batch_sizes:
            self.infer(self.preprocess(warmup_images(self.info, n)))

    def close(self) -> None:
        self._session = None

    def describe(self) -> dict[str, Any]:
        return {
            "detail": "providers=" + ",".join(self.providers),
            "memory_total_bytes": host_memory() if self.device == "cpu" else 0,
            "memory_used_bytes": 0,
        }
