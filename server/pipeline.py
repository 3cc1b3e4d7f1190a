"""The one admit-decode-submit path shared by Embed and EmbedStream: check a request message, take its
budget before any work, measure and decode its images fairly on the pool, hand the good ones to the
batcher, and turn outcomes into wire results."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from photodedup.engines.base import Engine, ModelInfo
from photodedup.engines.jpeg_route import DeviceJpeg
from photodedup.errors import InvalidImageError, QueueFullError
from photodedup.server.admission import Admission, Refusal, encoded_size
from photodedup.server.batcher import DynamicBatcher
from photodedup.server.decoding import (
    DECODE_CHUNK,
    MEASURE_CHUNK,
    Cost,
    Decoded,
    FairDecoder,
    decode_images,
    measure_images,
    measure_then_decode,
)
from photodedup.server.errors import InvalidRequestError, RequestTooLargeError, status_for
from photodedup.server.metrics import Metrics
from photodedup.settings import Settings
from photodedup.v1 import embed_pb2, wire

# Per image: the error that ends it now, or the future the batcher will resolve.
Admitted = BaseException | asyncio.Future[np.ndarray]


class Runtime:
    """What the servicer needs once the engines are up; None while loading."""

    def __init__(self, engines: Sequence[Engine], batcher: DynamicBatcher, info: ModelInfo) -> None:
        self.engines = list(engines)
        self.batcher = batcher
        self.info = info


class Ticket:
    """The budget one request message holds; given back image by image as their outcomes are known."""

    def __init__(self, admission: Admission, peer: str, sizes: Sequence[int]) -> None:
        self._admission = admission
        self._peer = peer
        self.items = len(sizes)
        self.bytes = sum(sizes)
        admission.take(peer, self.items, self.bytes)

    def release(self, nbytes: int, items: int = 1) -> None:
        items, nbytes = min(items, self.items), min(nbytes, self.bytes)
        self.items -= items
        self.bytes -= nbytes
        self._admission.release(self._peer, items, nbytes)

    def close(self) -> None:
        if self.items or self.bytes:
            self.release(self.bytes, self.items)


class Pipeline:
    """Request message -> budget -> decoded images -> batcher futures -> results, for one running server."""

    def __init__(
        self, settings: Settings, runtime: Runtime, decoder: FairDecoder, admission: Admission, metrics: Metrics
    ) -> None:
        self._settings = settings
        self.runtime = runtime
        self.decoder = decoder
        self.admission = admission
        self._metrics = metrics
        self.model_id = runtime.info.model_id
        self._size = runtime.info.preprocessing.input_size
        # JPEG thumbnails skip the CPU only when every device that may take the batch decodes them itself.
        self._device_decode = bool(runtime.engines) and all(getattr(e, "decodes_jpeg", False) for e in runtime.engines)

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

    def reserve(self, peer: str, images: Sequence[embed_pb2.Image]) -> Ticket:
        """All of a request's budget or QueueFullError, before any work (Embed)."""
        sizes = [encoded_size(image) for image in images]
        self.admission.note_message(peer, len(sizes), sum(sizes))
        refusal = self.admission.refusal(peer, len(sizes), sum(sizes))
        if refusal is not None:
            self._refused(refusal, len(sizes))
            raise QueueFullError(refusal.message)
        return Ticket(self.admission, peer, sizes)

    def reserve_some(self, peer: str, images: Sequence[embed_pb2.Image]) -> tuple[Ticket, int]:
        """Budget for the leading images that fit now (EmbedStream); returns the ticket and how many fit."""
        sizes = [encoded_size(image) for image in images]
        self.admission.note_message(peer, len(sizes), sum(sizes))
        n = self.admission.fits(peer, sizes)
        if n < len(sizes):
            refusal = self.admission.refusal(peer, len(sizes), sum(sizes))
            self._refused(refusal or Refusal("queue_items", ""), len(sizes) - n)
        return Ticket(self.admission, peer, sizes[:n]), n

    def _refused(self, refusal: Refusal, n: int) -> None:
        self._metrics.refused.labels(refusal.budget).inc(n)

    async def decode(self, peer: str, images: Sequence[embed_pb2.Image]) -> list[Decoded]:
        """Measure every image from its header, refuse what breaks the per-request pixel budget, decode the
        rest fairly; one result per image, in order. A request of a few images that together are small is
        measured and decoded in one pool job (one wait for a lane instead of two)."""
        start = time.perf_counter()
        size, max_pixels = self._size, self._settings.imaging.max_image_pixels
        out: list[Decoded] | None = None
        if len(images) <= DECODE_CHUNK:
            estimate = len(images) * size * size  # charged to the caller's share now, corrected once known
            allowance = min(self.decoder.large_pixels, self._settings.server.max_request_pixels)
            costs, out = await self.decoder.run(
                peer,
                estimate,
                measure_then_decode,
                images,
                size,
                max_pixels,
                allowance,
                self._device_decode,
                pixels=allowance,
            )
            spent = sum(c for c in costs if not isinstance(c, BaseException)) if out is not None else 0
            self.decoder.charge(peer, spent - estimate)
        else:
            measured = await asyncio.gather(
                *(
                    self.decoder.run(
                        peer, 0, measure_images, images[i : i + MEASURE_CHUNK], size, max_pixels, self._device_decode
                    )
                    for i in range(0, len(images), MEASURE_CHUNK)
                )
            )
            costs = [c for part in measured for c in part]
        if out is None:
            out = await self._decode_measured(peer, images, costs)
        self._metrics.decode_duration.observe(time.perf_counter() - start)
        if self._device_decode:
            self._metrics.device_decoded.inc(sum(isinstance(d, DeviceJpeg) for d in out))
        return out

    async def _decode_measured(
        self, peer: str, images: Sequence[embed_pb2.Image], costs: Sequence[Cost]
    ) -> list[Decoded]:
        """Decode measured images in fair pool jobs, refusing those past the request's pixel budget."""
        size, max_pixels = self._size, self._settings.imaging.max_image_pixels
        out: list[Decoded | None] = [c if isinstance(c, BaseException) else None for c in costs]
        budget = self._settings.server.max_request_pixels
        jobs: list[tuple[list[int], int]] = []  # (indices, pixels) per pool job
        for i, cost in enumerate(costs):
            if isinstance(cost, BaseException):
                continue
            if cost > budget:
                out[i] = QueueFullError(
                    f"the request's images need more than {self._settings.server.max_request_pixels:,} decoded pixels; "
                    "send large images in smaller requests"
                )
                self._metrics.refused.labels("request_pixels").inc()
                continue
            budget -= cost
            last = jobs[-1] if jobs else None
            if last and len(last[0]) < DECODE_CHUNK and last[1] + cost <= self.decoder.large_pixels:
                last[0].append(i)
                jobs[-1] = (last[0], last[1] + cost)
            else:
                jobs.append(([i], cost))
        parts = await asyncio.gather(
            *(
                self.decoder.run(
                    peer, pixels, decode_images, [images[i] for i in idx], size, max_pixels, self._device_decode
                )
                for idx, pixels in jobs
            )
        )
        for (idx, _), part in zip(jobs, parts, strict=True):
            for i, d in zip(idx, part, strict=True):
                out[i] = d
        return [d if d is not None else InvalidImageError("not decoded") for d in out]

    async def admit(self, peer: str, images: Sequence[embed_pb2.Image], all_or_nothing: bool) -> list[Admitted]:
        """Decode and submit images whose budget is already held. all_or_nothing (Embed) raises when the
        batcher refuses; otherwise (EmbedStream) each image that does not fit gets QueueFullError, and a
        batcher that is shutting down gives every image its error."""
        decoded = await self.decode(peer, images)
        good = [i for i, d in enumerate(decoded) if not isinstance(d, BaseException)]
        out: list[Admitted] = list(decoded)  # type: ignore[arg-type]
        arrays = [decoded[i] for i in good]
        try:
            submitted = self.runtime.batcher.submit(arrays, all_or_nothing=all_or_nothing, caller=peer)  # type: ignore[arg-type]
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

    def refusals(self, ids: Sequence[str], err: BaseException) -> list[embed_pb2.EmbedResult]:
        """The same error for many images as one unit: the error is built and counted once, so refusing the
        part of a message that does not fit costs the event loop little more than its ids."""
        if not ids:
            return []
        code = status_for(err)
        self._metrics.items.labels(code.name).inc(len(ids))
        error = embed_pb2.ItemError(code=wire.code_value(code), message=str(err))
        return [embed_pb2.EmbedResult(id=rid, error=error) for rid in ids]
