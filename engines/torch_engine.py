"""PyTorch engine: the open_clip image tower, fp32 eager on CPU; on CUDA fp16, channels-last, CUDA graphs
per batch-size bucket, pinned uint8 uploads and nvJPEG decode (`torch_cuda.py`; NOT YET RUN ON A GPU)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from photodedup.engines.base import BaseEngine, BatchOutput, EngineStatus
from photodedup.engines.jpeg_route import DeviceJpeg
from photodedup.engines.torch_cuda import (
    BucketedRunner,
    MixedBatch,
    assemble,
    bucket_sizes,
    cuda_graph_capture,
    decode_jpegs,
    split_batch,
)
from photodedup.errors import EngineUnavailableError, InvalidImageError
from photodedup.imaging import decode_for_model, l2_normalize, normalize_batch

if TYPE_CHECKING:
    from photodedup.settings import Settings

log = logging.getLogger(__name__)


class TorchEngine(BaseEngine):
    """open_clip visual tower under `torch.inference_mode`."""

    name: ClassVar[str] = "torch"

    def __init__(self, settings: Settings, device: str) -> None:
        super().__init__(settings, device)
        self.decodes_jpeg = False  # takes DeviceJpeg items and decodes them with nvJPEG
        self._model: Any = None
        self._torch: Any = None
        self._mean: Any = None
        self._std: Any = None
        self._runner: BucketedRunner | None = None
        self._decode_jpeg: Any = None

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
        if kind == "cuda":  # pragma: no cover - needs CUDA
            self._load_cuda(torch)

    def _load_cuda(self, torch: Any) -> None:  # pragma: no cover - needs CUDA
        """Channels-last weights, the bucketed graph runner, nvJPEG when torchvision has it."""
        self._model = self._model.to(memory_format=torch.channels_last)
        if self.settings.model.cuda_graphs:
            size = self.info.preprocessing.input_size
            self._runner = BucketedRunner(
                self._forward,
                bucket_sizes(self.settings.server.max_batch_size),
                lambda b: torch.zeros((b, size, size, 3), dtype=torch.uint8, device=self.device),
            )
        if self.settings.model.gpu_decode:
            try:
                from torchvision.io import decode_jpeg
            except ImportError as exc:
                log.info("JPEG thumbnails decode on the CPU: torchvision is not importable (%s)", exc)
            else:
                self._decode_jpeg = decode_jpeg
                self.decodes_jpeg = True

    def warmup(self, batch_sizes: Sequence[int]) -> None:
        if self._runner is not None:  # pragma: no cover - needs CUDA
            torch = self._torch
            with torch.cuda.device(self.dev.index), torch.inference_mode():
                self._runner.capture(cuda_graph_capture(torch, torch.cuda.graph_pool_handle()))
            log.info("%s: CUDA graphs captured for batch buckets %s", self.device, self._runner.captured)
        super().warmup(batch_sizes)

    def preprocess(self, images: Sequence[np.ndarray | DeviceJpeg]) -> Any:
        """CPU: normalised float32 NCHW. Accelerators get uint8 NHWC (4x fewer bytes to copy; in page-locked
        memory on CUDA) and normalise on the device; JPEGs left for the device travel encoded."""
        if self.device == "cpu":
            prep = self.info.preprocessing
            return self._torch.from_numpy(normalize_batch(images, prep.mean, prep.std))  # type: ignore[arg-type]
        return split_batch(images, self._stack)

    def _stack(self, arrays: list[np.ndarray]) -> Any:
        torch = self._torch
        if self.dev.kind != "cuda":
            return torch.from_numpy(np.stack(arrays))
        out = torch.empty((len(arrays), *arrays[0].shape), dtype=torch.uint8, pin_memory=True)  # pragma: no cover
        np.stack(arrays, out=out.numpy())  # pragma: no cover - needs CUDA
        return out  # pragma: no cover - needs CUDA

    def _forward(self, x: Any) -> Any:
        """uint8 NHWC on the device -> float32 [N, D]; NHWC permuted to NCHW is channels-last already."""
        x = (x.permute(0, 3, 1, 2).float() - self._mean) / self._std
        if self.precision == "fp16":
            x = x.half()
        return self._model(x).float()

    def infer(self, batch: Any) -> np.ndarray | BatchOutput:
        torch = self._torch
        with torch.inference_mode():
            if self.device == "cpu":
                return l2_normalize(self._model(batch).float().cpu().numpy())
            mixed: MixedBatch = batch
            pixels = mixed.pixels.to(self.device, non_blocking=True) if mixed.pixels is not None else None
            decoded, failed = self._decode(mixed.jpegs)
            x = assemble(torch, mixed, pixels, decoded, self.info.preprocessing.input_size)
            runner = self._runner
            if runner is not None and runner.captured and len(x) <= runner.buckets[-1]:
                out = runner(x)  # pragma: no cover - needs CUDA
            else:
                out = self._forward(x)
            vectors = l2_normalize(out.cpu().numpy())
        if failed:
            return BatchOutput(vectors, {mixed.jpeg_rows[i]: exc for i, exc in failed.items()})
        return vectors

    def _decode(self, jpegs: list[bytes]) -> tuple[list[Any], dict[int, Exception]]:
        if not jpegs:
            return [], {}
        torch = self._torch
        size = self.info.preprocessing.input_size
        if self._decode_jpeg is None:  # a DeviceJpeg reached an engine that cannot decode: the CPU does it
            return decode_jpegs(jpegs, _refuse, self._decode_cpu)
        torch.cuda.current_stream(self.dev.index).synchronize()  # pragma: no cover - nvJPEG on H100: vision#9606

        def on_device(datas: list[bytes]) -> list[Any]:  # pragma: no cover - needs CUDA
            tensors = [torch.frombuffer(bytearray(d), dtype=torch.uint8) for d in datas]
            out = self._decode_jpeg(tensors, device=self.device)
            images = [t.permute(1, 2, 0) for t in out]
            if any(tuple(t.shape) != (size, size, 3) for t in images):
                raise InvalidImageError("nvJPEG gave an image of another shape")
            return images

        return decode_jpegs(jpegs, on_device, self._decode_cpu)  # pragma: no cover - needs CUDA

    def _decode_cpu(self, data: bytes) -> Any:
        size = self.info.preprocessing.input_size
        arr = decode_for_model(data, size, self.settings.imaging.max_image_pixels)
        return self._torch.from_numpy(np.ascontiguousarray(arr)).to(self.device)

    def close(self) -> None:
        self._model = None
        self._runner = None
        if self._torch is not None and self.device.startswith("cuda"):
            self._torch.cuda.empty_cache()

    def status(self) -> EngineStatus:
        torch = self._torch
        detail = f"torch {torch.__version__}" if torch is not None else ""
        if self.dev.kind == "cuda" and torch is not None:  # pragma: no cover - needs CUDA
            graphs = f"CUDA graphs for buckets {self._runner.captured}" if self._runner else "eager"
            return EngineStatus(
                detail=f"{detail}; {graphs}; nvJPEG {'on' if self.decodes_jpeg else 'off'}",
                memory_total_bytes=torch.cuda.get_device_properties(self.dev.index).total_memory,
                memory_used_bytes=torch.cuda.memory_allocated(self.dev.index),
            )
        return EngineStatus(detail=detail, memory_total_bytes=super().status().memory_total_bytes)


def _refuse(_datas: list[bytes]) -> list[Any]:
    raise RuntimeError("no device JPEG decoder")
