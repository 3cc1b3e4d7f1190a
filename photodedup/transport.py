"""How a client reaches a server: one function opens every channel (CLI, scanner, load generator) with
the wire's message limits, so transport options are decided in one place."""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpc

from photodedup.v1 import wire

if TYPE_CHECKING:
    from photodedup.settings import Settings


def open_channel(target: str, settings: Settings) -> grpc.Channel:
    """A blocking channel to `target` (host:port)."""
    return grpc.insecure_channel(target, options=wire.channel_options(settings.server.max_message_bytes))


def open_aio_channel(target: str, settings: Settings) -> grpc.aio.Channel:
    """An asyncio channel to `target` (host:port)."""
    return grpc.aio.insecure_channel(target, options=wire.channel_options(settings.server.max_message_bytes))


def probe_server(target: str, settings: Settings) -> wire.ServerProbe:
    """GetInfo on a fresh channel within connect_timeout_s; an unreachable server comes back with `error`."""
    with open_channel(target, settings) as channel:
        return wire.probe(target, channel, settings.scan.connect_timeout_s)
