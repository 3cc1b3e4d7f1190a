"""Decoding request images on the pool, fairly and within a pixel budget.

Each image is first measured from its header (cheap), so its decode cost in pixels is known before any
pixel is decoded. Decode jobs then run on at most `lanes` pool threads: round robin across callers
(connections), so a client with many large images waits behind its own work, not another's; large
decodes never take the last lane, so small images always have one; and the pixels being decoded at
once stay under a budget, which bounds decode memory (an 80 MP PNG costs 80 MP of working memory, not
a multiple of it: see `photodedup.imaging.load_rgb`).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from photodedup.engines.jpeg_route import Decoder, DeviceJpeg, choose_decoder
from photodedup.errors import InvalidImageError
from photodedup.imaging import (
    check_pixels,
    decode_for_model,
    decode_pixels,
    open_image,
    raw_for_model,
    reason,
    thumbnail_jpeg_pixels,
)
from photodedup.v1 import embed_pb2

Decoded = np.ndarray | DeviceJpeg | BaseException
# Decoded pixels of one image, its JPEG bytes left for the engine's GPU to decode, or why it cannot be decoded.
Cost = int | InvalidImageError

MEASURE_CHUNK = 64
DECODE_CHUNK = 16


def measure_images(
    images: Sequence[embed_pb2.Image], size: int, max_pixels: int, device_decode: bool = False
) -> list[Cost]:
    """Header-only pass (pool thread): the decode cost of each image, or its error. With `device_decode`,
    a JPEG thumbnail that the engine's GPU will decode costs the CPU nothing."""
    out: list[Cost] = []
    for image in images:
        try:
            kind = image.WhichOneof("data")
            if kind == "raw":
                out.append(size * size)
            elif (
                kind == "encoded"
                and device_decode
                and choose_decoder(image.encoded, size, True).decoder is Decoder.DEVICE
            ):
                out.append(0)
            elif kind == "encoded":
                fast = thumbnail_jpeg_pixels(image.encoded, size, max_pixels)
                if fast is not None:
                    out.append(fast)
                    continue
                img = open_image(image.encoded, max_pixels)
                try:
                    check_pixels(img, max_pixels)
                    out.append(decode_pixels(img, size))
                finally:
                    img.close()
            else:
                out.append(InvalidImageError("image has neither encoded bytes nor raw pixels"))
        except InvalidImageError as exc:
            out.append(exc)
        except Exception as exc:  # noqa: BLE001 - a header parser's surprise is still bad input
            out.append(InvalidImageError(f"cannot read image: {reason(exc)}"))
    return out


def decode_images(
    images: Sequence[embed_pb2.Image], size: int, max_pixels: int, device_decode: bool = False
) -> list[Decoded]:
    """Decode one chunk of images (pool thread); failures come back as exceptions, per image. With
    `device_decode`, JPEG thumbnails that nvJPEG takes are passed on encoded (`jpeg_route.choose_decoder`)."""
    out: list[Decoded] = []
    for image in images:
        try:
            kind = image.WhichOneof("data")
            if (
                kind == "encoded"
                and device_decode
                and choose_decoder(image.encoded, size, True).decoder is Decoder.DEVICE
            ):
                out.append(DeviceJpeg(image.encoded))
            elif kind == "encoded":
                out.append(decode_for_model(image.encoded, size, max_pixels))
            elif kind == "raw":
                out.append(raw_for_model(image.raw.rgb, image.raw.width, image.raw.height, size))
            else:
                raise InvalidImageError("image has neither encoded bytes nor raw pixels")
        except InvalidImageError as exc:
            out.append(exc)
        except Exception as exc:  # noqa: BLE001 - Pillow raises many types on corrupt data; still bad input
            out.append(InvalidImageError(f"cannot decode image: {reason(exc)}"))
    return out


@dataclass(eq=False)
class _Job:
    caller: str
    cost: int
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    future: asyncio.Future[Any] = field(repr=False)


class FairDecoder:
    """Runs decode jobs on a pool: round robin across callers, cost-aware lanes, a pixel budget.
    Used from the event loop only."""

    def __init__(self, pool: Executor, lanes: int, max_pixels_in_flight: int, large_pixels: int) -> None:
        self._pool = pool
        self.lanes = max(1, lanes)
        self.large_lanes = max(1, self.lanes - 1)
        self.max_pixels_in_flight = max_pixels_in_flight
        self.large_pixels = large_pixels
        self._waiting: OrderedDict[str, deque[_Job]] = OrderedDict()
        self._running = 0
        self._running_large = 0
        self._pixels = 0

    @property
    def pixels_in_flight(self) -> int:
        return self._pixels

    async def run(self, caller: str, cost: int, fn: Callable[..., Any], *args: Any) -> Any:
        """Run fn(*args) on the pool when fairness and the budgets allow; returns its result."""
        job = _Job(caller, cost, fn, args, asyncio.get_running_loop().create_future())
        self._waiting.setdefault(caller, deque()).append(job)
        self._dispatch()
        return await job.future

    def _runnable(self, job: _Job) -> bool:
        if self._running >= self.lanes:
            return False
        if job.cost > self.large_pixels and self._running_large >= self.large_lanes:
            return False
        return self._running == 0 or self._pixels + job.cost <= self.max_pixels_in_flight

    def _dispatch(self) -> None:
        progress = True
        while progress and self._running < self.lanes and self._waiting:
            progress = False
            for caller in list(self._waiting):
                queue = self._waiting[caller]
                while queue and queue[0].future.done():  # its caller went away
                    queue.popleft()
                if not queue:
                    del self._waiting[caller]
                    continue
                if not self._runnable(queue[0]):
                    continue
                job = queue.popleft()
                self._waiting.move_to_end(caller)  # round robin: this caller goes last
                if not queue:
                    del self._waiting[caller]
                self._start(job)
                progress = True
                break

    def _start(self, job: _Job) -> None:
        large = job.cost > self.large_pixels
        self._running += 1
        self._running_large += large
        self._pixels += job.cost
        work = asyncio.get_running_loop().run_in_executor(self._pool, job.fn, *job.args)

        def finished(done: asyncio.Future[Any]) -> None:
            self._running -= 1
            self._running_large -= large
            self._pixels -= job.cost
            if not job.future.done():
                if done.cancelled():
                    job.future.cancel()
                elif done.exception() is not None:
                    job.future.set_exception(done.exception())  # type: ignore[arg-type]
                else:
                    job.future.set_result(done.result())
            self._dispatch()

        work.add_done_callback(finished)
