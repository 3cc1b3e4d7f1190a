"""How the server listens: TLS (optionally mutual) credentials and the connection options that keep
connections healthy and let a fleet rebalance (keepalive, idle and age limits)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc

from photodedup.errors import PhotodedupError
from photodedup.settings import Settings
from photodedup.v1 import wire


def _read(path: Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise PhotodedupError(f"cannot read the {what} {path}: {exc.strerror or exc}") from None


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """TLS credentials when a certificate is configured (client certificates required with a client CA);
    None for plaintext."""
    if not (settings.server.tls_cert or settings.server.tls_key or settings.server.tls_client_ca):
        return None
    if not (settings.server.tls_cert and settings.server.tls_key):
        raise PhotodedupError("TLS needs both --tls-cert and --tls-key")
    pair = (_read(settings.server.tls_key, "TLS key"), _read(settings.server.tls_cert, "TLS certificate"))
    client_ca = _read(settings.server.tls_client_ca, "client CA") if settings.server.tls_client_ca else None
    return grpc.ssl_server_credentials([pair], root_certificates=client_ca, require_client_auth=client_ca is not None)


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


def server_options(settings: Settings) -> list[tuple[str, Any]]:
    """Message limits; keepalive pings that drop a frozen peer; idle and age limits. A connection that
    reaches max_connection_age gets a GOAWAY, so its client reconnects, re-resolves the name and spreads
    over servers added since; open calls get the grace period to finish."""
    s = settings
    options: list[tuple[str, Any]] = [
        *wire.channel_options(s.server.max_message_bytes),
        ("grpc.so_reuseport", 0),
        ("grpc.keepalive_time_ms", _ms(s.transport.keepalive_time_s)),
        ("grpc.keepalive_timeout_ms", _ms(s.transport.keepalive_timeout_s)),
        ("grpc.keepalive_permit_without_calls", 1),
        # Clients ping every keepalive_time_s while calls are open; accept that rate without strikes.
        ("grpc.http2.min_ping_interval_without_data_ms", _ms(min(s.transport.keepalive_time_s, 10.0) / 2)),
    ]
    if s.server.max_connection_idle_s > 0:
        options.append(("grpc.max_connection_idle_ms", _ms(s.server.max_connection_idle_s)))
    if s.server.max_connection_age_s > 0:
        options.append(("grpc.max_connection_age_ms", _ms(s.server.max_connection_age_s)))
        options.append(("grpc.max_connection_age_grace_ms", _ms(s.server.max_connection_age_grace_s)))
    return options
