"""Pieces every photodedup command shares (model flags, error handling, settings), kept apart from
cli.py so command modules can import them without importing the command group itself."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

import click

from photodedup.errors import PhotodedupError


def stack(*options: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Several click options as one decorator, applied in the order given (top to bottom in --help)."""

    def decorate(fn: Any) -> Any:
        for opt in reversed(options):
            fn = opt(fn)
        return fn

    return decorate


def _shown_default(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return str(value)


def setting_help(name: str, extra: str = "") -> str:
    """The help text of Settings.<name>: its description, its environment names and its default, all read
    from the settings so --help never drifts from what the program does."""
    from photodedup.settings import field_help

    description, envs, value = field_help(name)
    text = " ".join(part for part in (description, extra) if part)
    default = _shown_default(value)
    return f"{text} [env {', '.join(map(str, envs))}; default {default or 'none'}]"


def setting_option(name: str, *decls: str, extra: str = "", **kw: Any) -> Callable[[Any], Any]:
    """A click option feeding Settings.<name>. It defaults to None (unset), so environment and the
    settings' own default apply unless the flag is given."""
    if not decls:
        decls = ("--" + name.replace("_", "-"),)
    if not any(d.isidentifier() for d in decls):  # the parameter is always named after the field
        decls = (*decls, name)
    return click.option(*decls, default=None, help=setting_help(name, extra), **kw)


def model_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Flags that choose the model and the engine; shared by serve, scan, bench and export-triton."""
    return stack(
        setting_option("model_name", "--model"),
        setting_option("pretrained"),
        setting_option("weights"),
        setting_option("engine", type=click.Choice(["auto", "onnx", "torch", "tensorrt"])),
        setting_option("devices", "--devices", "--device"),
        setting_option("precision", type=click.Choice(["auto", "fp32", "fp16", "int8"])),
        setting_option("onnx_providers"),
        setting_option("cache_dir", type=click.Path(file_okay=False)),
        setting_option("intra_op_threads", "--threads", type=int),
        setting_option("cuda_graphs", "--cuda-graphs/--no-cuda-graphs"),
        setting_option("gpu_decode", "--gpu-decode/--no-gpu-decode"),
    )(fn)


def client_transport_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """How a client reaches servers: TLS, client certificate, bearer token (shared by scan, bench, info, health)."""
    path = click.Path(dir_okay=False)
    return stack(
        setting_option("tls", is_flag=True),
        setting_option("ca_cert", type=path),
        setting_option("client_cert", type=path),
        setting_option("client_key", type=path),
        setting_option("token", extra="Prefer the environment: flags show in ps."),
    )(fn)


def server_transport_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """How `serve` listens: TLS, mutual TLS, bearer tokens, keepalive and connection age."""
    path = click.Path(dir_okay=False)
    return stack(
        setting_option("tls_cert", type=path),
        setting_option("tls_key", type=path),
        setting_option("tls_client_ca", type=path),
        setting_option("auth_token_file", type=path),
        setting_option("keepalive_time_s", "--keepalive-time", type=float),
        setting_option("max_connection_idle_s", "--max-connection-idle", type=float),
        setting_option("max_connection_age_s", "--max-connection-age", type=float),
        setting_option("max_connection_age_grace_s", "--max-connection-age-grace", type=float),
    )(fn)


def handle_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Domain errors end the command with one clear line and a non-zero exit, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except PhotodedupError as exc:
            click.echo(f"photodedup: error: {exc}", err=True)
            sys.exit(2)
        except ModuleNotFoundError as exc:
            from photodedup.extras import EXTRA_FOR_MODULE, missing_extra_message

            if (exc.name or "").split(".")[0] not in EXTRA_FOR_MODULE:
                raise
            click.echo(f"photodedup: error: {missing_extra_message(exc.name or '')}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("photodedup: interrupted", err=True)
            sys.exit(130)

    return wrapper


def build_settings(**flags: Any) -> Any:
    from photodedup.settings import Settings, SettingsError

    try:
        return Settings.from_flags(**flags)
    except SettingsError as exc:
        raise click.UsageError(str(exc)) from None
