"""Admission budgets and the fair decoder, without a server; property tests with a small budget."""

from __future__ import annotations

import asyncio
import io
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from photodedup.errors import InvalidImageError
from photodedup.imaging import decode_for_model
from photodedup.server.admission import Admission
from photodedup.server.decoding import FairDecoder, measure_images
from photodedup.server.parsing import MALFORMED, tolerant
from photodedup.settings import Settings
from photodedup.v1 import embed_pb2


def _admission(**kw: int) -> Admission:
    return Admission(Settings(**kw))


def _reserved(**kw: int) -> Admission:
    """A queue of 100 images (10,000 bytes) of which a quarter is kept for light callers (4 or fewer)."""
    base = {
        "max_queue_size": 100,
        "max_queue_bytes": 10_000,
        "max_inflight_per_connection": 80,
        "light_caller_items": 4,
        "reserved_queue_share": 0.25,
    }
    return _admission(**{**base, **kw})


def test_budgets_refuse_before_work_and_come_back() -> None:
    adm = _admission(max_queue_size=10, max_queue_bytes=1024, max_inflight_per_connection=6)
    assert adm.refusal("a", 6, 100) is None
    adm.take("a", 6, 100)
    assert adm.refusal("a", 1, 10).budget == "connection"  # type: ignore[union-attr]
    assert adm.refusal("b", 5, 10).budget == "queue_items"  # type: ignore[union-attr]
    assert adm.refusal("b", 1, 1000).budget == "queue_bytes"  # type: ignore[union-attr]
    assert adm.fits("b", [10, 10, 10, 10, 10]) == 4
    adm.release("a", 6, 100)
    assert (adm.items, adm.bytes) == (0, 0)
    # One image larger than the byte budget still gets in when nothing else is in flight.
    assert adm.refusal("b", 1, 5000) is None


def test_a_message_is_read_only_when_one_of_its_connections_last_size_would_be_admitted() -> None:
    adm = _reserved(max_items_per_request=50)
    # Alone, any connection is read: the expected size never exceeds what an idle server admits from one.
    assert adm.read_refusal("new") is None
    assert adm.expected("new") == (50, 0)
    adm.note_message("flood", 75, 750)
    adm.take("flood", 75, 750)
    adm.note_message("polite", 1, 10)
    assert adm.read_refusal("flood") is not None  # another 75 would be refused
    assert adm.read_refusal("polite") is None  # a light connection is read (the reserve is its)
    # A connection never read is taken to send the largest message: refused unread once, then read.
    assert adm.read_refusal("newcomer") is not None
    assert adm.read_refusal("newcomer") is None
    adm.release("flood", 75, 750)
    assert adm.read_refusal("flood") is None


async def test_a_release_wakes_those_waiting_for_room() -> None:
    adm = _admission(max_queue_size=10)
    adm.take("a", 5, 10)
    waiting = asyncio.ensure_future(adm.wait_for_release(60))
    await asyncio.sleep(0)
    assert not waiting.done()
    adm.release("a", 1, 2)
    await asyncio.wait_for(waiting, 5)
    assert adm._release_waiters == []


def test_a_share_of_the_queue_is_kept_for_light_callers() -> None:
    adm = _reserved()
    assert adm.refusal("flood", 76, 760) is not None  # a heavy caller gets the shared 75 only
    adm.take("flood", 75, 750)
    refused = adm.refusal("flood2", 10, 100)
    assert refused is not None and refused.budget == "queue_items" and "light callers" in refused.message
    assert adm.fits("flood2", [10] * 10) == 4  # a stream is admitted only as far as it stays light
    assert adm.refusal("polite", 1, 10) is None  # a light caller still gets in
    adm.take("polite", 1, 10)
    assert adm.fits("polite2", [10] * 10) == 4  # a stream takes what keeps it light
    assert adm.refusal("polite", 4, 40) is not None  # 5 in flight would make it heavy
    adm.release("flood", 75, 750)
    assert adm.refusal("flood2", 10, 100) is None  # the shared part is free again


def test_the_byte_budget_keeps_the_same_share_for_light_callers() -> None:
    adm = _admission(max_queue_size=1000, max_queue_bytes=2048, light_caller_items=2, reserved_queue_share=0.5)
    adm.take("flood", 10, 1000)
    refused = adm.refusal("flood2", 3, 100)
    assert refused is not None and refused.budget == "queue_bytes"
    assert adm.refusal("polite", 1, 800) is None


def test_no_reserve_is_first_come_first_served() -> None:
    adm = _admission(max_queue_size=10, reserved_queue_share=0.0, light_caller_items=0)
    adm.take("a", 10, 10)
    assert adm.refusal("b", 1, 1) is not None


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("abc"), st.integers(0, 8), st.integers(0, 400)), max_size=40))
def test_admission_never_exceeds_its_budgets(requests: list[tuple[str, int, int]]) -> None:
    adm = _admission(
        max_queue_size=16,
        max_queue_bytes=1024,
        max_inflight_per_connection=10,
        light_caller_items=3,
        reserved_queue_share=0.25,
    )
    held = []
    for peer, n, nbytes in requests:
        if adm.refusal(peer, n, nbytes) is None:
            adm.take(peer, n, nbytes)
            held.append((peer, n, nbytes))
            if sum(h[1] for h in held if h[0] == peer) > 3:  # a heavy caller got in: only the shared 12
                assert adm.items <= 12
        assert adm.items <= 16
        if len(held) > 1:
            assert adm.bytes <= 1024 + max(b for _, _, b in held)
        if held and len(held) % 3 == 0:
            adm.release(*held.pop(0))
    for h in held:
        adm.release(*h)
    assert (adm.items, adm.bytes) == (0, 0)


