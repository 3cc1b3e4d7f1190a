"""Made pictures with texture and corners (local features need them), edits of them, and pictures that are
not photos (text pages, icons, flat skies) whose hashes say little."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFilter


def scene(seed: int, size: tuple[int, int] = (640, 480), movers: int = 0, mover_seed: int = 0) -> Image.Image:
    """Random shapes on a gradient, different per seed. `movers` large objects are placed by
    `mover_seed`: two values of it are two shots of one scene with the subjects moved."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack(
        [80 + 60 * np.sin(xx / w * rng.uniform(1, 4) + c) * np.cos(yy / h * rng.uniform(1, 4)) for c in range(3)],
        axis=2,
    )
    img = Image.fromarray(np.clip(base + 60, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(90):
        x, y = rng.integers(0, w), rng.integers(0, h)
        r = int(rng.integers(4, max(6, min(w, h) // 10)))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            draw.rectangle((x - r, y - r // 2, x + r, y + r // 2), fill=colour)
        else:
            draw.polygon([(x, y - r), (x + r, y + r), (x - r, y + r // 3)], fill=colour)
    movers_rng = np.random.default_rng(1000 + mover_seed)
    for _ in range(movers):
        x, y = movers_rng.integers(0, w), movers_rng.integers(0, h)
        r = min(w, h) // 5
        colour = tuple(int(c) for c in movers_rng.integers(0, 256, 3))
        draw.ellipse((x - r, y - r, x + r, y + r), fill=colour, outline=(0, 0, 0), width=4)
        draw.rectangle((x - r // 3, y - r // 3, x + r // 3, y + r // 3), fill=tuple(255 - c for c in colour))
    noise = np.random.default_rng(seed + 7).integers(-3, 4, (h, w, 3))
    img = img.filter(ImageFilter.GaussianBlur(0.6))
    return Image.fromarray(np.clip(np.asarray(img, dtype=np.int16) + noise, 0, 255).astype(np.uint8))


def studio(seed: int, size: tuple[int, int] = (640, 480)) -> Image.Image:
    """A subject on a plain white background that it reaches only at the bottom, like a product shot."""
    from PIL import ImageDraw

    w, h = size
    mask = Image.new("L", size, 0)
    ImageDraw.Draw(mask).ellipse((w * 0.2, h * 0.1, w * 0.8, h * 1.3), fill=255)
    out = Image.new("RGB", size, (255, 255, 255))
    out.paste(scene(seed, size), (0, 0), mask)
    return out


def crop(img: Image.Image, box: tuple[float, float, float, float]) -> Image.Image:
    w, h = img.size
    return img.crop((int(box[0] * w), int(box[1] * h), int(box[2] * w), int(box[3] * h)))


def letterbox(img: Image.Image, share: float = 0.12, colour: tuple[int, int, int] = (0, 0, 0)) -> Image.Image:
    pad = int(img.height * share)
    out = Image.new("RGB", (img.width, img.height + 2 * pad), colour)
    out.paste(img, (0, pad))
    return out


def overlay(img: Image.Image) -> Image.Image:
    out = img.copy()
    draw = ImageDraw.Draw(out)
    w, h = out.size
    draw.rectangle((int(w * 0.02), int(h * 0.85), int(w * 0.32), int(h * 0.96)), fill=(255, 255, 255))
    draw.text((int(w * 0.03), int(h * 0.87)), "(c) studio", fill=(90, 90, 90))
    return out


WORDS = "the quick brown fox jumps over a lazy dog while seven wizards quietly hex jolly bakers".split()


def page(seed: int, size: tuple[int, int] = (540, 1200)) -> Image.Image:
    """A documentation page in one layout (light chrome, as documentation sites have): the same header and
    sidebar, different text per seed."""
    rng = np.random.default_rng(seed)
    w, h = size
    img = Image.new("RGB", size, (255, 255, 255))
    draw = ImageDraw.Draw(img)
    draw.rectangle((0, 0, w, 70), fill=(228, 233, 240))
    draw.text((16, 24), "Library reference", fill=(40, 60, 90))
    draw.rectangle((0, 70, 120, h), fill=(240, 242, 245))
    for k in range(20):
        draw.text((10, 90 + 28 * k), f"section {k}", fill=(60, 60, 60))
    y = 90
    while y < h - 30:
        if rng.random() < 0.15:  # headings and paragraph breaks fall differently on every page
            draw.text((140, y), " ".join(rng.choice(WORDS, 3)).upper(), fill=(20, 20, 20))
            y += 40
            continue
        line = " ".join(rng.choice(WORDS, int(rng.integers(3, 8))))
        draw.text((140, y), line, fill=(30, 30, 30))
        y += 18
    return img


def icon(kind: str) -> Image.Image:
    """A 48 px glyph on a transparent background, as icon themes ship them."""
    img = Image.new("RGBA", (48, 48), (0, 0, 0, 0))
    draw = ImageDraw.Draw(img)
    draw.rounded_rectangle((2, 2, 45, 45), radius=8, fill=(52, 120, 200, 255))
    if kind == "arrow":
        draw.polygon([(24, 6), (40, 24), (30, 24), (30, 42), (18, 42), (18, 24), (8, 24)], fill=(255, 255, 255, 255))
    else:
        draw.rectangle((10, 20, 38, 28), fill=(255, 255, 255, 255))
        if kind == "plus":
            draw.rectangle((20, 10, 28, 38), fill=(255, 255, 255, 255))
    return img


def sky(cloud_x: float) -> Image.Image:
    """A flat blue sky with one soft cloud: two of them differ only in where the cloud is."""
    h, w = 480, 640
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([120 + 30 * yy / h, 165 + 20 * yy / h, 225 + 10 * yy / h], axis=2)
    cloud = 45 * np.exp(-(((xx - cloud_x * w) / 90) ** 2 + ((yy - 0.4 * h) / 40) ** 2))
    noise = np.random.default_rng(int(cloud_x * 100)).normal(0, 1.5, (h, w, 1))
    return Image.fromarray(np.clip(base + cloud[..., None] + noise, 0, 255).astype(np.uint8))


GLYPHS = ("chevron-left", "chevron-right", "battery-20", "battery-60", "signal", "signal-dim", "blank")


def glyph(kind: str, size: int = 48, grey: int = 46, colour: tuple[int, int, int] | None = None) -> Image.Image:
    """A monochrome symbolic glyph (thin strokes of one grey on transparent), rendered as a theme renders its
    vector at each size: drawn 8 times larger and reduced, so two sizes of one kind are copies of one picture.
    `signal-dim` is `signal` in the light grey themes use for a dimmed state; `blank` has no ink at all;
    `bubble` is a filled speech bubble (mostly ink, little ground); `plus` and `plus-bold` differ in stroke
    width; `colour` inks the glyph in a hue instead of `grey`."""
    scale = 8
    big = Image.new("RGBA", (16 * scale, 16 * scale), (0, 0, 0, 0))
    draw = ImageDraw.Draw(big)
    ink = (*(colour or (grey, grey, grey)), 255)

    def box(x0: float, y0: float, x1: float, y1: float) -> tuple[int, int, int, int]:
        return round(x0 * scale), round(y0 * scale), round(x1 * scale), round(y1 * scale)

    if kind.startswith("chevron"):
        points = [(10.5, 2.5), (5, 8), (10.5, 13.5)]
        if kind == "chevron-right":
            points = [(16 - x, y) for x, y in points]
        draw.line([(x * scale, y * scale) for x, y in points], fill=ink, width=2 * scale, joint="curve")
    elif kind.startswith("battery"):
        draw.rectangle(box(6, 1, 10, 2.5), fill=ink)
        draw.rounded_rectangle(box(3.5, 2.5, 12.5, 15), radius=2 * scale, outline=ink, width=round(1.5 * scale))
        level = int(kind.split("-")[1]) / 100
        draw.rectangle(box(5.5, 13 - 8.5 * level, 10.5, 13), fill=ink)
    elif kind.startswith("signal"):
        if kind == "signal-dim":
            ink = (190, 190, 190, 255)
        for k in range(4):
            draw.rounded_rectangle(box(1 + 3.8 * k, 11 - 3 * k, 3.6 + 3.8 * k, 15), radius=scale // 2, fill=ink)
    elif kind == "bubble":
        draw.rounded_rectangle(box(0.5, 1.5, 15.5, 12), radius=3 * scale, fill=ink)
        draw.polygon([(x * scale, y * scale) for x, y in ((3, 11), (7, 11), (3, 15))], fill=ink)
    elif kind in ("plus", "plus-bold"):
        half = 1.5 if kind == "plus-bold" else 0.5
        draw.rectangle(box(1, 8 - half, 15, 8 + half), fill=ink)
        draw.rectangle(box(8 - half, 1, 8 + half, 15), fill=ink)
    elif kind != "blank":
        raise ValueError(f"unknown glyph {kind!r}")
    return big.resize((size, size), Image.Resampling.LANCZOS)
