"""What `photodedup bench` sends: images made once (generated or read from a folder) in the form the
chosen payload needs, so the measured loop only hands bytes to gRPC."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from photodedup.testing import synthetic_photo

PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".heic", ".heif", ".tif", ".tiff", ".bmp", ".gif"}


def source_files(folder: Path, limit: int) -> list[Path]:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in PHOTO_SUFFIXES)
    return files[:limit]


@dataclass
class Payload:
    """Pre-built images of one kind: `images` are embed_pb2.Image messages, `arrays` the model inputs."""

    kind: str
    images: list[Any]
    arrays: list[np.ndarray]
    sources: str


def make_payload(
    kind: str, size: int, count: int, photos: Path | None, photo_size: tuple[int, int], quality: int = 90
) -> Payload:
    """thumbnail: client-made `size` px centre-cropped JPEG (what the CLIP recipe keeps anyway); raw: uint8
    pixels at the input size; original: the file bytes (or a generated photo as a q90 JPEG)."""
    from PIL import Image

    from photodedup.imaging import decode_for_model, encode_jpeg
    from photodedup.v1 import embed_pb2

    originals: list[bytes] = []
    if photos is not None:
        files = source_files(photos, count)
        if not files:
            from photodedup.errors import PhotodedupError

            raise PhotodedupError(f"no photos under {photos}")
        originals = [f.read_bytes() for f in files]
        sources = f"{len(files)} photos from {photos}"
    else:
        for i in range(count):
            buf = io.BytesIO()
            Image.fromarray(synthetic_photo(i, photo_size)).save(buf, format="JPEG", quality=quality)
            originals.append(buf.getvalue())
        sources = f"{count} generated {photo_size[0]}x{photo_size[1]} photos"
    arrays = [decode_for_model(data, size, 1 << 40) for data in originals]
    if kind == "original":
        images = [embed_pb2.Image(encoded=data) for data in originals]
    elif kind == "thumbnail":
        images = [embed_pb2.Image(encoded=encode_jpeg(a, quality=quality)) for a in arrays]
    elif kind == "raw":
        images = [embed_pb2.Image(raw=embed_pb2.RawImage(rgb=a.tobytes(), width=size, height=size)) for a in arrays]
    else:
        raise ValueError(f"unknown payload kind {kind!r}")
    return Payload(kind, images, arrays, sources)
