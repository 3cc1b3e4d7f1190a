"""The server's commands: serve, info, health and export-triton. Heavy imports stay inside the commands,
so `photodedup --help` and the client commands never load the serving stack."""

from __future__ import annotations

import gc
import logging
import os
import sys
from typing import Any

import click

from photodedup.cliutils import (
    build_settings,
    client_transport_options,
    handle_errors,
    model_options,
    server_transport_options,
    setting_option,
    stack,
)
from photodedup.errors import PhotodedupError
from photodedup.extras import require

server_options = stack(
    setting_option("host"),
    setting_option("port", type=int),
    setting_option("metrics_port", type=int),
    setting_option("metrics", "--metrics/--no-metrics"),
    setting_option("max_batch_size", type=int),
    setting_option("max_queue_delay_ms", type=float),
    setting_option("max_queue_size", type=int),
    setting_option("max_items_per_request", type=int),
    setting_option("max_image_pixels", type=int),
    setting_option("max_message_bytes", type=int),
    setting_option("decode_workers", type=int),
    setting_option("grace_period_s", "--grace-period", type=float),
    setting_option("max_queue_bytes", type=int),
    setting_option("max_inflight_per_connection", type=int),
    setting_option("max_inflight_per_stream", type=int),
    setting_option("max_request_pixels", type=int),
    setting_option("max_decode_pixels", type=int),
    setting_option("max_concurrent_rpcs", type=int),
    setting_option("reserved_queue_share", type=float),
    setting_option("light_caller_items", type=int),
    setting_option("stream_idle_timeout_s", "--stream-idle-timeout", type=float),
    setting_option("onnx_model", type=click.Path(dir_okay=False)),
)


def register(group: click.Group) -> None:
    """Add the server commands to the `photodedup` group."""
    for command in (serve, info, health, export_triton, export_onnx):
        group.add_command(command)


@click.command()
@model_options
@server_options
@server_transport_options
@handle_errors
def serve(**flags: Any) -> None:
    """Serve the embedding API over gRPC until SIGTERM, then drain."""
    settings = build_settings(**flags)
    if settings.model.onnx_model is None:
        require("photodedup serve", "server", "torch", "open_clip")
    if settings.model.engine == "onnx" or settings.model.onnx_model is not None:
        require("photodedup serve", "cpu", "onnxruntime")
    import asyncio  # here, not at import: every command's start registers this module

    from photodedup.server.app import serve as run

    stopped_while_loading = asyncio.run(run(settings))
    if stopped_while_loading:
        # Stopped while loading: the load keeps a worker thread busy (a download, an export) that
        # interpreter shutdown would wait for. Nothing of it needs saving (exports are written atomically).
        logging.shutdown()
        os._exit(0)
    # Everything is answered and released. With torch imported (a first start exports the model) the
    # interpreter's final garbage collection takes seconds, holding the exit well past the drain: leave
    # the objects alive now to the process exit instead.
    gc.freeze()


@click.command()
@click.option("--server", "server", required=True, help="host:port of a photodedup server.")
@click.option("--timeout", type=float, default=10.0, show_default=True)
@client_transport_options
@handle_errors
def info(server: str, timeout: float, **flags: Any) -> None:
    """Print a server's GetInfo answer as JSON."""
    import json

    import grpc
    from google.protobuf.json_format import MessageToDict

    from photodedup.transport import open_channel
    from photodedup.v1 import wire

    with open_channel(server, build_settings(**flags)) as channel:
        try:
            reply = wire.get_info(channel, timeout)
        except grpc.RpcError as exc:
            raise PhotodedupError(f"{server}: {wire.rpc_error_text(exc)}") from None
    click.echo(json.dumps(MessageToDict(reply), indent=2))


@click.command()
@click.option("--server", "server", required=True, help="host:port of a photodedup server.")
@click.option("--timeout", type=float, default=3.0, show_default=True)
@client_transport_options
@handle_errors
def health(server: str, timeout: float, **flags: Any) -> None:
    """Exit 0 when the server reports SERVING (for container health checks)."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from photodedup.transport import open_channel
    from photodedup.v1 import wire

    with open_channel(server, build_settings(**flags)) as channel:
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


@click.command("export-triton")
@model_options
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--name", default="photodedup_image_encoder", show_default=True, help="Triton model name.")
@click.option("--gpus", type=int, default=1, show_default=True, help="GPUs for the instance group (0: CPU).")
@click.option("--tensorrt-fp16/--no-tensorrt-fp16", default=True, show_default=True)
@setting_option("max_batch_size", type=int)
@setting_option("max_queue_delay_ms", type=float)
@handle_errors
def export_triton(out_dir: str, name: str, gpus: int, tensorrt_fp16: bool, **flags: Any) -> None:
    """Write a Triton model repository (ONNX Runtime backend, dynamic batching) to OUT_DIR."""
    from pathlib import Path

    require("photodedup export-triton", "local", "torch", "open_clip")
    require("photodedup export-triton", "cpu", "onnx")
    from photodedup.engines.triton_export import export_triton_repository

    settings = build_settings(**flags)
    model_dir = export_triton_repository(settings, Path(out_dir), name, gpus, tensorrt_fp16)
    click.echo(f"wrote {model_dir}")


@click.command("export-onnx")
@model_options
@click.argument("out_file", type=click.Path(dir_okay=False))
@handle_errors
def export_onnx(out_file: str, **flags: Any) -> None:
    """Write the image tower as ONNX to OUT_FILE (and its metadata to OUT_FILE's .json), for `serve --onnx-model`.

    Export where torch is installed; serve the file anywhere ONNX Runtime is (the CPU image has no torch).
    """
    import shutil
    from pathlib import Path

    require("photodedup export-onnx", "local", "torch", "open_clip")
    require("photodedup export-onnx", "cpu", "onnx")
    from photodedup.engines.onnx_engine import ensure_onnx

    settings = build_settings(**flags)
    path, _ = ensure_onnx(settings)
    out = Path(out_file)
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, out)
    shutil.copyfile(path.with_suffix(".json"), out.with_suffix(".json"))
    click.echo(f"wrote {out} and {out.with_suffix('.json').name}")
