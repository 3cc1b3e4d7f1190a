"""Pieces every photodedup command shares (model flags, error handling, settings), kept apart from
cli.py so command modules can import them without importing the command group itself."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

import click

from photodedup.errors import PhotodedupError


def model_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Flags that choose the model and the engine; shared by serve, scan and bench."""
    opts = [
        click.option("--model", "model_name", help="open_clip model name [env PHOTODEDUP_MODEL_NAME, MODEL_NAME; default ViT-B-32]"),
        click.option("--pretrained", help="open_clip pretrained tag [default laion2b_s34b_b79k]"),
        click.option("--weights", help="Local checkpoint FILE, or 'random' for random-initialised weights (tests, benchmarks)."),
        click.option("--engine", type=click.Choice(["auto", "onnx", "torch"]), help="Inference engine [default auto: fastest measured for the device]."),
        click.option("--devices", "--device", "devices", help="Comma-separated devices: cpu, mps, cuda:0,cuda:1 [env DEVICE]."),
        click.option("--precision", type=click.Choice(["auto", "fp32", "fp16"]), help="auto: fp16 on CUDA, fp32 elsewhere."),
        click.option("--onnx-providers", help="ONNX Runtime providers to try in order [default tensorrt,cuda,cpu]."),
        click.option("--cache-dir", type=click.Path(file_okay=False), help="Where exported ONNX files are cached."),
        click.option("--threads", "intra_op_threads", type=int, help="Engine CPU threads (0: runtime default)."),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


def client_transport_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """How a client reaches servers: TLS, client certificate, bearer token (shared by scan, bench, info, health)."""
    opts = [
        click.option("--tls", is_flag=True, default=None, help="Connect over TLS [env PHOTODEDUP_TLS]."),
        click.option("--ca-cert", type=click.Path(dir_okay=False), help="PEM CA bundle for the servers' certificates (implies --tls)."),
        click.option("--client-cert", type=click.Path(dir_okay=False), help="PEM client certificate, for servers that require mutual TLS."),
        click.option("--client-key", type=click.Path(dir_okay=False), help="PEM private key of --client-cert."),
        click.option("--token", help="Bearer token for the servers [env PHOTODEDUP_TOKEN; prefer the environment: flags show in ps]."),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


def server_transport_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """How `serve` listens: TLS, mutual TLS, bearer tokens, keepalive and connection age."""
    opts = [
        click.option("--tls-cert", type=click.Path(dir_okay=False), help="PEM certificate chain; with --tls-key the port speaks TLS only."),
        click.option("--tls-key", type=click.Path(dir_okay=False), help="PEM private key of --tls-cert."),
        click.option("--tls-client-ca", type=click.Path(dir_okay=False), help="Require client certificates signed by this CA (mutual TLS)."),
        click.option("--auth-token-file", type=click.Path(dir_okay=False), help="Bearer tokens, one per line, re-read on SIGHUP."),
        click.option("--keepalive-time", "keepalive_time_s", type=float, help="Seconds before a quiet connection is pinged [default 30]."),
        click.option("--max-connection-idle", "max_connection_idle_s", type=float, help="Close connections idle this long; 0 never [default 600]."),
        click.option("--max-connection-age", "max_connection_age_s", type=float, help="Make clients reconnect (and re-resolve) after this long; 0 never [default 0]."),
        click.option("--max-connection-age-grace", "max_connection_age_grace_s", type=float, help="Time open calls get at that age [default 30]."),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


def handle_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Domain errors end the command with one clear line and a non-zero exit, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except PhotodedupError as exc:
            click.echo(f"photodedup: error: {exc}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("photodedup: interrupted", err=True)
            sys.exit(130)

    return wrapper


def build_settings(**flags: Any) -> Any:
    from pydantic import ValidationError

    from photodedup.settings import Settings

    try:
        return Settings.from_flags(**flags)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in exc.errors())
        raise click.UsageError(problems) from None
