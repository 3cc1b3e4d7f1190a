"""Test helpers shared by all test packages: tiny settings, photo-like images, a server thread."""

from __future__ import annotations

import asyncio
import io
import threading
from pathlib import Path
from typing import Any

from PIL import Image

from photodedup.settings import Settings


def tiny_settings(cache_dir: Path, **overrides: Any) -> Settings:
    """A few-layer ViT with random weights: real open_clip code, almost no compute."""
    base: dict[str, Any] = {
        "model_name": "photodedup-tiny",
        "weights": "random",
        "cache_dir": cache_dir,
        "host": "127.0.0.1",
        "port": 0,
        "metrics_port": 0,
        "max_queue_delay_ms": 5.0,
        "grace_period_s": 5.0,
        # `auto` on CPU may pick INT8 by a speed measurement on this machine; tests that want it say so.
        "precision": "fp32",
    }
    base.update(overrides)
    return Settings(**base)


def photo(seed: int, size: tuple[int, int] = (320, 240)) -> Image.Image:
    """A smooth, photo-like RGB image (gradients, discs, sensor noise), different per seed: the generator
    `photodedup bench` uses, so tests and benchmarks see the same kind of picture."""
    from photodedup.testing import synthetic_photo

    return Image.fromarray(synthetic_photo(seed, size))


def encode(img: Image.Image, fmt: str = "JPEG", **kw: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


class ServerThread:
    """A real EmbedServer on its own event loop in a background thread (for sync clients and CLIs)."""

    def __init__(self, settings: Settings) -> None:
        from photodedup.server.app import EmbedServer

        self.server = EmbedServer(settings)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def start(self, load: bool = True) -> ServerThread:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(60)
        if load:
            asyncio.run_coroutine_threadsafe(self.server.load(), self.loop).result(300)
        return self

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    def stop(self, grace: float = 1.0) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(grace), self.loop).result(60)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
