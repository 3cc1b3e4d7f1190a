"""ONNX Runtime engine: the cached ONNX export of the image tower, run with TensorRT / CUDA / CPU providers."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from photodedup.engines.base import BaseEngine, EngineStatus
from photodedup.engines.onnx_export import ensure_onnx
from photodedup.engines.ort_providers import choose_providers
from photodedup.errors import EngineUnavailableError
from photodedup.imaging import l2_normalize, normalize_batch

if TYPE_CHECKING:
    from photodedup.settings import Settings

log = logging.getLogger(__name__)


class OnnxEngine(BaseEngine):
    """ONNX Runtime session pinned to one device."""

    name: ClassVar[str] = "onnx"

    def __init__(self, settings: Settings, device: str) -> None:
        super().__init__(settings, device)
        self.providers: list[str] = []
        self._session: Any = None
        self._input = "pixel_values"

    def load(self) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise EngineUnavailableError(f"onnxruntime is not installed: {exc}") from None
        self.precision = self.resolve_precision()
        providers = choose_providers(
            self.dev,
            self.settings.onnx_providers,
            ort.get_available_providers(),
            self.precision,
            self.settings.cache_dir / "tensorrt",
        )
        path, self.info = ensure_onnx(self.settings)
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if self.settings.intra_op_threads:
            opts.intra_op_num_threads = self.settings.intra_op_threads
        opts.log_severity_level = 3
        # Idle intra-op threads would otherwise spin and steal the cores that decode the next batch.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self._session = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
        except Exception as exc:  # ORT raises its own Fail/RuntimeException types
            raise EngineUnavailableError(f"ONNX Runtime could not create a session: {exc}") from None
        self.providers = list(self._session.get_providers())
        if self.dev.kind == "cuda" and self.providers == ["CPUExecutionProvider"]:
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

    def close(self) -> None:
        self._session = None

    def status(self) -> EngineStatus:
        return EngineStatus(
            detail="providers=" + ",".join(self.providers),
            memory_total_bytes=super().status().memory_total_bytes,
        )
