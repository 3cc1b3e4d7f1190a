"""The fair queue (round robin across callers) and the batcher built on it: a caller with one image is not
queued behind another caller's backlog."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from fakes import FakeEngine, image
from hypothesis import given, settings
from hypothesis import strategies as st

from photodedup.server.batcher import DynamicBatcher
from photodedup.server.fairqueue import FairQueue
from photodedup.server.metrics import Metrics


def drain(queue: FairQueue[Any]) -> list[Any]:
    out = []
    while queue:
        out.append(queue.popleft())
    return out


def test_callers_take_turns_one_item_each() -> None:
    q: FairQueue[str] = FairQueue()
    for i in range(5):
        q.append("heavy", f"h{i}")
    q.append("light", "l0")
    q.append("other", "o0")
    q.append("other", "o1")
    assert len(q) == 8 and q.callers() == 3
    assert drain(q) == ["h0", "l0", "o0", "h1", "o1", "h2", "h3", "h4"]
    assert len(q) == 0 and q.callers() == 0


def test_a_caller_arriving_late_is_served_within_one_turn() -> None:
    q: FairQueue[str] = FairQueue()
    for i in range(100):
        q.append("a", f"a{i}")
        q.append("b", f"b{i}")
    taken = [q.popleft() for _ in range(10)]
    assert taken == [x for i in range(5) for x in (f"a{i}", f"b{i}")]
    q.append("late", "late")
    assert [q.popleft() for _ in range(3)] == ["a5", "b5", "late"]


def test_retain_drops_items_and_keeps_the_turns() -> None:
    q: FairQueue[int] = FairQueue()
    for i in range(6):
        q.append("a" if i % 2 else "b", i)
    q.append("c", 99)
    q.retain(lambda x: x not in (0, 2, 99))  # caller b keeps only 4, caller c has nothing left
    assert len(q) == 4 and q.callers() == 2
    assert sorted(q) == [1, 3, 4, 5]
    assert drain(q) == [4, 1, 3, 5]  # b came first, and still does


def test_popping_an_empty_queue_raises() -> None:
    q: FairQueue[int] = FairQueue()
    try:
        q.popleft()
    except IndexError:
        return
    raise AssertionError("popleft on an empty queue must raise")


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("abcd"), st.booleans()), max_size=80))
def test_each_caller_is_fifo_and_no_caller_falls_more_than_one_turn_behind(ops: list[tuple[str, bool]]) -> None:
    """Appends and pops interleaved: every caller's items come out in order, and while two callers both
    have items queued, neither is served twice before the other is served once."""
    q: FairQueue[tuple[str, int]] = FairQueue()
    sent: dict[str, int] = {}
    got: dict[str, list[int]] = {}
    served_since: dict[str, list[str]] = {}  # per waiting caller: who was served since its last turn
    for caller, pop in ops:
        if pop and q:
            queued = {c for c, _ in q}
            who, n = q.popleft()
            got.setdefault(who, []).append(n)
            for other in queued - {who}:
                served_since.setdefault(other, []).append(who)
                assert len(served_since[other]) == len(set(served_since[other]))  # nobody twice meanwhile
            served_since[who] = []
        else:
            if caller not in {c for c, _ in q}:
                served_since[caller] = []  # joins the rotation now
            q.append(caller, (caller, sent.setdefault(caller, 0)))
            sent[caller] += 1
    for who, n in drain(q):
        got.setdefault(who, []).append(n)
    assert {c: len(v) for c, v in got.items()} == sent
    assert all(v == sorted(v) for v in got.values())


class RecordingEngine(FakeEngine):
    """Records the image values of each batch it runs."""

    def __init__(self) -> None:
        super().__init__()
        self.contents: list[list[int]] = []

    def infer(self, batch: np.ndarray) -> np.ndarray:
        self.contents.append([int(v) for v in batch[:, 0, 0, 0]])
        return super().infer(batch)


async def test_the_batcher_serves_a_light_caller_ahead_of_a_heavy_backlog() -> None:
    engine = RecordingEngine()
    engine.gate.clear()  # the device is busy with the heavy caller's first batch meanwhile
    executors = {engine.device: ThreadPoolExecutor(1, thread_name_prefix="device-cpu")}
    batcher = DynamicBatcher(
        [engine],
        executors,
        ThreadPoolExecutor(2),
        Metrics(),
        max_batch_size=4,
        max_queue_delay_s=0.0,
        max_queue_size=1000,
    )
    batcher.start()
    try:
        heavy = batcher.submit([image(i) for i in range(40)], caller="heavy")
        await asyncio.sleep(0.05)  # the first batch runs (held at the gate), the next is formed ahead
        light = batcher.submit([image(200)], caller="light")
        engine.gate.set()
        await asyncio.gather(*heavy, *light)
        where = next(i for i, batch in enumerate(engine.contents) if 200 in batch)
        assert len(engine.contents) == 11  # 41 images in batches of 4
        assert where <= 2  # first come, first served would have put it in the last batch
        heavy_order = [v for batch in engine.contents for v in batch if v != 200]
        assert heavy_order == list(range(40))  # one caller's images stay in order
    finally:
        engine.gate.set()
        await batcher.close()
