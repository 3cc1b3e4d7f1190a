"""A hostile but fair client against a real server: admission before work, one status per bad message,
clean errors, decoder allow-list, ids, and the drain."""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from PIL import Image

from photodedup.server.app import EmbedServer
from photodedup.v1 import embed_pb2, embed_pb2_grpc, wire

from helpers import encode, photo, tiny_settings

INVALID = wire.code_value(grpc.StatusCode.INVALID_ARGUMENT)
UNAVAILABLE = wire.code_value(grpc.StatusCode.UNAVAILABLE)


async def start(model_cache: Path, **overrides: Any) -> EmbedServer:
    server = EmbedServer(tiny_settings(model_cache, **overrides))
    await server.start()
    await server.load()
    return server


@pytest.fixture
async def server(model_cache: Path) -> AsyncIterator[EmbedServer]:
    srv = await start(model_cache, max_items_per_request=64)
    yield srv
    await srv.stop(0.5)


def sample(server: EmbedServer, name: str, labels: dict[str, str] | None = None) -> float:
    return server.metrics.registry.get_sample_value(name, labels or {}) or 0.0


def jpeg(seed: int) -> embed_pb2.Image:
    return embed_pb2.Image(encoded=encode(photo(seed, (96, 72))))


def gate(server: EmbedServer) -> Any:
    import threading

    engine = server._engines[0]
    event = threading.Event()
    real = engine.infer
    engine.infer = lambda batch: (event.wait(10), real(batch))[1]  # type: ignore[method-assign]
    return event


async def test_busy_server_refuses_before_decoding(model_cache: Path) -> None:
    server = await start(model_cache, max_queue_size=4, max_batch_size=1, max_queue_delay_ms=0.0)
    held = gate(server)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = embed_pb2_grpc.EmbedServiceStub(channel)
            first = asyncio.ensure_future(stub.Embed(embed_pb2.EmbedRequest(images=[jpeg(i) for i in range(2)])))
            for _ in range(3000):  # up to a minute on a loaded machine: the first request is decoded and queued
                if sample(server, "photodedup_decode_duration_seconds_count") == 1:
                    break
                await asyncio.sleep(0.02)
            assert sample(server, "photodedup_inflight_items") == 2
            decodes = sample(server, "photodedup_decode_duration_seconds_count")
            # Another request the size of the last would fit, so this one is read, then refused by the budget.
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.Embed(embed_pb2.EmbedRequest(images=[jpeg(9), jpeg(10), jpeg(11)]))
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert sample(server, "photodedup_decode_duration_seconds_count") == decodes  # nothing decoded
            assert sample(server, "photodedup_refused_items_total", {"budget": "queue_items"}) == 3
            # One the size of that last one would not: the next call is refused before it is read.
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.Embed(embed_pb2.EmbedRequest(images=[jpeg(12)]))
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert sample(server, "photodedup_unread_refusals_total") == 1
            assert sample(server, "photodedup_refused_items_total", {"budget": "queue_items"}) == 3
            held.set()
            assert len((await first).results) == 2
    finally:
        held.set()
        await server.stop(0)


async def test_one_connection_cannot_hold_the_whole_queue(model_cache: Path) -> None:
    server = await start(model_cache, max_inflight_per_connection=3)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await embed_pb2_grpc.EmbedServiceStub(channel).Embed(
                    embed_pb2.EmbedRequest(images=[jpeg(i) for i in range(4)])
                )
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "connection" in err.value.details()
    finally:
        await server.stop(0)


async def test_a_million_empty_items_get_one_status_quickly(server: EmbedServer) -> None:
    message = embed_pb2.EmbedStreamRequest(items=[embed_pb2.StreamItem()] * 1_000_000)

    async def requests() -> AsyncIterator[embed_pb2.EmbedStreamRequest]:
        yield message

    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}", options=wire.channel_options()) as channel:
        t0 = time.perf_counter()
        with pytest.raises(grpc.aio.AioRpcError) as err:
            _ = [r async for r in embed_pb2_grpc.EmbedServiceStub(channel).EmbedStream(requests())]
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "more than 64 images" in err.value.details()
        assert time.perf_counter() - t0 < 30  # one answer, not a million (the benchmark measures < 1 s)
    assert sample(server, "photodedup_items_total", {"status": "INVALID_ARGUMENT"}) == 0


