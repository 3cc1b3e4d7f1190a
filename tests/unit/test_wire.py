"""The wire module: method paths match the stubs, dtypes and status codes convert both ways."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from photodedup.settings import Settings
from photodedup.v1 import embed_pb2, wire


def test_method_paths_name_the_services_methods() -> None:
    service = embed_pb2.DESCRIPTOR.services_by_name["EmbedService"]
    assert wire.SERVICE_NAME == "photodedup.v1.EmbedService"
    assert {wire.EMBED_METHOD, wire.STREAM_METHOD, wire.INFO_METHOD} == {
        f"/{service.full_name}/{m.name}" for m in service.methods
    }


def test_one_message_limit_for_both_sides() -> None:
    assert Settings().server.max_message_bytes == wire.MAX_MESSAGE_BYTES
    options = dict(wire.channel_options(1234))
    assert options == {"grpc.max_send_message_length": 1234, "grpc.max_receive_message_length": 1234}


@pytest.mark.parametrize("dtype", [embed_pb2.DTYPE_FLOAT32, embed_pb2.DTYPE_FLOAT16, embed_pb2.DTYPE_UNSPECIFIED])
def test_embeddings_round_trip(dtype: int) -> None:
    vec = np.linspace(-1, 1, 8, dtype=np.float32)
    emb = wire.encode_embedding(vec, dtype)
    assert emb.dtype == wire.response_dtype(dtype) and emb.dim == 8
    np.testing.assert_allclose(wire.decode_embedding(emb), vec, atol=1e-3)


def test_unknown_dtype_and_wrong_dim_are_refused() -> None:
    with pytest.raises(ValueError):
        wire.response_dtype(7)
    with pytest.raises(ValueError):
        wire.decode_embedding(embed_pb2.Embedding(data=b"\0" * 8, dtype=embed_pb2.DTYPE_FLOAT32, dim=3))


def test_status_codes_convert_both_ways() -> None:
    for status in grpc.StatusCode:
        assert wire.status_of(wire.code_value(status)) is status
    assert wire.status_name(wire.code_value(grpc.StatusCode.RESOURCE_EXHAUSTED)) == "RESOURCE_EXHAUSTED"
    assert wire.status_name(99) == "CODE_99"
    assert wire.is_retryable(wire.code_value(grpc.StatusCode.UNAVAILABLE))
    assert not wire.is_retryable(wire.code_value(grpc.StatusCode.INVALID_ARGUMENT))
    err = wire.item_error("a", grpc.StatusCode.INVALID_ARGUMENT, "bad").error
    assert (err.code, err.message) == (wire.code_value(grpc.StatusCode.INVALID_ARGUMENT), "bad")


def test_embed_method_names_only_the_embedding_services_methods() -> None:
    from photodedup.v1 import wire

    assert wire.embed_method(wire.EMBED_METHOD) == "Embed"
    assert wire.embed_method(wire.STREAM_METHOD) == "EmbedStream"
    assert wire.embed_method("/grpc.health.v1.Health/Check") is None
    assert wire.embed_method("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo") is None
    assert wire.embed_method(None) is None
