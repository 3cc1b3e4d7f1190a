"""A real server on 127.0.0.1:0 with the tiny model, driven by real gRPC clients."""

from __future__ import annotations

import asyncio
import io
import threading
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from PIL import Image

from photodedup.engines import create_engine
from photodedup.imaging import decode_for_model
from photodedup.server.app import EmbedServer
from photodedup.v1 import embed_pb2, embed_pb2_grpc

from helpers import encode, photo, tiny_settings

OK = grpc.StatusCode.OK.value[0]
INVALID = grpc.StatusCode.INVALID_ARGUMENT.value[0]


async def start(model_cache: Path, load: bool = True, **overrides: Any) -> EmbedServer:
    server = EmbedServer(tiny_settings(model_cache, **overrides))
    await server.start()
    if load:
        await server.load()
    return server


@pytest.fixture
async def server(model_cache: Path) -> AsyncIterator[EmbedServer]:
    srv = await start(model_cache)
    yield srv
    await srv.stop(0.5)


def gate_engine(server: EmbedServer) -> threading.Event:
    """Hold every batch on the device until the returned event is set (a slow GPU, on demand)."""
    engine = server._engines[0]
    gate = threading.Event()
    real_infer = engine.infer
    engine.infer = lambda batch: (gate.wait(10), real_infer(batch))[1]  # type: ignore[method-assign]
    return gate


def stub_for(server: EmbedServer) -> tuple[grpc.aio.Channel, embed_pb2_grpc.EmbedServiceStub]:
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    return channel, embed_pb2_grpc.EmbedServiceStub(channel)


def sample(server: EmbedServer, name: str) -> float:
    return server.metrics.registry.get_sample_value(name) or 0.0


def jpeg(seed: int, size: tuple[int, int] = (320, 240)) -> embed_pb2.Image:
    return embed_pb2.Image(encoded=encode(photo(seed, size)))


def vector(result: embed_pb2.EmbedResult) -> np.ndarray:
    emb = result.embedding
    dtype = "<f2" if emb.dtype == embed_pb2.DTYPE_FLOAT16 else "<f4"
    vec = np.frombuffer(emb.data, dtype=dtype)
    assert vec.shape == (emb.dim,)
    return vec.astype(np.float32)


def bomb() -> bytes:
    buf = io.BytesIO()
    Image.new("L", (12_000, 12_000)).save(buf, "PNG")
    return buf.getvalue()


async def test_unary_embed_matches_the_engine_in_process(server: EmbedServer, model_cache: Path) -> None:
    channel, stub = stub_for(server)
    async with channel:
        reply = await stub.Embed(embed_pb2.EmbedRequest(images=[jpeg(i) for i in range(3)]))
        half = await stub.Embed(embed_pb2.EmbedRequest(images=[jpeg(0)], dtype=embed_pb2.DTYPE_FLOAT16))
    assert [r.id for r in reply.results] == ["0", "1", "2"]
    vecs = np.stack([vector(r) for r in reply.results])
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    engine = create_engine(tiny_settings(model_cache), "cpu")
    local = engine.infer(engine.preprocess([decode_for_model(encode(photo(i)), 224, 10**8) for i in range(3)]))
    assert (vecs * local).sum(axis=1).min() > 0.9999
    assert reply.model_id == engine.info.model_id
    assert half.results[0].embedding.dtype == embed_pb2.DTYPE_FLOAT16
    assert len(half.results[0].embedding.data) == 2 * 64
    assert float(vector(half.results[0]) @ vecs[0]) > 0.999


async def test_raw_pixels_are_accepted(server: EmbedServer) -> None:
    arr = decode_for_model(encode(photo(7)), 224, 10**8)
    raw = embed_pb2.Image(raw=embed_pb2.RawImage(rgb=arr.tobytes(), width=224, height=224))
    channel, stub = stub_for(server)
    async with channel:
        reply = await stub.Embed(
            embed_pb2.EmbedRequest(images=[raw, embed_pb2.Image(encoded=encode(Image.fromarray(arr), "PNG"))])
        )
    a, b = (vector(r) for r in reply.results)
    assert float(a @ b) > 0.9999


