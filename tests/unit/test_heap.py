"""Freed heap memory goes back to the OS where the C library can trim, and nothing breaks where it cannot."""

from __future__ import annotations

import sys

import pytest

from photodedup import heap


def test_trim_asks_the_c_library_to_release_every_free_page(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[int] = []

    def malloc_trim(pad: int) -> int:
        asked.append(pad)
        return 1

    monkeypatch.setattr(heap, "_malloc_trim", lambda: malloc_trim)
    assert heap.trim_heap() and asked == [0]  # pad 0: keep nothing spare at the heap's top


def test_no_trim_where_the_c_library_has_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(heap, "_malloc_trim", lambda: None)
    assert heap.trim_heap() is False


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's malloc_trim")
def test_glibc_trims_here() -> None:
    """This project's machines run glibc: the real call is found and answers."""
    assert heap._malloc_trim() is not None
    assert isinstance(heap.trim_heap(), bool)
