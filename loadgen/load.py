"""The load behind `photodedup bench`: unary or streaming load from one asyncio process, and the
engine-only (`--local`) measurement.

Everything sent is serialised before the clock starts and handed to gRPC as bytes, so the client spends
its CPU on gRPC itself, not on building protobufs: on a small machine the client shares cores with
the server it measures.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from photodedup.v1 import wire

if TYPE_CHECKING:
    from photodedup.loadgen.payload import Payload

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------- recording


@dataclass
class Recorder:
    """What one measured phase saw from the client's side."""

    request_latencies: list[float] = field(default_factory=list)
    image_latencies: list[float] = field(default_factory=list)
    requests: int = 0
    images_ok: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    bytes_sent: int = 0
    images_sent: int = 0
    first_send: float = math.inf
    last_done: float = 0.0
    cpu_seconds: float = math.nan

    @property
    def seconds(self) -> float:
        return max(0.0, self.last_done - self.first_send) if self.requests else 0.0


class Budget:
    """When to stop issuing: after `requests` requests/messages, or once `duration` seconds have passed."""

    def __init__(self, duration: float | None, requests: int | None) -> None:
        self._end = time.perf_counter() + duration if duration is not None else math.inf
        self._left = requests if requests is not None else -1

    def take(self) -> bool:
        if self._left == 0 or time.perf_counter() >= self._end:
            return False
        if self._left > 0:
            self._left -= 1
        return True


# ---------------------------------------------------------------------------------------------- unary


def unary_requests(payload: Payload, batch: int, dtype: int, slots: int) -> list[tuple[bytes, int]]:
    """`slots` different serialised EmbedRequests of `batch` images each, cycling through the payload."""
    from photodedup.v1 import embed_pb2

    n = len(payload.images)
    out = []
    for s in range(slots):
        imgs = [payload.images[(s * batch + j) % n] for j in range(batch)]
        out.append((embed_pb2.EmbedRequest(images=imgs, dtype=dtype).SerializeToString(), batch))
    return out


async def run_unary(
    channels: Sequence[Any],
    requests: Sequence[tuple[bytes, int]],
    concurrency: int,
    budget: Budget,
    rec: Recorder,
    timeout: float,
) -> None:
    """`concurrency` workers, each with one Embed request in flight at a time."""
    import grpc

    from photodedup.v1 import embed_pb2

    calls = [
        ch.unary_unary(wire.EMBED_METHOD, response_deserializer=embed_pb2.EmbedResponse.FromString) for ch in channels
    ]

    async def worker(w: int) -> None:
        call = calls[w % len(calls)]
        i = w
        while budget.take():
            body, n = requests[i % len(requests)]
            i += concurrency
            t0 = time.perf_counter()
            rec.first_send = min(rec.first_send, t0)
            rec.bytes_sent += len(body)
            rec.images_sent += n
            try:
                resp = await call(body, timeout=timeout)
            except grpc.aio.AioRpcError as exc:
                rec.errors[exc.code().name] += n
            else:
                for r in resp.results:
                    if r.WhichOneof("result") == "error":
                        rec.errors[wire.status_name(r.error.code)] += 1
                    else:
                        rec.images_ok += 1
            t1 = time.perf_counter()
            rec.last_done = max(rec.last_done, t1)
            rec.requests += 1
            rec.request_latencies.append(t1 - t0)

    await asyncio.gather(*(worker(w) for w in range(concurrency)))


# ---------------------------------------------------------------------------------------------- streams


def stream_messages(payload: Payload, per_message: int, dtype: int, slots: int, stream: int) -> list[bytes]:
    """One serialised EmbedStreamRequest per in-flight slot; item ids are '<slot>.<j>' so a result names its
    slot, and a slot is re-sent only when all its results are back (ids stay unique among those in flight)."""
    from photodedup.v1 import embed_pb2

    n = len(payload.images)
    out = []
    for s in range(slots):
        base = (stream * 7919 + s * per_message) % n
        items = [embed_pb2.StreamItem(id=f"{s}.{j}", image=payload.images[(base + j) % n]) for j in range(per_message)]
        out.append(embed_pb2.EmbedStreamRequest(items=items, dtype=dtype).SerializeToString())
    return out