async def test_stream_isolates_bad_items_and_answers_out_of_order(server: EmbedServer) -> None:
    good = encode(photo(1))
    truncated = encode(photo(2, (640, 480)))[:2000]
    wrong_raw = embed_pb2.Image(raw=embed_pb2.RawImage(rgb=b"\0" * 30, width=10, height=1))
    # The first message is slow to decode (a large PNG: no reduced-size decoding), the rest are fast.
    slow = embed_pb2.Image(encoded=encode(photo(3, (3000, 2200)), "PNG"))
    messages = [
        [("slow", slow)],
        [("good-1", embed_pb2.Image(encoded=good)), ("text", embed_pb2.Image(encoded=b"hello, I am a .jpg"))],
        [("truncated", embed_pb2.Image(encoded=truncated)), ("empty", embed_pb2.Image())],
        [("bomb", embed_pb2.Image(encoded=bomb())), ("raw-wrong", wrong_raw)],
        [("good-2", jpeg(4))],
    ]

    async def requests() -> AsyncIterator[embed_pb2.EmbedStreamRequest]:
        for msg in messages:
            yield embed_pb2.EmbedStreamRequest(items=[embed_pb2.StreamItem(id=i, image=img) for i, img in msg])

    channel, stub = stub_for(server)
    async with channel:
        order: list[str] = []
        results: dict[str, embed_pb2.EmbedResult] = {}
        async for response in stub.EmbedStream(requests()):
            for r in response.results:
                order.append(r.id)
                results[r.id] = r
    assert sorted(order) == sorted(i for msg in messages for i, _ in msg)
    assert order[-1] == "slow" and order[0] != "slow"
    for ok in ("slow", "good-1", "good-2"):
        assert results[ok].WhichOneof("result") == "embedding"
    for bad in ("text", "truncated", "empty", "bomb", "raw-wrong"):
        assert results[bad].error.code == INVALID, bad
    assert "over the limit" in results["bomb"].error.message
    assert "not a supported image" in results["text"].error.message


async def test_request_limits(model_cache: Path) -> None:
    server = await start(model_cache, max_items_per_request=2, max_message_bytes=64 * 1024)
    try:
        channel, stub = stub_for(server)
        async with channel:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.Embed(embed_pb2.EmbedRequest(images=[jpeg(i) for i in range(3)]))
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "limit is 2" in err.value.details()
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.Embed(embed_pb2.EmbedRequest(images=[embed_pb2.Image(encoded=b"x" * 100_000)]))
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED

            async def messages() -> AsyncIterator[embed_pb2.EmbedStreamRequest]:
                yield embed_pb2.EmbedStreamRequest(items=[embed_pb2.StreamItem(id="ok", image=jpeg(9))])
                await asyncio.sleep(0.5)
                yield embed_pb2.EmbedStreamRequest(
                    items=[embed_pb2.StreamItem(id=f"big{i}", image=jpeg(i)) for i in range(3)]
                )

            # An oversized message is one status for the stream, not one error per item.
            got: list[str] = []
            with pytest.raises(grpc.aio.AioRpcError) as err:
                async for resp in stub.EmbedStream(messages()):
                    got.extend(r.id for r in resp.results)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "limit is 2" in err.value.details()
            assert got == ["ok"]
    finally:
        await server.stop(0)


async def test_full_queue_answers_resource_exhausted(model_cache: Path) -> None:
    server = await start(model_cache, max_queue_size=2, max_batch_size=1)
    try:
        channel, stub = stub_for(server)
        async with channel:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.Embed(embed_pb2.EmbedRequest(images=[jpeg(i) for i in range(3)]))
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED

            async def one_message() -> AsyncIterator[embed_pb2.EmbedStreamRequest]:
                yield embed_pb2.EmbedStreamRequest(
                    items=[embed_pb2.StreamItem(id=str(i), image=jpeg(i)) for i in range(5)]
                )

            codes = [r.error.code for resp in [x async for x in stub.EmbedStream(one_message())] for r in resp.results]
        assert sorted(codes) == [0, 0, 8, 8, 8]  # two fit the queue, three are told to retry
    finally:
        await server.stop(0)


