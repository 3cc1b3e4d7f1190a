"""PyTorch engine: the open_clip image tower in eager mode, fp32 on CPU, fp16 on CUDA."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from photodedup.engines.base import BaseEngine, EngineStatus
from photodedup.errors import EngineUnavailableError
from photodedup.imaging import l2_normalize, normalize_batch

if TYPE_CHECKING:
    from photodedup.settings import Settings

log = logging.getLogger(__name__)


class TorchEngine(BaseEngine):
    """open_clip visual tower under `torch.inference_mode`."""

    name: ClassVar[str] = "torch"

    def __init__(self, settings: Settings, device: str) -> None:
        super().__init__(settings, device)
        self._model: Any = None
        self._torch: Any = None
        self._mean: Any = None
        self._std: Any = None

    def load(self) -> None:
        try:
            import torch
        except ImportError as exc:
            raise EngineUnavailableError(f"torch is not installed: {exc}") from None
        self._torch = torch
        kind = self.dev.kind
        if kind == "cuda" and not torch.cuda.is_available():
            raise EngineUnavailableError(f"{self.device} requested but torch sees no CUDA device")
        if kind == "cuda" and self.dev.index >= torch.cuda.device_count():
            raise EngineUnavailableError(f"{self.device} requested but only {torch.cuda.device_count()} CUDA devices")
        if kind == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise EngineUnavailableError("mps requested but not available")
        self.precision = self.resolve_precision()
        if self.settings.model.intra_op_threads and kind == "cpu":
            torch.set_num_threads(self.settings.model.intra_op_threads)
        from photodedup.engines.openclip_loader import load_visual

        visual, self.info = load_visual(self.settings, self.precision)
        self._model = visual.to(self.device)
        prep = self.info.preprocessing
        if kind != "cpu":
            shape = (1, 3, 1, 1)
            self._mean = torch.tensor(prep.mean, device=self.device).view(shape) * 255.0
            self._std = torch.tensor(prep.std, device=self.device).view(shape) * 255.0

    def preprocess(self, images: Sequence[np.ndarray]) -> Any:
        """CPU: normalised float32 NCHW. Accelerators get uint8 NHWC (4x fewer bytes to copy) and
        normalise on the device."""
        if self.device == "cpu":
            prep = self.info.preprocessing
            return self._torch.from_numpy(normalize_batch(images, prep.mean, prep.std))
        return self._torch.from_numpy(np.stack(images))

    def infer(self, batch: Any) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            if self.device != "cpu":
                x = batch.to(self.device, non_blocking=True).permute(0, 3, 1, 2).float()
                x = (x - self._mean) / self._std
                batch = x.half() if self.precision == "fp16" else x
            out = self._model(batch)
            return l2_normalize(out.float().cpu().numpy())

    def close(self) -> None:
        self._model = None
        if self._torch is not None and self.device.startswith("cuda"):
            self._torch.cuda.empty_cache()

    def status(self) -> EngineStatus:
        torch = self._torch
        detail = f"torch {torch.__version__}" if torch is not None else ""
        if self.dev.kind == "cuda" and torch is not None:
            return EngineStatus(
                detail=detail,
                memory_total_bytes=torch.cuda.get_device_properties(self.dev.index).total_memory,
                memory_used_bytes=torch.cuda.memory_allocated(self.dev.index),
            )
        return EngineStatus(detail=detail, memory_total_bytes=super().status().memory_total_bytes)
