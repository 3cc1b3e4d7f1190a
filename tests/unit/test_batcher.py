"""The dynamic batcher with a scripted engine: batch formation, cancellation, failures, queue bound."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from fakes import FakeEngine, image

from photodedup.errors import QueueFullError, ShuttingDownError
from photodedup.server.batcher import DynamicBatcher, EngineError
from photodedup.server.metrics import Metrics


def make(engines: list[FakeEngine], **kw: Any) -> tuple[DynamicBatcher, list[ThreadPoolExecutor]]:
    executors = {e.device: ThreadPoolExecutor(1, thread_name_prefix=f"device-{e.device}") for e in engines}
    pool = ThreadPoolExecutor(2)
    opts = {"max_batch_size": 4, "max_queue_delay_s": 0.05, "max_queue_size": 100} | kw
    batcher = DynamicBatcher(engines, executors, pool, Metrics(), **opts)
    batcher.start()
    return batcher, [*executors.values(), pool]


async def test_results_match_inputs_and_batches_respect_max_size() -> None:
    engine = FakeEngine()
    batcher, _ = make([engine])
    futures = batcher.submit([image(i) for i in range(10)])
    results = await asyncio.gather(*futures)
    assert [int(r[0]) for r in results] == list(range(10))
    assert max(engine.batches) <= 4 and sum(engine.batches) == 10
    assert engine.threads == {"device-cpu_0"}
    await batcher.close()


async def test_waits_up_to_the_delay_to_fill_a_batch() -> None:
    engine = FakeEngine()
    batcher, _ = make([engine], max_queue_delay_s=0.5)
    first = batcher.submit([image(1)])
    await asyncio.sleep(0.05)
    second = batcher.submit([image(2), image(3)])
    await asyncio.gather(*first, *second)
    assert engine.batches == [3]
    await batcher.close()


async def test_no_delay_means_no_waiting() -> None:
    engine = FakeEngine()
    batcher, _ = make([engine], max_queue_delay_s=0.0)
    await asyncio.gather(*batcher.submit([image(1)]))
    assert engine.batches == [1]
    await batcher.close()


async def test_cancelled_items_are_dropped_before_inference() -> None:
    engine = FakeEngine()
    engine.gate.clear()
    batcher, _ = make([engine], max_batch_size=2, max_queue_delay_s=0.0)
    running = batcher.submit([image(0), image(1)])  # occupies the device
    await asyncio.sleep(0.05)
    waiting = batcher.submit([image(2), image(3), image(4)])
    waiting[0].cancel()
    waiting[1].cancel()
    engine.gate.set()
    await asyncio.gather(*running, waiting[2])
    assert sum(engine.batches) == 3  # 0, 1 and 4; the cancelled 2 and 3 never ran
    await batcher.close()


async def test_engine_failure_fails_exactly_that_batch() -> None:
    engine = FakeEngine(fail_on=1)
    engine.gate.clear()
    batcher, _ = make([engine], max_batch_size=2, max_queue_delay_s=0.0)
    first = batcher.submit([image(0), image(1)])
    await asyncio.sleep(0.05)
    second = batcher.submit([image(2), image(3)])
    engine.gate.set()
    outcome = await asyncio.gather(*first, *second, return_exceptions=True)
    assert all(isinstance(o, EngineError) and "device exploded" in str(o) for o in outcome[:2])
    assert [int(o[0]) for o in outcome[2:]] == [2, 3]
    await batcher.close()


async def test_full_queue_refuses_with_queue_full() -> None:
    engine = FakeEngine()
    engine.gate.clear()
    batcher, _ = make([engine], max_batch_size=1, max_queue_delay_s=0.0, max_queue_size=3)
    held = batcher.submit([image(0)])
    await asyncio.sleep(0.05)  # taken by the worker: the queue is empty again
    queued = batcher.submit([image(1), image(2), image(3)])
    with pytest.raises(QueueFullError):
        batcher.submit([image(4)])
    partial = batcher.submit([image(5)], all_or_nothing=False)
    assert partial == [None]
    engine.gate.set()
    await asyncio.gather(*held, *queued)
    await batcher.close()


async def test_devices_share_one_queue() -> None:
    engines = [FakeEngine("cuda:0"), FakeEngine("cuda:1")]
    for e in engines:
        e.gate.clear()
    batcher, _ = make(engines, max_batch_size=2, max_queue_delay_s=0.0)
    futures = batcher.submit([image(i) for i in range(4)])
    await asyncio.sleep(0.1)
    for e in engines:
        e.gate.set()
    await asyncio.gather(*futures)
    assert engines[0].batches == [2] and engines[1].batches == [2]
    await batcher.close()


async def test_close_fails_queued_items_instead_of_hanging() -> None:
    engine = FakeEngine()
    engine.gate.clear()
    batcher, _ = make([engine], max_batch_size=1, max_queue_delay_s=0.0)
    futures = batcher.submit([image(0), image(1), image(2)])
    await asyncio.sleep(0.05)
    await batcher.close()
    engine.gate.set()
    outcome = await asyncio.gather(*futures, return_exceptions=True)
    assert all(isinstance(o, ShuttingDownError) for o in outcome)
    with pytest.raises(ShuttingDownError):
        batcher.submit([image(3)])


async def test_cancelled_items_give_their_queue_room_back() -> None:
    engine = FakeEngine()
    engine.gate.clear()
    batcher, _ = make([engine], max_batch_size=1, max_queue_delay_s=0.0, max_queue_size=3)
    held = batcher.submit([image(0)])
    await asyncio.sleep(0.05)
    abandoned = batcher.submit([image(1), image(2), image(3)])
    for fut in abandoned:
        fut.cancel()
    fresh = batcher.submit([image(4), image(5)])  # would be QueueFullError if cancelled items kept their room
    engine.gate.set()
    await asyncio.gather(*held, *fresh)
    assert sum(engine.batches) == 3
    await batcher.close()
