"""Work pulling across devices of different speeds (fake engines on CPU): a batch goes to a device that can
take it, an idle device takes over a batch held for a busy one, and per-device metrics show who did what."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fakes import FakeEngine, image

from photodedup.server.batcher import DynamicBatcher
from photodedup.server.metrics import Metrics


def make(engines: list[FakeEngine], **kw: Any) -> tuple[DynamicBatcher, Metrics]:
    metrics = Metrics()
    executors = {e.device: ThreadPoolExecutor(1, thread_name_prefix=f"device-{e.device}") for e in engines}
    opts = {"max_batch_size": 2, "max_queue_delay_s": 0.0, "max_queue_size": 1000} | kw
    batcher = DynamicBatcher(engines, executors, ThreadPoolExecutor(2), metrics, **opts)  # type: ignore[arg-type]
    batcher.start()
    return batcher, metrics


def sample(metrics: Metrics, name: str, device: str) -> float:
    return metrics.registry.get_sample_value(name, {"device": device}) or 0.0


async def test_an_idle_device_takes_over_the_batch_held_for_a_busy_one() -> None:
    fast, slow = FakeEngine("cuda:0"), FakeEngine("cuda:1")
    fast.gate.clear()
    slow.gate.clear()
    batcher, metrics = make([fast, slow])
    futures = batcher.submit([image(i) for i in range(4)])  # one running batch on each device
    await asyncio.sleep(0.05)
    futures += batcher.submit([image(i) for i in range(4, 8)])  # one batch formed ahead for each device
    await asyncio.sleep(0.05)
    assert [len(h.items) for h in batcher.queue.held()] == [2, 2]
    assert batcher.live_depth == 4
    fast.gate.set()  # cuda:1 stays busy on its first batch
    done, pending = await asyncio.wait(futures, timeout=2)
    assert len(done) == 6 and len(pending) == 2  # only the batch running on cuda:1 is left
    assert fast.batches == [2, 2, 2] and slow.batches == []
    assert sample(metrics, "photodedup_rebalanced_batches_total", "cuda:0") == 1
    assert batcher.live_depth == 0
    slow.gate.set()
    await asyncio.gather(*futures)
    assert slow.batches == [2]
    await batcher.close()


async def test_a_slow_device_never_holds_work_a_fast_one_could_run() -> None:
    fast, slow = FakeEngine("cuda:0", seconds=0.002), FakeEngine("cuda:1", seconds=0.5)
    batcher, metrics = make([fast, slow], max_batch_size=4)
    futures = batcher.submit([image(i % 250) for i in range(64)])
    results = await asyncio.gather(*futures)
    assert [int(r[0]) for r in results] == [i % 250 for i in range(64)]
    # The slow device runs the one batch it took first; everything else, including the batch it had
    # formed ahead, ran on the fast device long before that batch ended.
    assert slow.batches == [4] and sum(fast.batches) == 60
    assert sample(metrics, "photodedup_inference_items_total", "cuda:0") == 60
    assert sample(metrics, "photodedup_inference_items_total", "cuda:1") == 4
    assert sample(metrics, "photodedup_executions_total", "cuda:1") == 1
    busy_slow = sample(metrics, "photodedup_inference_duration_seconds_sum", "cuda:1")
    assert busy_slow >= 0.5
    await batcher.close()


async def test_cancelled_images_are_not_taken_over() -> None:
    a, b = FakeEngine("cuda:0"), FakeEngine("cuda:1")
    a.gate.clear()
    b.gate.clear()
    batcher, _ = make([a, b])
    running = batcher.submit([image(i) for i in range(4)])
    await asyncio.sleep(0.05)
    ahead = batcher.submit([image(i) for i in range(4, 8)])
    await asyncio.sleep(0.05)
    for fut in ahead:
        fut.cancel()
    assert batcher.live_depth == 0  # held images whose callers left are not counted as waiting
    a.gate.set()
    b.gate.set()
    await asyncio.gather(*running)
    await asyncio.sleep(0.05)
    assert sum(a.batches) + sum(b.batches) <= 8
    await batcher.close()


async def test_close_fails_batches_held_for_busy_devices() -> None:
    engine = FakeEngine("cuda:0")
    engine.gate.clear()
    batcher, _ = make([engine])
    running = batcher.submit([image(0), image(1)])
    await asyncio.sleep(0.05)
    ahead = batcher.submit([image(2), image(3)])
    await asyncio.sleep(0.05)
    assert len(batcher.queue.held()) == 1
    await batcher.close()
    engine.gate.set()
    outcome = await asyncio.gather(*running, *ahead, return_exceptions=True)
    assert all(isinstance(o, Exception) for o in outcome[2:])


async def _throughput(n_devices: int, items: int) -> float:
    engines = [FakeEngine(f"cuda:{i}", seconds=0.02) for i in range(n_devices)]
    batcher, _ = make(engines, max_batch_size=8, max_queue_delay_s=0.002)
    start = time.perf_counter()
    await asyncio.gather(*batcher.submit([image(i % 250) for i in range(items)]))
    elapsed = time.perf_counter() - start
    await batcher.close()
    return items / elapsed


async def test_four_equal_devices_serve_several_times_one() -> None:
    # A generous bound on a simulation (each batch sleeps 20 ms); benchmarks/bench_scheduling.py records
    # the measured ratio.
    one = await _throughput(1, 320)
    four = await _throughput(4, 320)
    assert four / one >= 2.5, (one, four)
