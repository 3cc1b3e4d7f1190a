"""Thumbnails and full-size views made on demand from the photos, cached on disk by content hash.

A rendition is named by the file's MD5 and the size asked for, so it never goes stale (new bytes are a
new name) and the browser may cache it for good. Files are written to a temp name and renamed, so a
crash never leaves half an image in the cache.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from pathlib import Path

from photodedup.errors import InvalidImageError, PhotodedupError
from photodedup.imaging import encode_jpeg, load_rgb, open_image

log = logging.getLogger(__name__)

SIZES = {"thumb": 320, "full": 2048}


class ThumbnailError(PhotodedupError):
    """The photo cannot be shown (gone, changed since the scan, or not decodable)."""


class ThumbnailCache:
    """JPEG renditions of indexed photos under `folder`/<md5[:2]>/<md5>-<side>.jpg."""

    def __init__(self, folder: Path, max_pixels: int, workers: int = 2) -> None:
        self.folder = folder
        self.max_pixels = max_pixels
        # decoding is CPU-bound: a few at a time keeps the app responsive on a small machine
        self._slots = threading.BoundedSemaphore(workers)

    def path_for(self, md5: str, side: int) -> Path:
        return self.folder / md5[:2] / f"{md5}-{side}.jpg"

    def get(self, md5: str, source: str, size: int, mtime: float, side: int) -> Path:
        """The cached rendition, made from `source` first when missing (blocking: call from a thread).

        Raises ThumbnailError when the file is gone or no longer the one the scan saw."""
        target = self.path_for(md5, side)
        if target.exists():
            return target
        try:
            st = os.stat(source)
        except OSError as exc:
            raise ThumbnailError(f"cannot read the file: {exc.strerror or exc}") from None
        if st.st_size != size or abs(st.st_mtime - mtime) > 1e-3:
            raise ThumbnailError("the file changed since the scan")
        with self._slots:
            if target.exists():
                return target
            try:
                with open(source, "rb") as fh:
                    img = load_rgb(open_image(fh.read(), self.max_pixels), min_side=side)
                img.thumbnail((side, side))
                data = encode_jpeg(img, 85)
            except (OSError, InvalidImageError) as exc:
                raise ThumbnailError(f"cannot decode the photo: {exc}") from None
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, temp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(temp, target)
        return target
