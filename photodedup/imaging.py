"""Image decoding and model preprocessing shared by client and server.

Both sides must turn a photo into the same model input, so the recipe lives here once: apply EXIF
orientation, flatten alpha onto white, resize the short side to the model's input size (bicubic), centre
crop, then normalise with the model's mean/std. JPEGs are decoded at reduced size with the decoder's DCT
scaling (`Image.draft`), so a 16 MP photo is never decoded in full.
"""

from __future__ import annotations

import io
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from photodedup.errors import InvalidImageError

try:  # optional: libjpeg-turbo straight to numpy, about twice as fast as PIL for 224 px thumbnails
    import simplejpeg
except ImportError:  # pragma: no cover - depends on the environment
    simplejpeg = None

OPENAI_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)

_heif_lock = threading.Lock()
_heif_registered = False


def register_heif() -> bool:
    """Teach Pillow HEIC/HEIF (pillow-heif) once per process; False when pillow-heif is missing."""
    global _heif_registered
    with _heif_lock:
        if not _heif_registered:
            try:
                from pillow_heif import register_heif_opener
            except ImportError:
                return False
            register_heif_opener()
            _heif_registered = True
    return True


@dataclass(frozen=True)
class Preprocessing:
    """How the model wants its pixels; GetInfo sends this to clients."""

    input_size: int = 224
    mean: tuple[float, float, float] = OPENAI_MEAN
    std: tuple[float, float, float] = OPENAI_STD
    interpolation: str = "bicubic"


def open_image(data: bytes, max_pixels: int) -> Image.Image:
    """Open encoded bytes lazily and refuse decompression bombs before any pixel is decoded."""
    if not data:
        raise InvalidImageError("empty image data")
    register_heif()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, Image.DecompressionBombError) as exc:
        raise InvalidImageError(f"not a supported image: {exc}") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise InvalidImageError(f"cannot read image: {exc}") from None
    check_pixels(img, max_pixels)
    return img


def check_pixels(img: Image.Image, max_pixels: int) -> None:
    width, height = img.size
    if width <= 0 or height <= 0:
        raise InvalidImageError(f"image has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise InvalidImageError(
            f"image is {width}x{height} = {width * height:,} pixels, over the limit of {max_pixels:,}"
        )


def load_rgb(img: Image.Image, min_side: int | None = None) -> Image.Image:
    """Decode to upright RGB, at reduced size where the format allows (JPEG DCT scaling)."""
    try:
        if min_side is not None and img.format == "JPEG":
            # draft keeps both sides >= the request; orientation is applied later, so ask for a square.
            img.draft("RGB", (min_side, min_side))
        img.load()
        img = ImageOps.exif_transpose(img)
        if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
            rgba = img.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            img = Image.alpha_composite(background, rgba).convert("RGB")
        elif img.mode != "RGB":
            img = img.convert("RGB")
    except InvalidImageError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, EOFError) as exc:
        raise InvalidImageError(f"cannot decode image: {exc}") from None
    return img


def resize_center_crop(img: Image.Image, size: int) -> Image.Image:
    """Bicubic resize of the short side to `size`, then a centre crop: the CLIP recipe.

    Only the part of the source that survives the crop is resampled (Pillow's `box`, whose filter still
    reads the pixels just outside it), so the result equals resize-then-crop, while a 1 x 50,000 px
    strip costs a 224 x 224 output instead of a 224 x 11-million intermediate."""
    width, height = img.size
    scale = size / min(width, height)
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    if (new_w, new_h) == (width, height):
        left, top = (new_w - size) // 2, (new_h - size) // 2
        return img.crop((left, top, left + size, top + size)) if (new_w, new_h) != (size, size) else img
    sx, sy = width / new_w, height / new_h
    left, top = (new_w - size) // 2, (new_h - size) // 2
    box = (left * sx, top * sy, (left + size) * sx, (top + size) * sy)
    return img.resize((size, size), Image.Resampling.BICUBIC, box=box)


def to_model_array(img: Image.Image, size: int) -> np.ndarray:
    """Upright RGB image -> uint8 array (size, size, 3) ready for normalisation."""
    arr = np.asarray(resize_center_crop(img, size), dtype=np.uint8)
    if arr.shape != (size, size, 3):  # pragma: no cover - guarded by load_rgb
        raise InvalidImageError(f"unexpected decoded shape {arr.shape}")
    return arr


