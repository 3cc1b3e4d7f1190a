"""The `photodedup` command line. Builds the one Settings object (flags > env > defaults) and passes it down."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from typing import Any

import click

from photodedup import __version__
from photodedup.cliutils import build_settings, handle_errors, model_options
from photodedup.errors import PhotodedupError

log = logging.getLogger("photodedup")


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for handler in logging.getLogger().handlers:
        handler.addFilter(_drop_open_clip_random_warning)


def _drop_open_clip_random_warning(record: logging.LogRecord) -> bool:
    # open_clip warns on the root logger for every random-initialised model; --weights random asked for it.
    return not (record.name == "root" and "initialized randomly" in str(record.msg))


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="photodedup")
@click.option("--log-level", default="INFO", show_default=True, envvar="PHOTODEDUP_LOG_LEVEL")
@click.pass_context
def main(ctx: click.Context, log_level: str) -> None:
    """Find duplicate and near-duplicate photos with CLIP embeddings."""
    _setup_logging(log_level)
    ctx.obj = {"log_level": log_level}


@main.command()
@model_options
@click.option("--host", help="Address to listen on [default [::]].")
@click.option("--port", type=int, help="gRPC port [env PORT; default 50051; 0 picks a free port].")
@click.option("--metrics-port", type=int, help="Prometheus port [default 9464; 0 picks a free port].")
@click.option("--no-metrics", "metrics", flag_value=False, default=None, help="Do not serve Prometheus metrics.")
@click.option("--max-batch-size", type=int)
@click.option("--max-queue-delay-ms", type=float)
@click.option("--max-queue-size", type=int)
@click.option("--max-items-per-request", type=int)
@click.option("--max-image-pixels", type=int)
@click.option("--max-message-bytes", type=int)
@click.option("--decode-workers", type=int, help="Decode threads (0: one per core).")
@click.option("--grace-period", "grace_period_s", type=float, help="Seconds to drain on SIGTERM [default 10].")
@click.option("--onnx-model", type=click.Path(dir_okay=False), help="Serve this `export-onnx` file (no torch needed).")
@handle_errors
def serve(**flags: Any) -> None:
    """Serve the embedding API over gRPC until SIGTERM, then drain."""
    from photodedup.server.app import serve as run

    settings = build_settings(**flags)
    if asyncio.run(run(settings)):
        # Stopped while loading: the load keeps a worker thread busy (a download, an export) that
        # interpreter shutdown would wait for. Nothing of it needs saving (exports are written atomically).
        logging.shutdown()
        os._exit(0)


@main.command()
@click.option("--server", "server", required=True, help="host:port of a photodedup server.")
@click.option("--timeout", type=float, default=10.0, show_default=True)
@handle_errors
def info(server: str, timeout: float) -> None:
    """Print a server's GetInfo answer as JSON."""
    import json

    import grpc
    from google.protobuf.json_format import MessageToDict

    from photodedup.transport import open_channel
    from photodedup.v1 import wire

    with open_channel(server, build_settings()) as channel:
        try:
            reply = wire.get_info(channel, timeout)
        except grpc.RpcError as exc:
            raise PhotodedupError(f"{server}: {wire.rpc_error_text(exc)}") from None
    click.echo(json.dumps(MessageToDict(reply), indent=2))


@main.command()
@click.option("--server", "server", required=True, help="host:port of a photodedup server.")
@click.option("--timeout", type=float, default=3.0, show_default=True)
def health(server: str, timeout: float) -> None:
    """Exit 0 when the server reports SERVING (for container health checks)."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from photodedup.transport import open_channel
    from photodedup.v1 import wire

    with open_channel(server, build_settings()) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=wire.SERVICE_NAME), timeout=timeout
            )
        except grpc.RpcError as exc:
            click.echo(f"{server}: {exc.code().name}", err=True)
            sys.exit(1)
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    click.echo(status)
    sys.exit(0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1)


@main.command("export-triton")
@model_options
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--name", default="photodedup_image_encoder", show_default=True, help="Triton model name.")
@click.option("--gpus", type=int, default=1, show_default=True, help="GPUs for the instance group (0: CPU).")
@click.option("--tensorrt-fp16/--no-tensorrt-fp16", default=True, show_default=True)
@click.option("--max-batch-size", type=int)
@click.option("--max-queue-delay-ms", type=float)
@handle_errors
def export_triton(out_dir: str, name: str, gpus: int, tensorrt_fp16: bool, **flags: Any) -> None:
    """Write a Triton model repository (ONNX Runtime backend, dynamic batching) to OUT_DIR."""
    from pathlib import Path

    from photodedup.engines.triton_export import export_triton_repository

    settings = build_settings(**flags)
    model_dir = export_triton_repository(settings, Path(out_dir), name, gpus, tensorrt_fp16)
    click.echo(f"wrote {model_dir}")


@main.command("export-onnx")
@model_options
@click.argument("out_file", type=click.Path(dir_okay=False))
@handle_errors
def export_onnx(out_file: str, **flags: Any) -> None:
    """Write the image tower as ONNX to OUT_FILE (and its metadata to OUT_FILE's .json), for `serve --onnx-model`.

    Export where torch is installed; serve the file anywhere ONNX Runtime is (the CPU image has no torch).
    """
    import shutil
    from pathlib import Path

    from photodedup.engines.onnx_engine import ensure_onnx

    settings = build_settings(**flags)
    path, _ = ensure_onnx(settings)
    out = Path(out_file)
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, out)
    shutil.copyfile(path.with_suffix(".json"), out.with_suffix(".json"))
    click.echo(f"wrote {out} and {out.with_suffix('.json').name}")


def _register_subcommands() -> None:
    """Client-side commands live with the client package; each module adds its commands to `main`."""
    import importlib

    for module in ("photodedup.client.commands", "photodedup.client.bench"):
        try:
            importlib.import_module(module).register(main)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise


_register_subcommands()
