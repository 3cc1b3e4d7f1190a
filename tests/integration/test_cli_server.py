"""`photodedup info` and `photodedup health` against a real server."""

from __future__ import annotations

import json
import socket

from click.testing import CliRunner

from photodedup.cli import main

from helpers import ServerThread


def test_info_and_health_against_a_running_server(server_thread: ServerThread) -> None:
    runner = CliRunner()
    info = runner.invoke(main, ["info", "--server", server_thread.address])
    assert info.exit_code == 0, info.output
    assert json.loads(info.output)["modelName"] == "photodedup-tiny"
    health = runner.invoke(main, ["health", "--server", server_thread.address])
    assert health.exit_code == 0 and health.output.strip() == "SERVING"


def test_health_fails_when_nothing_listens() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = CliRunner().invoke(main, ["health", "--server", f"127.0.0.1:{port}", "--timeout", "1"])
    assert result.exit_code == 1
    info = CliRunner().invoke(main, ["info", "--server", f"127.0.0.1:{port}", "--timeout", "1"])
    assert info.exit_code == 2 and "UNAVAILABLE" in info.output
