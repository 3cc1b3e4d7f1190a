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
        click.option("--precision", type=click.Choice(["auto", "fp32", "fp16", "int8"]), help="auto: fp16 on CUDA; on CPU int8 where it passes its self-check and pays off, else fp32."),
        click.option("--onnx-providers", help="ONNX Runtime providers to try in order [default tensorrt,cuda,cpu]."),
        click.option("--cache-dir", type=click.Path(file_okay=False), help="Where exported ONNX files are cached."),
        click.option("--threads", "intra_op_threads", type=int, help="Engine CPU threads (0: runtime default)."),
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
