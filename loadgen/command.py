"""`photodedup bench`: a load generator for photodedup servers, in the spirit of Triton's perf_analyzer.

Each step of a concurrency (and batch) sweep runs a warm-up, drains, scrapes the servers' metrics, runs
the measured load, drains again and scrapes once more, so the server-side split covers exactly the
measured images. `--local` measures the engine alone in this process, one command away from the served
figure.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from photodedup.cliutils import build_settings, client_transport_options, handle_errors, model_options
from photodedup.extras import require
from photodedup.loadgen.report import print_table, step_report

if TYPE_CHECKING:
    from photodedup.settings import Settings

log = logging.getLogger(__name__)

PAYLOADS = ("thumbnail", "raw", "original")


def _int_list(text: str, what: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise click.BadParameter(f"{what} must be comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise click.BadParameter(f"{what} must be positive integers, got {text!r}")
    return values


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise click.BadParameter(f"expected WIDTHxHEIGHT, got {text!r}") from None
    return w, h


def _split(values: tuple[str, ...]) -> list[str]:
    return [part.strip() for v in values for part in v.split(",") if part.strip()]


@dataclass
class BenchOptions:
    """Everything one run needs, validated once."""

    mode: str
    concurrency: list[int]
    batches: list[int]
    items_per_message: int
    streams: int
    duration: float | None
    requests: int | None
    warmup: float
    payload: str
    photos: Path | None
    images: int
    photo_size: tuple[int, int]
    dtype: str
    timeout: float
    quality: int = 80
    expected_status: frozenset[str] = frozenset()
    # How to reach the servers (TLS, client certificate, bearer token); None: the environment's settings.
    transport: Settings | None = None


def register(group: click.Group) -> None:
    """Add `bench` to the photodedup command group."""
    group.add_command(bench)


# ---------------------------------------------------------------------------------------------- remote


async def _remote(targets: list[str], metrics: list[str], opts: BenchOptions) -> dict[str, Any]:
    import asyncio  # here, not at import: every command's start registers this module

    import grpc

    from photodedup.errors import PhotodedupError
    from photodedup.loadgen import load as bl
    from photodedup.loadgen import stats as st
    from photodedup.loadgen.payload import make_payload
    from photodedup.settings import Settings
    from photodedup.transport import open_aio_channel
    from photodedup.v1 import wire

    settings = opts.transport if opts.transport is not None else Settings()
    channels = [open_aio_channel(t, settings) for t in targets]
    try:
        infos = []
        for target, ch in zip(targets, channels, strict=True):
            try:
                infos.append(await wire.get_info_async(ch, opts.timeout))
            except grpc.aio.AioRpcError as exc:
                raise PhotodedupError(f"{target}: {wire.rpc_error_text(exc)}") from None
        if len({i.model_id for i in infos}) != 1:
            raise PhotodedupError(f"servers serve different models: {sorted({i.model_id for i in infos})}")
        info = infos[0]
        max_batch = int(info.batching.max_batch_size) or None
        size = int(info.input_size)
        payload = await asyncio.to_thread(
            make_payload, opts.payload, size, opts.images, opts.photos, opts.photo_size, opts.quality
        )
        dtype = wire.dtype_for(opts.dtype)

        async def phase(conc: int, batch: int, duration: float | None, requests: int | None) -> bl.Recorder:
            rec = bl.Recorder()
            budget = bl.Budget(duration, requests)
            if opts.mode == "unary":
                reqs = bl.unary_requests(payload, batch, dtype, max(conc, 8))
                await bl.run_unary(channels, reqs, conc, budget, rec, opts.timeout)
            else:
                await bl.run_streams(channels, payload, conc, batch, opts.streams, dtype, budget, rec, opts.timeout)
            return rec

        async def scrape() -> st.Samples | None:
            if not metrics:
                return None
            return st.merge(await asyncio.gather(*(asyncio.to_thread(st.fetch_metrics, m) for m in metrics)))

        steps = []
        batches = opts.batches if opts.mode == "unary" else [opts.items_per_message]
        for batch in batches:
            for conc in opts.concurrency:
                if opts.warmup > 0:
                    await phase(conc, batch, opts.warmup, None)
                before = await scrape()
                cpu0 = time.process_time()
                rec = await phase(conc, batch, opts.duration, opts.requests)
                rec.cpu_seconds = time.process_time() - cpu0
                after = await scrape()
                split = st.server_split(before, after) if before is not None and after is not None else None
                row = step_report(
                    mode=opts.mode,
                    concurrency=conc,
                    batch=batch,
                    rec=rec,
                    server=split,
                    max_batch=max_batch,
                    payload=opts.payload,
                )
                log.info("step c=%d b=%d: %.0f img/s", conc, batch, row["images_per_s"])
                steps.append(row)
        return {
            "model_id": info.model_id,
            "payload_sources": payload.sources,
            "max_batch_size": max_batch,
            "max_queue_delay_us": int(info.batching.max_queue_delay_us),
            "engines": [f"{e.name}/{e.device}/{e.precision}" for e in info.engines],
            "steps": steps,
        }
    finally:
        for ch in channels:
            await ch.close()


# ---------------------------------------------------------------------------------------------- local


def _local(settings: Settings, opts: BenchOptions) -> dict[str, Any]:
    from photodedup.engines import create_engine
    from photodedup.loadgen import load as bl
    from photodedup.loadgen.payload import make_payload

    device = settings.model.devices[0]
    engine = create_engine(settings, device)
    try:
        size = engine.info.preprocessing.input_size
        payload = make_payload("raw", size, opts.images, opts.photos, opts.photo_size)
        steps = []
        for batch in opts.batches:
            engine.warmup([batch])
            if opts.warmup > 0:
                bl.run_local(engine, payload.arrays, batch, bl.Budget(opts.warmup, None), bl.Recorder())
            rec = bl.Recorder()
            cpu0 = time.process_time()
            bl.run_local(engine, payload.arrays, batch, bl.Budget(opts.duration, opts.requests), rec)
            rec.cpu_seconds = time.process_time() - cpu0
            row = step_report(
                mode="local", concurrency=1, batch=batch, rec=rec, server=None, max_batch=None, payload="raw"
            )
            row["mean_batch"] = float(batch)
            steps.append(row)
        return {
            "model_id": engine.info.model_id,
            "payload_sources": payload.sources,
            "max_batch_size": None,
            "max_queue_delay_us": None,
            "engines": [f"{engine.name}/{engine.device}/{engine.precision}"],
            "steps": steps,
        }
    finally:
        engine.close()


# ---------------------------------------------------------------------------------------------- command


def run_bench(
    targets: list[str], metrics: list[str], local_settings: Settings | None, opts: BenchOptions
) -> dict[str, Any]:
    """Run every step and return the report (also the entry point for benchmarks/ scripts)."""

    from photodedup.loadgen import stats as st

    started = time.time()
    if local_settings is not None:
        body = _local(local_settings, opts)
        target = "local engine"
        mode = "local"
    else:
        import asyncio

        body = asyncio.run(_remote(targets, metrics, opts))
        target = ",".join(targets)
        mode = opts.mode
    machine = st.machine_line()
    unexpected: dict[str, int] = {}
    for row in body["steps"]:
        for code, n in row["errors"].items():
            if code not in opts.expected_status:
                unexpected[code] = unexpected.get(code, 0) + n
    report = {
        "meta": {
            "target": target,
            "mode": mode,
            "payload": opts.payload if mode != "local" else "raw",
            "machine": machine,
            "started_unix": started,
            "duration_s": opts.duration,
            "requests": opts.requests,
            "warmup_s": opts.warmup,
            "items_per_message": opts.items_per_message if mode == "stream" else None,
            "streams_per_target": opts.streams if mode == "stream" else None,
            "dtype": opts.dtype,
            "jpeg_quality": opts.quality,
            "metrics": metrics,
            **{k: v for k, v in body.items() if k != "steps"},
        },
        "steps": body["steps"],
        "unexpected_errors": unexpected,
    }
    return st.json_safe(report)


@click.command()
@click.option(
    "--server",
    "servers",
    multiple=True,
    help="host:port of a server; repeat or comma-separate to load several. dns:///name:port or "
    "ipv4:addr:port,addr:port is one balanced target over every address.",
)
@click.option("--local", is_flag=True, help="Measure the engine alone in this process (no server, no gRPC).")
@click.option("--mode", type=click.Choice(["unary", "stream"]), default="stream", show_default=True)
@click.option(
    "--concurrency",
    default="1,4,16,64",
    show_default=True,
    help="Requests (unary) or messages (stream) in flight; a comma list is a sweep.",
)
@click.option(
    "--batch",
    "batch",
    default=None,
    help=(
        "Images per unary request, or per engine call with --local; a comma list sweeps. [default "
        "1; 1,8,32 with --local]"
    ),
)
@click.option("--items-per-message", type=int, default=8, show_default=True, help="Images per EmbedStream message.")
@click.option("--streams", type=int, default=1, show_default=True, help="EmbedStream calls per server.")
@click.option("--duration", type=float, default=None, help="Measured seconds per step [default 5 unless --requests].")
@click.option(
    "--requests", type=int, default=None, help="Measured requests (unary), messages (stream) or engine calls per step."
)
@click.option("--warmup", type=float, default=1.0, show_default=True, help="Unmeasured seconds before each step.")
@click.option("--payload", type=click.Choice(PAYLOADS), default="thumbnail", show_default=True)
@click.option(
    "--photos",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Folder of real photos [default: generated ones].",
)
@click.option("--images", type=int, default=64, show_default=True, help="Distinct images to cycle through.")
@click.option("--photo-size", default="1600x1200", show_default=True, help="Size of generated photos (WIDTHxHEIGHT).")
@click.option(
    "--quality",
    type=click.IntRange(1, 100),
    default=80,
    show_default=True,
    help="JPEG quality of thumbnails (and generated originals).",
)
@click.option(
    "--metrics",
    "metrics",
    multiple=True,
    help="host:port of a server's Prometheus endpoint, for the server-side columns.",
)
@click.option("--dtype", type=click.Choice(["float32", "float16"]), default="float32", show_default=True)
@click.option(
    "--expect-status", multiple=True, help="gRPC status names that do not fail the run (e.g. RESOURCE_EXHAUSTED)."
)
@click.option(
    "--timeout",
    type=float,
    default=60.0,
    show_default=True,
    help="Deadline of each unary request; for streams, the longest wait for the next result.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON instead of a table.")
@model_options
@client_transport_options
@handle_errors
def bench(
    servers: tuple[str, ...],
    local: bool,
    mode: str,
    concurrency: str,
    batch: str | None,
    items_per_message: int,
    streams: int,
    duration: float | None,
    requests: int | None,
    warmup: float,
    payload: str,
    photos: Path | None,
    images: int,
    photo_size: str,
    quality: int,
    metrics: tuple[str, ...],
    dtype: str,
    expect_status: tuple[str, ...],
    timeout: float,
    as_json: bool,
    **flags: Any,
) -> None:
    """Load one or more servers (or the engine alone) and report throughput, latency percentiles, the
    server-side time split, batch efficiency, bytes per image and errors per step."""
    from photodedup.transport import split_targets

    targets = split_targets(servers)
    if not local and not targets:
        raise click.UsageError("give --server HOST:PORT (or --local for the engine alone)")
    if local and targets:
        raise click.UsageError("--local measures the engine in-process; drop --server")
    if duration is not None and requests is not None:
        raise click.UsageError("give --duration or --requests, not both")
    if items_per_message < 1 or streams < 1 or images < 1:
        raise click.UsageError("--items-per-message, --streams and --images must be at least 1")
    opts = BenchOptions(
        mode=mode,
        concurrency=_int_list(concurrency, "--concurrency"),
        batches=_int_list(batch or ("1,8,32" if local else "1"), "--batch"),
        items_per_message=items_per_message,
        streams=streams,
        duration=5.0 if duration is None and requests is None else duration,
        requests=requests,
        warmup=warmup,
        payload=payload,
        photos=photos,
        images=images,
        photo_size=_size(photo_size),
        dtype=dtype,
        timeout=timeout,
        quality=quality,
        expected_status=frozenset(s.upper() for s in _split(expect_status)),
    )
    if local:
        require("photodedup bench --local", "local", "torch", "open_clip")
    settings = build_settings(**flags)
    opts.transport = settings
    local_settings = settings if local else None
    report = run_bench(targets, _split(metrics), local_settings, opts)
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        print_table(report)
    if report["unexpected_errors"]:
        click.echo(f"photodedup bench: unexpected errors: {report['unexpected_errors']}", err=True)
        sys.exit(1)
