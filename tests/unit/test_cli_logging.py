"""The command line's log shows photodedup's lines, not a library's loading chatter."""

from __future__ import annotations

import subprocess
import sys

import pytest


def test_faiss_does_not_list_the_builds_it_could_not_load() -> None:
    pytest.importorskip("faiss")
    code = "from photodedup.cli import _setup_logging; _setup_logging('INFO'); import faiss"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert "faiss.loader" not in done.stderr, done.stderr
