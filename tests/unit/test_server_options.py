"""What `photodedup serve` listens with: keepalive and idle limits reach the gRPC options, and the
admission limits can be set by flag or environment."""

from __future__ import annotations

from typing import Any

import pytest
from click.testing import CliRunner

from photodedup.server.transport import server_options
from photodedup.settings import Settings


def test_keepalive_and_idle_settings_reach_the_server_options() -> None:
    options = dict(
        server_options(
            Settings(keepalive_time_s=7, keepalive_timeout_s=3, max_connection_idle_s=90, max_connection_age_s=0)
        )
    )
    assert options["grpc.keepalive_time_ms"] == 7000
    assert options["grpc.keepalive_timeout_ms"] == 3000
    assert options["grpc.keepalive_permit_without_calls"] == 1
    assert options["grpc.max_connection_idle_ms"] == 90_000
    assert "grpc.max_connection_age_ms" not in options


def test_admission_limits_are_serve_flags_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import photodedup.server.app as app
    from photodedup.cli import main

    seen: dict[str, Any] = {}

    async def fake_serve(settings: Settings) -> bool:
        seen["server"] = settings.server
        return False

    monkeypatch.setattr(app, "serve", fake_serve)
    monkeypatch.setenv("PHOTODEDUP_STREAM_IDLE_TIMEOUT_S", "42")
    monkeypatch.setenv("PHOTODEDUP_MAX_DECODE_PIXELS", "5000000")
    flags = {
        "--max-queue-bytes": "1048576",
        "--max-inflight-per-connection": "64",
        "--max-inflight-per-stream": "16",
        "--max-request-pixels": "2000000",
        "--max-concurrent-rpcs": "8",
    }
    args = ["serve", "--onnx-model", "/nonexistent.onnx", *[x for kv in flags.items() for x in kv]]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    server = seen["server"]
    assert (server.max_queue_bytes, server.max_inflight_per_connection, server.max_inflight_per_stream) == (
        1048576,
        64,
        16,
    )
    assert (server.max_request_pixels, server.max_concurrent_rpcs) == (2_000_000, 8)
    assert (server.stream_idle_timeout_s, server.max_decode_pixels) == (42.0, 5_000_000)
    help_text = CliRunner().invoke(main, ["serve", "--help"]).output
    assert "--stream-idle-timeout" in help_text and "PHOTODEDUP_STREAM_IDLE_TIMEOUT_S" in help_text
