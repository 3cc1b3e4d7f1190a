"""Give freed heap memory back to the operating system (glibc's `malloc_trim`).

glibc raises its mmap threshold each time a large block is freed, so the next large numpy arrays come from
the heap, and a heap freed in the middle is not returned by itself: after the loose window join of a
200,000-photo library the scan held some 150 MB it no longer used. One call after such a step returns it;
it costs a few milliseconds and does nothing where the C library has no `malloc_trim` (macOS, musl)."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging

log = logging.getLogger(__name__)


@functools.cache
def _malloc_trim() -> object | None:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim
    except (OSError, AttributeError, TypeError):
        return None


def trim_heap() -> bool:
    """Return the heap's free pages to the OS; True when the C library did (or could) trim."""
    trim = _malloc_trim()
    if trim is None:
        return False
    try:
        return bool(trim(0))  # type: ignore[operator]
    except (OSError, ValueError) as exc:  # pragma: no cover - a C library that refuses
        log.debug("malloc_trim failed: %s", exc)
        return False
