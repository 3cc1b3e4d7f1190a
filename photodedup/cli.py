"""The `photodedup` command line. Builds the one Settings object (flags > env > defaults) and passes it down."""

from __future__ import annotations

import logging
import sys

import click

from photodedup import __version__

log = logging.getLogger("photodedup")


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for handler in logging.getLogger().handlers:
        handler.addFilter(_drop_open_clip_random_warning)
    # faiss tells at INFO, in eight lines, which of its CPU builds it could not load before the one it did.
    logging.getLogger("faiss.loader").setLevel(max(logging.WARNING, logging.getLogger().level))


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


def _register_subcommands() -> None:
    """Each package adds its own commands to `main`: server commands live in server/, client commands in
    client/, the load generator in loadgen/. Their heavy imports wait inside the commands."""
    from photodedup.client import commands as client_commands
    from photodedup.loadgen import command as loadgen_command
    from photodedup.server import commands as server_commands

    for module in (server_commands, client_commands, loadgen_command):
        module.register(main)


_register_subcommands()
