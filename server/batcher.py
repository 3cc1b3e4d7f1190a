"""Dynamic batching across requests, one engine instance per device; devices pull their batches.

`scheduling.BatchQueue` decides what each device's next batch is (work pulling: a batch is formed for a
device that can take it, and a batch formed ahead for a busy device is taken over by a device that goes
idle). This module runs those batches: it normalises a batch on its CPU executor (the server gives it
threads of its own, apart from the decode pool) while the device still runs the one before, runs `infer`
on the device's own thread, answers each image's future, and fails exactly the images of a batch whose
engine raised.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from concurrent.futures import Executor, ThreadPoolExecutor

import numpy as np

from photodedup.engines.base import BatchOutput, Engine
from photodedup.errors import PhotodedupError, ShuttingDownError
from photodedup.server.metrics import Metrics
from photodedup.server.scheduling import BatchQueue, HeldBatch, WorkItem

log = logging.getLogger(__name__)

__all__ = ["DynamicBatcher", "EngineError", "WorkItem"]


class EngineError(PhotodedupError):
    """The engine failed on a batch; every image of that batch gets this error."""


class DynamicBatcher:
    """Central bounded queue; one worker per engine/device pulls batches from it."""

    def __init__(
        self,
        engines: Sequence[Engine],
        device_executors: dict[str, ThreadPoolExecutor],
        cpu_pool: Executor,
        metrics: Metrics,
        max_batch_size: int,
        max_queue_delay_s: float,
        max_queue_size: int,
    ) -> None:
        self._engines = list(engines)
        self._executors = device_executors
        self._cpu_pool = cpu_pool
        self._metrics = metrics
        self.queue = BatchQueue(max_batch_size, max_queue_delay_s, max_queue_size)
        self._workers: list[asyncio.Task[None]] = []

    @property
    def max_batch_size(self) -> int:
        return self.queue.max_batch_size

    @property
    def max_queue_delay_s(self) -> float:
        return self.queue.max_queue_delay_s

    @property
    def max_queue_size(self) -> int:
        return self.queue.max_queue_size

    def start(self) -> None:
        for engine in self._engines:
            self._workers.append(asyncio.create_task(self._worker(engine), name=f"batcher-{engine.device}"))

    @property
    def depth(self) -> int:
        return self.queue.depth

    @property
    def live_depth(self) -> int:
        """Images waiting for a device whose callers still wait (the queue-depth gauge; settles when clients
        vanish)."""
        return self.queue.live_depth

    def submit(
        self, arrays: Sequence[np.ndarray], all_or_nothing: bool = True, caller: str = ""
    ) -> list[asyncio.Future[np.ndarray] | None]:
        """Queue `caller`'s images (batches take callers round robin); returns one future each. When the
        queue lacks room: all_or_nothing raises QueueFullError, otherwise the images that do not fit get None."""
        return self.queue.submit(arrays, all_or_nothing, caller)

    async def _worker(self, engine: Engine) -> None:
        loop = asyncio.get_running_loop()
        device = engine.device
        running: asyncio.Task[None] | None = None
        held: HeldBatch | None = None
        try:
            while True:
                held = None
                busy = running if running is not None and not running.done() else None
                held = await self.queue.next_batch(device, busy)
                arrays = [item.array for item in held.items]
                start = time.perf_counter()
                try:
                    prepared = await loop.run_in_executor(self._cpu_pool, engine.preprocess, arrays)
                except Exception as exc:  # a failed preprocess must not leave callers hanging
                    items = self.queue.start(held)
                    if items is not None:
                        log.exception("preprocess failed on %s", device)
                        _fail(items, EngineError(f"preprocessing failed: {exc}"))
                    continue
                self._metrics.preprocess_duration.labels(device).observe(time.perf_counter() - start)
                if running is not None and not running.done():
                    await _first_of(running, held.taken)
                items = self.queue.start(held)
                if items is None:  # an idle device took this batch over while this one was busy
                    continue
                if held.taken_from is not None:
                    self._metrics.rebalanced_batches.labels(device).inc()
                self._observe_queue(items)
                running = asyncio.create_task(self._run(engine, items, prepared))
        except asyncio.CancelledError:
            if held is not None:
                _fail(self.queue.start(held) or [], ShuttingDownError("the server is shutting down"))
            if running is not None:
                running.cancel()
            raise

    def _observe_queue(self, items: Sequence[WorkItem]) -> None:
        now = time.perf_counter()
        for item in items:
            self._metrics.queue_duration.observe(now - item.enqueued)

    async def _run(self, engine: Engine, batch: list[WorkItem], prepared: object) -> None:
        loop = asyncio.get_running_loop()
        device = engine.device
        executor = self._executors[device]
        start = time.perf_counter()
        try:
            output = await loop.run_in_executor(executor, engine.infer, prepared)
            vectors, errors = (output.vectors, output.errors) if isinstance(output, BatchOutput) else (output, {})
            if len(vectors) != len(batch):
                raise RuntimeError(f"engine returned {len(vectors)} vectors for {len(batch)} images")
        except asyncio.CancelledError:
            _fail(batch, ShuttingDownError("the server is shutting down"))
            raise
        except Exception as exc:
            log.exception("inference failed on %s for a batch of %d", device, len(batch))
            _fail(batch, EngineError(f"inference failed on {device}: {exc}"))
            return
        self._metrics.inference_duration.labels(device).observe(time.perf_counter() - start)
        self._metrics.executions.labels(device).inc()
        self._metrics.inference_items.labels(device).inc(len(batch))
        self._metrics.batch_size.labels(device).observe(len(batch))
        for i, (item, vec) in enumerate(zip(batch, vectors, strict=True)):
            if item.future.done():
                continue
            if i in errors:  # this image alone failed on the device (e.g. a JPEG no decoder could read)
                item.future.set_exception(errors[i])
            else:
                item.future.set_result(vec)

    async def close(self) -> None:
        """Stop the workers; anything still queued fails with UNAVAILABLE instead of hanging."""
        self.queue.closed = True
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers.clear()
        _fail(self.queue.drain(), ShuttingDownError("the server is shutting down"))


def _fail(batch: Sequence[WorkItem], exc: Exception) -> None:
    for item in batch:
        if not item.future.done():
            item.future.set_exception(exc)


async def _first_of(running: asyncio.Future[None], taken: asyncio.Event) -> None:
    """Wait until the device's running batch ends or the held batch is taken over, whichever comes first."""
    waiter = asyncio.ensure_future(taken.wait())
    try:
        await asyncio.wait({running, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
