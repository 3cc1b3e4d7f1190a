"""Request bytes are counted before they are parsed: a message over its limits is refused after
O(limit) work, whatever its size; a message within them parses exactly as the generated parser does."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from photodedup.server.parsing import MALFORMED, FieldCounter, Unparsed, bounded_parser
from photodedup.v1 import embed_pb2

STREAM = bounded_parser(embed_pb2.EmbedStreamRequest.FromString, 64)
EMBED = bounded_parser(embed_pb2.EmbedRequest.FromString, 64)
INFO = bounded_parser(embed_pb2.GetInfoRequest.FromString, 64)


def varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    return bytes([*out, n])


def length_delimited(field: int, payload: bytes) -> bytes:
    return varint(field << 3 | 2) + varint(len(payload)) + payload


def test_a_million_empty_items_are_refused_after_counting_limit_plus_one() -> None:
    data = embed_pb2.EmbedStreamRequest(items=[embed_pb2.StreamItem()] * 1_000_000).SerializeToString()
    assert STREAM(data) == Unparsed("has more than 64 images; the limit is 64")
    counter = FieldCounter(max_fields=10**9, item_field=1, max_items=64)
    with pytest.raises(Exception, match="more than 64 images"):
        counter.count(data, embed_pb2.EmbedStreamRequest.DESCRIPTOR)
    assert counter.fields == 65  # stopped at the first item over the limit, not after a million


@pytest.mark.parametrize(
    "data",
    [
        b"\x78\x00" * 1_000_000,  # top-level unknown varint fields
        length_delimited(1, length_delimited(2, b"\x7a\x00" * 1_000_000)),  # unknown fields inside one image
    ],
    ids=["top-level", "inside-an-image"],
)
def test_millions_of_unknown_fields_are_refused_without_parsing(data: bytes) -> None:
    result = STREAM(data)
    assert isinstance(result, Unparsed) and result.reason == f"has more than {64 * 8 + 16} fields"


def test_a_message_without_items_gets_only_a_few_fields() -> None:
    assert INFO(b"") == embed_pb2.GetInfoRequest()
    assert INFO(b"\x78\x00" * 17) == Unparsed("has more than 16 fields")


@pytest.mark.parametrize(
    "data",
    [
        length_delimited(1, b"\x0a\x05ab"),  # a length past the end of its message
        b"\x0b\x0c",  # a group: not a wire type we send
        b"\x0a",  # a tag without its length
        b"\x08" + b"\xff" * 11,  # a varint longer than 64 bits
    ],
)
def test_malformed_bytes_are_malformed(data: bytes) -> None:
    assert STREAM(data) is MALFORMED


def test_messages_at_the_limit_parse_as_generated() -> None:
    items = [
        embed_pb2.StreamItem(id=f"id{i}", image=embed_pb2.Image(encoded=bytes([i % 256]) * (300 + i)))
        for i in range(32)
    ] + [
        embed_pb2.StreamItem(
            id=f"raw{i}", image=embed_pb2.Image(raw=embed_pb2.RawImage(rgb=b"x" * 12, width=2, height=2))
        )
        for i in range(32)
    ]
    message = embed_pb2.EmbedStreamRequest(items=items, dtype=embed_pb2.DTYPE_FLOAT16)
    assert STREAM(message.SerializeToString()) == message
    request = embed_pb2.EmbedRequest(images=[it.image for it in items])
    assert EMBED(request.SerializeToString()) == request


_images = st.builds(
    embed_pb2.Image,
    encoded=st.binary(max_size=64),
)
_items = st.builds(embed_pb2.StreamItem, id=st.text(max_size=8), image=_images)


@settings(max_examples=100, deadline=None)
@given(st.lists(_items, max_size=80), st.sampled_from([0, 1, 2, 7]))
def test_bounded_parse_agrees_with_the_generated_parser(items: list[embed_pb2.StreamItem], dtype: int) -> None:
    message = embed_pb2.EmbedStreamRequest(items=items, dtype=dtype)
    result = STREAM(message.SerializeToString())
    if len(items) > 64:
        assert result == Unparsed("has more than 64 images; the limit is 64")
    else:
        assert result == message


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=256))
def test_any_bytes_parse_like_the_generated_parser_or_are_refused(data: bytes) -> None:
    result = STREAM(data)
    if isinstance(result, Unparsed):
        return
    assert result == embed_pb2.EmbedStreamRequest.FromString(data)
