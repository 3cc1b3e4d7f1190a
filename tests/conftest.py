"""Shared fixtures: tiny random-weight settings and real servers on 127.0.0.1:0."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from photodedup.settings import Settings

from helpers import ServerThread, tiny_settings


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One export cache for the whole run, so the tiny model is exported to ONNX once."""
    return tmp_path_factory.mktemp("model-cache")


@pytest.fixture
def settings(model_cache: Path) -> Settings:
    return tiny_settings(model_cache)


@pytest.fixture
def server_thread(settings: Settings) -> Iterator[ServerThread]:
    st = ServerThread(settings).start()
    try:
        yield st
    finally:
        st.stop()
