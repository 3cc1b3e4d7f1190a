"""Keeper signals (`client.fidelity`) and the keeper they choose, on made pictures."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from photodedup.client.fidelity import block_traces, is_grey, jpeg_quality
from photodedup.client.grouping import FileRecord, GroupingConfig, find_groups
from photodedup.client.hashing import hash_bytes

from helpers import encode
from scenes import letterbox, scene


@pytest.mark.parametrize("quality", [20, 50, 75, 90, 97])
def test_jpeg_quality_is_read_from_the_tables(quality: int) -> None:
    with Image.open(io.BytesIO(encode(scene(1, (256, 192)), quality=quality))) as img:
        assert abs(jpeg_quality(img.quantization) - quality) <= 2  # type: ignore[operator]


def test_no_tables_no_quality() -> None:
    assert jpeg_quality(None) is None and jpeg_quality({}) is None


def test_block_traces_mark_a_png_made_from_a_jpeg() -> None:
    img = scene(2, (512, 384))
    converted = np.asarray(Image.open(io.BytesIO(encode(img, quality=60))).convert("L"), dtype=np.float32)
    assert block_traces(converted)
    assert not block_traces(np.asarray(img.convert("L"), dtype=np.float32))


def test_grey_is_told_from_colour() -> None:
    img = scene(3, (256, 192))
    assert is_grey(np.asarray(img.convert("L").convert("RGB")))
    assert not is_grey(np.asarray(img))


def test_hashing_records_the_signals() -> None:
    img = scene(4, (400, 300))
    exif = Image.Exif()
    exif[0x010F] = "Canon"
    camera = hash_bytes(encode(img, quality=93, exif=exif.tobytes()), 10**8)
    png_of_jpeg = hash_bytes(encode(Image.open(io.BytesIO(encode(img, quality=70))), "PNG"), 10**8)
    assert camera.camera and abs(camera.quality - 93) <= 2 and not camera.grey  # type: ignore[operator]
    assert not png_of_jpeg.camera and png_of_jpeg.quality == 0


def record(path: str, data: bytes, mtime: float = 0.0) -> FileRecord:
    res = hash_bytes(data, 10**8)
    return FileRecord(
        path,
        len(data),
        res.width or 0,
        res.height or 0,
        res.md5 or "",
        res.dhash,
        res.phash,
        None,
        res.exif_time,
        mtime,
        res.format or "",
        res.rotated,
        res.content,
        res.picture_pixels,
        res.windows,
        res.camera,
        res.quality,
        res.grey,
    )


def test_the_original_is_kept_over_a_letterboxed_copy() -> None:
    """The bars add pixels but no picture: the original wins on content resolution."""
    img = scene(5, (600, 400))
    original = record("/lib/original.jpg", encode(img, quality=90), mtime=2.0)
    boxed = record("/lib/boxed.jpg", encode(letterbox(img, 0.15), quality=90), mtime=1.0)
    assert boxed.width * boxed.height > original.width * original.height
    groups = find_groups([boxed, original], GroupingConfig())
    assert len(groups) == 1 and groups[0].keep.path == "/lib/original.jpg"


def test_the_camera_jpeg_is_kept_over_its_lossless_conversion() -> None:
    img = scene(6, (600, 400))
    exif = Image.Exif()
    exif[0x0110] = "EOS 5D"
    jpeg = encode(img, quality=90, exif=exif.tobytes())
    png = encode(Image.open(io.BytesIO(jpeg)), "PNG")
    groups = find_groups([record("/a/copy.png", png), record("/b/IMG_0001.jpg", jpeg, mtime=5.0)], GroupingConfig())
    assert len(groups) == 1 and groups[0].keep.path == "/b/IMG_0001.jpg"
    # Without camera data the block traces alone still give the conversion away.
    plain = encode(img, quality=90)
    png = encode(Image.open(io.BytesIO(plain)), "PNG")
    groups = find_groups([record("/a/copy.png", png), record("/b/photo.jpg", plain, mtime=5.0)], GroupingConfig())
    assert groups[0].keep.path == "/b/photo.jpg"


def test_the_colour_original_is_kept_over_a_grey_copy() -> None:
    img = scene(7, (600, 400))
    colour = record("/z/colour.jpg", encode(img, quality=90), mtime=9.0)
    grey = record("/a/grey.jpg", encode(img.convert("L").convert("RGB"), quality=90), mtime=1.0)
    groups = find_groups([grey, colour], GroupingConfig())
    assert len(groups) == 1 and groups[0].keep.path == "/z/colour.jpg"
