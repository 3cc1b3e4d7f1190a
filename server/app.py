"""Server lifecycle: listen, load engines (health NOT_SERVING), warm up, serve, drain on SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
from concurrent.futures import ThreadPoolExecutor

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from photodedup.engines import create_engine
from photodedup.engines.base import Engine
from photodedup.server.auth import TokenAuthInterceptor, TokenFile
from photodedup.server.batcher import DynamicBatcher
from photodedup.server.calls import CallLimitInterceptor
from photodedup.server.errors import ErrorMappingInterceptor, ListenError
from photodedup.server.metrics import Metrics
from photodedup.server.pipeline import Runtime
from photodedup.server.service import EmbedServicer
from photodedup.server.transport import server_credentials, server_options
from photodedup.settings import Settings
from photodedup.v1 import embed_pb2_grpc, wire

log = logging.getLogger(__name__)

WARMUP_SIZES = (1, 8)


class EmbedServer:
    """One gRPC server, one engine per device, one central batcher."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.port: int = 0
        self.metrics_port: int | None = None
        self._metrics_http = None
        self._decode_pool = ThreadPoolExecutor(settings.server.decode_threads, thread_name_prefix="decode")
        # Batches are normalised on threads of their own: every caller's images wait on a batch, so its
        # preprocessing must not queue behind one caller's decode backlog on the decode pool.
        self._prep_pool = ThreadPoolExecutor(len(settings.model.devices), thread_name_prefix="prep")
        self._device_executors = {
            dev: ThreadPoolExecutor(1, thread_name_prefix=f"device-{dev}") for dev in settings.model.devices
        }
        self._servicer = EmbedServicer(settings, self._decode_pool, self.metrics)
        self.tokens = TokenFile(settings.server.auth_token_file) if settings.server.auth_token_file else None
        self._health = health.aio.HealthServicer()
        self._server: grpc.aio.Server | None = None
        # EmbedService calls only: a health check is never refused because of load.
        self.calls = CallLimitInterceptor(
            settings.server.max_concurrent_rpcs, self.metrics, read_gate=self._servicer.admission.read_refusal
        )
        self._engines: list[Engine] = []
        self._batcher: DynamicBatcher | None = None

    async def start(self) -> int:
        """Bind and start answering (health NOT_SERVING); returns the bound gRPC port."""
        s = self.settings
        errors = ErrorMappingInterceptor(self.metrics, s.server.max_items_per_request)
        interceptors: list[grpc.aio.ServerInterceptor] = [self.calls, errors]
        if self.tokens is not None:
            interceptors.insert(0, TokenAuthInterceptor(self.tokens, self.metrics))
        server = grpc.aio.server(interceptors=interceptors, options=server_options(s))
        embed_pb2_grpc.add_EmbedServiceServicer_to_server(self._servicer, server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection((wire.SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        credentials = server_credentials(s)
        address = f"{s.server.host}:{s.server.port}"
        try:
            if credentials is None:
                self.port = server.add_insecure_port(address)
            else:
                self.port = server.add_secure_port(address, credentials)
        except RuntimeError:  # grpc's "Failed to bind": the port is in use or not ours
            self.port = 0
        if self.port == 0:
            raise ListenError(f"cannot listen on {address}: the port is in use or cannot be opened")
        await server.start()
        self._server = server
        if s.server.metrics:
            try:
                self._metrics_http, self.metrics_port = self.metrics.serve(s.server.host, s.server.metrics_port)
            except OSError as exc:
                await server.stop(0)
                self._server = None
                raise ListenError(
                    f"cannot serve metrics on {s.server.host}:{s.server.metrics_port}: {exc.strerror or exc}"
                    " (--metrics-port 0 picks a free port, --no-metrics turns them off)"
                ) from None
        log.info("listening on %s:%d (metrics on %s)", s.server.host, self.port, self.metrics_port)
        log.info(
            "transport: %s%s",
            "plaintext" if credentials is None else ("mutual TLS" if s.server.tls_client_ca else "TLS"),
            ", bearer tokens required for EmbedService" if self.tokens is not None else "",
        )
        return self.port

    async def load(self) -> None:
        """Create, load and warm one engine per device (each on its own device thread), then serve."""
        loop = asyncio.get_running_loop()
        s = self.settings

        def build(device: str) -> Engine:
            engine = create_engine(s, device)
            engine.warmup(WARMUP_SIZES)
            return engine

        engines: list[Engine] = []
        try:
            for device in s.model.devices:  # sequentially: exports and weight downloads must not race
                engines.append(await loop.run_in_executor(self._device_executors[device], build, device))
        except BaseException:
            for engine in engines:
                engine.close()
            raise
        self._engines = engines
        ids = {e.info.model_id for e in engines}
        if len(ids) != 1:
            raise RuntimeError(f"engines disagree on the model: {ids}")
        self._batcher = DynamicBatcher(
            engines,
            self._device_executors,
            self._prep_pool,
            self.metrics,
            max_batch_size=s.server.max_batch_size,
            max_queue_delay_s=s.server.max_queue_delay_ms / 1000.0,
            max_queue_size=s.server.max_queue_size,
        )
        self._batcher.start()
        self.metrics.queue_depth.set_function(lambda: self._batcher.live_depth if self._batcher else 0)
        self._servicer.runtime = Runtime(engines, self._batcher, engines[0].info)
        self.metrics.ready.set(1)
        for e in engines:
            log.info("engine %s on %s (%s): %s", e.name, e.device, e.precision, e.status().detail)
            self.metrics.engine_info.labels(e.device, e.name, e.precision).set(1)
        await self._set_health(health_pb2.HealthCheckResponse.SERVING)

    async def _set_health(self, status: int) -> None:
        await self._health.set("", status)
        await self._health.set(wire.SERVICE_NAME, status)

    async def stop(self, grace: float | None = None) -> None:
        """Stop taking work (new calls and new stream images get UNAVAILABLE), wait for in-flight work at most
        the grace period, then close every call (health watches too) and release everything."""
        grace = self.settings.server.grace_period_s if grace is None else grace
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        self.metrics.ready.set(0)
        self._servicer.drain()
        if await self._servicer.wait_idle(grace):
            log.info("in-flight work done")
        else:
            log.warning("grace period over with calls still open; cancelling them")
        if self._server is not None:
            await self._server.stop(0)  # what is left: health watches, probes
        if self._batcher is not None:
            await self._batcher.close()
        loop = asyncio.get_running_loop()
        for engine in self._engines:
            await loop.run_in_executor(self._device_executors[engine.device], engine.close)
        for ex in self._device_executors.values():
            ex.shutdown(wait=False, cancel_futures=True)
        self._decode_pool.shutdown(wait=False, cancel_futures=True)
        self._prep_pool.shutdown(wait=False, cancel_futures=True)
        if self._metrics_http is not None:
            self._metrics_http.shutdown()
            self._metrics_http.server_close()


async def serve(settings: Settings) -> bool:
    """Run until SIGTERM/SIGINT, then drain within the grace period. Returns True when the stop came
    while the model was still loading: that load runs on in its thread, and the caller should exit
    without waiting for it."""
    server = EmbedServer(settings)
    loop = asyncio.get_running_loop()
    stop_requested = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop_requested.set)
    if server.tokens is not None:
        loop.add_signal_handler(signal.SIGHUP, server.tokens.reload)
    await server.start()
    loader = asyncio.create_task(server.load())
    waiter = asyncio.create_task(stop_requested.wait())
    done, _ = await asyncio.wait({loader, waiter}, return_when=asyncio.FIRST_COMPLETED)
    if loader in done:
        try:
            loader.result()
        except BaseException:
            await server.stop(0)
            raise
        log.info("serving %s on port %d", wire.SERVICE_NAME, server.port)
        await waiter
    else:
        loader.cancel()
    log.info("draining (grace %.1f s)", settings.server.grace_period_s)
    await server.stop()
    log.info("stopped")
    return not loader.done() or loader.cancelled()
