"""The C library's malloc, tuned and trimmed where it is glibc's: the one place that reaches it.

`trim_heap`: glibc raises its mmap threshold each time a large block is freed, so the next large numpy arrays
come from the heap, and a heap freed in the middle is not returned by itself (nor is a thread's arena): after
the loose window join of a 200,000-photo library the scan held some 150 MB it no longer used. One call after
such a step returns it, for a few milliseconds. `set_thresholds` does the opposite for a process that
allocates and frees the same large blocks over and over (the hash workers, the keeper test's workers). Both
do nothing where the C library has no such call (macOS, musl)."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
from typing import Any

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h


@functools.cache
def _libc() -> Any:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c"))
    except (OSError, TypeError):
        return None


def _malloc_trim() -> Any:
    return getattr(_libc(), "malloc_trim", None)


def trim_heap() -> bool:
    """Return the heap's free pages (every arena's) to the OS; True when the C library released some."""
    trim = _malloc_trim()
    if trim is None:
        return False
    try:
        return bool(trim(0))
    except (OSError, ValueError) as exc:  # pragma: no cover - a C library that refuses
        log.debug("malloc_trim failed: %s", exc)
        return False


def set_thresholds(mmap_threshold: int, trim_threshold: int) -> bool:
    """Fix glibc's mmap threshold (blocks up to it come from the heap) and trim threshold (free heap kept
    up to it), process-wide; False where the C library has no `mallopt` or refuses."""
    mallopt = getattr(_libc(), "mallopt", None)
    if mallopt is None:
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and bool(mallopt(_M_TRIM_THRESHOLD, trim_threshold))
