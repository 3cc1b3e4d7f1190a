"""Admission before work: a request's items and bytes are taken from the server's budgets before a
single image is decoded, so whatever is refused costs neither memory nor CPU.

Budgets: items and encoded bytes in flight server-wide (the queue budget), items in flight per
connection (one client cannot hold the whole queue), and decoded pixels per request. Streams add
their own per-stream limit by not reading further (server/stream.py).

A share of the queue budget is reserved for light callers: a caller (connection) whose images in flight,
the new ones included, stay at or under `light_caller_items` may use the whole budget; a heavy caller only
the shared part. So however many floods fill the queue, a client sending a few images is still admitted,
and the fair queue (server/fairqueue.py) then serves it ahead of their backlog.

Reading is work too: gRPC copies each request message into Python bytes on the event loop (about half the
loop's busy time under a flood of 29 MB requests), so a message that will be refused should not be read.
Its size is not known before it is read, so each connection's last message stands in for its next one
(`read_refusal`): a unary call is refused unread, and a stream is not read further, while a message of
that size would be refused. A connection not seen before is taken to send the largest message a heavy
caller may; when that is refused unread, its next call is read, so a light newcomer pays one retry.
"""

from __future__ import annotations

import asyncio
from collections import Counter, OrderedDict
from dataclasses import dataclass

from photodedup.settings import Settings
from photodedup.v1 import embed_pb2

# Connections whose last message size is remembered; the least recently seen is forgotten first.
REMEMBERED_CONNECTIONS = 10_000


def encoded_size(image: embed_pb2.Image) -> int:
    """Bytes an image brought over the wire (what its queue slot is charged)."""
    kind = image.WhichOneof("data")
    if kind == "encoded":
        return len(image.encoded)
    if kind == "raw":
        return len(image.raw.rgb)
    return 0


@dataclass(frozen=True)
class Refusal:
    """Why a budget said no; `budget` names it for the metrics."""

    budget: str
    message: str


class Admission:
    """Server-wide and per-connection in-flight budgets. Single-threaded: used from the event loop only."""

    def __init__(self, settings: Settings) -> None:
        s = settings.server
        self.max_items = s.max_queue_size
        self.max_bytes = s.max_queue_bytes
        self.max_per_connection = s.max_inflight_per_connection
        self.reserved_items = int(s.max_queue_size * s.reserved_queue_share)
        self.reserved_bytes = int(s.max_queue_bytes * s.reserved_queue_share)
        self.light_items = s.light_caller_items
        self.max_message_items = s.max_items_per_request
        self.items = 0
        self.bytes = 0
        self._per_peer: Counter[str] = Counter()
        self._last: OrderedDict[str, tuple[int, int]] = OrderedDict()  # peer -> its last message (items, bytes)
        self._release_waiters: list[asyncio.Future[None]] = []

    def _limits(self, peer: str, items: int) -> tuple[int, int]:
        """The item and byte budgets open to `peer` with `items` more in flight: all of them for a light
        caller, the shared part for a heavy one."""
        if self._per_peer[peer] + items <= self.light_items:
            return self.max_items, self.max_bytes
        return self.max_items - self.reserved_items, self.max_bytes - self.reserved_bytes

    def refusal(self, peer: str, items: int, nbytes: int) -> Refusal | None:
        """Why `items` images of `nbytes` cannot be admitted now, or None when they can."""
        max_items, max_bytes = self._limits(peer, items)
        reserve = "" if max_items == self.max_items else f", the last {self.reserved_items} kept for light callers"
        if self.items + items > max_items:
            return Refusal(
                "queue_items", f"server busy ({self.items}/{self.max_items} images in flight{reserve}); retry later"
            )
        if self.bytes + nbytes > max_bytes and self.items > 0:
            return Refusal("queue_bytes", f"server busy ({self.bytes >> 20} MiB of images in flight); retry later")
        if self._per_peer[peer] + items > self.max_per_connection:
            return Refusal(
                "connection",
                f"this connection has {self._per_peer[peer]} images in flight; the limit is {self.max_per_connection}",
            )
        return None

    def note_message(self, peer: str, items: int, nbytes: int) -> None:
        """Remember the size of the message just read from `peer` (what its next one is expected to be)."""
        self._last[peer] = (items, nbytes)
        self._last.move_to_end(peer)
        if len(self._last) > REMEMBERED_CONNECTIONS:
            self._last.popitem(last=False)

    def expected(self, peer: str) -> tuple[int, int]:
        """The (items, bytes) `peer`'s next message is taken to bring: its last message's, or, for a connection
        not seen before, the largest message a heavy caller may send. Never more than an idle server admits
        from one connection, so a connection alone is always read."""
        items, nbytes = self._last.get(peer, (self.max_message_items, 0))
        return min(items, self.max_per_connection, self.max_items - self.reserved_items), nbytes

    def read_refusal(self, peer: str) -> Refusal | None:
        """Why a message from `peer` is not worth reading now (one of the expected size would be refused), or
        None. A new connection refused unread has its next message read whatever its size."""
        refusal = self.refusal(peer, *self.expected(peer))
        if refusal is not None and peer not in self._last:
            self.note_message(peer, 0, 0)
        return refusal

    async def wait_for_release(self, timeout: float) -> None:
        """Until some budget is given back (or `timeout` passes): a stream waiting for room looks again."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._release_waiters.append(waiter)
        try:
            await asyncio.wait({waiter}, timeout=timeout)
        finally:
            waiter.cancel()  # a no-op once released; otherwise the next release skips it

    def take(self, peer: str, items: int, nbytes: int) -> None:
        self.items += items
        self.bytes += nbytes
        self._per_peer[peer] += items

    def release(self, peer: str, items: int, nbytes: int) -> None:
        self.items -= items
        self.bytes -= nbytes
        left = self._per_peer[peer] - items
        if left > 0:
            self._per_peer[peer] = left
        else:
            del self._per_peer[peer]
        waiters, self._release_waiters = self._release_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def fits(self, peer: str, sizes: list[int]) -> int:
        """How many of the leading images (by encoded size) fit the budgets now (streams take what fits)."""
        n = 0
        total = 0
        room = self.max_per_connection - self._per_peer[peer]
        for size in sizes:
            max_items, max_bytes = self._limits(peer, n + 1)
            if n >= room or self.items + n + 1 > max_items:
                break
            if self.bytes + total + size > max_bytes and self.items + n > 0:
                break
            n += 1
            total += size
        return n
