"""Prometheus metrics modelled on Triton's: success/failure, inference vs execution counts (their
ratio is the mean batch size), queue / preprocess / compute durations, pending work, per device.

Each server owns its own CollectorRegistry, so tests can run several servers in one process.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    start_http_server,
)

_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)


class Metrics:
    """All metrics of one server."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "photodedup_requests", "RPCs finished, by method and gRPC status code", ["method", "code"], registry=r
        )
        self.items = Counter(
            "photodedup_items", "Images answered, by outcome (OK or an error code)", ["status"], registry=r
        )
        self.inference_items = Counter(
            "photodedup_inference_items", "Images run through an engine", ["device"], registry=r
        )
        self.executions = Counter("photodedup_executions", "Engine batch executions", ["device"], registry=r)
        self.batch_size = Histogram(
            "photodedup_batch_size", "Images per engine execution", ["device"], buckets=_BATCH_BUCKETS, registry=r
        )
        self.queue_duration = Histogram(
            "photodedup_queue_duration_seconds",
            "Time an image waited in the batcher's queue",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.decode_duration = Histogram(
            "photodedup_decode_duration_seconds",
            "Decode + resize time per request message (on the decode pool)",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.device_decoded = Counter(
            "photodedup_device_decoded_images",
            "Images passed on encoded for the engine's GPU to decode (nvJPEG) instead of the CPU pool",
            registry=r,
        )
        self.preprocess_duration = Histogram(
            "photodedup_preprocess_duration_seconds",
            "Batch normalisation time before inference",
            ["device"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.inference_duration = Histogram(
            "photodedup_inference_duration_seconds",
            "Engine compute time per batch (its sum per device is that device's busy time)",
            ["device"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.rebalanced_batches = Counter(
            "photodedup_rebalanced_batches",
            "Batches a device took over, not started, from a busy device (so it would not idle)",
            ["device"],
            registry=r,
        )
        self.queue_depth = Gauge("photodedup_queue_depth", "Images waiting in the batcher's queue", registry=r)
        self.inflight = Gauge("photodedup_inflight_items", "Images accepted and not yet answered", registry=r)
        self.refused = Counter(
            "photodedup_refused_items",
            "Images refused before any work, by the budget that said no",
            ["budget"],
            registry=r,
        )
        self.unread = Counter(
            "photodedup_unread_refusals",
            "EmbedService calls refused before their request was read (one the size their connection last sent "
            "would be refused)",
            registry=r,
        )
        self.auth_failures = Counter(
            "photodedup_auth_failures", "EmbedService calls refused for a missing or wrong bearer token", registry=r
        )
        self.ready = Gauge("photodedup_ready", "1 when the engines are loaded and warm", registry=r)
        self.engine_info = Gauge(
            "photodedup_engine_info",
            "1 per loaded engine: which runtime and precision serve each device",
            ["device", "engine", "precision"],
            registry=r,
        )
        # process_cpu_seconds_total etc.: lets a load generator tell CPU cost per image from waiting.
        ProcessCollector(registry=r)

    def serve(self, host: str, port: int) -> tuple[Any, int]:
        """Expose /metrics over HTTP on its own port; returns the HTTP server and the bound port."""
        addr = "0.0.0.0" if host in ("[::]", "") else host.strip("[]")
        server, _thread = start_http_server(port, addr=addr, registry=self.registry)
        return server, int(server.server_address[1])
