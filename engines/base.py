"""The engine interface: one runtime, one device, one model."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from photodedup.imaging import Preprocessing


@dataclass(frozen=True)
class ModelInfo:
    """What a client needs to know to preprocess for, and compare vectors from, a model."""

    model_name: str
    weights_id: str
    embedding_dim: int
    preprocessing: Preprocessing = field(default_factory=Preprocessing)

    @property
    def model_id(self) -> str:
        return f"{self.model_name}@{self.weights_id}"


@runtime_checkable
class Engine(Protocol):
    """load -> warmup -> (preprocess -> infer)* -> close.

    `preprocess` is CPU work and may run on any thread; `infer` runs on the engine's own device thread
    (CUDA contexts stay on one thread). `infer` returns float32 [N, D], L2-normalised.
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
    def describe(self) -> dict[str, Any]: ...


def warmup_images(info: ModelInfo, n: int) -> list[np.ndarray]:
    """Deterministic non-constant images for warm-up and self-checks."""
    size = info.preprocessing.input_size
    rng = np.random.default_rng(n)
    return [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(n)]


def host_memory() -> int:
    """Total RAM in bytes, reported as a CPU engine's device memory; 0 when unknown."""
    import os

    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0
