"""The simplejpeg fast path of decode_for_model must give exactly what the general PIL path gives."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from photodedup import imaging
from photodedup.errors import InvalidImageError
from photodedup.imaging import decode_for_model, load_rgb, open_image, to_model_array

from helpers import encode, photo

pytestmark = pytest.mark.skipif(imaging.simplejpeg is None, reason="simplejpeg is not installed")


def general_path(data: bytes, size: int) -> np.ndarray:
    return to_model_array(load_rgb(open_image(data, 10**9), min_side=size), size)


@pytest.mark.parametrize("quality", [75, 90, 95])
@pytest.mark.parametrize("subsampling", [0, 2])
def test_thumbnail_pixels_match_the_general_path(quality: int, subsampling: int) -> None:
    for seed in range(3):
        data = encode(photo(seed, (224, 224)), quality=quality, subsampling=subsampling)
        assert imaging._decode_thumbnail_jpeg(data, 224, 10**9) is not None
        np.testing.assert_array_equal(decode_for_model(data, 224, 10**9), general_path(data, 224))


def test_exif_rotation_takes_the_general_path() -> None:
    img = photo(1, (224, 224))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    data = encode(img, exif=exif.tobytes())
    assert imaging._decode_thumbnail_jpeg(data, 224, 10**9) is None
    out = decode_for_model(data, 224, 10**9)
    np.testing.assert_array_equal(out, general_path(data, 224))
    assert not np.array_equal(out, decode_for_model(encode(img), 224, 10**9))


def test_other_sizes_modes_and_limits_take_the_general_path() -> None:
    assert imaging._decode_thumbnail_jpeg(encode(photo(2, (300, 224))), 224, 10**9) is None
    assert imaging._decode_thumbnail_jpeg(encode(photo(2, (224, 224)).convert("L")), 224, 10**9) is None
    assert imaging._decode_thumbnail_jpeg(encode(photo(2, (224, 224)), fmt="PNG"), 224, 10**9) is None
    assert imaging._decode_thumbnail_jpeg(encode(photo(2, (224, 224))), 224, 1000) is None
    with pytest.raises(InvalidImageError):
        decode_for_model(encode(photo(2, (224, 224))), 224, 1000)


def test_corrupt_thumbnail_is_an_invalid_image() -> None:
    data = encode(photo(3, (224, 224)))
    with pytest.raises(InvalidImageError):
        decode_for_model(data[: len(data) // 3], 224, 10**9)
