"""How a client reaches a server: one function opens every channel (CLI, scanner, load generator) with
the wire's message limits, TLS when asked for, a bearer token on every call, and round-robin balancing
over every address a target resolves to (`dns:///photodedup:50051`, `ipv4:10.0.0.1:50051,10.0.0.2:50051`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc

from photodedup.errors import PhotodedupError
from photodedup.v1 import wire

if TYPE_CHECKING:
    from photodedup.settings import Settings


def _read(path: Path | None, what: str) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise PhotodedupError(f"cannot read the {what} {path}: {exc.strerror or exc}") from None


def split_targets(values: Sequence[str]) -> list[str]:
    """Flag values -> targets: commas separate targets, except inside an `ipv4:`/`ipv6:` address list."""
    from photodedup.settings import join_address_lists

    return join_address_lists([part.strip() for v in values for part in v.split(",") if part.strip()])


def is_balanced(target: str) -> bool:
    """Whether a target names several servers for round robin (dns:///name:port, ipv4:a:p,b:p)."""
    return target.startswith(("dns:", "ipv4:", "ipv6:"))


def channel_credentials(settings: Settings) -> grpc.ChannelCredentials | None:
    """TLS credentials when TLS is on (`tls`, or any of the certificate files given); None for plaintext."""
    if not (settings.transport.tls or settings.transport.ca_cert or settings.transport.client_cert):
        return None
    if bool(settings.transport.client_cert) != bool(settings.transport.client_key):
        raise PhotodedupError(
            "a client certificate needs its key, and a key its certificate (--client-cert, --client-key)"
        )
    return grpc.ssl_channel_credentials(
        root_certificates=_read(settings.transport.ca_cert, "CA certificate"),
        private_key=_read(settings.transport.client_key, "client key"),
        certificate_chain=_read(settings.transport.client_cert, "client certificate"),
    )


def call_metadata(settings: Settings) -> tuple[tuple[str, str], ...]:
    """Metadata sent with every call: the bearer token when one is configured."""
    token = settings.transport.token.get_secret_value().strip() if settings.transport.token is not None else ""
    return (("authorization", f"Bearer {token}"),) if token else ()


def client_options(settings: Settings) -> list[tuple[str, Any]]:
    """Message limits, keepalive pings while calls are open, and round robin over every resolved address."""
    return [
        *wire.channel_options(settings.server.max_message_bytes),
        ("grpc.lb_policy_name", "round_robin"),
        ("grpc.keepalive_time_ms", int(settings.transport.keepalive_time_s * 1000)),
        ("grpc.keepalive_timeout_ms", int(settings.transport.keepalive_timeout_s * 1000)),
        ("grpc.keepalive_permit_without_calls", 0),
        # A server that went away (or a pod that was replaced) is tried again soon, not after minutes.
        ("grpc.max_reconnect_backoff_ms", 5000),
    ]


def open_channel(target: str, settings: Settings) -> grpc.Channel:
    """A blocking channel to `target` (host:port, dns:///host:port or ipv4:addr,addr...)."""
    creds = channel_credentials(settings)
    options = client_options(settings)
    channel = (
        grpc.secure_channel(target, creds, options=options)
        if creds is not None
        else grpc.insecure_channel(target, options=options)
    )
    metadata = call_metadata(settings)
    return grpc.intercept_channel(channel, _SyncMetadata(metadata)) if metadata else channel


def open_aio_channel(target: str, settings: Settings) -> grpc.aio.Channel:
    """An asyncio channel to `target`, like open_channel."""
    creds = channel_credentials(settings)
    options = client_options(settings)
    metadata = call_metadata(settings)
    interceptors = [_AioUnaryMetadata(metadata), _AioStreamMetadata(metadata)] if metadata else None
    if creds is not None:
        return grpc.aio.secure_channel(target, creds, options=options, interceptors=interceptors)
    return grpc.aio.insecure_channel(target, options=options, interceptors=interceptors)


def probe_server(target: str, settings: Settings) -> wire.ServerProbe:
    """GetInfo on a fresh channel within connect_timeout_s; an unreachable server comes back with `error`."""
    try:
        channel = open_channel(target, settings)
    except PhotodedupError as exc:
        return wire.ServerProbe(target, error=str(exc))
    with channel:
        return wire.probe(target, channel, settings.scan.connect_timeout_s)


# ---------------------------------------------------------------------------------------------- metadata


def _with_metadata(details: Any, metadata: tuple[tuple[str, str], ...], factory: Callable[..., Any]) -> Any:
    merged = tuple(details.metadata or ()) + metadata
    fields = {
        f: getattr(details, f, None) for f in ("method", "timeout", "credentials", "wait_for_ready", "compression")
    }
    return factory(**fields, metadata=merged)


class _CallDetails(grpc.ClientCallDetails):
    def __init__(
        self,
        method: str,
        timeout: float | None,
        metadata: Any,
        credentials: Any,
        wait_for_ready: bool | None,
        compression: Any,
    ) -> None:
        self.method = method
        self.timeout = timeout
        self.metadata = metadata
        self.credentials = credentials
        self.wait_for_ready = wait_for_ready
        self.compression = compression


class _SyncMetadata(grpc.UnaryUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    def __init__(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self._metadata = metadata

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(_with_metadata(details, self._metadata, _CallDetails), request)

    def intercept_stream_stream(self, continuation: Any, details: Any, request_iterator: Any) -> Any:
        return continuation(_with_metadata(details, self._metadata, _CallDetails), request_iterator)


def _aio_details(details: Any, metadata: tuple[tuple[str, str], ...]) -> grpc.aio.ClientCallDetails:
    merged = grpc.aio.Metadata(*(tuple(details.metadata or ()) + metadata))
    return grpc.aio.ClientCallDetails(
        details.method, details.timeout, merged, details.credentials, details.wait_for_ready
    )


class _AioUnaryMetadata(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self._metadata = metadata

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(_aio_details(details, self._metadata), request)


class _AioStreamMetadata(grpc.aio.StreamStreamClientInterceptor):
    def __init__(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self._metadata = metadata

    async def intercept_stream_stream(self, continuation: Any, details: Any, request_iterator: Any) -> Any:
        return await continuation(_aio_details(details, self._metadata), request_iterator)