async def test_engine_failure_fails_only_its_items(server: EmbedServer) -> None:
    engine = server._engines[0]
    real_infer = engine.infer
    calls = {"n": 0}

    def flaky(batch: Any) -> np.ndarray:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("CUDA error: an illegal memory access")
        return real_infer(batch)

    engine.infer = flaky  # type: ignore[method-assign]
    channel, stub = stub_for(server)
    async with channel:
        failed = await stub.Embed(embed_pb2.EmbedRequest(images=[jpeg(1)]))
        fine = await stub.Embed(embed_pb2.EmbedRequest(images=[jpeg(2)]))
    assert failed.results[0].error.code == grpc.StatusCode.INTERNAL.value[0]
    assert "illegal memory access" in failed.results[0].error.message
    assert fine.results[0].WhichOneof("result") == "embedding"


async def test_cancelled_stream_items_are_dropped(model_cache: Path) -> None:
    server = await start(model_cache, max_batch_size=2, max_queue_delay_ms=0.0)
    gate = gate_engine(server)
    try:
        channel, stub = stub_for(server)
        async with channel:

            async def requests() -> AsyncIterator[embed_pb2.EmbedStreamRequest]:
                yield embed_pb2.EmbedStreamRequest(
                    items=[embed_pb2.StreamItem(id=str(i), image=jpeg(i)) for i in range(12)]
                )
                await asyncio.sleep(30)

            call = stub.EmbedStream(requests())
            for _ in range(100):
                if sample(server, "photodedup_queue_depth") > 0:
                    break
                await asyncio.sleep(0.02)
            call.cancel()
            await asyncio.sleep(0.2)
            gate.set()
            reply = await stub.Embed(embed_pb2.EmbedRequest(images=[jpeg(99)]))
        assert reply.results[0].WhichOneof("result") == "embedding"
        ran = server.metrics.inference_items.labels("cpu")._value.get()
        assert ran <= 2 + 2 + 1  # the batch on the device, at most one prepared batch, then the new request
    finally:
        gate.set()
        await server.stop(0)


async def test_health_is_not_serving_until_loaded(model_cache: Path) -> None:
    server = await start(model_cache, load=False)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            stub = embed_pb2_grpc.EmbedServiceStub(channel)
            check = await health.Check(health_pb2.HealthCheckRequest(service="photodedup.v1.EmbedService"))
            assert check.status == health_pb2.HealthCheckResponse.NOT_SERVING
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.GetInfo(embed_pb2.GetInfoRequest())
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            await server.load()
            check = await health.Check(health_pb2.HealthCheckRequest(service=""))
            assert check.status == health_pb2.HealthCheckResponse.SERVING
            info = await stub.GetInfo(embed_pb2.GetInfoRequest())
            assert info.embedding_dim == 64 and info.input_size == 224 and len(info.mean) == 3
            assert info.engines[0].device == "cpu" and info.engines[0].name == "onnx"
            assert info.batching.max_batch_size == 32 and info.limits.max_image_pixels > 0
    finally:
        await server.stop(0)


async def test_metrics_are_exported(server: EmbedServer) -> None:
    channel, stub = stub_for(server)
    async with channel:
        await stub.Embed(embed_pb2.EmbedRequest(images=[jpeg(i) for i in range(4)] + [embed_pb2.Image(encoded=b"x")]))
    body = await asyncio.to_thread(
        lambda: urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=5).read().decode()
    )
    assert 'photodedup_requests_total{code="OK",method="Embed"} 1.0' in body
    assert 'photodedup_items_total{status="OK"} 4.0' in body
    assert 'photodedup_items_total{status="INVALID_ARGUMENT"} 1.0' in body
    assert 'photodedup_inference_items_total{device="cpu"} 4.0' in body
    assert "photodedup_batch_size_bucket" in body and "photodedup_queue_duration_seconds_count" in body


