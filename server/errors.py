"""One place that maps domain errors to gRPC status codes, for whole RPCs and for single items."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from photodedup.errors import (
    EngineUnavailableError,
    InvalidImageError,
    ModelUnavailableError,
    PhotodedupError,
    QueueFullError,
    ShuttingDownError,
)
from photodedup.server.metrics import Metrics
from photodedup.server.parsing import Unparsed, bounded_parser
from photodedup.v1 import wire

log = logging.getLogger(__name__)


class NotReadyError(PhotodedupError):
    """The engines are still loading or warming up."""


class InvalidRequestError(PhotodedupError):
    """A request is malformed (e.g. an unknown dtype)."""


class StreamIdleError(PhotodedupError):
    """A stream sent nothing for the idle timeout with nothing in flight; the client may open a new one."""


class ListenError(PhotodedupError):
    """A port cannot be opened (in use, or not ours to take): one line for the operator, not a traceback."""


class RequestTooLargeError(InvalidRequestError):
    """A request breaks a per-request limit (items per request)."""


def status_for(exc: BaseException) -> grpc.StatusCode:
    """The gRPC status code a domain error stands for; anything else (an engine's failure included) is INTERNAL."""
    if isinstance(exc, (InvalidImageError, InvalidRequestError)):
        return grpc.StatusCode.INVALID_ARGUMENT
    if isinstance(exc, QueueFullError):
        return grpc.StatusCode.RESOURCE_EXHAUSTED
    if isinstance(
        exc, (ShuttingDownError, NotReadyError, ModelUnavailableError, EngineUnavailableError, StreamIdleError)
    ):
        return grpc.StatusCode.UNAVAILABLE
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
        return grpc.StatusCode.DEADLINE_EXCEEDED
    return grpc.StatusCode.INTERNAL


class RateLimitedLog:
    """At most one record per key and interval; the next one says how many were left out."""

    def __init__(self, logger: logging.Logger, interval_s: float = 10.0) -> None:
        self._log = logger
        self._interval = interval_s
        self._last: dict[str, tuple[float, int]] = {}

    def log(self, level: int, key: str, msg: str, *args: Any, exc_info: bool = False) -> None:
        now = time.monotonic()
        last, skipped = self._last.get(key, (-math.inf, 0))
        if now - last < self._interval:
            self._last[key] = (last, skipped + 1)
            return
        self._last[key] = (now, 0)
        if skipped:
            msg += f" (and {skipped} more like it in the last {self._interval:g} s)"
        self._log.log(level, msg, *args, exc_info=exc_info)


class ErrorMappingInterceptor(grpc.aio.ServerInterceptor):
    """Turns domain errors raised by handlers into statuses and counts every RPC by status code.
    Handles unary and streaming handlers alike; request bytes are counted before they are parsed
    (server/parsing.py), and malformed or oversized messages are INVALID_ARGUMENT; replies
    never carry class names, addresses or tracebacks, and repeated errors are logged at a bounded rate."""

    def __init__(self, metrics: Metrics, max_items: int) -> None:
        self._metrics = metrics
        self._max_items = max_items
        self._log = RateLimitedLog(log)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        short = wire.embed_method(handler_call_details.method)
        if handler is None or short is None:
            return handler
        parse = bounded_parser(handler.request_deserializer, self._max_items)
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._wrap_unary(short, handler.unary_unary),
                request_deserializer=parse,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_stream is not None:
            return grpc.stream_stream_rpc_method_handler(
                self._wrap_stream(short, handler.stream_stream),
                request_deserializer=parse,
                response_serializer=handler.response_serializer,
            )
        return handler

    @contextlib.asynccontextmanager
    async def _mapped(self, method: str, context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
        """Around one RPC: domain errors become their status, anything else INTERNAL; the outcome is counted."""
        start = time.perf_counter()
        code = grpc.StatusCode.OK
        try:
            yield
        except PhotodedupError as exc:
            code = status_for(exc)
            self._log.log(logging.INFO, f"{method}/{code.name}", "%s: %s: %s", method, code.name, exc)
            trailers = (wire.STREAM_IDLE_TRAILER,) if isinstance(exc, StreamIdleError) else ()
            await context.abort(code, str(exc), trailing_metadata=trailers)
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED
            raise
        except grpc.aio.AbortError:
            code = context.code() or grpc.StatusCode.UNKNOWN
            raise
        except Exception:
            code = grpc.StatusCode.INTERNAL
            self._log.log(logging.ERROR, f"{method}/INTERNAL", "%s failed", method, exc_info=True)
            await context.abort(code, "internal error (logged on the server)")
        finally:
            self._metrics.requests.labels(method, code.name).inc()
            log.debug("%s %s in %.1f ms", method, code.name, (time.perf_counter() - start) * 1e3)

    def _wrap_unary(self, method: str, behavior: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> Any:
            async with self._mapped(method, context):
                if isinstance(request, Unparsed):
                    raise InvalidRequestError(f"the {method} request {request.reason}")
                return await behavior(request, context)

        return wrapper

    def _wrap_stream(
        self, method: str, behavior: Callable[..., AsyncIterator[Any]]
    ) -> Callable[..., AsyncIterator[Any]]:
        async def wrapper(request_iterator: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            async with self._mapped(method, context):
                async for response in behavior(_checked(method, request_iterator), context):
                    yield response

        return wrapper


async def _checked(method: str, requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """Stream messages, with a malformed one raising INVALID_ARGUMENT for the whole stream."""
    async for message in requests:
        if isinstance(message, Unparsed):
            raise InvalidRequestError(f"a {method} message {message.reason}")
        yield message