async def test_garbage_bytes_are_invalid_argument_without_internals(server: EmbedServer) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        unary = channel.unary_unary(wire.EMBED_METHOD, request_serializer=lambda b: b)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await unary(b"\xff\xff\xff\xff\x0f", timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "Error" not in err.value.details() and "Traceback" not in err.value.details()
        stub = embed_pb2_grpc.EmbedServiceStub(channel)
        reply = await stub.Embed(embed_pb2.EmbedRequest(images=[embed_pb2.Image(encoded=b"not an image at all")]))
    message = reply.results[0].error.message
    assert reply.results[0].error.code == INVALID
    assert "0x" not in message and "BytesIO" not in message and "Error" not in message


async def test_only_the_named_formats_are_decoded(server: EmbedServer) -> None:
    def encoded(fmt: str) -> embed_pb2.Image:
        buf = io.BytesIO()
        photo(1, (64, 48)).save(buf, fmt)
        return embed_pb2.Image(encoded=buf.getvalue())

    formats = ["TGA", "PCX", "SGI", "PNG", "BMP"]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        reply = await embed_pb2_grpc.EmbedServiceStub(channel).Embed(
            embed_pb2.EmbedRequest(images=[encoded(f) for f in formats])
        )
    kinds = {fmt: r.WhichOneof("result") for fmt, r in zip(formats, reply.results, strict=True)}
    assert kinds == {"TGA": "error", "PCX": "error", "SGI": "error", "PNG": "embedding", "BMP": "embedding"}
    assert "not a supported image" in reply.results[0].error.message


async def test_ids_are_required_and_unique_in_flight(server: EmbedServer) -> None:
    async def requests() -> AsyncIterator[embed_pb2.EmbedStreamRequest]:
        items = [embed_pb2.StreamItem(id=i, image=jpeg(n)) for n, i in enumerate(["", "a", "a", "b" * 300, "c"])]
        yield embed_pb2.EmbedStreamRequest(items=items)

    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        results = [
            r async for resp in embed_pb2_grpc.EmbedServiceStub(channel).EmbedStream(requests()) for r in resp.results
        ]
    ok = sorted(r.id for r in results if r.WhichOneof("result") == "embedding")
    refused = sorted((r.id[:5], r.error.message) for r in results if r.WhichOneof("result") == "error")
    assert ok == ["a", "c"]
    assert [m for _, m in refused] == [
        "every item needs an id",
        "this id is already in flight on this stream",
        "ids are at most 256 bytes",
    ]


async def test_after_sigterm_a_stream_takes_no_new_images_and_ends_when_done(model_cache: Path) -> None:
    server = await start(model_cache, max_batch_size=2, max_queue_delay_ms=0.0)
    held = gate(server)
    second = asyncio.Event()
    stopping: asyncio.Task[None] | None = None
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:

            async def requests() -> AsyncIterator[embed_pb2.EmbedStreamRequest]:
                yield embed_pb2.EmbedStreamRequest(
                    items=[embed_pb2.StreamItem(id=f"a{i}", image=jpeg(i)) for i in range(4)]
                )
                await second.wait()
                yield embed_pb2.EmbedStreamRequest(
                    items=[embed_pb2.StreamItem(id=f"b{i}", image=jpeg(i)) for i in range(3)]
                )
                await asyncio.sleep(60)  # the client never closes: the server ends the stream

            call = embed_pb2_grpc.EmbedServiceStub(channel).EmbedStream(requests())
            for _ in range(3000):  # up to a minute on a loaded machine
                if sample(server, "photodedup_inflight_items") == 4:
                    break
                await asyncio.sleep(0.02)
            t0 = time.perf_counter()
            stopping = asyncio.create_task(server.stop(30))
            await asyncio.sleep(0.2)
            second.set()
            await asyncio.sleep(0.2)
            held.set()
            results = {r.id: r for resp in [x async for x in call] for r in resp.results}
            await stopping
            elapsed = time.perf_counter() - t0
        assert {i for i, r in results.items() if r.WhichOneof("result") == "embedding"} == {"a0", "a1", "a2", "a3"}
        assert {i: r.error.code for i, r in results.items() if i.startswith("b")} == dict.fromkeys(
            ["b0", "b1", "b2"], UNAVAILABLE
        )
        assert elapsed < 15  # not the 30 s grace period
    finally:
        held.set()
        if stopping is None:
            await server.stop(0)


async def test_repeated_client_errors_are_logged_at_a_bounded_rate(
    server: EmbedServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="photodedup.server.errors")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        unary = channel.unary_unary(wire.EMBED_METHOD, request_serializer=lambda b: b)
        for _ in range(20):
            with pytest.raises(grpc.aio.AioRpcError):
                await unary(b"\xff\xff\xff", timeout=10)
    records = [r for r in caplog.records if "INVALID_ARGUMENT" in r.getMessage()]
    assert 1 <= len(records) <= 2
    assert not any(r.exc_info for r in records)


def test_png_bomb_at_the_pixel_limit_is_decoded_within_its_budget() -> None:
    from photodedup.imaging import decode_for_model

    buf = io.BytesIO()
    Image.new("RGBA", (4000, 4000), (10, 20, 30, 128)).save(buf, "PNG")
    arr = decode_for_model(buf.getvalue(), 224, 16_000_000)
    assert arr.shape == (224, 224, 3)


async def test_health_answers_while_huge_messages_arrive(server: EmbedServer) -> None:
    """Messages whose parse would hold the event loop (a million empty items; twenty million unknown
    fields) are refused from a count of their fields, so health checks keep their pace meanwhile."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    items = embed_pb2.EmbedStreamRequest(items=[embed_pb2.StreamItem()] * 1_000_000).SerializeToString()
    unknown = b"\x78\x00" * 20_000_000  # 40 MB: field 15, varint 0, twenty million times
    latencies: list[float] = []
    done = asyncio.Event()

    async def probe() -> None:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as ch:
            stub = health_pb2_grpc.HealthStub(ch)
            while not done.is_set():
                t0 = time.perf_counter()
                await stub.Check(health_pb2.HealthCheckRequest(), timeout=30)
                latencies.append(time.perf_counter() - t0)
                await asyncio.sleep(0.01)

    async def one(body: bytes) -> None:
        yield body

    prober = asyncio.create_task(probe())
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}", options=wire.channel_options()) as ch:
            stream = ch.stream_stream(wire.STREAM_METHOD, request_serializer=lambda b: b)
            unary = ch.unary_unary(wire.EMBED_METHOD, request_serializer=lambda b: b)
            for call in (lambda: stream(one(items), timeout=60).read(), lambda: unary(unknown, timeout=60)):
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await call()
                assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                assert "more than" in err.value.details()
    finally:
        done.set()
        await prober
    assert len(latencies) >= 3
    assert max(latencies) < 1.0  # generous for a shared machine; the benchmark records the number


async def test_an_idle_stream_is_ended_but_not_while_its_images_are_in_flight(model_cache: Path) -> None:
    server = await start(model_cache, stream_idle_timeout_s=0.5, max_queue_delay_ms=0.0)
    held = gate(server)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:

            async def requests() -> AsyncIterator[embed_pb2.EmbedStreamRequest]:
                yield embed_pb2.EmbedStreamRequest(
                    items=[embed_pb2.StreamItem(id=f"a{i}", image=jpeg(i)) for i in range(2)]
                )
                await asyncio.sleep(60)  # then silence, the stream left open

            call = embed_pb2_grpc.EmbedServiceStub(channel).EmbedStream(requests())
            await asyncio.sleep(1.5)  # three idle timeouts with both images held in flight
            held.set()
            ok: list[str] = []
            with pytest.raises(grpc.aio.AioRpcError) as err:
                async for resp in call:
                    ok += [r.id for r in resp.results if r.WhichOneof("result") == "embedding"]
                    answered = time.perf_counter()
            ended = time.perf_counter() - answered
        assert sorted(ok) == ["a0", "a1"]
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "nothing sent for 0.5 s" in err.value.details()
        assert 0.4 < ended < 10  # the idle clock started when the last image was answered
    finally:
        held.set()
        await server.stop(0)


async def open_quiet_streams(
    stub: embed_pb2_grpc.EmbedServiceStub, release: asyncio.Event, n: int, opened: Callable[[], int]
) -> list[Any]:
    """`n` EmbedStream calls that send nothing until `release`, once `opened()` says the server holds them."""

    async def quiet() -> AsyncIterator[embed_pb2.EmbedStreamRequest]:
        await release.wait()
        return
        yield  # pragma: no cover

    calls = [stub.EmbedStream(quiet()) for _ in range(n)]
    for _ in range(3000):  # up to a minute on a loaded machine
        if opened() == n:
            break
        await asyncio.sleep(0.02)
    assert opened() == n
    return calls


async def test_calls_over_the_concurrent_rpc_cap_are_refused_before_any_work(model_cache: Path) -> None:
    server = await start(model_cache, max_concurrent_rpcs=2)
    release = asyncio.Event()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = embed_pb2_grpc.EmbedServiceStub(channel)

            open_calls = await open_quiet_streams(stub, release, 2, lambda: server._servicer._active)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.Embed(embed_pb2.EmbedRequest(images=[jpeg(i) for i in range(16)]), timeout=30)
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert sample(server, "photodedup_decode_duration_seconds_count") == 0  # nothing decoded
            assert sample(server, "photodedup_inflight_items") == 0
            release.set()
            for call in open_calls:
                assert [r async for r in call] == []
            reply = await stub.Embed(embed_pb2.EmbedRequest(images=[jpeg(1)]), timeout=30)  # room again
            assert reply.results[0].WhichOneof("result") == "embedding"
    finally:
        release.set()
        await server.stop(0)


async def test_health_and_reflection_are_never_refused_by_the_call_cap(model_cache: Path) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    server = await start(model_cache, max_concurrent_rpcs=2)
    release = asyncio.Event()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = embed_pb2_grpc.EmbedServiceStub(channel)

            open_calls = await open_quiet_streams(stub, release, 2, lambda: server.calls.open)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.GetInfo(embed_pb2.GetInfoRequest(), timeout=30)
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            health = health_pb2_grpc.HealthStub(channel)
            watches = [health.Watch(health_pb2.HealthCheckRequest(service=wire.SERVICE_NAME)) for _ in range(3)]
            for watch in watches:  # open health watches hold no EmbedService slot either
                assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
            checks = await asyncio.gather(
                *(health.Check(health_pb2.HealthCheckRequest(), timeout=30) for _ in range(5))
            )
            assert all(c.status == health_pb2.HealthCheckResponse.SERVING for c in checks)
            reflect = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")])
            )
            services = [s.name async for r in reflect for s in r.list_services_response.service]
            assert wire.SERVICE_NAME in services
            for watch in watches:
                watch.cancel()
            release.set()
            for call in open_calls:
                assert [r async for r in call] == []
            assert server.calls.open == 0
            assert (await stub.GetInfo(embed_pb2.GetInfoRequest(), timeout=30)).model_id  # room again
        refused = server.metrics.registry.get_sample_value(
            "photodedup_requests_total", {"method": "GetInfo", "code": "RESOURCE_EXHAUSTED"}
        )
        assert refused == 1
    finally:
        release.set()
        await server.stop(0)


async def test_open_health_watches_end_at_shutdown_without_holding_it(model_cache: Path) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    server = await start(model_cache)
    stopping: asyncio.Task[None] | None = None
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            watches = [health.Watch(health_pb2.HealthCheckRequest(service=s)) for s in ("", wire.SERVICE_NAME)]
            for watch in watches:
                assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
            t0 = time.perf_counter()
            stopping = asyncio.create_task(server.stop(30))
            for watch in watches:  # told first, then ended by the server (the client never cancels them)
                assert (await watch.read()).status == health_pb2.HealthCheckResponse.NOT_SERVING
                with pytest.raises(grpc.aio.AioRpcError) as ended:
                    await watch.read()
                assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
            await stopping
            assert time.perf_counter() - t0 < 15  # not the 30 s grace period
            assert all(watch.done() for watch in watches)
    finally:
        if stopping is None:
            await server.stop(0)


@pytest.mark.parametrize("which", ["grpc", "metrics"])
def test_a_port_in_use_is_one_line_from_serve(which: str, tmp_path: Path) -> None:
    import socket

    from click.testing import CliRunner

    from photodedup.cli import main

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        ports = (
            ["--port", str(port), "--metrics-port", "0"]
            if which == "grpc"
            else ["--port", "0", "--metrics-port", str(port)]
        )
        result = CliRunner().invoke(
            main,
            ["serve", "--host", "127.0.0.1", *ports, "--model", "photodedup-tiny", "--weights", "random"]
            + ["--cache-dir", str(tmp_path)],
        )
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    expected = "cannot listen on" if which == "grpc" else "cannot serve metrics on"
    assert [line for line in lines if line.startswith("photodedup: error:")] == [lines[-1]]
    assert f"{expected} 127.0.0.1:{port}" in lines[-1]


async def test_images_past_the_request_pixel_budget_are_refused_undecoded(model_cache: Path) -> None:
    # Three 320 x 240 PNGs (76,800 pixels each, decoded in full) against a budget of 200,000: two fit.
    server = await start(model_cache, max_request_pixels=200_000)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            images = [embed_pb2.Image(encoded=encode(photo(i), "PNG")) for i in range(3)]
            reply = await embed_pb2_grpc.EmbedServiceStub(channel).Embed(embed_pb2.EmbedRequest(images=images))
        kinds = [r.WhichOneof("result") for r in reply.results]
        assert kinds == ["embedding", "embedding", "error"]
        assert reply.results[2].error.code == wire.code_value(grpc.StatusCode.RESOURCE_EXHAUSTED)
        assert "decoded pixels" in reply.results[2].error.message
        assert sample(server, "photodedup_refused_items_total", {"budget": "request_pixels"}) == 1
    finally:
        await server.stop(0)
