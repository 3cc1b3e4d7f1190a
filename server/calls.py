"""The cap on concurrent calls, for EmbedService only: health checks and reflection are never refused
because of load (grpc's own `maximum_concurrent_rpcs` counts every call, so a flood would starve the
probes that decide whether the server is alive).

A call is counted from the moment its handler starts until it ends. So that this moment is the call's
arrival, not the end of its upload, a unary method is served as a stream-unary one (the same bytes on
the wire): its handler starts at once and a refused call never reads its request. The same moment lets a
call that the queue budget would refuse be refused before its request is read (`read_gate`, see
server/admission.py): reading a large request is itself work on the event loop.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from photodedup.server.admission import Refusal
from photodedup.server.metrics import Metrics
from photodedup.v1 import wire


class CallLimitInterceptor(grpc.aio.ServerInterceptor):
    """Refuses an EmbedService call with RESOURCE_EXHAUSTED while `max_calls` of them are open."""

    def __init__(
        self, max_calls: int, metrics: Metrics, read_gate: Callable[[str], Refusal | None] | None = None
    ) -> None:
        self.max_calls = max_calls
        self.open = 0
        self._metrics = metrics
        self._read_gate = read_gate  # peer -> why its unary request is not worth reading now

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        short = wire.embed_method(handler_call_details.method)
        if handler is None or short is None:
            return handler
        if handler.unary_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                self._unary(short, handler.unary_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_stream is not None:
            return grpc.stream_stream_rpc_method_handler(
                self._stream(short, handler.stream_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler

    async def _admit(self, method: str, context: grpc.aio.ServicerContext) -> None:
        if self.open >= self.max_calls:
            self._metrics.requests.labels(method, grpc.StatusCode.RESOURCE_EXHAUSTED.name).inc()
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED, f"server busy ({self.open} calls open); retry later"
            )
        self.open += 1

    def _unary(self, method: str, behavior: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def limited(request_iterator: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> Any:
            await self._admit(method, context)
            try:
                refusal = self._read_gate(context.peer()) if self._read_gate is not None else None
                if refusal is not None:
                    self._metrics.unread.inc()
                    self._metrics.requests.labels(method, grpc.StatusCode.RESOURCE_EXHAUSTED.name).inc()
                    await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, refusal.message)
                # One read, not `async for`: an iterator left unfinished would keep the request's raw bytes
                # alive until the call ends (bench_hostile's floods peaked some 300 MB higher that way).
                request = await context.read()
                if request is grpc.aio.EOF:
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"the {method} call sent no request")
                return await behavior(request, context)
            finally:
                self.open -= 1

        return limited

    def _stream(self, method: str, behavior: Callable[..., AsyncIterator[Any]]) -> Callable[..., AsyncIterator[Any]]:
        async def limited(
            request_iterator: AsyncIterator[Any], context: grpc.aio.ServicerContext
        ) -> AsyncIterator[Any]:
            await self._admit(method, context)
            try:
                async for response in behavior(request_iterator, context):
                    yield response
            finally:
                self.open -= 1

        return limited
