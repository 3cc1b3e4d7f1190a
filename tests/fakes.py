"""The test doubles every test package shares: one scripted engine and one file-record builder."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from photodedup.client.grouping import FileRecord
from photodedup.engines.base import EngineStatus, ModelInfo


class FakeEngine:
    """An engine whose 'embedding' of an image is its first pixel's red value. It records batch sizes and
    the threads `infer` ran on, holds each batch until `gate` is open, takes `seconds` per batch (a device of
    that speed; sleeping frees the GIL as a device call does), and raises on batch `fail_on`."""

    name: ClassVar[str] = "fake"

    def __init__(self, device: str = "cpu", fail_on: int | None = None, seconds: float = 0.0) -> None:
        self.device = device
        self.precision = "fp32"
        self.info = ModelInfo("fake", "none", 1)
        self.batches: list[int] = []
        self.fail_on = fail_on
        self.seconds = seconds
        self.gate = threading.Event()
        self.gate.set()
        self.threads: set[str] = set()

    def load(self) -> None: ...
    def warmup(self, batch_sizes: Sequence[int]) -> None: ...
    def close(self) -> None: ...
    def status(self) -> EngineStatus:
        return EngineStatus()

    def preprocess(self, images: Sequence[np.ndarray]) -> np.ndarray:
        return np.stack(images)

    def infer(self, batch: np.ndarray) -> np.ndarray:
        self.threads.add(threading.current_thread().name)
        self.gate.wait(10)
        if self.seconds:
            time.sleep(self.seconds)
        self.batches.append(len(batch))
        if self.fail_on is not None and len(self.batches) == self.fail_on:
            raise RuntimeError("device exploded")
        return batch[:, 0, 0, :1].astype(np.float32)


def image(value: int) -> np.ndarray:
    """A 2x2 RGB image whose every pixel is `value`: what FakeEngine turns into the embedding [value]."""
    return np.full((2, 2, 3), value, np.uint8)


def record(path: object, **fields: Any) -> FileRecord:
    """A FileRecord with plain defaults (a photo-sized 640x480 JPEG of 1000 bytes, an MD5 unique to the path,
    zero hashes, no embedding); keyword arguments override any field. Pictures under `icon_side` px join
    only through the strict check, so a record meant to join on hashes alone must be photo-sized."""
    base: dict[str, Any] = {
        "path": str(path),
        "size": 1000,
        "width": 640,
        "height": 480,
        "md5": f"md5-{path}",
        "dhash": 0,
        "phash": 0,
        "embedding": None,
        "exif_time": None,
        "mtime": 0.0,
        "format": "JPEG",
    }
    base.update(fields)
    return FileRecord(**base)
