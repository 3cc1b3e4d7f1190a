"""Run `photodedup serve` as a separate process for a benchmark.

The server must not share the load generator's interpreter (one GIL for both would measure Python, not
the server). Ports are chosen by the kernel (port 0) and read back from the server's start-up log.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from types import TracebackType

log = logging.getLogger(__name__)

_LISTENING = re.compile(r"listening on \S+:(\d+) \(metrics on (\d+|None)\)")


def photodedup_exe() -> list[str]:
    """The installed console script next to this interpreter (what a user runs)."""
    exe = Path(sys.executable).with_name("photodedup")
    if exe.is_file():
        return [str(exe)]
    found = shutil.which("photodedup")
    if found:
        return [found]
    raise FileNotFoundError("the photodedup console script is not installed (pip install -e .)")


class ServerProcess:
    """`with ServerProcess(flags) as srv:` gives srv.address and srv.metrics_address of a warm server."""

    def __init__(
        self,
        flags: list[str],
        ready_timeout: float = 600.0,
        env: dict[str, str] | None = None,
        prefix: list[str] | None = None,
    ) -> None:
        self.flags = flags
        self.prefix = prefix or []  # a command the server runs under (`taskset -c 1`: a core of its own)
        self.ready_timeout = ready_timeout
        self.env = {**os.environ, **(env or {})}
        self.port = 0
        self.metrics_port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._log = tempfile.NamedTemporaryFile(prefix="photodedup-serve-", suffix=".log", delete=False)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def metrics_address(self) -> str:
        return f"127.0.0.1:{self.metrics_port}"

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def log_text(self) -> str:
        return Path(self._log.name).read_text(errors="replace")

    def start(self) -> ServerProcess:
        cmd = [
            *self.prefix,
            *photodedup_exe(),
            "--log-level",
            "INFO",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--metrics-port",
            "0",
            *self.flags,
        ]
        log.info("starting %s", " ".join(cmd))
        self._proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=self.env)
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"server exited with {self._proc.returncode}:\n{self.log_text()[-3000:]}")
            if not self.port:
                m = _LISTENING.search(self.log_text())
                if m and m.group(2) != "None":
                    self.port, self.metrics_port = int(m.group(1)), int(m.group(2))
            if self.port and self._ready():
                return self
            time.sleep(0.3)
        self.stop()
        raise TimeoutError(f"server not ready within {self.ready_timeout:.0f} s:\n{self.log_text()[-3000:]}")

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.metrics_address}/metrics", timeout=2) as resp:
                return any(line.strip() == "photodedup_ready 1.0" for line in resp.read().decode().splitlines())
        except OSError:
            return False

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._log.close()
        Path(self._log.name).unlink(missing_ok=True)

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, t: type[BaseException] | None, v: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
