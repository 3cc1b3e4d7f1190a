"""Which decoder each encoded image gets: nvJPEG on the engine's GPU or the CPU path (header only, no GPU)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from photodedup.engines.jpeg_route import Decoder, choose_decoder, parse_jpeg_header

SIZE = 224


def jpeg(size: tuple[int, int] = (SIZE, SIZE), mode: str = "RGB", **save: object) -> bytes:
    rng = np.random.default_rng(0)
    channels = {"RGB": 3, "CMYK": 4, "L": 1}[mode]
    arr = rng.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
    img = Image.fromarray(arr[..., 0] if channels == 1 else arr, mode)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=80, **save)
    return buf.getvalue()


def test_a_baseline_thumbnail_at_the_model_size_goes_to_the_device() -> None:
    data = jpeg()
    header = parse_jpeg_header(data)
    assert header is not None and (header.width, header.height, header.components) == (SIZE, SIZE, 3)
    assert header.sof == 0xC0
    assert choose_decoder(data, SIZE, device_decode=True).decoder is Decoder.DEVICE


def test_nothing_goes_to_the_device_when_the_engine_does_not_decode_there() -> None:
    assert choose_decoder(jpeg(), SIZE, device_decode=False).decoder is Decoder.CPU


def _exif_rotated() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6
    return jpeg(exif=exif.tobytes())


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (SIZE, SIZE)).save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (jpeg(progressive=True), "progressive"),
        (jpeg(mode="CMYK"), "4 components"),
        (jpeg(mode="L"), "1 components"),
        (jpeg((320, 240)), "320x240"),
        (_exif_rotated(), "EXIF"),
        (_png(), "not a JPEG"),
        (jpeg()[:40], "malformed"),  # the header is cut before the frame
        (b"\xff\xd8\xff\xe0\x00\x01garbage", "malformed"),  # a segment length below 2
        (b"", "not a JPEG"),
    ],
    ids=["progressive", "cmyk", "grey", "other-size", "exif", "png", "truncated", "bad-length", "empty"],
)
def test_odd_images_keep_the_cpu_path(data: bytes, reason: str) -> None:
    route = choose_decoder(data, SIZE, device_decode=True)
    assert route.decoder is Decoder.CPU
    assert reason in route.reason


def test_corrupt_scan_data_with_a_good_header_still_goes_to_the_device() -> None:
    # The header cannot see broken entropy-coded data; the engine falls back per image (tested in
    # test_torch_cuda_plan.py and test_device_decode_serving.py), so it still gets its own error.
    data = bytearray(jpeg())
    data[-200:-2] = b"\x00" * 198
    assert choose_decoder(bytes(data), SIZE, device_decode=True).decoder is Decoder.DEVICE
