from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from photodedup.errors import InvalidImageError
from photodedup.imaging import (
    OPENAI_MEAN,
    OPENAI_STD,
    decode_for_model,
    l2_normalize,
    normalize_batch,
    raw_for_model,
)

from helpers import encode, photo

MAX = 50_000_000


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF", "TIFF", "BMP"])
def test_every_common_format_decodes_to_model_input(fmt: str) -> None:
    img = photo(1, (400, 300))
    if fmt == "GIF":
        img = img.convert("P")
    arr = decode_for_model(encode(img, fmt), 224, MAX)
    assert arr.shape == (224, 224, 3) and arr.dtype == np.uint8
    assert arr.std() > 10  # real content, not a blank frame


def test_heic_decodes() -> None:
    pytest.importorskip("pillow_heif")
    from photodedup.imaging import register_heif

    register_heif()
    arr = decode_for_model(encode(photo(2, (320, 240)), "HEIF"), 224, MAX)
    assert arr.shape == (224, 224, 3)


def test_exif_orientation_is_applied() -> None:
    """A landscape photo stored sideways with Orientation=6 must come out like the upright original."""
    upright = photo(3, (300, 200))
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # what a camera writes before tagging
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW to display
    tagged = encode(stored, "JPEG", quality=95, exif=exif.tobytes())
    a = decode_for_model(encode(upright, "JPEG", quality=95), 224, MAX).astype(float)
    b = decode_for_model(tagged, 224, MAX).astype(float)
    wrong = decode_for_model(encode(stored, "JPEG", quality=95), 224, MAX).astype(float)
    assert np.abs(a - b).mean() < 6
    assert np.abs(a - wrong).mean() > 3 * np.abs(a - b).mean()


def test_transparency_is_flattened_on_white() -> None:
    rgba = Image.new("RGBA", (256, 256), (0, 0, 0, 0))
    arr = decode_for_model(encode(rgba, "PNG"), 224, MAX)
    assert arr.min() == 255


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "empty"),
        (b"this is a text file, not a jpeg", "not a supported image"),
        (b"\xff\xd8\xff\xe0" + b"\x00" * 50, "image"),
    ],
)
def test_garbage_is_an_invalid_image(data: bytes, message: str) -> None:
    with pytest.raises(InvalidImageError, match=message):
        decode_for_model(data, 224, MAX)


def test_truncated_jpeg_is_an_invalid_image() -> None:
    data = encode(photo(4, (640, 480)), "JPEG")
    with pytest.raises(InvalidImageError):
        decode_for_model(data[: len(data) // 3], 224, MAX)


def test_decompression_bomb_is_refused_before_decoding() -> None:
    buf = io.BytesIO()
    Image.new("L", (12_000, 12_000)).save(buf, "PNG")  # 144 MP of zeros compresses to ~140 KB
    with pytest.raises(InvalidImageError, match="over the limit"):
        decode_for_model(buf.getvalue(), 224, MAX)


def test_large_jpeg_uses_reduced_decoding() -> None:
    big = encode(photo(5, (4000, 3000)), "JPEG", quality=85)
    img = Image.open(io.BytesIO(big))
    img.draft("RGB", (224, 224))
    assert img.size[0] < 4000  # DCT scaling kicked in
    assert decode_for_model(big, 224, MAX).shape == (224, 224, 3)


def test_raw_images_must_match_the_input_size() -> None:
    rgb = np.zeros((224, 224, 3), np.uint8).tobytes()
    assert raw_for_model(rgb, 224, 224, 224).shape == (224, 224, 3)
    with pytest.raises(InvalidImageError, match="takes 224x224"):
        raw_for_model(rgb, 100, 100, 224)
    with pytest.raises(InvalidImageError, match="bytes"):
        raw_for_model(rgb[:-1], 224, 224, 224)


def test_normalisation_matches_the_clip_recipe() -> None:
    arr = np.random.default_rng(0).integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)
    out = normalize_batch(arr, OPENAI_MEAN, OPENAI_STD)
    ref = (arr / 255.0 - np.array(OPENAI_MEAN)) / np.array(OPENAI_STD)
    assert out.shape == (2, 3, 224, 224) and out.dtype == np.float32
    np.testing.assert_allclose(out, ref.transpose(0, 3, 1, 2), atol=1e-5)


def test_l2_normalize_keeps_zero_rows_finite() -> None:
    out = l2_normalize(np.array([[3.0, 4.0], [0.0, 0.0]]))
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 0.0]])


@pytest.mark.parametrize("size", [(320, 240), (240, 320), (1600, 1200), (225, 500), (100, 80)])
def test_crop_first_resize_matches_resize_then_crop(size: tuple[int, int]) -> None:
    from photodedup.imaging import resize_center_crop

    img = photo(9, size)
    w, h = size
    scale = 224 / min(w, h)
    nw, nh = max(224, round(w * scale)), max(224, round(h * scale))
    ref = img.resize((nw, nh), Image.Resampling.BICUBIC) if (nw, nh) != size else img
    left, top = (nw - 224) // 2, (nh - 224) // 2
    ref = np.asarray(ref.crop((left, top, left + 224, top + 224)), dtype=float)
    out = np.asarray(resize_center_crop(img, 224), dtype=float)
    assert out.shape == (224, 224, 3)
    assert np.abs(out - ref).mean() < 0.5


def test_a_thin_strip_does_not_blow_up_memory() -> None:
    """1 x 50,000 px is 50 K pixels (under any limit) but 224 x 11 M after a naive short-side resize."""
    import resource

    buf = io.BytesIO()
    Image.new("RGB", (1, 50_000), (10, 20, 30)).save(buf, "PNG")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    arr = decode_for_model(buf.getvalue(), 224, MAX)
    assert arr.shape == (224, 224, 3) and tuple(arr[0, 0]) == (10, 20, 30)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000  # KiB
