"""Wire facts of photodedup.v1 in one place, beside the generated stubs.

Service name and method paths, message limits and channel options, embedding dtype conversions, the
status codes carried in `ItemError.code`, and the GetInfo probe. Server, CLI, embedders and the load
generator all take these from here, so the two sides of the wire cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np

from photodedup.settings import DEFAULT_MAX_MESSAGE_BYTES
from photodedup.v1 import embed_pb2, embed_pb2_grpc

SERVICE_NAME: str = embed_pb2.DESCRIPTOR.services_by_name["EmbedService"].full_name
EMBED_METHOD = f"/{SERVICE_NAME}/Embed"
STREAM_METHOD = f"/{SERVICE_NAME}/EmbedStream"
INFO_METHOD = f"/{SERVICE_NAME}/GetInfo"
SERVICE_PREFIX = f"/{SERVICE_NAME}/"


def embed_method(path: str | None) -> str | None:
    """The short name ("Embed") of an EmbedService method path, None for any other service's (health,
    reflection): the server's interceptors limit, authenticate and count only the embedding service."""
    if not path or not path.startswith(SERVICE_PREFIX):
        return None
    return path[len(SERVICE_PREFIX) :]


# Largest message either side sends or accepts (a 1,024-image request of ~15 KB thumbnails is ~16 MB). Defined
# with the settings, which must not import grpc: a local scan never opens a channel.
MAX_MESSAGE_BYTES = DEFAULT_MAX_MESSAGE_BYTES

# Statuses after which an item (or a whole call) may succeed when sent again, after a backoff.
RETRYABLE_CODES = frozenset({grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE})

_NUMPY_DTYPES: dict[int, np.dtype] = {
    embed_pb2.DTYPE_FLOAT32: np.dtype("<f4"),
    embed_pb2.DTYPE_FLOAT16: np.dtype("<f2"),
}
_BY_CODE: dict[int, grpc.StatusCode] = {status.value[0]: status for status in grpc.StatusCode}


def channel_options(max_message_bytes: int = MAX_MESSAGE_BYTES) -> list[tuple[str, Any]]:
    """Options for a client channel or a server: the same message limit in both directions."""
    return [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
    ]


# ---------------------------------------------------------------------------------------------- dtypes


def response_dtype(wire: int) -> int:
    """The dtype a request asks for, with UNSPECIFIED meaning float32; ValueError for an unknown value."""
    wire = embed_pb2.DTYPE_FLOAT32 if wire == embed_pb2.DTYPE_UNSPECIFIED else wire
    if wire not in _NUMPY_DTYPES:
        raise ValueError(f"unknown dtype {wire}")
    return wire


def numpy_dtype(wire: int) -> np.dtype:
    """The little-endian numpy dtype of a wire dtype (UNSPECIFIED is float32)."""
    return _NUMPY_DTYPES[response_dtype(wire)]


def dtype_for(name: str) -> int:
    """'float16' / 'float32' (as on the command line) -> wire dtype."""
    return {"float16": embed_pb2.DTYPE_FLOAT16, "float32": embed_pb2.DTYPE_FLOAT32}[name]


def encode_embedding(vector: np.ndarray, wire: int) -> embed_pb2.Embedding:
    """One vector -> packed Embedding in the requested dtype."""
    wire = response_dtype(wire)
    vec = np.asarray(vector, dtype=_NUMPY_DTYPES[wire])
    return embed_pb2.Embedding(data=vec.tobytes(), dtype=wire, dim=int(vec.shape[0]))


def decode_embedding(embedding: embed_pb2.Embedding) -> np.ndarray:
    """Packed Embedding -> float32 vector with one frombuffer; ValueError when data and dim disagree."""
    vec = np.frombuffer(embedding.data, dtype=numpy_dtype(embedding.dtype))
    if embedding.dim and vec.shape[0] != embedding.dim:
        raise ValueError(f"embedding has {vec.shape[0]} values, dim says {embedding.dim}")
    return vec.astype(np.float32)


# ---------------------------------------------------------------------------------------------- status codes


def code_value(status: grpc.StatusCode) -> int:
    """grpc.StatusCode -> the canonical integer carried in ItemError.code."""
    return int(status.value[0])


def status_of(code: int) -> grpc.StatusCode | None:
    """ItemError.code -> grpc.StatusCode; None for a value gRPC does not define."""
    return _BY_CODE.get(code)


def status_name(code: int) -> str:
    """A readable name for an ItemError.code, e.g. 8 -> 'RESOURCE_EXHAUSTED'."""
    status = status_of(code)
    return status.name if status is not None else f"CODE_{code}"


def item_error(rid: str, status: grpc.StatusCode, message: str) -> embed_pb2.EmbedResult:
    """A result that says why one image got no embedding."""
    return embed_pb2.EmbedResult(id=rid, error=embed_pb2.ItemError(code=code_value(status), message=message))


def is_retryable(code: int) -> bool:
    """Whether an item refused with this ItemError.code may succeed when sent again."""
    return status_of(code) in RETRYABLE_CODES


# Trailing metadata of a stream the server ended because it sat idle (nothing sent, nothing in flight): the
# client opens a new stream when it has images again; nothing it sent has failed.
STREAM_IDLE_TRAILER = ("photodedup-stream-idle", "1")


def closed_as_idle(exc: grpc.RpcError) -> bool:
    """Whether a stream's error is the server closing it as idle (sync or asyncio client)."""
    try:
        trailers = exc.trailing_metadata() or ()  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - an error without trailers (e.g. a local failure) is not an idle close
        return False
    return any((m[0], m[1]) == STREAM_IDLE_TRAILER for m in trailers)


# ---------------------------------------------------------------------------------------------- GetInfo probe


@dataclass
class ServerProbe:
    """What a client needs from GetInfo to talk to a server; `error` says why it could not ask."""

    address: str
    model_id: str = ""
    input_size: int = 0
    info: embed_pb2.GetInfoResponse | None = None
    error: str | None = None


def get_info(channel: grpc.Channel, timeout: float) -> embed_pb2.GetInfoResponse:
    """GetInfo on an open (sync) channel; raises grpc.RpcError."""
    return embed_pb2_grpc.EmbedServiceStub(channel).GetInfo(embed_pb2.GetInfoRequest(), timeout=timeout)


async def get_info_async(channel: grpc.aio.Channel, timeout: float) -> embed_pb2.GetInfoResponse:
    """GetInfo on an open asyncio channel; raises grpc.aio.AioRpcError."""
    return await embed_pb2_grpc.EmbedServiceStub(channel).GetInfo(embed_pb2.GetInfoRequest(), timeout=timeout)


def probe(address: str, channel: grpc.Channel, timeout: float) -> ServerProbe:
    """Ask one server for its model; an unreachable or unready server comes back with `error` set."""
    try:
        reply = get_info(channel, timeout)
    except grpc.RpcError as exc:
        return ServerProbe(address, error=rpc_error_text(exc))
    return ServerProbe(address, reply.model_id, int(reply.input_size), reply)


def rpc_error_text(exc: grpc.RpcError) -> str:
    """'CODE: details' for a failed call, the form every client message uses."""
    code = exc.code() if hasattr(exc, "code") else None
    details = exc.details() if hasattr(exc, "details") else str(exc)
    return f"{code.name if code is not None else 'UNKNOWN'}: {details}"
