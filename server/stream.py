"""One EmbedStream call as an object: a reader task admits request messages, batcher futures put their
results on a queue, and the response generator writes whatever is ready as one message.

An image counts as in flight from the moment its message is read until its result has been written to
the client. At the limit the reader stops reading, and HTTP/2 flow control pushes back on a client that
keeps writing without reading.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator

import numpy as np

from photodedup.server.errors import InvalidRequestError
from photodedup.server.metrics import Metrics
from photodedup.server.pipeline import Pipeline
from photodedup.v1 import embed_pb2

# (result, whether it counts against the in-flight limit), or None at the end of the stream.
_Entry = tuple[embed_pb2.EmbedResult, bool] | None


class StreamSession:
    """State of one stream: in-flight count, pending handlers and futures, the result queue."""

    def __init__(
        self,
        pipeline: Pipeline,
        requests: AsyncIterator[embed_pb2.EmbedStreamRequest],
        metrics: Metrics,
        limit: int,
    ) -> None:
        self._pipeline = pipeline
        self._requests = requests
        self._metrics = metrics
        self._limit = limit
        self._results: asyncio.Queue[_Entry] = asyncio.Queue()
        self._inflight = 0
        self._closed = False
        self._below_limit = asyncio.Event()
        self._below_limit.set()
        self._handlers: set[asyncio.Task[None]] = set()
        self._futures: set[asyncio.Future[np.ndarray]] = set()

    async def responses(self) -> AsyncIterator[embed_pb2.EmbedStreamResponse]:
        """The response side: everything ready is written as one message, until the reader is done."""
        read_task = asyncio.create_task(self._read())
        try:
            finished = False
            while not finished:
                first = await self._results.get()
                if first is None:
                    break
                batch = [first]
                while not self._results.empty():
                    nxt = self._results.get_nowait()
                    if nxt is None:
                        finished = True
                        break
                    batch.append(nxt)
                yield embed_pb2.EmbedStreamResponse(results=[r for r, _ in batch], model_id=self._pipeline.model_id)
                counted = sum(1 for _, c in batch if c)
                if counted:
                    self._release(counted)
            await read_task  # surfaces reader errors (e.g. an undecodable request message)
        finally:
            self._close(read_task)

    # -- reading ------------------------------------------------------------------------------------

    async def _read(self) -> None:
        try:
            async for message in self._requests:
                n = len(message.items)
                try:
                    wire_dtype = self._pipeline.check_message(n, message.dtype)
                except InvalidRequestError as err:
                    self._refuse(message, err)
                    continue
                while self._inflight >= self._limit:
                    self._below_limit.clear()
                    await self._below_limit.wait()
                self._inflight += n
                self._metrics.inflight.inc(n)
                task = asyncio.create_task(self._handle(message, wire_dtype))
                self._handlers.add(task)
                task.add_done_callback(self._handlers.discard)
            while self._handlers:
                await asyncio.gather(*list(self._handlers))
            while self._futures:
                await asyncio.wait(list(self._futures))
        finally:
            self._results.put_nowait(None)  # the writer must end even when reading failed

    async def _handle(self, message: embed_pb2.EmbedStreamRequest, wire_dtype: int) -> None:
        items = message.items
        admitted = await self._pipeline.admit([item.image for item in items], all_or_nothing=False)
        for item, outcome in zip(items, admitted, strict=True):
            if isinstance(outcome, BaseException):
                self._finish(item.id, outcome, wire_dtype)
                continue
            self._futures.add(outcome)
            outcome.add_done_callback(functools.partial(self._done, rid=item.id, wire_dtype=wire_dtype))

    def _refuse(self, message: embed_pb2.EmbedStreamRequest, err: BaseException) -> None:
        for item in message.items:
            self._results.put_nowait((self._pipeline.result(item.id, err, embed_pb2.DTYPE_FLOAT32), False))

    # -- results ------------------------------------------------------------------------------------

    def _finish(self, rid: str, outcome: object, wire_dtype: int) -> None:
        self._results.put_nowait((self._pipeline.result(rid, outcome, wire_dtype), True))

    def _done(self, fut: asyncio.Future[np.ndarray], rid: str, wire_dtype: int) -> None:
        self._futures.discard(fut)
        if fut.cancelled():
            self._release()  # no result will be written for it
            return
        exc = fut.exception()
        self._finish(rid, exc if exc is not None else fut.result(), wire_dtype)

    def _release(self, n: int = 1) -> None:
        if self._closed:  # the stream is gone; its remaining count was settled at once
            return
        self._inflight -= n
        self._metrics.inflight.dec(n)
        if self._inflight < self._limit:
            self._below_limit.set()

    def _close(self, read_task: asyncio.Task[None]) -> None:
        self._closed = True
        read_task.cancel()
        for task in list(self._handlers):
            task.cancel()
        for fut in list(self._futures):
            fut.cancel()
        if self._inflight:
            self._metrics.inflight.dec(self._inflight)  # images this stream will never answer