async def test_small_images_are_not_starved_by_large_ones() -> None:
    pool = ThreadPoolExecutor(2)
    decoder = FairDecoder(pool, lanes=2, max_pixels_in_flight=100, large_pixels=10)
    order: list[str] = []
    lock = threading.Lock()

    def work(name: str, seconds: float) -> str:
        time.sleep(seconds)
        with lock:
            order.append(name)
        return name

    try:
        bombs = [asyncio.create_task(decoder.run("hostile", 60, work, f"bomb{i}", 0.2)) for i in range(4)]
        await asyncio.sleep(0.05)
        small = asyncio.create_task(decoder.run("polite", 1, work, "small", 0.0))
        assert await asyncio.wait_for(small, 1.0) == "small"
        assert order[0] == "small"  # large jobs never take the last lane
        await asyncio.gather(*bombs)
        assert decoder.pixels_in_flight == 0
    finally:
        pool.shutdown()


async def test_a_caller_arriving_with_one_image_goes_ahead_of_busy_callers_backlogs() -> None:
    pool = ThreadPoolExecutor(1)
    decoder = FairDecoder(pool, lanes=1, max_pixels_in_flight=10**9, large_pixels=10**9)
    order: list[str] = []
    gate = threading.Event()

    def work(name: str) -> str:
        gate.wait(30)
        order.append(name)
        return name

    try:
        busy = [
            asyncio.create_task(decoder.run(f"flood{c}", 1_000_000, work, f"flood{c}.{i}"))
            for i in range(5)
            for c in range(3)
        ]
        await asyncio.sleep(0.05)  # the first job holds the only lane
        polite = asyncio.create_task(decoder.run("polite", 50_000, work, "polite"))
        await asyncio.sleep(0.05)
        gate.set()
        await asyncio.gather(polite, *busy)
        # Round robin would have run a job of each other flood first. The floods then share the lane in turn,
        # each caller's own jobs in order.
        rest = [f"flood{c}.{i}" for i in range(1, 5) for c in range(3)]
        assert order == ["flood0.0", "polite", "flood1.0", "flood2.0", *rest]
    finally:
        gate.set()
        pool.shutdown()


async def test_pixels_in_flight_stay_under_the_budget() -> None:
    pool = ThreadPoolExecutor(4)
    decoder = FairDecoder(pool, lanes=4, max_pixels_in_flight=100, large_pixels=1000)
    peak = 0

    def work() -> None:
        nonlocal peak
        peak = max(peak, decoder.pixels_in_flight)
        time.sleep(0.02)

    try:
        await asyncio.gather(*(decoder.run(f"c{i % 3}", 40, work) for i in range(12)))
        assert peak <= 100
    finally:
        pool.shutdown()


# ---------------------------------------------------------------------------------------------- properties


def _seed_images() -> list[bytes]:
    out = []
    rng = np.random.default_rng(0)
    for fmt in ("JPEG", "PNG", "GIF", "WEBP", "TIFF", "BMP"):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(buf, fmt)
        out.append(buf.getvalue())
    return out


SEEDS = _seed_images()


@st.composite
def mutated_images(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 8))):
        pos = draw(st.integers(0, len(data) - 1))
        data[pos] = draw(st.integers(0, 255))
    cut = draw(st.integers(len(data) // 2, len(data)))
    return bytes(data[:cut])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.binary(max_size=512), mutated_images()))
def test_any_bytes_decode_to_an_image_or_one_clean_error(data: bytes) -> None:
    try:
        arr = decode_for_model(data, 32, 10_000_000)
    except InvalidImageError as exc:
        assert " at 0x" not in str(exc) and "Error:" not in str(exc)
    else:
        assert arr.shape == (32, 32, 3) and arr.dtype == np.uint8
    costs = measure_images([embed_pb2.Image(encoded=data)], 32, 10_000_000)
    assert len(costs) == 1 and (isinstance(costs[0], (int, InvalidImageError)))


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=256))
def test_request_bytes_parse_or_are_malformed_never_raise(data: bytes) -> None:
    for message in (embed_pb2.EmbedRequest, embed_pb2.EmbedStreamRequest):
        parse = tolerant(message.FromString)
        assert parse is not None
        parsed = parse(data)
        assert parsed is MALFORMED or isinstance(parsed, message)


def test_refused_formats_never_reach_a_decoder() -> None:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "TGA")
    with pytest.raises(InvalidImageError, match="not a supported image"):
        decode_for_model(buf.getvalue(), 32, 10_000)
