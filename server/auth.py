"""Bearer-token authentication for EmbedService; health and reflection stay open for probes.

Tokens come from a file, one per line (blank lines and `#` comments ignored), and are read again on
SIGHUP. Every presented token is compared with every allowed one in constant time, so timing says
nothing about how much of a token was right. Token values never reach a log line or an error message.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc

from photodedup.errors import PhotodedupError
from photodedup.server.metrics import Metrics
from photodedup.v1 import wire

log = logging.getLogger(__name__)


class TokenFile:
    """The allowed tokens, loaded from `path`; `reload` keeps the old set when the file cannot be read."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._tokens: tuple[bytes, ...] = ()
        self._tokens = self._read()

    def _read(self) -> tuple[bytes, ...]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise PhotodedupError(f"cannot read the token file {self.path}: {exc.__class__.__name__}") from None
        tokens = tuple(
            line.strip().encode() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")
        )
        if not tokens:
            raise PhotodedupError(f"the token file {self.path} holds no token")
        return tokens

    def reload(self) -> None:
        """Read the file again (on SIGHUP); a bad file is logged and the current tokens stay in force."""
        try:
            self._tokens = self._read()
        except PhotodedupError as exc:
            log.error("%s; keeping the %d tokens loaded before", exc, len(self._tokens))
            return
        log.info("reloaded %d tokens from %s", len(self._tokens), self.path)

    def allows(self, presented: bytes) -> bool:
        """Constant-time check against every token (no early exit)."""
        ok = False
        for token in self._tokens:
            ok |= hmac.compare_digest(presented, token)
        return ok


def bearer_token(metadata: Any) -> bytes | None:
    """The token of an `authorization: Bearer <token>` header, or None."""
    for key, value in metadata or ():
        if key == "authorization":
            text = value.decode("latin-1") if isinstance(value, bytes) else str(value)
            scheme, _, token = text.partition(" ")
            if scheme.lower() == "bearer" and token:
                return token.strip().encode("latin-1")
    return None


class TokenAuthInterceptor(grpc.aio.ServerInterceptor):
    """Refuses EmbedService calls without an allowed bearer token with UNAUTHENTICATED, before any
    handler runs; counts each refusal."""

    def __init__(self, tokens: TokenFile, metrics: Metrics) -> None:
        self._tokens = tokens
        self._metrics = metrics

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        short = wire.embed_method(handler_call_details.method)
        if short is None:
            return await continuation(handler_call_details)
        token = bearer_token(handler_call_details.invocation_metadata)
        if token is not None and self._tokens.allows(token):
            return await continuation(handler_call_details)
        self._metrics.requests.labels(short, grpc.StatusCode.UNAUTHENTICATED.name).inc()
        self._metrics.auth_failures.inc()
        message = "missing bearer token" if token is None else "invalid bearer token"
        return _refusal(await continuation(handler_call_details), message)


def _refusal(handler: grpc.RpcMethodHandler | None, message: str) -> grpc.RpcMethodHandler | None:
    """A handler of the same shape that answers UNAUTHENTICATED without reading the request."""
    if handler is None:
        return None

    async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    async def stream(request_iterator: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)
        yield  # pragma: no cover - makes this an async generator

    # No request deserializer: a refused call's request bytes are never parsed.
    if handler.stream_stream is not None:
        return grpc.stream_stream_rpc_method_handler(stream, response_serializer=handler.response_serializer)
    return grpc.unary_unary_rpc_method_handler(unary, response_serializer=handler.response_serializer)
