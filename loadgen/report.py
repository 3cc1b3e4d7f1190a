"""The report of `photodedup bench`: one row of plain data per step (for --json and the benchmark
scripts) and the human-readable table made from the same rows."""

from __future__ import annotations

import math
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from photodedup.loadgen.load import Recorder
    from photodedup.loadgen.stats import ServerSplit


def step_report(
    *,
    mode: str,
    concurrency: int,
    batch: int,
    rec: Recorder,
    server: ServerSplit | None,
    max_batch: int | None,
    payload: str,
) -> dict[str, Any]:
    """One row of the report, as plain data (the table and --json are both made from it)."""
    from photodedup.loadgen import stats as st

    images_done = rec.images_ok + sum(rec.errors.values())
    split = server.as_dict() if server is not None else None
    mean_batch = server.mean_batch if server is not None else math.nan
    eff = st.batch_efficiency(mean_batch, max_batch) if (server is not None and max_batch) else math.nan
    return {
        "mode": mode,
        "concurrency": concurrency,
        "batch": batch,
        "payload": payload,
        "requests": rec.requests,
        "images": images_done,
        "images_ok": rec.images_ok,
        "seconds": rec.seconds,
        "images_per_s": st.throughput(rec.images_ok, rec.seconds),
        "request_latency_ms": {k: v * 1e3 for k, v in st.percentiles(rec.request_latencies).items()},
        "image_latency_ms": (
            {k: v * 1e3 for k, v in st.percentiles(rec.image_latencies).items()} if mode == "stream" else None
        ),
        "bytes_per_image": rec.bytes_sent / rec.images_sent if rec.images_sent else math.nan,
        "client_cpu_ms_per_image": st.per_image_ms(rec.cpu_seconds, images_done),
        "server_cpu_ms_per_image": st.per_image_ms(server.cpu_seconds, images_done) if server is not None else math.nan,
        "errors": dict(sorted(rec.errors.items())),
        "mean_batch": mean_batch,
        "max_batch": max_batch,
        "batch_efficiency": eff,
        "server": split,
    }


def _fmt(x: Any, digits: int = 1) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if isinstance(x, float):
        return f"{x:,.{digits}f}"
    return f"{x:,}" if isinstance(x, int) else str(x)


def print_table(report: dict[str, Any]) -> None:
    """The human-readable report: one row per step."""
    from rich.console import Console
    from rich.table import Table

    # Piped output keeps every column readable instead of folding to 80 characters.
    console = Console(width=None if sys.stdout.isatty() else 170)
    meta = report["meta"]
    title = f"photodedup bench: {meta['target']} · {meta['mode']} · payload {meta['payload']}"
    table = Table(title=title, caption=meta["machine"])
    batch_head = "batch" if meta["mode"] != "stream" else "items/msg"
    for head in (
        "conc",
        batch_head,
        "img/s",
        "req p50/p90/p95/p99 ms",
        "img p50/p99 ms",
        "queue ms/img",
        "pre ms/batch",
        "infer ms/batch",
        "mean batch",
        "eff",
        "KB/img",
        "cpu ms/img cli/srv",
        "errors",
    ):
        table.add_column(head, justify="right" if head != "errors" else "left")
    for row in report["steps"]:
        rl = row["request_latency_ms"]
        il = row["image_latency_ms"]
        srv = row["server"] or {}
        table.add_row(
            str(row["concurrency"]),
            str(row["batch"]),
            _fmt(row["images_per_s"], 0),
            "/".join(_fmt(rl[k]) for k in ("p50", "p90", "p95", "p99")),
            "/".join(_fmt(il[k]) for k in ("p50", "p99")) if il else "-",
            _fmt(srv.get("queue_ms_per_image"), 2),
            _fmt(srv.get("preprocess_ms_per_batch"), 2),
            _fmt(srv.get("inference_ms_per_batch"), 2),
            _fmt(row["mean_batch"]),
            _fmt(row["batch_efficiency"], 2),
            _fmt(row["bytes_per_image"] / 1024 if row["bytes_per_image"] == row["bytes_per_image"] else None),
            f"{_fmt(row['client_cpu_ms_per_image'], 2)}/{_fmt(row['server_cpu_ms_per_image'], 2)}",
            ", ".join(f"{k} {v}" for k, v in row["errors"].items()) or "none",
        )
    console.print(table)
    if any(row["server"] is None for row in report["steps"]) and meta["mode"] != "local":
        console.print("server-side columns need --metrics HOST:PORT (the server's Prometheus port)")
