"""The one decode-and-submit path shared by Embed and EmbedStream: check a request message, decode its
images on the pool, hand the good ones to the batcher, and turn outcomes into wire results."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from concurrent.futures import Executor
from typing import Any

import numpy as np

from photodedup.engines.base import Engine, ModelInfo
from photodedup.errors import InvalidImageError, QueueFullError
from photodedup.imaging import decode_for_model, raw_for_model
from photodedup.server.batcher import DynamicBatcher
from photodedup.server.errors import InvalidRequestError, RequestTooLargeError, status_for
from photodedup.server.metrics import Metrics
from photodedup.settings import Settings
from photodedup.v1 import embed_pb2, wire

DECODE_CHUNK = 16

Decoded = np.ndarray | BaseException
# Per image: the error that ends it now, or the future the batcher will resolve.
Admitted = BaseException | asyncio.Future[np.ndarray]


def decode_images(images: Sequence[embed_pb2.Image], size: int, max_pixels: int) -> list[Decoded]:
    """Decode one chunk of images on a pool thread; failures come back as exceptions, per image."""
    out: list[Decoded] = []
    for image in images:
        try:
            kind = image.WhichOneof("data")
            if kind == "encoded":
                out.append(decode_for_model(image.encoded, size, max_pixels))
            elif kind == "raw":
                out.append(raw_for_model(image.raw.rgb, image.raw.width, image.raw.height, size))
            else:
                raise InvalidImageError("image has neither encoded bytes nor raw pixels")
        except InvalidImageError as exc:
            out.append(exc)
        except Exception as exc:  # Pillow raises many types on corrupt data; it is still bad input
            out.append(InvalidImageError(f"cannot decode image: {type(exc).__name__}: {exc}"))
    return out


class Runtime:
    """What the servicer needs once the engines are up; None while loading."""

    def __init__(self, engines: Sequence[Engine], batcher: DynamicBatcher, info: ModelInfo) -> None:
        self.engines = list(engines)
        self.batcher = batcher
        self.info = info


class Pipeline:
    """Request message -> decoded images -> batcher futures -> results, for one running server."""

    def __init__(self, settings: Settings, runtime: Runtime, decode_pool: Executor, metrics: Metrics) -> None:
        self._settings = settings
        self.runtime = runtime
        self._pool = decode_pool
        self._metrics = metrics
        self.model_id = runtime.info.model_id
        self._size = runtime.info.preprocessing.input_size

    def check_message(self, n: int, dtype: int) -> int:
        """The limits every request message must meet; returns the wire dtype of its answers."""
        if n > self._settings.server.max_items_per_request:
            raise RequestTooLargeError(
                f"{n} images in one message; the limit is {self._settings.server.max_items_per_request}"
            )
        try:
            return wire.response_dtype(dtype)
        except ValueError as exc:
            raise InvalidRequestError(str(exc)) from None

    async def decode(self, images: Sequence[embed_pb2.Image]) -> list[Decoded]:
        loop = asyncio.get_running_loop()
        start = time.perf_counter()
        chunks = [images[i : i + DECODE_CHUNK] for i in range(0, len(images), DECODE_CHUNK)]
        max_pixels = self._settings.imaging.max_image_pixels
        parts = await asyncio.gather(
            *(loop.run_in_executor(self._pool, decode_images, chunk, self._size, max_pixels) for chunk in chunks)
        )
        self._metrics.decode_duration.observe(time.perf_counter() - start)
        return [d for part in parts for d in part]

    async def admit(self, images: Sequence[embed_pb2.Image], all_or_nothing: bool) -> list[Admitted]:
        """Decode and submit. all_or_nothing (Embed) raises QueueFullError when the queue lacks room for
        every good image; otherwise (EmbedStream) each image that does not fit gets QueueFullError, and a
        batcher that is shutting down gives every image its error."""
        decoded = await self.decode(images)
        good = [i for i, d in enumerate(decoded) if not isinstance(d, BaseException)]
        out: list[Admitted] = list(decoded)  # type: ignore[arg-type]
        arrays = [decoded[i] for i in good]
        try:
            submitted = self.runtime.batcher.submit(arrays, all_or_nothing=all_or_nothing)  # type: ignore[arg-type]
        except QueueFullError:
            raise
        except Exception as exc:  # shutting down
            if all_or_nothing:
                raise
            for i in good:
                out[i] = exc
            return out
        full = QueueFullError("queue full; retry this image later")
        for i, fut in zip(good, submitted, strict=True):
            out[i] = fut if fut is not None else full
        return out

    def result(self, rid: str, outcome: Any, wire_dtype: int) -> embed_pb2.EmbedResult:
        """One image's outcome (a vector or an exception) as a wire result, counted by status."""
        if isinstance(outcome, BaseException):
            code = status_for(outcome)
            self._metrics.items.labels(code.name).inc()
            return wire.item_error(rid, code, str(outcome))
        self._metrics.items.labels("OK").inc()
        return embed_pb2.EmbedResult(id=rid, embedding=wire.encode_embedding(outcome, wire_dtype))
