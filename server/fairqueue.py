"""A queue served round robin across callers, so one caller's backlog never stands in front of another's.

Each caller (a connection's peer address) has its own FIFO; taking an item takes the first item of the
caller whose turn it is, and that caller goes to the back of the rotation. Every image costs the same
to the batcher, so one item per turn is deficit round robin with a quantum of one item: a caller that
arrives with one image behind a caller with thousands is served within one turn of each other caller.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class FairQueue(Generic[T]):
    """Per-caller FIFOs taken one item per caller per turn. Not thread-safe (event loop only)."""

    def __init__(self) -> None:
        self._queues: OrderedDict[str, deque[T]] = OrderedDict()  # rotation order: next turn first
        self._len = 0

    def __len__(self) -> int:
        return self._len

    def __bool__(self) -> bool:
        return self._len > 0

    def __iter__(self) -> Iterator[T]:
        """Every queued item (callers in rotation order, each caller's items in order)."""
        for queue in self._queues.values():
            yield from queue

    def callers(self) -> int:
        """Callers with something queued."""
        return len(self._queues)

    def append(self, caller: str, item: T) -> None:
        """Queue `item` behind `caller`'s own items; a new caller joins the end of the rotation."""
        queue = self._queues.get(caller)
        if queue is None:
            queue = self._queues[caller] = deque()
        queue.append(item)
        self._len += 1

    def popleft(self) -> T:
        """The next item by turn; IndexError when empty."""
        if not self._queues:
            raise IndexError("pop from an empty FairQueue")
        caller, queue = next(iter(self._queues.items()))
        item = queue.popleft()
        self._len -= 1
        if queue:
            self._queues.move_to_end(caller)
        else:
            del self._queues[caller]
        return item

    def retain(self, keep: Callable[[T], bool]) -> None:
        """Drop the items for which `keep` is false (turn order unchanged)."""
        for caller in list(self._queues):
            kept = deque(item for item in self._queues[caller] if keep(item))
            self._len -= len(self._queues[caller]) - len(kept)
            if kept:
                self._queues[caller] = kept
            else:
                del self._queues[caller]

    def clear(self) -> None:
        self._queues.clear()
        self._len = 0
