"""Decoding request images on the pool, fairly and within a pixel budget.

Each image is first measured from its header (cheap), so its decode cost in pixels is known before any
pixel is decoded. Decode jobs then run on at most `lanes` pool threads: fair queueing across callers
(connections) by cost, so a client with many large images waits behind its own work, not another's; large
decodes never take the last lane, so small images always have one; and the pixels being decoded at
once stay under a budget, which bounds decode memory (an 80 MP PNG costs 80 MP of working memory, not
a multiple of it: see `photodedup.imaging.load_rgb`).
"""

from __future__ import annotations

import asyncio
from collections import deque
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
# What a pool job costs in fair-queueing terms besides its pixels (the hand-off, the header pass), so
# header-only jobs (0 pixels) still count against their caller's share.
JOB_OVERHEAD_PIXELS = 100_000


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


def measure_then_decode(
    images: Sequence[embed_pb2.Image], size: int, max_pixels: int, allowance: int, device_decode: bool = False
) -> tuple[list[Cost], list[Decoded] | None]:
    """A small request in one pool job instead of two (pool thread): measure every image from its header and,
    when together they cost at most `allowance` pixels (what the job holds of the pixel budget), decode them
    straight away. Otherwise the costs alone come back (None for the decodes): nothing past the allowance
    is ever decoded here, and the request takes the measured path."""
    costs = measure_images(images, size, max_pixels, device_decode)
    ok = [i for i, c in enumerate(costs) if not isinstance(c, BaseException)]
    if sum(costs[i] for i in ok) > allowance:  # type: ignore[misc]
        return costs, None
    out: list[Decoded] = [c if isinstance(c, BaseException) else np.empty(0) for c in costs]
    for i, d in zip(ok, decode_images([images[i] for i in ok], size, max_pixels, device_decode), strict=True):
        out[i] = d
    return costs, out


@dataclass(eq=False)
class _Job:
    caller: str
    cost: int  # its claim on its caller's share of the pool
    pixels: int  # what it holds of the pixel budget while it runs
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    future: asyncio.Future[Any] = field(repr=False)
    start_tag: float = 0.0  # start-time fair queueing: the caller's share of the pool used before this job
    finish_tag: float = 0.0  # start_tag plus this job's cost
    seq: int = 0  # arrival order, to break ties


def _order(job: _Job) -> tuple[float, float, int]:
    """Smallest start tag first; among equal starts the cheaper job (a light caller's image goes ahead of
    a flood's chunk that has the same claim), then arrival."""
    return (job.start_tag, job.finish_tag, job.seq)


class FairDecoder:
    """Runs decode jobs on a pool: fair across callers, cost-aware lanes, a pixel budget.
    Used from the event loop only.

    Fairness is start-time fair queueing (SFQ) by cost: each job is tagged with where its caller's use of
    the pool stands (its previous job's finish tag, or the pool's virtual time if the caller was idle), and
    the runnable job with the smallest tag goes next, the cheaper one among equal tags. A caller that
    arrives with one image is therefore served as soon as a lane frees, not after a turn of every busy
    caller, and backlogged callers share the pool equally by cost."""

    def __init__(self, pool: Executor, lanes: int, max_pixels_in_flight: int, large_pixels: int) -> None:
        self._pool = pool
        self.lanes = max(1, lanes)
        self.large_lanes = max(1, self.lanes - 1)
        self.max_pixels_in_flight = max_pixels_in_flight
        self.large_pixels = large_pixels
        self._waiting: dict[str, deque[_Job]] = {}
        self._finish: dict[str, float] = {}  # per caller: finish tag of its last job queued
        self._vtime = 0.0  # start tag of the job dispatched last
        self._seq = 0
        self._running = 0
        self._running_large = 0
        self._pixels = 0

    @property
    def pixels_in_flight(self) -> int:
        return self._pixels

    async def run(self, caller: str, cost: int, fn: Callable[..., Any], *args: Any, pixels: int | None = None) -> Any:
        """Run fn(*args) on the pool when fairness and the budgets allow; returns its result. `cost` is the job's
        pixels, or, when it only finds them out as it runs, an estimate (see `charge`) with `pixels` the most
        it may decode."""
        future = asyncio.get_running_loop().create_future()
        job = _Job(caller, cost, cost if pixels is None else pixels, fn, args, future)
        job.start_tag = max(self._vtime, self._finish.get(caller, 0.0))
        job.finish_tag = self._finish[caller] = job.start_tag + cost + JOB_OVERHEAD_PIXELS
        self._seq += 1
        job.seq = self._seq
        self._waiting.setdefault(caller, deque()).append(job)
        self._dispatch()
        return await job.future

    def charge(self, caller: str, pixels: int) -> None:
        """Add `pixels` to `caller`'s use of the pool: what a job turned out to cost beyond its estimate."""
        if caller in self._finish:
            self._finish[caller] += pixels

    def _runnable(self, job: _Job) -> bool:
        if self._running >= self.lanes:
            return False
        if job.pixels > self.large_pixels and self._running_large >= self.large_lanes:
            return False
        return self._running == 0 or self._pixels + job.pixels <= self.max_pixels_in_flight

    def _dispatch(self) -> None:
        while self._running < self.lanes and self._waiting:
            best: _Job | None = None
            for caller in list(self._waiting):
                queue = self._waiting[caller]
                while queue and queue[0].future.done():  # its caller went away
                    queue.popleft()
                if not queue:
                    del self._waiting[caller]
                    continue
                head = queue[0]
                if self._runnable(head) and (best is None or _order(head) < _order(best)):
                    best = head
            if best is None:
                break
            queue = self._waiting[best.caller]
            queue.popleft()
            if not queue:
                del self._waiting[best.caller]
            self._vtime = max(self._vtime, best.start_tag)
            self._forget_idle()
            self._start(best)

    def _forget_idle(self) -> None:
        """Drop the tags of callers with nothing queued whose use of the pool is behind the virtual time
        (they would start at the virtual time anyway), so the table does not grow with every connection."""
        if len(self._finish) > 2 * len(self._waiting) + 64:
            self._finish = {c: f for c, f in self._finish.items() if c in self._waiting or f > self._vtime}

    def _start(self, job: _Job) -> None:
        large = job.pixels > self.large_pixels
        self._running += 1
        self._running_large += large
        self._pixels += job.pixels
        work = asyncio.get_running_loop().run_in_executor(self._pool, job.fn, *job.args)

        def finished(done: asyncio.Future[Any]) -> None:
            self._running -= 1
            self._running_large -= large
            self._pixels -= job.pixels
            if not job.future.done():
                if done.cancelled():
                    job.future.cancel()
                elif done.exception() is not None:
                    job.future.set_exception(done.exception())  # type: ignore[arg-type]
                else:
                    job.future.set_result(done.result())
            self._dispatch()

        work.add_done_callback(finished)