async def run_stream(
    channel: Any, messages: Sequence[bytes], per_message: int, budget: Budget, rec: Recorder, timeout: float
) -> None:
    """One EmbedStream keeping len(messages) messages in flight; results may arrive in any order."""
    import grpc

    from photodedup.v1 import embed_pb2

    # No deadline on the call itself: it lasts the whole step. `timeout` bounds each wait for a result.
    call = channel.stream_stream(wire.STREAM_METHOD, response_deserializer=embed_pb2.EmbedStreamResponse.FromString)()
    window = len(messages)
    sent_at = [0.0] * window
    remaining = [0] * window
    free: asyncio.Queue[int] = asyncio.Queue()
    for s in range(window):
        free.put_nowait(s)
    inflight = 0
    writing_done = asyncio.Event()

    async def writer() -> None:
        nonlocal inflight
        try:
            while True:
                slot = await free.get()
                if not budget.take():
                    break
                body = messages[slot]
                t0 = time.perf_counter()
                rec.first_send = min(rec.first_send, t0)
                sent_at[slot] = t0
                remaining[slot] = per_message
                inflight += 1
                rec.bytes_sent += len(body)
                rec.images_sent += per_message
                await call.write(body)
        finally:
            writing_done.set()
            if inflight == 0:
                await call.done_writing()

    async def reader() -> None:
        nonlocal inflight
        image_lat = rec.image_latencies
        while True:
            try:
                resp = await asyncio.wait_for(call.read(), timeout)
            except TimeoutError:
                call.cancel()
                rec.errors["DEADLINE_EXCEEDED"] += max(sum(remaining), 1)
                log.warning("stream: no result for %.1f s; giving up on it", timeout)
                return
            if resp is grpc.aio.EOF:
                return
            now = time.perf_counter()
            for r in resp.results:
                slot = int(r.id.partition(".")[0])
                image_lat.append(now - sent_at[slot])
                if r.WhichOneof("result") == "error":
                    rec.errors[wire.status_name(r.error.code)] += 1
                else:
                    rec.images_ok += 1
                remaining[slot] -= 1
                if remaining[slot] == 0:
                    inflight -= 1
                    rec.requests += 1
                    rec.request_latencies.append(now - sent_at[slot])
                    rec.last_done = max(rec.last_done, now)
                    if writing_done.is_set():
                        if inflight == 0:
                            await call.done_writing()
                    else:
                        free.put_nowait(slot)

    write_task = asyncio.create_task(writer())
    try:
        await reader()
    except grpc.aio.AioRpcError as exc:
        lost = sum(remaining)
        rec.errors[exc.code().name] += max(lost, 1)
        log.warning("stream ended with %s: %s", exc.code().name, exc.details())
    finally:
        write_task.cancel()
        await asyncio.gather(write_task, return_exceptions=True)


async def run_streams(
    channels: Sequence[Any],
    payload: Payload,
    concurrency: int,
    per_message: int,
    streams_per_target: int,
    dtype: int,
    budget: Budget,
    rec: Recorder,
    timeout: float,
) -> None:
    """`concurrency` messages in flight in total, spread over `streams_per_target` streams per server."""
    n_streams = max(1, min(concurrency, len(channels) * streams_per_target))
    tasks = []
    for i in range(n_streams):
        window = concurrency // n_streams + (1 if i < concurrency % n_streams else 0)
        messages = stream_messages(payload, per_message, dtype, window, i)
        tasks.append(run_stream(channels[i % len(channels)], messages, per_message, budget, rec, timeout))
    await asyncio.gather(*tasks)


# ---------------------------------------------------------------------------------------------- engine only


def run_local(engine: Any, arrays: Sequence[np.ndarray], batch: int, budget: Budget, rec: Recorder) -> None:
    """preprocess + infer on the calling thread, one batch at a time: the engine with nothing around it."""
    n = len(arrays)
    i = 0
    while budget.take():
        chunk = [arrays[(i + j) % n] for j in range(batch)]
        i += batch
        t0 = time.perf_counter()
        rec.first_send = min(rec.first_send, t0)
        vectors = engine.infer(engine.preprocess(chunk))
        t1 = time.perf_counter()
        if len(vectors) != batch:
            rec.errors["WRONG_COUNT"] += batch
        else:
            rec.images_ok += batch
        rec.images_sent += batch
        rec.requests += 1
        rec.request_latencies.append(t1 - t0)
        rec.last_done = t1
