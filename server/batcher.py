"""Dynamic batching across requests, one engine instance per device.

Each device worker waits for the first queued image, then keeps collecting until it has
`max_batch_size` images or `max_queue_delay` has passed since that first image. Workers share one
central queue, so whichever device is free takes the next batch. While a batch runs on a device, the
worker already forms and preprocesses the next one, so CPU work overlaps device work. A batch formed
while its device is still busy keeps growing until the device is free (or the batch is full): it could
not start earlier anyway, so waiting costs no latency and fills batches under load.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from photodedup.engines.base import Engine
from photodedup.errors import PhotodedupError, QueueFullError, ShuttingDownError
from photodedup.server.metrics import Metrics

log = logging.getLogger(__name__)


class EngineError(PhotodedupError):
    """The engine failed on a batch; every image of that batch gets this error."""


@dataclass(slots=True)
class WorkItem:
    array: np.ndarray
    future: asyncio.Future[np.ndarray]
    enqueued: float


class DynamicBatcher:
    """Central bounded queue feeding one worker per engine/device."""

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
        self.max_batch_size = max_batch_size
        self.max_queue_delay_s = max_queue_delay_s
        self.max_queue_size = max_queue_size
        self._queue: deque[WorkItem] = deque()
        self._wakeup = asyncio.Event()
        self._workers: list[asyncio.Task[None]] = []
        self._closed = False

    def start(self) -> None:
        for engine in self._engines:
            self._workers.append(asyncio.create_task(self._worker(engine), name=f"batcher-{engine.device}"))

    @property
    def depth(self) -> int:
        return len(self._queue)

    @property
    def live_depth(self) -> int:
        """Queued images whose callers still wait (the queue-depth gauge; settles when clients vanish)."""
        return sum(1 for item in self._queue if not item.future.done())

    def submit(
        self, arrays: Sequence[np.ndarray], all_or_nothing: bool = True
    ) -> list[asyncio.Future[np.ndarray] | None]:
        """Queue images; returns one future each. When the queue lacks room: all_or_nothing raises
        QueueFullError, otherwise the images that do not fit get None."""
        if self._closed:
            raise ShuttingDownError("the server is shutting down")
        room = self.max_queue_size - len(self._queue)
        if room < len(arrays):  # items whose callers went away still sit in the deque: drop them first
            self._queue = deque(item for item in self._queue if not item.future.done())
            room = self.max_queue_size - len(self._queue)
        if all_or_nothing and len(arrays) > room:
            raise QueueFullError(f"queue full ({len(self._queue)}/{self.max_queue_size} images waiting); retry later")
        loop = asyncio.get_running_loop()
        now = time.perf_counter()
        futures: list[asyncio.Future[np.ndarray] | None] = []
        for i, arr in enumerate(arrays):
            if i >= room:
                futures.append(None)
                continue
            fut: asyncio.Future[np.ndarray] = loop.create_future()
            self._queue.append(WorkItem(arr, fut, now))
            futures.append(fut)
        if arrays:
            self._wakeup.set()
        return futures

    async def _next_item(self, deadline: float | None) -> WorkItem | None:
        """The next live item, waiting until `deadline` (loop time) at most; None on timeout."""
        loop = asyncio.get_running_loop()
        while True:
            while self._queue:
                item = self._queue.popleft()
                if not item.future.done():  # cancelled by its caller: drop it
                    return item
            self._wakeup.clear()
            if deadline is None:
                await self._wakeup.wait()
                continue
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except TimeoutError:
                return None

    async def _next_item_while(self, busy: asyncio.Task[None]) -> WorkItem | None:
        """The next live item, waiting while `busy` (the device's running batch) is not done; None once it is."""
        while True:
            while self._queue:
                item = self._queue.popleft()
                if not item.future.done():
                    return item
            if busy.done():
                return None
            self._wakeup.clear()
            waiter = asyncio.ensure_future(self._wakeup.wait())
            try:
                await asyncio.wait({waiter, busy}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()

    async def _collect(self, busy: asyncio.Task[None] | None = None) -> list[WorkItem]:
        first = await self._next_item(None)
        assert first is not None
        batch = [first]
        deadline = asyncio.get_running_loop().time() + self.max_queue_delay_s
        while len(batch) < self.max_batch_size:
            # Take what is already queued without waiting, then wait out the delay for more.
            item = await self._next_item(deadline)
            if item is None and busy is not None:
                item = await self._next_item_while(busy)
            if item is None:
                break
            batch.append(item)
        now = time.perf_counter()
        for item in batch:
            self._metrics.queue_duration.observe(now - item.enqueued)
        return batch

    async def _worker(self, engine: Engine) -> None:
        loop = asyncio.get_running_loop()
        device = engine.device
        executor = self._executors[device]
        running: asyncio.Task[None] | None = None
        batch: list[WorkItem] = []
        try:
            while True:
                batch = []
                batch = await self._collect(running)
                arrays = [item.array for item in batch]
                start = time.perf_counter()
                try:
                    prepared = await loop.run_in_executor(self._cpu_pool, engine.preprocess, arrays)
                except Exception as exc:  # a failed preprocess must not leave callers hanging
                    log.exception("preprocess failed on %s", device)
                    _fail(batch, EngineError(f"preprocessing failed: {exc}"))
                    continue
                self._metrics.preprocess_duration.labels(device).observe(time.perf_counter() - start)
                if running is not None:
                    await running
                running = asyncio.create_task(self._run(engine, executor, batch, prepared))
        except asyncio.CancelledError:
            _fail(batch, ShuttingDownError("the server is shutting down"))
            if running is not None:
                running.cancel()
            raise

    async def _run(self, engine: Engine, executor: Executor, batch: list[WorkItem], prepared: object) -> None:
        loop = asyncio.get_running_loop()
        device = engine.device
        start = time.perf_counter()
        try:
            vectors = await loop.run_in_executor(executor, engine.infer, prepared)
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
        for item, vec in zip(batch, vectors, strict=True):
            if not item.future.done():
                item.future.set_result(vec)

    async def close(self) -> None:
        """Stop the workers; anything still queued fails with UNAVAILABLE instead of hanging."""
        self._closed = True
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers.clear()
        pending = list(self._queue)
        self._queue.clear()
        _fail(pending, ShuttingDownError("the server is shutting down"))


def _fail(batch: Sequence[WorkItem], exc: Exception) -> None:
    for item in batch:
        if not item.future.done():
            item.future.set_exception(exc)
