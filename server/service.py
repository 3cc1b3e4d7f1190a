"""The EmbedService servicer: Embed and EmbedStream share one decode-and-submit pipeline; GetInfo
describes the model and the server's limits."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import Executor
from typing import Any

import grpc

from photodedup import __version__
from photodedup.errors import ShuttingDownError
from photodedup.server.admission import Admission
from photodedup.server.decoding import FairDecoder
from photodedup.server.errors import NotReadyError
from photodedup.server.metrics import Metrics
from photodedup.server.pipeline import Pipeline, Runtime
from photodedup.server.stream import StreamSession
from photodedup.settings import Settings
from photodedup.v1 import embed_pb2, embed_pb2_grpc

log = logging.getLogger(__name__)

# Decodes above this many pixels never take the last decode lane (small images always have one).
LARGE_PIXELS = 4_000_000


class EmbedServicer(embed_pb2_grpc.EmbedServiceServicer):
    def __init__(self, settings: Settings, decode_pool: Executor, metrics: Metrics) -> None:
        self._settings = settings
        self._metrics = metrics
        self.admission = Admission(settings)
        self.decoder = FairDecoder(
            decode_pool, settings.server.decode_threads, settings.server.max_decode_pixels, large_pixels=LARGE_PIXELS
        )
        self._pipeline: Pipeline | None = None
        self._sessions: set[StreamSession] = set()
        self._active = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self.draining = False
        metrics.inflight.set_function(lambda: self.admission.items)

    @property
    def runtime(self) -> Runtime | None:
        return self._pipeline.runtime if self._pipeline is not None else None

    @runtime.setter
    def runtime(self, runtime: Runtime | None) -> None:
        self._pipeline = (
            None if runtime is None else Pipeline(self._settings, runtime, self.decoder, self.admission, self._metrics)
        )

    def _ready(self) -> Pipeline:
        if self._pipeline is None:
            raise NotReadyError("the model is still loading; retry when health reports SERVING")
        return self._pipeline

    def drain(self) -> None:
        """SIGTERM: no stream takes new images (they get UNAVAILABLE), new calls are refused; each stream
        ends as soon as its images in flight are answered."""
        self.draining = True
        for session in list(self._sessions):
            session.drain()

    async def wait_idle(self, timeout: float) -> bool:
        """Wait until no Embed or EmbedStream call is open (at most `timeout`); True when idle."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    @contextlib.contextmanager
    def _call(self) -> Iterator[None]:
        if self.draining:
            raise ShuttingDownError("the server is shutting down")
        self._active += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._active -= 1
            if self._active == 0:
                self._idle.set()

    async def Embed(
        self, request: embed_pb2.EmbedRequest, context: grpc.aio.ServicerContext
    ) -> embed_pb2.EmbedResponse:
        with self._call():
            pipeline = self._ready()
            wire_dtype = pipeline.check_message(len(request.images), request.dtype)
            ticket = pipeline.reserve(context.peer(), request.images)
            try:
                admitted = await pipeline.admit(context.peer(), request.images, all_or_nothing=True)
                futures = [a for a in admitted if isinstance(a, asyncio.Future)]
                try:
                    if futures:
                        await asyncio.wait(futures)
                except asyncio.CancelledError:
                    for fut in futures:
                        fut.cancel()
                    raise
            finally:
                ticket.close()
            outcomes: list[Any] = [_outcome(a) for a in admitted]
            return embed_pb2.EmbedResponse(
                results=[pipeline.result(str(i), o, wire_dtype) for i, o in enumerate(outcomes)],
                model_id=pipeline.model_id,
            )

    async def EmbedStream(
        self, request_iterator: AsyncIterator[embed_pb2.EmbedStreamRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[embed_pb2.EmbedStreamResponse]:
        with self._call():
            pipeline = self._ready()
            session = StreamSession(
                pipeline,
                request_iterator,
                context.peer(),
                limit=self._settings.server.max_inflight_per_stream,
                idle_timeout_s=self._settings.server.stream_idle_timeout_s,
            )
            self._sessions.add(session)
            try:
                async for response in session.responses():
                    yield response
            finally:
                self._sessions.discard(session)

    async def GetInfo(
        self, request: embed_pb2.GetInfoRequest, context: grpc.aio.ServicerContext
    ) -> embed_pb2.GetInfoResponse:
        runtime = self._ready().runtime
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
                max_batch_size=s.server.max_batch_size,
                max_queue_delay_us=int(s.server.max_queue_delay_ms * 1000),
                max_queue_size=s.server.max_queue_size,
            ),
            limits=embed_pb2.LimitsInfo(
                max_message_bytes=s.server.max_message_bytes,
                max_image_pixels=s.imaging.max_image_pixels,
                max_items_per_request=s.server.max_items_per_request,
            ),
            version=__version__,
        )


def _outcome(admitted: Any) -> Any:
    """A finished future's vector or exception; an error that ended the image early stays as it is."""
    if isinstance(admitted, asyncio.Future):
        return admitted.exception() or admitted.result()
    return admitted
