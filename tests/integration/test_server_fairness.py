"""Fair service under a flood, against a real server: a share of the queue is kept for light callers, and
batches take callers round robin, so a client with one image is admitted and served ahead of a heavy
caller's backlog."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from photodedup.server.app import EmbedServer
from photodedup.v1 import embed_pb2, embed_pb2_grpc, wire

from helpers import encode, photo, tiny_settings


def own_connection(server: EmbedServer) -> grpc.aio.Channel:
    """A channel with its own TCP connection (so the server sees another caller)."""
    return grpc.aio.insecure_channel(
        f"127.0.0.1:{server.port}", options=[*wire.channel_options(), ("grpc.use_local_subchannel_pool", 1)]
    )


def jpeg(seed: int) -> embed_pb2.Image:
    return embed_pb2.Image(encoded=encode(photo(seed, (96, 72))))


def sample(server: EmbedServer, name: str) -> float:
    return server.metrics.registry.get_sample_value(name, {}) or 0.0


def recording_gate(server: EmbedServer) -> tuple[threading.Event, list[np.ndarray]]:
    """Hold every batch at a gate, and record the vectors each batch produced, in the order batches ran."""
    engine = server._engines[0]
    gate = threading.Event()
    batches: list[np.ndarray] = []
    real = engine.infer

    def infer(batch: Any) -> Any:
        gate.wait(120)
        out = real(batch)
        batches.append(np.asarray(getattr(out, "vectors", out), np.float32))
        return out

    engine.infer = infer  # type: ignore[method-assign]
    return gate, batches


async def reserved_server(model_cache: Path) -> EmbedServer:
    """A started tiny-model server whose queue of 64 keeps a quarter for light callers (4 images or fewer),
    batching by 4 at once: small enough that one heavy caller fills its share."""
    server = EmbedServer(
        tiny_settings(
            model_cache,
            max_queue_size=64,
            reserved_queue_share=0.25,
            light_caller_items=4,
            max_inflight_per_connection=64,
            max_batch_size=4,
            max_queue_delay_ms=0.0,
        )
    )
    await server.start()
    await server.load()
    return server


async def fill_shared_part(server: EmbedServer, channel: grpc.aio.Channel) -> asyncio.Future:
    """A heavy unary call of 48 images on `channel`, returned once it holds the whole shared part of the queue."""
    backlog = asyncio.ensure_future(
        embed_pb2_grpc.EmbedServiceStub(channel).Embed(embed_pb2.EmbedRequest(images=[jpeg(i) for i in range(48)]))
    )
    for _ in range(3000):  # up to a minute on a loaded machine
        if sample(server, "photodedup_inflight_items") == 48:
            break
        await asyncio.sleep(0.02)
    return backlog


async def test_a_light_caller_is_admitted_and_served_ahead_of_a_heavy_backlog(model_cache: Path) -> None:
    server = await reserved_server(model_cache)  # the heavy caller gets 48 of the 64
    gate, batches = recording_gate(server)
    try:
        async with own_connection(server) as heavy_ch, own_connection(server) as light_ch:
            heavy = embed_pb2_grpc.EmbedServiceStub(heavy_ch)
            backlog = asyncio.ensure_future(heavy.Embed(embed_pb2.EmbedRequest(images=[jpeg(i) for i in range(48)])))
            for _ in range(3000):  # up to a minute on a loaded machine: the backlog is decoded and queued
                if sample(server, "photodedup_decode_duration_seconds_count") == 1:
                    break
                await asyncio.sleep(0.02)
            assert sample(server, "photodedup_inflight_items") == 48
            # The heavy caller has the whole shared part: more from it is refused, before any work.
            try:
                await heavy.Embed(embed_pb2.EmbedRequest(images=[jpeg(100 + i) for i in range(8)]), timeout=30)
                raise AssertionError("a heavy caller past the shared part must be refused")
            except grpc.aio.AioRpcError as err:
                assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert "light callers" in (err.details() or "")
            # ...before its request is even read: bytes that are no message at all get the same answer.
            raw = heavy_ch.unary_unary(wire.EMBED_METHOD, request_serializer=lambda b: b)
            try:
                await raw(b"\xff" * 64, timeout=30)
                raise AssertionError("a heavy connection's call must be refused unread")
            except grpc.aio.AioRpcError as err:
                assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, err.code()
            assert sample(server, "photodedup_unread_refusals_total") == 2
            # A connection never read before is taken for a heavy one: its first call is refused unread,
            # its retry is read, and a light caller is then admitted from the reserve...
            light = embed_pb2_grpc.EmbedServiceStub(light_ch)
            try:
                await light.Embed(embed_pb2.EmbedRequest(images=[jpeg(999)]), timeout=30)
                raise AssertionError("a new connection's first call is refused unread while the shared part is full")
            except grpc.aio.AioRpcError as err:
                assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert sample(server, "photodedup_unread_refusals_total") == 3
            light_call = asyncio.ensure_future(light.Embed(embed_pb2.EmbedRequest(images=[jpeg(999)])))
            for _ in range(3000):
                if sample(server, "photodedup_decode_duration_seconds_count") == 2:
                    break
                await asyncio.sleep(0.02)
            assert sample(server, "photodedup_inflight_items") == 49
            gate.set()
            light = await light_call
            heavy_reply = await backlog
        assert light.results[0].WhichOneof("result") == "embedding"
        assert all(r.WhichOneof("result") == "embedding" for r in heavy_reply.results)
        # ...and served ahead of the backlog: its image ran in one of the first three batches (the running
        # one and the one formed ahead were full of the heavy caller's images when it arrived), not the last.
        vector = wire.decode_embedding(light.results[0].embedding)
        where = [i for i, b in enumerate(batches) if np.any(np.all(np.isclose(b, vector, atol=1e-5), axis=1))]
        assert len(batches) == 13 and sum(len(b) for b in batches) == 49
        assert where and where[0] <= 2, where
    finally:
        gate.set()
        await server.stop(0)


async def test_a_stream_is_not_read_while_its_next_message_would_be_refused(model_cache: Path) -> None:
    server = await reserved_server(model_cache)  # the heavy callers share 48 of the 64
    gate, _ = recording_gate(server)
    try:
        async with own_connection(server) as heavy_ch, own_connection(server) as stream_ch:
            backlog = await fill_shared_part(server, heavy_ch)
            answered: dict[str, str] = {}
            everything = asyncio.Event()

            async def requests() -> Any:
                for m in range(2):
                    yield embed_pb2.EmbedStreamRequest(
                        items=[embed_pb2.StreamItem(id=f"{m}.{i}", image=jpeg(200 + 10 * m + i)) for i in range(8)]
                    )
                await everything.wait()

            async def consume() -> None:
                call = embed_pb2_grpc.EmbedServiceStub(stream_ch).EmbedStream(requests(), timeout=120)
                async for response in call:
                    for r in response.results:
                        ok = r.WhichOneof("result") == "embedding"
                        answered[r.id] = "OK" if ok else wire.status_name(r.error.code)
                    if len(answered) == 16:
                        everything.set()

            reader = asyncio.ensure_future(consume())
            # The first message is read: the light part (4) is admitted, the rest refused at once.
            for _ in range(3000):
                if sum(rid.startswith("0.") for rid in answered) == 4:
                    break
                await asyncio.sleep(0.02)
            assert sorted(answered.values()) == ["RESOURCE_EXHAUSTED"] * 4
            # The second message would be refused too, so it is left unread (its images are not refused)...
            admission = server._servicer.admission
            for _ in range(3000):  # the stream waits for a release of budget
                if any(not w.done() for w in admission._release_waiters):
                    break
                await asyncio.sleep(0.02)
            assert any(not w.done() for w in admission._release_waiters)
            assert not any(rid.startswith("1.") for rid in answered)
            assert sample(server, "photodedup_inflight_items") == 52
            # ...and read once the backlog is answered: all of its images are embedded.
            gate.set()
            await backlog
            await reader
        assert [answered[f"1.{i}"] for i in range(8)] == ["OK"] * 8
        assert sorted(answered[f"0.{i}"] for i in range(8)) == ["OK"] * 4 + ["RESOURCE_EXHAUSTED"] * 4
    finally:
        gate.set()
        await server.stop(0)


async def test_a_held_back_stream_that_then_sends_nothing_keeps_no_budget(model_cache: Path) -> None:
    server = await reserved_server(model_cache)
    gate, _ = recording_gate(server)
    try:
        async with own_connection(server) as heavy_ch, own_connection(server) as stream_ch:
            backlog = await fill_shared_part(server, heavy_ch)
            quiet = asyncio.Event()

            async def requests() -> Any:
                yield embed_pb2.EmbedStreamRequest(
                    items=[embed_pb2.StreamItem(id=str(i), image=jpeg(300 + i)) for i in range(8)]
                )
                await quiet.wait()  # then nothing more, with the stream left open

            call = embed_pb2_grpc.EmbedServiceStub(stream_ch).EmbedStream(requests(), timeout=120)
            answers = 0
            while answers < 4:  # the part that did not fit is refused; the stream now waits for room
                answers += len((await call.read()).results)
            admission = server._servicer.admission
            for _ in range(3000):
                if any(not w.done() for w in admission._release_waiters):
                    break
                await asyncio.sleep(0.02)
            gate.set()
            await backlog
            while answers < 8:
                answers += len((await call.read()).results)
            # Room came back, the stream took its expected budget to read, and its client sent nothing: the
            # budget is given back at once, not when the stream ends.
            for _ in range(3000):
                if sample(server, "photodedup_inflight_items") == 0:
                    break
                await asyncio.sleep(0.02)
            assert sample(server, "photodedup_inflight_items") == 0
            assert not call.done()
            quiet.set()
            call.cancel()
    finally:
        gate.set()
        await server.stop(0)


async def test_the_part_of_a_stream_message_that_does_not_fit_is_refused_as_one_unit(model_cache: Path) -> None:
    server = await reserved_server(model_cache)  # the heavy callers share 48 of the 64; light callers hold 4
    gate, _ = recording_gate(server)
    pipeline = server._servicer._pipeline
    assert pipeline is not None
    one_by_one: list[str] = []
    real_result = pipeline.result

    def result(rid: str, outcome: Any, wire_dtype: int) -> embed_pb2.EmbedResult:
        one_by_one.append(rid)
        return real_result(rid, outcome, wire_dtype)

    pipeline.result = result  # type: ignore[method-assign]
    try:
        async with own_connection(server) as heavy_ch, own_connection(server) as stream_ch:
            backlog = await fill_shared_part(server, heavy_ch)
            message = embed_pb2.EmbedStreamRequest(
                items=[embed_pb2.StreamItem(id=f"s{i}", image=jpeg(400 + i)) for i in range(40)]
            )
            call = embed_pb2_grpc.EmbedServiceStub(stream_ch).EmbedStream(iter([message]), timeout=120)
            first = await call.read()  # the refused part, written before any image of the message is decoded
            gate.set()
            rest: list[embed_pb2.EmbedResult] = []
            while (response := await call.read()) is not grpc.aio.EOF:
                rest.extend(response.results)
            await backlog
        refused = [r.id for r in first.results if r.WhichOneof("result") == "error"]
        assert len(refused) == len(first.results) == 36
        assert {r.error.code for r in first.results} == {wire.code_value(grpc.StatusCode.RESOURCE_EXHAUSTED)}
        assert sorted(r.id for r in rest) == sorted({f"s{i}" for i in range(40)} - set(refused))
        assert all(r.WhichOneof("result") == "embedding" for r in rest)
        # The 36 refusals were built as one unit: only the 4 embedded images went through the per-image path.
        assert sorted(rid for rid in one_by_one if rid.startswith("s")) == sorted(r.id for r in rest)
        labels = {"status": "RESOURCE_EXHAUSTED"}
        assert server.metrics.registry.get_sample_value("photodedup_items_total", labels) == 36
    finally:
        gate.set()
        await server.stop(0)


async def test_a_small_request_takes_one_pool_job_and_a_large_image_is_still_measured_first(
    model_cache: Path,
) -> None:
    server = EmbedServer(tiny_settings(model_cache))
    await server.start()
    await server.load()
    decoder = server._servicer.decoder
    jobs: list[tuple[str, int]] = []  # (what the job ran, pixels it held of the budget)
    real_start = decoder._start

    def start(job: Any) -> None:
        jobs.append((job.fn.__name__, job.pixels))
        real_start(job)

    decoder._start = start  # type: ignore[method-assign]
    try:
        async with own_connection(server) as channel:
            stub = embed_pb2_grpc.EmbedServiceStub(channel)
            small = await stub.Embed(embed_pb2.EmbedRequest(images=[jpeg(i) for i in range(3)]), timeout=60)
            assert all(r.WhichOneof("result") == "embedding" for r in small.results)
            # A few small images: measured and decoded in one job (one wait for a lane, not two).
            assert [name for name, _ in jobs] == ["measure_then_decode"]
            jobs.clear()
            # A 6 MP PNG is past what that job may decode: it only measures it, holding its small allowance,
            # and a second job, holding all 6 MP of the pixel budget, decodes it.
            large = embed_pb2.Image(encoded=encode(photo(7, (3000, 2000)), "PNG"))
            reply = await stub.Embed(embed_pb2.EmbedRequest(images=[large]), timeout=60)
            assert reply.results[0].WhichOneof("result") == "embedding"
            assert [name for name, _ in jobs] == ["measure_then_decode", "decode_images"]
            assert jobs[0][1] < 3000 * 2000 <= jobs[1][1]
    finally:
        await server.stop(0)


async def test_batches_are_normalised_while_every_decode_thread_is_busy(model_cache: Path) -> None:
    server = EmbedServer(tiny_settings(model_cache, decode_workers=2))
    await server.start()
    await server.load()
    busy = threading.Event()
    try:
        # A decode backlog holds every decode thread...
        held = [server._decode_pool.submit(busy.wait, 60) for _ in range(2)]
        batcher = server._batcher
        assert batcher is not None
        image = np.zeros((224, 224, 3), np.uint8)
        # ...and images already decoded are still batched, normalised and answered: every caller's batch
        # must not wait behind one caller's decodes.
        futures = batcher.submit([image, image], caller="decoded")
        vectors = await asyncio.wait_for(asyncio.gather(*futures), 30)  # type: ignore[arg-type]
        assert all(v.shape == vectors[0].shape for v in vectors)
        assert not any(h.done() for h in held)
    finally:
        busy.set()
        await server.stop(0)
