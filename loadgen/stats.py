"""Statistics for `photodedup bench`: percentiles, batch efficiency and the server-side split read from
Prometheus text. Kept free of gRPC so it is easy to test on known inputs.
"""

from __future__ import annotations

import logging
import math
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

DEFAULT_QUANTILES: tuple[float, ...] = (50.0, 90.0, 95.0, 99.0)
MACHINE_PACKAGES: tuple[str, ...] = ("grpcio", "protobuf", "torch", "onnxruntime", "open_clip_torch")

# (metric sample name, sorted label pairs) -> value
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def percentiles(values: Sequence[float], qs: Iterable[float] = DEFAULT_QUANTILES) -> dict[str, float]:
    """{'p50': ..., 'p90': ...} with numpy's linear interpolation; NaN for no values, so an empty step
    does not look like a zero-latency one."""
    qs = list(qs)
    if any(not 0.0 <= q <= 100.0 for q in qs):
        raise ValueError(f"percentiles must be within [0, 100], got {qs}")
    if not values:
        return {f"p{q:g}": math.nan for q in qs}
    return {f"p{q:g}": float(v) for q, v in zip(qs, np.percentile(np.asarray(values, np.float64), qs), strict=True)}


def mean_batch_size(inference_items: float, executions: float) -> float:
    """Images per engine execution (Triton's inference count / execution count); NaN without executions."""
    if executions <= 0:
        return math.nan
    return inference_items / executions


def batch_efficiency(mean_batch: float, max_batch: int) -> float:
    """How full the batches were: mean batch / max batch, in [0, 1]; NaN when unknown."""
    if max_batch <= 0:
        raise ValueError(f"max batch must be positive, got {max_batch}")
    if math.isnan(mean_batch):
        return math.nan
    return mean_batch / max_batch


def per_image_ms(seconds: float, images: float) -> float:
    """Milliseconds of something (CPU, wall) per image; NaN without images."""
    return 1000.0 * seconds / images if images > 0 else math.nan


def throughput(images: int, seconds: float) -> float:
    """Images per second; NaN for an empty interval."""
    return images / seconds if seconds > 0 else math.nan


def parse_prometheus(text: str) -> Samples:
    """Prometheus text exposition -> samples keyed by (name, labels)."""
    from prometheus_client.parser import text_string_to_metric_families

    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = float(sample.value)
    return out


def fetch_metrics(address: str, timeout: float = 5.0) -> Samples:
    """GET http://host:port/metrics from one server."""
    url = address if address.startswith("http") else f"http://{address}/metrics"
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return parse_prometheus(resp.read().decode("utf-8"))


def merge(samples: Iterable[Samples]) -> Samples:
    """Sum the samples of several servers, so a multi-server step reads like one server."""
    out: Samples = {}
    for s in samples:
        for key, value in s.items():
            out[key] = out.get(key, 0.0) + value
    return out


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum of every sample called `name` whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (n, lab), v in samples.items() if n == name and want <= set(lab))


def delta(before: Samples, after: Samples) -> Samples:
    """Counter and histogram growth between two scrapes (gauges are meaningless here and come out as-is)."""
    return {key: value - before.get(key, 0.0) for key, value in after.items()}


@dataclass
class ServerSplit:
    """Where a step's time went on the server side, from its own counters."""

    items_ok: float
    items_by_status: dict[str, float]
    inference_items: float
    executions: float
    mean_batch: float
    queue_ms_per_image: float
    decode_ms_per_message: float
    preprocess_ms_per_batch: float
    inference_ms_per_batch: float
    cpu_seconds: float = math.nan
    requests_by_code: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {k: _json_num(v) if isinstance(v, float) else v for k, v in self.__dict__.items()}


def _ms_mean(d: Samples, base: str) -> float:
    count = total(d, f"{base}_count")
    return 1000.0 * total(d, f"{base}_sum") / count if count > 0 else math.nan


def server_split(before: Samples, after: Samples) -> ServerSplit:
    """The server-side report of one step from two scrapes of photodedup's metrics."""
    d = delta(before, after)
    by_status: dict[str, float] = {}
    by_code: dict[str, float] = {}
    for (name, labels), value in d.items():
        lab = dict(labels)
        if name == "photodedup_items_total" and value:
            by_status[lab.get("status", "")] = by_status.get(lab.get("status", ""), 0.0) + value
        elif name == "photodedup_requests_total" and value:
            key = f"{lab.get('method', '')}:{lab.get('code', '')}"
            by_code[key] = by_code.get(key, 0.0) + value
    cpu = total(d, "process_cpu_seconds_total") if any(k[0] == "process_cpu_seconds_total" for k in d) else math.nan
    inference_items = total(d, "photodedup_inference_items_total")
    executions = total(d, "photodedup_executions_total")
    return ServerSplit(
        items_ok=by_status.get("OK", 0.0),
        items_by_status=by_status,
        inference_items=inference_items,
        executions=executions,
        mean_batch=mean_batch_size(inference_items, executions),
        queue_ms_per_image=_ms_mean(d, "photodedup_queue_duration_seconds"),
        decode_ms_per_message=_ms_mean(d, "photodedup_decode_duration_seconds"),
        preprocess_ms_per_batch=_ms_mean(d, "photodedup_preprocess_duration_seconds"),
        inference_ms_per_batch=_ms_mean(d, "photodedup_inference_duration_seconds"),
        cpu_seconds=cpu,
        requests_by_code=by_code,
    )


def _json_num(x: float) -> float | None:
    return None if math.isnan(x) or math.isinf(x) else x


def json_safe(obj: Any) -> Any:
    """NaN -> None recursively, so `--json` output is valid JSON."""
    if isinstance(obj, float):
        return _json_num(obj)
    if isinstance(obj, Mapping):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def machine_line(packages: Sequence[str] = MACHINE_PACKAGES) -> str:
    """'2026-11-27, 2 cores, x86_64, Python 3.11.7, grpcio 1.85.3, ...': printed with every bench report
    and table so a figure can be traced to the machine and versions that gave it."""
    import os
    import platform
    import time
    from importlib.metadata import PackageNotFoundError, version

    parts = [
        time.strftime("%Y-%m-%d", time.gmtime()),
        f"{os.cpu_count()} cores",
        platform.machine(),
        f"Python {platform.python_version()}",
    ]
    for pkg in packages:
        try:
            parts.append(f"{pkg} {version(pkg)}")
        except PackageNotFoundError:
            pass
    return ", ".join(parts)