async def test_an_undecodable_stream_message_ends_the_stream_with_an_error(server: EmbedServer) -> None:
    """Garbage on the wire is not one bad photo: the stream ends with a status instead of hanging."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        call = channel.stream_stream(
            "/photodedup.v1.EmbedService/EmbedStream",
            request_serializer=lambda b: b,
            response_deserializer=embed_pb2.EmbedStreamResponse.FromString,
        )

        async def requests() -> AsyncIterator[bytes]:
            good = embed_pb2.EmbedStreamRequest(items=[embed_pb2.StreamItem(id="good", image=jpeg(1))])
            yield good.SerializeToString()
            await asyncio.sleep(0.5)
            yield b"\xff\xff\xff\xff"
            await asyncio.sleep(30)

        got: list[str] = []
        with pytest.raises(grpc.aio.AioRpcError) as err:
            async for response in call(requests(), timeout=20):
                got.extend(r.id for r in response.results)
        assert got == ["good"]
        assert err.value.code() != grpc.StatusCode.DEADLINE_EXCEEDED
    assert sample(server, "photodedup_inflight_items") == 0


async def test_unknown_dtype_is_invalid_argument(server: EmbedServer) -> None:
    channel, stub = stub_for(server)
    async with channel:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Embed(embed_pb2.EmbedRequest(images=[jpeg(1)], dtype=7))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT

        async def one() -> AsyncIterator[embed_pb2.EmbedStreamRequest]:
            yield embed_pb2.EmbedStreamRequest(items=[embed_pb2.StreamItem(id="x", image=jpeg(1))], dtype=7)

        with pytest.raises(grpc.aio.AioRpcError) as err:
            _ = [x async for x in stub.EmbedStream(one())]
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_in_flight_gauge_returns_to_zero_after_cancelled_streams(model_cache: Path) -> None:
    server = await start(model_cache, max_batch_size=2, max_queue_delay_ms=0.0)
    gate = gate_engine(server)
    try:
        channel, stub = stub_for(server)
        async with channel:
            for _ in range(3):

                async def requests() -> AsyncIterator[embed_pb2.EmbedStreamRequest]:
                    yield embed_pb2.EmbedStreamRequest(
                        items=[embed_pb2.StreamItem(id=str(i), image=jpeg(i)) for i in range(8)]
                    )
                    await asyncio.sleep(30)

                call = stub.EmbedStream(requests())
                await asyncio.sleep(0.3)
                call.cancel()
            gate.set()
            await stub.Embed(embed_pb2.EmbedRequest(images=[jpeg(1)]))
            for _ in range(50):
                if sample(server, "photodedup_inflight_items") == 0:
                    break
                await asyncio.sleep(0.05)
        assert sample(server, "photodedup_inflight_items") == 0
    finally:
        gate.set()
        await server.stop(0)


async def test_drain_announces_not_serving_and_finishes_open_streams(model_cache: Path) -> None:
    server = await start(model_cache, max_batch_size=4, max_queue_delay_ms=0.0)
    gate = gate_engine(server)
    stopping: asyncio.Task[None] | None = None
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""))
            assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
            stub = embed_pb2_grpc.EmbedServiceStub(channel)

            async def requests() -> AsyncIterator[embed_pb2.EmbedStreamRequest]:
                yield embed_pb2.EmbedStreamRequest(
                    items=[embed_pb2.StreamItem(id=str(i), image=jpeg(i)) for i in range(12)]
                )

            call = stub.EmbedStream(requests())
            for _ in range(1200):  # items are queued behind the gated engine (a minute, on a loaded machine)
                if sample(server, "photodedup_inflight_items") == 12:
                    break
                await asyncio.sleep(0.05)
            stopping = asyncio.create_task(server.stop(10))
            assert (await watch.read()).status == health_pb2.HealthCheckResponse.NOT_SERVING
            watch.cancel()  # an open Watch would otherwise hold the drain for the whole grace period
            gate.set()
            ids = [
                r.id for resp in [x async for x in call] for r in resp.results if r.WhichOneof("result") == "embedding"
            ]
            assert sorted(ids, key=int) == [str(i) for i in range(12)]
            await stopping
    finally:
        gate.set()
        if stopping is None:
            await server.stop(0)
