"""One EmbedStream call as an object: a reader task admits request messages, batcher futures put their
results on a queue, and the response generator writes whatever is ready as one message.

An image counts as in flight from the moment its message is read until its result has been written to
the client. At the per-stream limit the reader stops reading, and HTTP/2 flow control pushes back on a
client that keeps writing without reading. A message that breaks a message-level rule (too many items,
unknown dtype) ends the stream with one status instead of one error per item. After SIGTERM the stream
answers new images with UNAVAILABLE and ends as soon as its images in flight are answered. A stream that
sends nothing for the idle timeout while nothing is in flight ends with UNAVAILABLE (reopen to go on), so a
forgotten or frozen client does not hold a call slot for ever.

Past its first message, a stream is not read while a message the size of its connection's last one would be
refused (server/admission.py `read_refusal`): the bytes wait with the client instead of being read and refused
image by image. A stream that had to wait holds the expected budget while its message arrives (at most
ROOM_CHECK_S), so the streams that wake together on a release are not all read at once.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Sequence

import numpy as np

from photodedup.errors import QueueFullError, ShuttingDownError
from photodedup.server.admission import encoded_size
from photodedup.server.errors import InvalidRequestError, StreamIdleError
from photodedup.server.pipeline import Pipeline, Ticket
from photodedup.v1 import embed_pb2

MAX_ID_BYTES = 256
# Results per response message: bounds its size whatever the client's ids.
MAX_RESULTS_PER_RESPONSE = 1024
# While images are in flight the idle clock is stopped; it is looked at again this often.
IDLE_CHECK_S = 1.0
# A stream waiting for room looks again at every release of budget, and at least this often.
ROOM_CHECK_S = 0.25

# (results, whether they count against the in-flight limit), or None at the end of the stream. A message's
# refused part is one entry: its images are answered as one unit, not one by one.
_Entry = tuple[list[embed_pb2.EmbedResult], bool] | None


class StreamSession:
    """State of one stream: in-flight count and ids, pending handlers and futures, the result queue."""

    def __init__(
        self,
        pipeline: Pipeline,
        requests: AsyncIterator[embed_pb2.EmbedStreamRequest],
        peer: str,
        limit: int,
        idle_timeout_s: float = 0.0,
    ) -> None:
        self._pipeline = pipeline
        self._requests = requests
        self._peer = peer
        self._limit = limit
        self._idle_timeout_s = idle_timeout_s
        self._idle_since = asyncio.get_running_loop().time()
        self._results: asyncio.Queue[_Entry] = asyncio.Queue()
        self._inflight = 0
        self._ids: set[str] = set()
        self._closed = False
        self._draining = False
        self._ended = False
        self._below_limit = asyncio.Event()
        self._below_limit.set()
        self._handlers: set[asyncio.Task[None]] = set()
        self._futures: set[asyncio.Future[np.ndarray]] = set()

    def drain(self) -> None:
        """Take no new images; end once the images in flight are answered."""
        self._draining = True
        self._below_limit.set()  # a reader waiting for room answers UNAVAILABLE instead
        self._end_if_drained()

    async def responses(self) -> AsyncIterator[embed_pb2.EmbedStreamResponse]:
        """The response side: everything ready is written as one message, until the reader is done."""
        read_task = asyncio.create_task(self._read())
        try:
            finished = False
            carried: _Entry = None  # an entry that did not fit the previous response
            while not finished:
                entry = carried if carried is not None else await self._results.get()
                carried = None
                if entry is None:
                    break
                results: list[embed_pb2.EmbedResult] = []
                counted = 0
                while True:
                    part, counts = entry
                    results.extend(part)
                    if counts:  # before the write: the client may reuse an id once it has the answer
                        counted += len(part)
                        self._ids.difference_update(r.id for r in part)
                    if self._results.empty():
                        break
                    entry = self._results.get_nowait()
                    if entry is None:
                        finished = True
                        break
                    if len(results) + len(entry[0]) > MAX_RESULTS_PER_RESPONSE:
                        carried = entry
                        break
                yield embed_pb2.EmbedStreamResponse(results=results, model_id=self._pipeline.model_id)
                self._release(counted)
                self._end_if_drained()
            if not self._draining:
                await read_task  # surfaces reader errors (an oversized or undecodable request message)
        finally:
            self._close(read_task)

    # -- reading ------------------------------------------------------------------------------------

    async def _read(self) -> None:
        try:
            messages = aiter(self._requests)
            first = True
            while (message := await self._next_with_room(messages, first)) is not None:
                first = False
                self._idle_since = asyncio.get_running_loop().time()
                items = message.items
                wire_dtype = self._pipeline.check_message(len(items), message.dtype)  # raises: one status
                if self._draining:
                    self._refuse(items, ShuttingDownError("the server is shutting down"))
                    continue
                accepted = self._check_ids(items, wire_dtype)
                while self._inflight >= self._limit and not self._draining:
                    self._below_limit.clear()
                    await self._below_limit.wait()
                if self._draining:
                    self._refuse(accepted, ShuttingDownError("the server is shutting down"))
                    self._ids.difference_update(item.id for item in accepted)
                    continue
                self._admit(accepted, wire_dtype)
            while self._handlers:
                await asyncio.gather(*list(self._handlers))
            while self._futures:
                await asyncio.wait(list(self._futures))
        finally:
            self._results.put_nowait(None)  # the writer must end even when reading failed

    async def _next_with_room(
        self, messages: AsyncIterator[embed_pb2.EmbedStreamRequest], first: bool
    ) -> embed_pb2.EmbedStreamRequest | None:
        """The next message, read only once the budget has room for one the size of this connection's last
        (the first message is always read: nothing is known of it)."""
        admission = self._pipeline.admission
        if first or admission.read_refusal(self._peer) is None:
            return await self._next(messages)
        while not self._draining and admission.read_refusal(self._peer) is not None:
            await admission.wait_for_release(ROOM_CHECK_S)
        self._idle_since = asyncio.get_running_loop().time()  # the wait was the server's, not the client's
        # Hold the expected budget while the message arrives (a client held back has usually sent it already),
        # and never longer than ROOM_CHECK_S: a client that stops sending must not keep it from others.
        items, nbytes = admission.expected(self._peer)
        admission.take(self._peer, items, nbytes)
        reading = asyncio.ensure_future(self._next(messages))
        try:
            await asyncio.wait({reading}, timeout=ROOM_CHECK_S)
        except BaseException:
            reading.cancel()
            raise
        finally:
            admission.release(self._peer, items, nbytes)
        return await reading

    async def _next(self, messages: AsyncIterator[embed_pb2.EmbedStreamRequest]) -> embed_pb2.EmbedStreamRequest | None:
        """The next request message (None when the client is done), or StreamIdleError once nothing has
        been sent for the idle timeout with nothing in flight."""
        if self._idle_timeout_s <= 0:
            return await anext(messages, None)
        loop = asyncio.get_running_loop()
        reading = asyncio.ensure_future(anext(messages, None))
        try:
            while True:
                if self._inflight:
                    wait = min(self._idle_timeout_s, IDLE_CHECK_S)
                else:
                    wait = self._idle_since + self._idle_timeout_s - loop.time()
                    if wait <= 0:
                        raise StreamIdleError(
                            f"nothing sent for {self._idle_timeout_s:g} s with nothing in flight; "
                            "the stream is closed, open a new one to go on"
                        )
                done, _ = await asyncio.wait({reading}, timeout=wait)
                if done:
                    return reading.result()
        finally:
            if not reading.done():
                reading.cancel()

    def _check_ids(self, items: Sequence[embed_pb2.StreamItem], wire_dtype: int) -> list[embed_pb2.StreamItem]:
        """Ids are required, short, and unique among this stream's images in flight; the others are refused."""
        accepted = []
        for item in items:
            rid = item.id
            if not rid:
                problem = "every item needs an id"
            elif len(rid.encode()) > MAX_ID_BYTES:
                problem = f"ids are at most {MAX_ID_BYTES} bytes"
            elif rid in self._ids:
                problem = "this id is already in flight on this stream"
            else:
                self._ids.add(rid)
                accepted.append(item)
                continue
            self._put(rid[:MAX_ID_BYTES], InvalidRequestError(problem), wire_dtype, counted=False)
        return accepted

    def _admit(self, items: Sequence[embed_pb2.StreamItem], wire_dtype: int) -> None:
        images = [item.image for item in items]
        ticket, n = self._pipeline.reserve_some(self._peer, images)
        self._inflight += len(items)
        self._refuse(items[n:], QueueFullError("server busy; retry this image later"), counted=True)
        if n:
            task = asyncio.create_task(self._handle(items[:n], ticket, wire_dtype))
            self._handlers.add(task)
            task.add_done_callback(self._handlers.discard)

    async def _handle(self, items: Sequence[embed_pb2.StreamItem], ticket: Ticket, wire_dtype: int) -> None:
        try:
            admitted = await self._pipeline.admit(self._peer, [item.image for item in items], all_or_nothing=False)
        except BaseException:
            ticket.close()
            raise
        for item, outcome in zip(items, admitted, strict=True):
            size = encoded_size(item.image)
            if isinstance(outcome, BaseException):
                ticket.release(size)
                self._put(item.id, outcome, wire_dtype)
                continue
            self._futures.add(outcome)
            outcome.add_done_callback(
                functools.partial(self._done, rid=item.id, wire_dtype=wire_dtype, ticket=ticket, size=size)
            )

    def _refuse(self, items: Sequence[embed_pb2.StreamItem], err: BaseException, counted: bool = False) -> None:
        """Answer `items` with one error, as one unit (a message's refused part may be most of it)."""
        results = self._pipeline.refusals([item.id for item in items], err)
        for i in range(0, len(results), MAX_RESULTS_PER_RESPONSE):
            self._results.put_nowait((results[i : i + MAX_RESULTS_PER_RESPONSE], counted))

    # -- results ------------------------------------------------------------------------------------

    def _put(self, rid: str, outcome: object, wire_dtype: int, counted: bool = True) -> None:
        self._results.put_nowait(([self._pipeline.result(rid, outcome, wire_dtype)], counted))

    def _done(self, fut: asyncio.Future[np.ndarray], rid: str, wire_dtype: int, ticket: Ticket, size: int) -> None:
        self._futures.discard(fut)
        ticket.release(size)
        if fut.cancelled():
            self._ids.discard(rid)
            self._release(1)  # no result will be written for it
            return
        exc = fut.exception()
        self._put(rid, exc if exc is not None else fut.result(), wire_dtype)

    def _release(self, n: int) -> None:
        if self._closed or not n:  # a closed stream's remaining count no longer matters
            return
        self._inflight -= n
        if not self._inflight:
            self._idle_since = asyncio.get_running_loop().time()
        if self._inflight < self._limit:
            self._below_limit.set()

    def _end_if_drained(self) -> None:
        if self._draining and self._inflight == 0 and not self._ended:
            self._ended = True
            self._results.put_nowait(None)

    def _close(self, read_task: asyncio.Task[None]) -> None:
        self._closed = True
        read_task.cancel()
        for task in list(self._handlers):
            task.cancel()
        for fut in list(self._futures):
            fut.cancel()
