"""Which device runs which images: batches are pulled by devices, formed only for a device that can take them.

Policy only (no engines, no threads): `DynamicBatcher` asks `BatchQueue.next_batch` for each device's next
batch and runs it. The rules:

- One bounded central queue, served round robin across callers (`fairqueue.FairQueue`: each connection's
  images in order, one image per caller per turn), so a caller with one image is not queued behind another
  caller's thousands; images whose caller went away are skipped.
- A *free* device (nothing running) forms its batch: it waits for the first live image, then collects until
  `max_batch_size` or `max_queue_delay` after that image. Free devices form one batch at a time, in the
  order they became free, so a light load fills one batch instead of splitting into thin ones.
- A *busy* device may form its next batch ahead, so its CPU preprocessing overlaps the device's work, but
  only while no free device is forming: free devices always come first. That batch keeps growing until
  the device is free or the batch is full; it could not start earlier anyway.
- Rebalancing: a batch formed ahead is *held* (not started) until its device is free. A device that
  becomes free and finds the queue empty takes over the oldest held batch of a busy device, so no device
  idles while another holds images it cannot run yet.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from photodedup.errors import QueueFullError, ShuttingDownError
from photodedup.server.fairqueue import FairQueue


@dataclass(slots=True)
class WorkItem:
    array: np.ndarray
    future: asyncio.Future[np.ndarray]
    enqueued: float  # perf_counter when queued, for the queue-duration metric


@dataclass(eq=False)
class HeldBatch:
    """A batch being formed or waiting for its device. Another device may take it over until it starts."""

    device: str
    started: float  # loop time its first image was taken; the queue delay counts from here
    items: list[WorkItem] = field(default_factory=list)
    owner_busy: bool = False  # only a busy device's batch may be taken over
    taken_by: str | None = None  # the device that took this batch over
    taken_from: str | None = None  # the busy device this batch was taken over from
    taken: asyncio.Event = field(default_factory=asyncio.Event)


class BatchQueue:
    """The central queue and the rules that turn it into per-device batches. Used from the event loop only."""

    def __init__(self, max_batch_size: int, max_queue_delay_s: float, max_queue_size: int) -> None:
        self.max_batch_size = max_batch_size
        self.max_queue_delay_s = max_queue_delay_s
        self.max_queue_size = max_queue_size
        self._queue: FairQueue[WorkItem] = FairQueue()
        self._wakeup = asyncio.Event()
        self._held: list[HeldBatch] = []
        self._forming = asyncio.Lock()  # free devices form one batch at a time (FIFO)
        self._free_waiting = 0  # free devices inside next_batch: busy devices do not take images meanwhile
        self.closed = False

    @property
    def depth(self) -> int:
        return len(self._queue)

    @property
    def live_depth(self) -> int:
        """Images waiting for a device whose callers still wait: queued or in a batch not yet started."""
        queued = sum(1 for item in self._queue if not item.future.done())
        return queued + sum(1 for h in self._held for item in h.items if not item.future.done())

    def held(self) -> list[HeldBatch]:
        """Batches formed and not started (for tests and metrics)."""
        return list(self._held)

    def submit(
        self, arrays: Sequence[np.ndarray], all_or_nothing: bool = True, caller: str = ""
    ) -> list[asyncio.Future[np.ndarray] | None]:
        """Queue `caller`'s images; returns one future each. When the queue lacks room: all_or_nothing
        raises QueueFullError, otherwise the images that do not fit get None."""
        if self.closed:
            raise ShuttingDownError("the server is shutting down")
        room = self.max_queue_size - len(self._queue)
        if room < len(arrays):  # items whose callers went away still sit in the deque: drop them first
            self._queue.retain(lambda item: not item.future.done())
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
            self._queue.append(caller, WorkItem(arr, fut, now))
            futures.append(fut)
        if arrays:
            self._wakeup.set()
        return futures

    async def next_batch(self, device: str, busy: asyncio.Future[object] | None) -> HeldBatch:
        """The next batch for `device`, held (registered) until `start` or a takeover.

        `busy` is the device's running batch, or None when the device is free. A busy device gets its
        batch back when the batch is full or the device is free; a free one when the batch is full or the
        queue delay since its first image has passed."""
        held = await self._form_ahead(device, busy) if busy is not None else None
        if held is not None and len(held.items) >= self.max_batch_size:
            return held
        return await self._form_free(device, held)

    def start(self, held: HeldBatch) -> list[WorkItem] | None:
        """The device takes its batch to run now; None when another device took it over meanwhile."""
        if held in self._held:
            self._held.remove(held)
        if held.taken_by is not None:
            return None
        return held.items

    def drain(self) -> list[WorkItem]:
        """Close: every image queued or held, to be failed by the caller."""
        self.closed = True
        items = list(self._queue) + [item for h in self._held if h.taken_by is None for item in h.items]
        self._queue.clear()
        self._held.clear()
        return items

    def _pop_live(self) -> WorkItem | None:
        while self._queue:
            item = self._queue.popleft()
            if not item.future.done():  # cancelled by its caller: drop it
                return item
        return None

    def _hold(self, device: str, owner_busy: bool) -> HeldBatch:
        held = HeldBatch(device, asyncio.get_running_loop().time(), owner_busy=owner_busy)
        self._held.append(held)
        return held

    async def _wait(self, *others: asyncio.Future[object] | None, timeout: float | None = None) -> None:
        """Wait for new images, or one of `others`, or `timeout`."""
        self._wakeup.clear()
        waiter = asyncio.ensure_future(self._wakeup.wait())
        try:
            await asyncio.wait(
                {waiter, *(o for o in others if o is not None)}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            waiter.cancel()

    async def _form_ahead(self, device: str, busy: asyncio.Future[object]) -> HeldBatch | None:
        """While the device is busy: grow a held batch from the queue whenever no free device is forming.
        Returns when the batch is full or the device is free (None if it holds nothing by then)."""
        held: HeldBatch | None = None
        while not busy.done():
            if held is not None and held.taken_by is not None:
                held = None  # a free device took it over: start again
            if held is not None and len(held.items) >= self.max_batch_size:
                return held
            item = self._pop_live() if self._free_waiting == 0 else None
            if item is not None:
                if held is None:
                    held = self._hold(device, owner_busy=True)
                held.items.append(item)
                continue
            taken = asyncio.ensure_future(held.taken.wait()) if held is not None else None
            try:
                await self._wait(busy, taken)
            finally:
                if taken is not None:
                    taken.cancel()
        if held is not None and held.taken_by is None:
            held.owner_busy = False
            return held
        return None

    async def _form_free(self, device: str, held: HeldBatch | None) -> HeldBatch:
        """The device is free: complete `held` (or a new batch) until full or the queue delay has passed."""
        if held is not None:
            held.owner_busy = False
        self._free_waiting += 1
        try:
            async with self._forming:
                if held is None or held.taken_by is not None:
                    held = self._take_over(device) or await self._first(device)
                loop = asyncio.get_running_loop()
                deadline = held.started + self.max_queue_delay_s
                while len(held.items) < self.max_batch_size:
                    item = self._pop_live()
                    if item is not None:
                        held.items.append(item)
                        continue
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    await self._wait(timeout=remaining)
        finally:
            self._free_waiting -= 1
            self._wakeup.set()  # busy devices may form ahead again
        return held

    async def _first(self, device: str) -> HeldBatch:
        """Wait for the first live image and start a batch with it."""
        while True:
            item = self._pop_live()
            if item is not None:
                held = self._hold(device, owner_busy=False)
                held.items.append(item)
                return held
            await self._wait()

    def _take_over(self, device: str) -> HeldBatch | None:
        """When the queue has no live image: move the oldest held batch of a busy device to `device`."""
        if any(not item.future.done() for item in self._queue):
            return None
        candidates = [
            h
            for h in self._held
            if h.owner_busy and h.taken_by is None and any(not item.future.done() for item in h.items)
        ]
        if not candidates:
            return None
        victim = min(candidates, key=lambda h: h.started)
        victim.taken_by = device
        victim.taken.set()
        self._held.remove(victim)
        held = HeldBatch(device, victim.started, items=victim.items, taken_from=victim.device)
        self._held.append(held)
        return held