def decode_for_model(data: bytes, size: int, max_pixels: int) -> np.ndarray:
    """Encoded bytes -> uint8 (size, size, 3); raises InvalidImageError for anything unusable."""
    fast = _decode_thumbnail_jpeg(data, size, max_pixels)
    if fast is not None:
        return fast
    img = open_image(data, max_pixels)
    return to_model_array(load_rgb(img, min_side=size), size)


def _decode_thumbnail_jpeg(data: bytes, size: int, max_pixels: int) -> np.ndarray | None:
    """The serving hot path: a client-made YCbCr JPEG already at the model's size, with no EXIF or XMP that
    could rotate it, decodes with simplejpeg to the very pixels PIL gives (same libjpeg-turbo defaults)
    without PIL's Python header parsing and its two copies. None means "take the general path", which
    also produces the error messages."""
    if simplejpeg is None or data[:2] != b"\xff\xd8" or size * size > max_pixels:
        return None
    try:
        height, width, colorspace, _subsampling = simplejpeg.decode_jpeg_header(data)
    except ValueError:
        return None
    if (width, height) != (size, size) or colorspace != "YCbCr":
        return None
    if b"Exif\x00\x00" in data or b"Orientation" in data:  # conservative: any hint of a rotation tag
        return None
    try:
        arr = simplejpeg.decode_jpeg(data, colorspace="RGB")
    except ValueError:
        return None
    return arr if arr.shape == (size, size, 3) else None


def raw_for_model(rgb: bytes, width: int, height: int, size: int) -> np.ndarray:
    """Raw RGB uint8 pixels -> (size, size, 3) view; they must already be at the model's input size."""
    if (width, height) != (size, size):
        raise InvalidImageError(f"raw image is {width}x{height}; the model takes {size}x{size}")
    if len(rgb) != size * size * 3:
        raise InvalidImageError(f"raw image has {len(rgb)} bytes; {size}x{size}x3 needs {size * size * 3}")
    return np.frombuffer(rgb, dtype=np.uint8).reshape(size, size, 3)


def normalize_batch(
    images: Sequence[np.ndarray] | np.ndarray, mean: Sequence[float], std: Sequence[float]
) -> np.ndarray:
    """uint8 NHWC -> float32 NCHW, scaled to [0, 1] then normalised per channel.

    One pass converts and transposes straight into the NCHW output and two in-place passes scale it:
    about 8x faster than convert, divide, subtract, then copy to NCHW (it is on the serving hot path).
    """
    batch = images if isinstance(images, np.ndarray) else np.stack(images)
    n, h, w, c = batch.shape
    std_arr = np.asarray(std, dtype=np.float32)
    scale = (1.0 / (std_arr * 255.0)).reshape(1, c, 1, 1)
    offset = (np.asarray(mean, dtype=np.float32) / std_arr).reshape(1, c, 1, 1)
    out = np.empty((n, c, h, w), dtype=np.float32)
    np.copyto(out, batch.transpose(0, 3, 1, 2), casting="unsafe")
    out *= scale
    out -= offset
    return out


def encode_jpeg(arr_or_img: np.ndarray | Image.Image, quality: int = 90) -> bytes:
    """Encode a thumbnail for the wire: a 224 px JPEG at q90 is ~10-15 KB."""
    img = Image.fromarray(arr_or_img) if isinstance(arr_or_img, np.ndarray) else arr_or_img
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def l2_normalize(vectors: np.ndarray, inplace: bool = False) -> np.ndarray:
    """Row-wise L2 normalisation in float32; zero rows stay zero instead of turning into NaN.

    The one L2 normalisation of the codebase (engines' outputs, grouping's search). `inplace` divides a
    C-contiguous float32 matrix the caller owns block by block, sparing a copy of a large one.
    """
    if not inplace:
        vectors = np.asarray(vectors, dtype=np.float32)
        return vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    for start in range(0, len(vectors), 65_536):
        block = vectors[start : start + 65_536]
        block /= np.maximum(np.linalg.norm(block, axis=1, keepdims=True), 1e-12)
    return vectors
