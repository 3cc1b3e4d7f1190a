"""The EmbedService servicer: decode on a pool, batch centrally, answer per item."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import Executor
from typing import Any

import grpc
import numpy as np

from photodedup import __version__
from photodedup.engines.base import Engine, ModelInfo
from photodedup.errors import InvalidImageError, QueueFullError
from photodedup.imaging import decode_for_model, raw_for_model
from photodedup.server.batcher import DynamicBatcher
from photodedup.server.errors import InvalidRequestError, NotReadyError, RequestTooLargeError, status_for
from photodedup.server.metrics import Metrics
from photodedup.settings import Settings
from photodedup.v1 import embed_pb2, embed_pb2_grpc

log = logging.getLogger(__name__)

DECODE_CHUNK = 16
_DTYPES: dict[int, tuple[np.dtype, int]] = {
    embed_pb2.DTYPE_UNSPECIFIED: (np.dtype("<f4"), embed_pb2.DTYPE_FLOAT32),
    embed_pb2.DTYPE_FLOAT32: (np.dtype("<f4"), embed_pb2.DTYPE_FLOAT32),
    embed_pb2.DTYPE_FLOAT16: (np.dtype("<f2"), embed_pb2.DTYPE_FLOAT16),
}

Decoded = np.ndarray | BaseException


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


class EmbedServicer(embed_pb2_grpc.EmbedServiceServicer):
    def __init__(self, settings: Settings, decode_pool: Executor, metrics: Metrics) -> None:
        self._settings = settings
        self._pool = decode_pool
        self._metrics = metrics
        self.runtime: Runtime | None = None

    def _ready(self) -> Runtime:
        if self.runtime is None:
            raise NotReadyError("the model is still loading; retry when health reports SERVING")
        return self.runtime

    async def _decode(self, images: Sequence[embed_pb2.Image], size: int) -> list[Decoded]:
        loop = asyncio.get_running_loop()
        start = time.perf_counter()
        chunks = [images[i : i + DECODE_CHUNK] for i in range(0, len(images), DECODE_CHUNK)]
        parts = await asyncio.gather(
            *(
                loop.run_in_executor(self._pool, decode_images, chunk, size, self._settings.max_image_pixels)
                for chunk in chunks
            )
        )
        self._metrics.decode_duration.observe(time.perf_counter() - start)
        return [d for part in parts for d in part]

    def _check_message(self, n: int, dtype: int) -> tuple[np.dtype, int]:
        """The limits every request message must meet; returns the numpy and wire dtype it asks for."""
        if n > self._settings.max_items_per_request:
            raise RequestTooLargeError(
                f"{n} images in one message; the limit is {self._settings.max_items_per_request}"
            )
        if dtype not in _DTYPES:
            raise InvalidRequestError(f"unknown dtype {dtype}")
        return _DTYPES[dtype]

    def _result(self, rid: str, outcome: Any, dtype: np.dtype, wire: int) -> embed_pb2.EmbedResult:
        if isinstance(outcome, BaseException):
            code = status_for(outcome)
            self._metrics.items.labels(code.name).inc()
            return embed_pb2.EmbedResult(id=rid, error=embed_pb2.ItemError(code=code.value[0], message=str(outcome)))
        self._metrics.items.labels("OK").inc()
        vec = np.asarray(outcome, dtype=dtype)
        return embed_pb2.EmbedResult(
            id=rid, embedding=embed_pb2.Embedding(data=vec.tobytes(), dtype=wire, dim=int(vec.shape[0]))
        )

    async def Embed(self, request: embed_pb2.EmbedRequest, context: grpc.aio.ServicerContext) -> embed_pb2.EmbedResponse:
        runtime = self._ready()
        dtype, wire = self._check_message(len(request.images), request.dtype)
        decoded = await self._decode(request.images, runtime.info.preprocessing.input_size)
        good = [i for i, d in enumerate(decoded) if not isinstance(d, BaseException)]
        futures = runtime.batcher.submit([decoded[i] for i in good], all_or_nothing=True)
        outcomes: list[Any] = list(decoded)
        self._metrics.inflight.inc(len(futures))
        try:
            done = await asyncio.gather(*futures, return_exceptions=True)  # type: ignore[arg-type]
        except asyncio.CancelledError:
            for fut in futures:
                if fut is not None:
                    fut.cancel()
            raise
        finally:
            self._metrics.inflight.dec(len(futures))
        for i, res in zip(good, done, strict=True):
            outcomes[i] = res
        return embed_pb2.EmbedResponse(
            results=[self._result(str(i), o, dtype, wire) for i, o in enumerate(outcomes)],
            model_id=runtime.info.model_id,
        )

    async def EmbedStream(
        self, request_iterator: AsyncIterator[embed_pb2.EmbedStreamRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[embed_pb2.EmbedStreamResponse]:
        runtime = self._ready()
        size = runtime.info.preprocessing.input_size
        # (result, counts against the in-flight limit) or None at the end of the stream.
        results: asyncio.Queue[tuple[embed_pb2.EmbedResult, bool] | None] = asyncio.Queue()
        # An image counts as in flight from the moment its message is read until its result has been
        # written to the client. At the limit we stop reading, and HTTP/2 flow control pushes back on a
        # client that keeps writing without reading.
        limit = runtime.batcher.max_queue_size
        inflight = 0
        closed = False
        below_limit = asyncio.Event()
        below_limit.set()

        def release(n: int = 1) -> None:
            nonlocal inflight
            if closed:  # the stream is gone; its remaining count was settled at once
                return
            inflight -= n
            self._metrics.inflight.dec(n)
            if inflight < limit:
                below_limit.set()

        handlers: set[asyncio.Task[None]] = set()
        futures: set[asyncio.Future[np.ndarray]] = set()

        def finish(rid: str, outcome: Any, dtype: np.dtype, wire: int) -> None:
            results.put_nowait((self._result(rid, outcome, dtype, wire), True))

        async def handle(message: embed_pb2.EmbedStreamRequest) -> None:
            dtype, wire = _DTYPES[message.dtype]
            items = message.items
            decoded = await self._decode([item.image for item in items], size)
            good = [i for i, d in enumerate(decoded) if not isinstance(d, BaseException)]
            for i, d in enumerate(decoded):
                if isinstance(d, BaseException):
                    finish(items[i].id, d, dtype, wire)
            try:
                submitted = runtime.batcher.submit([decoded[i] for i in good], all_or_nothing=False)
            except Exception as exc:  # shutting down: every image of this message gets the error
                submitted = [None] * len(good)
                full: BaseException = exc
            else:
                full = QueueFullError("queue full; retry this image later")
            for i, fut in zip(good, submitted, strict=True):
                rid = items[i].id
                if fut is None:
                    finish(rid, full, dtype, wire)
                    continue
                futures.add(fut)

                def done(f: asyncio.Future[np.ndarray], rid: str = rid, dtype: np.dtype = dtype, wire: int = wire) -> None:
                    futures.discard(f)
                    if f.cancelled():
                        release()  # no result will be written for it
                        return
                    exc = f.exception()
                    finish(rid, exc if exc is not None else f.result(), dtype, wire)

                fut.add_done_callback(done)

        def refuse(message: embed_pb2.EmbedStreamRequest, err: BaseException) -> None:
            for item in message.items:
                results.put_nowait((self._result(item.id, err, np.dtype("<f4"), embed_pb2.DTYPE_FLOAT32), False))

        async def reader() -> None:
            nonlocal inflight
            try:
                async for message in request_iterator:
                    n = len(message.items)
                    try:
                        self._check_message(n, message.dtype)
                    except InvalidRequestError as err:
                        refuse(message, err)
                        continue
                    while inflight >= limit:
                        below_limit.clear()
                        await below_limit.wait()
                    inflight += n
                    self._metrics.inflight.inc(n)
                    task = asyncio.create_task(handle(message))
                    handlers.add(task)
                    task.add_done_callback(handlers.discard)
                while handlers:
                    await asyncio.gather(*list(handlers))
                while futures:
                    await asyncio.wait(list(futures))
            finally:
                results.put_nowait(None)  # the writer must end even when reading failed

        read_task = asyncio.create_task(reader())
        try:
            finished = False
            while not finished:
                first = await results.get()
                if first is None:
                    break
                batch = [first]
                while not results.empty():
                    nxt = results.get_nowait()
                    if nxt is None:
                        finished = True
                        break
                    batch.append(nxt)
                yield embed_pb2.EmbedStreamResponse(results=[r for r, _ in batch], model_id=runtime.info.model_id)
                counted = sum(1 for _, c in batch if c)
                if counted:
                    release(counted)
            await read_task  # surfaces reader errors (e.g. an undecodable request message)
        finally:
            closed = True
            read_task.cancel()
            for task in list(handlers):
                task.cancel()
            for fut in list(futures):
                fut.cancel()
            if inflight:
                self._metrics.inflight.dec(inflight)  # images this stream will never answer

    async def GetInfo(self, request: embed_pb2.GetInfoRequest, context: grpc.aio.ServicerContext) -> embed_pb2.GetInfoResponse:
        runtime = self._ready()
        info = runtime.info
        prep = info.preprocessing
        s = self._settings
        engines = []
        for engine in runtime.engines:
            status = engine.status()
            engines.append(
                embed_pb2.EngineInfo(
                    name=engine.name,
                    device=engine.device,
                    precision=engine.precision,
                    detail=status.detail,
                    memory_total_bytes=status.memory_total_bytes,
                    memory_used_bytes=status.memory_used_bytes,
                )
            )
        return embed_pb2.GetInfoResponse(
            model_name=info.model_name,
            weights=info.weights_id,
            model_id=info.model_id,
            embedding_dim=info.embedding_dim,
            input_size=prep.input_size,
            mean=list(prep.mean),
            std=list(prep.std),
            resize_interpolation=prep.interpolation,
            engines=engines,
            batching=embed_pb2.BatchingInfo(
                max_batch_size=s.max_batch_size,
                max_queue_delay_us=int(s.max_queue_delay_ms * 1000),
                max_queue_size=s.max_queue_size,
            ),
            limits=embed_pb2.LimitsInfo(
                max_message_bytes=s.max_message_bytes,
                max_image_pixels=s.max_image_pixels,
                max_items_per_request=s.max_items_per_request,
            ),
            version=__version__,
        )
