"""ONNX Runtime engine: the cached ONNX export of the image tower, run with TensorRT / CUDA / CPU providers.

On CPU it can serve a dynamically quantised INT8 model (`onnx_int8.py`), but only after that model
passed its self-check against fp32 on this machine; otherwise one log line says why and fp32 serves.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from photodedup.engines.base import BaseEngine, EngineStatus
from photodedup.engines.onnx_export import ensure_onnx
from photodedup.engines.ort_binding import Binding, OrtValueRunner, TorchBindingRunner, choose_binding
from photodedup.engines.ort_providers import choose_providers
from photodedup.engines.selfcheck import ParityResult, check_parity
from photodedup.errors import EngineUnavailableError
from photodedup.imaging import l2_normalize, normalize_batch

if TYPE_CHECKING:
    from photodedup.settings import Settings

log = logging.getLogger(__name__)


class OnnxEngine(BaseEngine):
    """ONNX Runtime session pinned to one device."""

    name: ClassVar[str] = "onnx"
    cpu_precisions: ClassVar[tuple[str, ...]] = ("fp32", "int8")

    def __init__(self, settings: Settings, device: str) -> None:
        super().__init__(settings, device)
        self.providers: list[str] = []
        self.int8_check: ParityResult | None = None  # the self-check that let INT8 serve
        self._session: Any = None
        self._fp32_path: Path | None = None
        self._input = "pixel_values"
        self.binding = Binding.HOST
        self._runner: Any = None  # the I/O-binding runner when the session runs on a GPU

    def load(self) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise EngineUnavailableError(f"onnxruntime is not installed: {exc}") from None
        self.precision = self.resolve_precision()
        providers = choose_providers(
            self.dev,
            self.settings.model.onnx_providers,
            ort.get_available_providers(),
            self.precision,
            self.settings.model.cache_dir / "tensorrt",
        )
        path, self.info = ensure_onnx(self.settings)
        self._fp32_path = path
        if self.dev.kind == "cpu" and self.settings.model.precision in ("int8", "auto"):
            if self.settings.model.onnx_model is None:
                path = self._int8_or(path)
            elif self.settings.model.precision == "int8":
                # A given export is served as it is (the CPU image has no quantiser and no cache to write).
                log.warning("INT8 is made from the export cache, not from --onnx-model; serving fp32")
                self.precision = "fp32"
        self._open(ort, path, providers)

    def _int8_or(self, fp32_path: Path) -> Path:
        """The INT8 model if it passed its self-check (and, for `auto`, pays off here); else `fp32_path`."""
        from photodedup.engines.onnx_int8 import choose_int8, cpu_flags, ensure_int8

        flags = cpu_flags()
        try:
            model = ensure_int8(self.settings, flags=flags)
        except Exception as exc:  # noqa: BLE001 - a quantiser failure costs speed, never the service
            log.warning("INT8 model could not be made (%s); serving fp32", exc)
            self.precision = "fp32"
            return fp32_path
        use, reason = choose_int8(self.settings.model.precision, model, flags)
        (log.info if use or model.check.passed else log.warning)("%s", reason)
        if not use:
            self.precision = "fp32"
            return fp32_path
        self.precision, self.int8_check = "int8", model.check
        self.info = replace(self.info, quantization="int8")
        return model.path

    def _open(self, ort: Any, path: Path, providers: list[Any]) -> None:
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
        if self.dev.kind == "cuda" and self.providers == ["CPUExecutionProvider"]:
            # ORT quietly falls back to CPU when CUDA libraries fail to load (e.g. a CUDA 12 build on CUDA 13).
            raise EngineUnavailableError(
                "ONNX Runtime could not load its CUDA libraries (a CUDA 12 build on a CUDA 13 machine?)"
            )
        if self.precision == "fp16" and "TensorrtExecutionProvider" not in self.providers:
            self.precision = "fp32"
        self._input = self._session.get_inputs()[0].name
        self._bind(ort)

    def _bind(self, ort: Any) -> None:
        """Inputs and outputs on the device when the session runs there (`ort_binding.py`)."""
        torch = _torch_for(self.dev) if self.dev.kind == "cuda" else None
        self.binding = choose_binding(self.dev, self.providers, torch_cuda=torch is not None)
        output = self._session.get_outputs()[0].name
        if self.binding is Binding.TORCH:  # pragma: no cover - needs CUDA
            prep = self.info.preprocessing
            self._runner = TorchBindingRunner(
                torch, self._session, self._input, output, self.dev, self.info.embedding_dim, prep.mean, prep.std
            )
        elif self.binding is Binding.ORTVALUE:  # pragma: no cover - needs CUDA
            self._runner = OrtValueRunner(ort, self._session, self._input, output, "cuda", self.dev.index)
        else:
            self._runner = None

    def preprocess(self, images: Sequence[np.ndarray]) -> Any:
        if self.binding is Binding.TORCH:  # pragma: no cover - needs CUDA: uint8 to the device, normalised there
            return self._runner.stack(list(images))
        prep = self.info.preprocessing
        return normalize_batch(images, prep.mean, prep.std)

    def infer(self, batch: Any) -> np.ndarray:
        if self._runner is not None:  # pragma: no cover - needs CUDA
            return l2_normalize(self._runner(batch))
        (out,) = self._session.run(None, {self._input: batch})
        return l2_normalize(out)

    def verify(self, images: Sequence[np.ndarray]) -> ParityResult | None:
        """When serving INT8, check it against fp32 on these images (a scan's first real thumbnails).

        On failure the engine switches itself to fp32 (and its model id with it) before any vector
        leaves; returns None when there is nothing to check."""
        if self.precision != "int8" or len(images) < 2 or self._fp32_path is None:
            return None
        import onnxruntime as ort

        from photodedup.engines.onnx_int8 import cpu_session, run_session

        batch = self.preprocess(images)
        reference = run_session(cpu_session(self._fp32_path, self.settings.model.intra_op_threads), batch)
        result = check_parity(reference, self._session.run(None, {self._input: batch})[0])
        if not result.passed:
            log.warning("INT8 self-check on %d real images failed (%s); serving fp32", len(images), result.reason)
            self._open(ort, self._fp32_path, ["CPUExecutionProvider"])
            self.precision, self.int8_check = "fp32", None
            self.info = replace(self.info, quantization="")
        return result

    def close(self) -> None:
        self._session = None
        self._runner = None

    def status(self) -> EngineStatus:
        detail = "providers=" + ",".join(self.providers) + f"; io={self.binding.value}"
        if self.int8_check is not None:
            detail += f"; int8 self-check passed: {self.int8_check.summary()}"
        return EngineStatus(
            detail=detail,
            memory_total_bytes=super().status().memory_total_bytes,
        )


def _torch_for(device: Any) -> Any:
    """torch, when it is installed and sees `device` (for I/O binding to its CUDA buffers); else None.
    Only a CUDA session asks, so `--engine onnx` on CPU still never imports torch."""
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        return None
    import torch

    if not torch.cuda.is_available() or device.index >= torch.cuda.device_count():
        return None
    return torch
