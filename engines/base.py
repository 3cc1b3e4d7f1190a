"""The engine interface (one runtime, one device, one model) and the parts every engine shares."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from photodedup.errors import EngineUnavailableError
from photodedup.imaging import Preprocessing

if TYPE_CHECKING:
    from photodedup.settings import Settings

log = logging.getLogger(__name__)

DEVICE_KINDS = ("cpu", "cuda", "mps")


@dataclass(frozen=True)
class ModelInfo:
    """What a client needs to know to preprocess for, and compare vectors from, a model."""

    model_name: str
    weights_id: str
    embedding_dim: int
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    # Only a quantised model marks its id: float precisions (fp32/fp16/bf16) are held to parity >= 0.999
    # and share the reference id, so existing indexes stay valid.
    quantization: str = ""

    @property
    def model_id(self) -> str:
        """Vectors compare only between equal ids: `ViT-B-32@<weights>` or `ViT-B-32@<weights>+int8`."""
        base = f"{self.model_name}@{self.weights_id}"
        return f"{base}+{self.quantization}" if self.quantization else base


@dataclass(frozen=True)
class Device:
    """A parsed device string: `cpu`, `cuda:1`, `mps`."""

    kind: str
    index: int = 0

    @classmethod
    def parse(cls, text: str) -> Device:
        kind, _, idx = text.partition(":")
        if kind not in DEVICE_KINDS:
            raise EngineUnavailableError(f"unknown device {text!r}; use cpu, cuda:N or mps")
        try:
            return cls(kind, int(idx) if idx else 0)
        except ValueError:
            raise EngineUnavailableError(f"bad device index in {text!r}") from None

    def __str__(self) -> str:
        return f"cuda:{self.index}" if self.kind == "cuda" else self.kind


@dataclass(frozen=True)
class EngineStatus:
    """What GetInfo and the logs report about one loaded engine."""

    detail: str = ""
    memory_total_bytes: int = 0  # device memory (RAM for CPU); 0 when unknown
    memory_used_bytes: int = 0  # held by this engine; 0 when unknown


@dataclass(frozen=True)
class BatchOutput:
    """What `infer` returns when some images of a batch failed on the device (a JPEG that neither nvJPEG
    nor the CPU could decode): vectors for every row, and an error for each failed row, so one bad file
    fails only itself. Engines return a plain array when every image succeeded."""

    vectors: np.ndarray
    errors: dict[int, Exception]


@runtime_checkable
class Engine(Protocol):
    """load -> warmup -> (preprocess -> infer)* -> close.

    `preprocess` is CPU work and may run on any thread; `infer` runs on the engine's own device thread
    (CUDA contexts stay on one thread). `infer` returns float32 [N, D], L2-normalised (or a BatchOutput
    when some images failed on the device). An engine whose `decodes_jpeg` is true also takes
    `jpeg_route.DeviceJpeg` items in place of pixels and decodes them on its device.
    """

    name: ClassVar[str]
    device: str
    precision: str
    info: ModelInfo

    def load(self) -> None: ...
    def preprocess(self, images: Sequence[np.ndarray]) -> Any: ...
    def infer(self, batch: Any) -> np.ndarray: ...
    def warmup(self, batch_sizes: Sequence[int]) -> None: ...
    def close(self) -> None: ...
    def status(self) -> EngineStatus: ...


class BaseEngine:
    """Device parsing, precision resolution and warm-up, written once for every engine."""

    name: ClassVar[str]
    # Precisions this runtime can run on CPU; anything else falls back to fp32 with one warning.
    cpu_precisions: ClassVar[tuple[str, ...]] = ("fp32",)

    def __init__(self, settings: Settings, device: str) -> None:
        self.settings = settings
        self.device = device
        self.dev = Device.parse(device)
        self.precision = "fp32"
        self.info: ModelInfo

    def resolve_precision(self) -> str:
        """The precision asked for, made concrete for this device: `auto` is fp16 on CUDA, else fp32."""
        want = self.settings.model.precision
        precision = ("fp16" if self.dev.kind == "cuda" else "fp32") if want == "auto" else want
        if self.dev.kind == "cpu" and precision not in self.cpu_precisions:
            log.warning("%s is not supported by the %s engine on CPU; using fp32", precision, self.name)
            precision = "fp32"
        if self.dev.kind != "cpu" and precision == "int8":
            log.warning("int8 is a CPU precision; using fp16 on %s", self.device)
            precision = "fp16"
        return precision

    def warmup(self, batch_sizes: Sequence[int]) -> None:
        for n in batch_sizes:
            self.infer(self.preprocess(warmup_images(self.info, n)))

    def status(self) -> EngineStatus:
        return EngineStatus(memory_total_bytes=host_memory() if self.dev.kind == "cpu" else 0)

    def preprocess(self, images: Sequence[np.ndarray]) -> Any:  # pragma: no cover - engines override
        raise NotImplementedError

    def infer(self, batch: Any) -> np.ndarray:  # pragma: no cover - engines override
        raise NotImplementedError


def warmup_images(info: ModelInfo, n: int) -> list[np.ndarray]:
    """Deterministic non-constant images for warm-up and self-checks."""
    size = info.preprocessing.input_size
    rng = np.random.default_rng(n)
    return [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(n)]


def host_memory() -> int:
    """Total RAM in bytes, reported as a CPU engine's device memory; 0 when unknown."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0
