"""Batches formed while the device is busy keep growing until it is free: no added latency, fuller batches."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from fakes import FakeEngine, image

from photodedup.server.batcher import DynamicBatcher
from photodedup.server.metrics import Metrics


def gated() -> FakeEngine:
    """An engine that holds every batch until the test opens its gate."""
    engine = FakeEngine()
    engine.gate.clear()
    return engine


def make(engine: FakeEngine, **kw: float) -> tuple[DynamicBatcher, Metrics]:
    metrics = Metrics()
    opts = {"max_batch_size": 4, "max_queue_delay_s": 0.0, "max_queue_size": 100} | kw
    batcher = DynamicBatcher(
        [engine],  # type: ignore[list-item]
        {"cpu": ThreadPoolExecutor(1)},
        ThreadPoolExecutor(1),
        metrics,
        max_batch_size=int(opts["max_batch_size"]),
        max_queue_delay_s=float(opts["max_queue_delay_s"]),
        max_queue_size=int(opts["max_queue_size"]),
    )
    batcher.start()
    return batcher, metrics


async def test_items_arriving_while_the_device_is_busy_join_one_batch() -> None:
    engine = gated()
    batcher, metrics = make(engine)
    first = batcher.submit([image(0)])
    await asyncio.sleep(0.05)  # batch [0] is on the device, which stays busy
    later = []
    for i in range(1, 4):  # each arrives long after the (zero) queue delay of the one before
        later += batcher.submit([image(i)])
        await asyncio.sleep(0.05)
    engine.gate.set()
    results = await asyncio.gather(*first, *later)
    assert [int(r[0]) for r in results] == [0, 1, 2, 3]
    assert engine.batches == [1, 3]
    assert metrics.registry.get_sample_value("photodedup_executions_total", {"device": "cpu"}) == 2
    await batcher.close()


async def test_a_full_batch_does_not_wait_for_the_device() -> None:
    engine = gated()
    batcher, _ = make(engine, max_batch_size=2)
    futures = batcher.submit([image(0)])
    await asyncio.sleep(0.05)
    futures += batcher.submit([image(1), image(2), image(3), image(4)])
    await asyncio.sleep(0.05)
    engine.gate.set()
    await asyncio.gather(*futures)
    assert engine.batches == [1, 2, 2]
    await batcher.close()


async def test_an_idle_device_still_gets_a_batch_after_the_delay() -> None:
    engine = gated()
    engine.gate.set()
    batcher, _ = make(engine, max_queue_delay_s=0.01)
    await asyncio.gather(*batcher.submit([image(7)]))
    assert engine.batches == [1]
    await batcher.close()
