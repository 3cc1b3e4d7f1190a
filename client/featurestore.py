"""The local features of every picture verified in one run, kept on disk so that a picture is decoded once
however many pairs it is in: verification then costs one decode per candidate picture plus one match per
pair, instead of about one decode per pair.

Why on disk: the pairs a large library's loose net meets form a graph with no locality a bounded cache can
use (among 204,000 generated photos 707,389 pairs held 182,559 distinct pictures, and a 256-picture cache
decoded 846,937 times). What alignment needs of a picture (at most 600 keypoints and their descriptors, 24 KB) for
all of them is several GB, too much to hold in memory. So each picture's features are appended to one
anonymous temporary file in the folder the store is given (a scan gives the index's: /tmp can be RAM-backed)
and read back with `os.pread`, which the page cache makes cheap and which counts in no process's memory. The
file is unlinked from the start: it goes when the run ends, also when it is killed.

Only what `verify.align` reads is kept: keypoint coordinates, descriptors, the keypoints' hull area and
the grey frame's size. The agreement check needs the pixels themselves; it runs only for pairs that
aligned, on the verifier's cache of decoded pictures.
"""

from __future__ import annotations

import logging
import os
import struct
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

_HEADER = struct.Struct("<IIId")  # keypoints, grey height, grey width, hull area
DESCRIPTOR_BYTES = 32  # ORB


@dataclass
class Features:
    """What alignment needs of one picture (`verify.align`): the same fields a `verify.Picture` has."""

    points: np.ndarray  # (n, 2) float32, pixel coordinates in the grey frame
    descriptors: np.ndarray | None  # (n, 32) uint8; None when no keypoint was found
    reach: float  # area of the keypoints' convex hull
    shape: tuple[int, int]  # the grey frame's (height, width)

    @property
    def area(self) -> int:
        """Pixels of the grey frame the points lie in."""
        return self.shape[0] * self.shape[1]


class FeatureStore:
    """Features by key (a file's path), appended to a temporary file and read back; thread-safe.

    A failed write (a full disk) is logged once and the store stops taking features: verification goes on,
    decoding what it cannot read back."""

    def __init__(self, directory: str | Path | None = None) -> None:
        self._directory = str(directory) if directory is not None else None
        self._lock = threading.Lock()
        self._file: tempfile._TemporaryFileWrapper | None = None  # type: ignore[type-arg]
        self._end = 0
        self._where: dict[str, int] = {}  # key -> offset of its record
        self._broken = False
        self.reads = 0  # features read back instead of decoded
        self.written = 0  # bytes written to the file in all (kept after `close`, for the scan's log)

    def __contains__(self, key: str) -> bool:
        return key in self._where

    def __len__(self) -> int:
        return len(self._where)

    def put(self, key: str, features: Features) -> None:
        """Keep `features` under `key` (a key already kept keeps its first features)."""
        n = len(features.points)
        descriptors = features.descriptors if features.descriptors is not None else np.zeros((0, DESCRIPTOR_BYTES))
        if descriptors.shape != (n, DESCRIPTOR_BYTES) and n:
            return  # not ORB's layout: nothing this store can give back as it was
        record = b"".join(
            (
                _HEADER.pack(n, features.shape[0], features.shape[1], features.reach),
                np.ascontiguousarray(features.points, dtype=np.float32).tobytes(),
                np.ascontiguousarray(descriptors, dtype=np.uint8).tobytes() if n else b"",
            )
        )
        with self._lock:
            if self._broken or key in self._where:
                return
            if self._file is None and not self._open():
                return
            offset, self._end = self._end, self._end + len(record)
            fd = self._file.fileno()  # type: ignore[union-attr]
        try:
            written = os.pwrite(fd, record, offset)
            if written != len(record):
                raise OSError(f"short write ({written} of {len(record)} bytes)")
        except OSError as exc:
            with self._lock:
                if not self._broken:
                    log.warning(
                        "verification features are no longer kept on disk (%s): pictures are decoded again", exc
                    )
                self._broken = True
            return
        with self._lock:
            self._where[key] = offset
            self.written += len(record)

    def get(self, key: str) -> Features | None:
        """The features kept under `key`, or None. Read under the lock (two `pread`s from the page cache, tens of
        microseconds), so a `close` on another thread cannot leave it reading a descriptor number the system has
        handed to another file since."""
        with self._lock:
            offset = self._where.get(key)
            if offset is None or self._file is None:
                return None
            try:
                fd = self._file.fileno()
                head = os.pread(fd, _HEADER.size, offset)
                n, height, width, reach = _HEADER.unpack(head)
                body = os.pread(fd, n * (8 + DESCRIPTOR_BYTES), offset + _HEADER.size)
            except (OSError, ValueError, struct.error) as exc:
                log.debug("cannot read features of %s back: %s", key, exc)
                return None
            self.reads += 1
        points = np.frombuffer(body, dtype=np.float32, count=2 * n).reshape(n, 2)
        descriptors = np.frombuffer(body, dtype=np.uint8, offset=8 * n).reshape(n, DESCRIPTOR_BYTES) if n else None
        return Features(points, descriptors, reach, (height, width))

    def _open(self) -> bool:
        """Open the file (under the lock); False, logged, when it cannot be made."""
        try:
            self._file = tempfile.TemporaryFile(prefix="photodedup-features-", dir=self._directory)
        except OSError as exc:
            log.warning("verification features cannot be kept on disk (%s): pictures are decoded again", exc)
            self._broken = True
            return False
        return True

    def close(self) -> None:
        """Drop every feature and the file."""
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
            self._where.clear()
            self._end = 0
