"""How close a file is to the camera's original: the signals the keeper policy ranks copies by.

All read while the scanner has the file open, from its header and its decoded pixels:
- camera metadata: EXIF make or model present (exports and conversions often drop it);
- quality: estimated JPEG quality from the quantisation tables (the IJG scaling of the standard
  tables), 100 for a lossless file without JPEG traces, 0 for a lossless file whose pixels carry JPEG
  8 x 8 block traces (a converted copy), `LOSSY_UNKNOWN` for other lossy formats;
- grey: a colour-less picture (a grey copy loses the original's colour).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from photodedup.client.content import channel_max, channel_min

TAG_MAKE = 0x010F
TAG_MODEL = 0x0110
LOSSLESS = frozenset({"PNG", "TIFF", "BMP", "PPM", "TGA"})
LOSSY_UNKNOWN = 75  # WebP, HEIC, AVIF: no table to read; a typical encoder default
# IJG standard luminance quantisation table (JPEG Annex K), in the natural order Pillow returns.
_STD_LUMA = np.array(
    [
        16,
        11,
        10,
        16,
        24,
        40,
        51,
        61,
        12,
        12,
        14,
        19,
        26,
        58,
        60,
        55,
        14,
        13,
        16,
        24,
        40,
        57,
        69,
        56,
        14,
        17,
        22,
        29,
        51,
        87,
        80,
        62,
        18,
        22,
        37,
        56,
        68,
        109,
        103,
        77,
        24,
        35,
        55,
        64,
        81,
        104,
        113,
        92,
        49,
        64,
        78,
        87,
        103,
        121,
        120,
        101,
        72,
        92,
        95,
        98,
        112,
        100,
        103,
        99,
    ],
    dtype=np.float64,
)
# Mean step across 8-px block edges over the mean step inside blocks (both axes averaged) above which a
# lossless file was a JPEG: clean made and real pictures measured <= 1.12, JPEG q95 >= 1.17, q90 >= 1.3.
BLOCK_RATIO = 1.15


@dataclass(frozen=True)
class Fidelity:
    camera: bool
    quality: int
    grey: bool


def jpeg_quality(quantization: dict[int, list[int]] | None) -> int | None:
    """Estimated IJG quality (1..100) of a JPEG from its luminance table, or None without one."""
    if not quantization or 0 not in quantization or len(quantization[0]) != 64:
        return None
    table = np.asarray(quantization[0], dtype=np.float64)
    # Entries clipped to 1 (high quality) or 255 (low) say little; the median of the rest is the scale.
    usable = (table > 1) & (table < 255)
    ratios = table[usable] * 100.0 / _STD_LUMA[usable] if usable.any() else table * 100.0 / _STD_LUMA
    scale = float(np.median(ratios))
    quality = (200.0 - scale) / 2.0 if scale <= 100.0 else 5000.0 / scale
    return int(round(min(100.0, max(1.0, quality))))


def block_traces(gray: np.ndarray) -> bool:
    """True when a full-size grey picture shows JPEG's 8 x 8 grid: steps across block edges stand out.

    Measured on both axes; a picture too small or too flat to tell counts as clean."""
    if min(gray.shape) < 64:
        return False
    g = gray.astype(np.float32)
    ratios = []
    for diff in (np.abs(np.diff(g, axis=1)).mean(axis=0), np.abs(np.diff(g, axis=0)).mean(axis=1)):
        n = len(diff) // 8 * 8
        if n < 16:
            return False
        by_phase = diff[:n].reshape(-1, 8).mean(axis=0)  # phase 7 is the step from pixel 7 to pixel 8
        inside = np.delete(by_phase, 7).mean()
        if inside < 0.5:  # flat picture: nothing to measure
            return False
        ratios.append(by_phase[7] / inside)
    return float(np.mean(ratios)) > BLOCK_RATIO


def is_grey(rgb: np.ndarray) -> bool:
    """True when the channels agree everywhere (a grey picture stored as RGB)."""
    small = rgb[:: max(1, rgb.shape[0] // 128), :: max(1, rgb.shape[1] // 128)].astype(np.int16)
    spread = channel_max(small) - channel_min(small)
    return float((spread <= 6).mean()) > 0.99


def fidelity(img: object, fmt: str, full_rgb: np.ndarray, exif: object) -> Fidelity:
    """Signals for one opened image; `full_rgb` is its upright decode (full size for lossless formats)."""
    try:
        camera = bool(exif.get(TAG_MAKE) or exif.get(TAG_MODEL))  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - broken EXIF is common: no camera data then
        camera = False
    if fmt in ("JPEG", "MPO"):
        quality = jpeg_quality(getattr(img, "quantization", None)) or LOSSY_UNKNOWN
    elif fmt in LOSSLESS or (fmt == "WEBP" and getattr(img, "info", {}).get("lossless")):
        h, w = full_rgb.shape[:2]
        # A central tile at full size: block traces vanish in any reduction, and 512 px is plenty.
        # Its corner on the 8-px grid, so the block edges stay at phase 7.
        top, left = max(0, h // 2 - 256) // 8 * 8, max(0, w // 2 - 256) // 8 * 8
        tile = full_rgb[top : top + 512, left : left + 512]
        grey_tile = tile.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        quality = 0 if block_traces(grey_tile) else 100
    else:
        quality = LOSSY_UNKNOWN
    return Fidelity(camera, quality, is_grey(full_rgb))
