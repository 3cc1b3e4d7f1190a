"""Synthetic test pictures shared by the tests, the load generator and the benchmark scripts: one
generator, so tests and benchmarks see the same kind of picture."""

from __future__ import annotations

import numpy as np


def synthetic_photo(seed: int, size: tuple[int, int]) -> np.ndarray:
    """A smooth photo-like RGB image (gradients, discs, sensor noise): compresses like a photo, unlike noise.
    Drawn at a quarter of the size and upscaled, so a 16 MP one takes a fraction of a second."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    w, h = size
    sw, sh = max(8, w // 4), max(8, h // 4)
    yy, xx = np.mgrid[0:sh, 0:sw].astype(np.float32)
    img = np.empty((sh, sw, 3), np.float32)
    for c in range(3):
        fx, fy, ph = rng.uniform(0.5, 4.0), rng.uniform(0.5, 4.0), rng.uniform(0, 6.28)
        img[..., c] = 127 + 100 * np.sin(xx / sw * fx * 6.28 + ph) * np.cos(yy / sh * fy * 6.28)
    for _ in range(8):
        cx, cy = rng.integers(0, sw), rng.integers(0, sh)
        r = rng.integers(max(1, min(sw, sh) // 12), max(2, min(sw, sh) // 3))
        img[(xx - cx) ** 2 + (yy - cy) ** 2 < r * r] = rng.integers(0, 256, 3)
    small = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    full = np.asarray(small.resize((w, h), Image.Resampling.BICUBIC), dtype=np.int16)
    noisy = full + rng.integers(-4, 5, full.shape, dtype=np.int16)
    return np.clip(noisy, 0, 255).astype(np.uint8)
