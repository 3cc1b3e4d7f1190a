"""The strict check for weak pictures (tiny, flat or low-contrast: icons, text pages, sky, and pairs of
icon-sized pictures), where a hash distance says little and features match shared outlines.

`compare_strict` aligns the two as geometric verification does (`client.verify`: RANSAC on ORB matches, or
the content boxes laid on each other when features cannot align them), then asks for agreement at the smaller
picture's own resolution with no allowance for overlays: lightness compared after histogram matching (tone
still does not count) and colour compared cell by cell (a recoloured icon is another icon); dark ink on a
light ground (a glyph, a logo) must also agree pixel by pixel, in shape and strength (`_ink_distance`), and
icon-sized pictures must agree in raw colour, tone included, over any large connected region (`_colour_region`:
a theme's grey and black, or green and yellow, variants of one shape are two icons), and in lightness pixel by
pixel (`_pixel_share`: at 16 px an emblem's strokes are single pixels that cells average away). Drawn
graphics (cut-outs, `STRICT_DRAWN_SHARE`) are laid box on box when features do not align them, and must not
differ in any solid shape (`_shape_share`: one folder with a page emblem and with a dashed page emblem).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from photodedup.client.grouping.config import GroupingConfig

if TYPE_CHECKING:
    from photodedup.client.verify import Picture, Verdict

# The strict check (`compare_strict`): cells compared at most STRICT_SIDE px on the long side, never above
# the smaller picture's own size; a cell disagrees on lightness at this mean difference (0..255 after
# histogram matching) or on colour at these hue angles; at most STRICT_BAD_CELLS of cells may disagree.
STRICT_SIDE = 256
STRICT_GREY_LEVELS = (12.0, 16.0)  # compared at native size / downscaled to STRICT_SIDE (aliasing)
STRICT_HUE_DEGREES = (35.0, 50.0)  # strongly (chroma > 20) / moderately (chroma > 10) coloured cells
STRICT_BAD_CELLS = 0.02
STRICT_MAX_TILT = 10.0  # degrees of rotation the strict check accepts between two pictures
STRICT_ALWAYS_COLOUR_BELOW = 64  # px on the long side: below it a grey picture never matches a coloured one
# Dark ink on a light ground (at least INK_BACKGROUND_SHARE of pixels within INK_LEVELS of the lightest level:
# glyphs flattened onto white, logos, text on white) is compared by its ink, pixel by pixel (`_ink_distance`).
INK_LEVELS = 8
INK_BACKGROUND_SHARE = 0.2
INK_MIN_STRENGTH = 40.0  # levels: fainter "ink" is shading (a cloud on a sky), not strokes
INK_BLUR = 0.7  # px at the compared size: a copy's strokes move by their anti-aliasing, not more
STRICT_INK_DISTANCE = 0.35
INK_STRENGTH_RATIO = 1.6  # a grey glyph against a black one: the dimmed state, another picture
# Icon-sized pictures (compared below STRICT_ALWAYS_COLOUR_BELOW px) are also compared in raw colour, tone
# included: a theme's grey and black bubbles or green and yellow arrows are two icons, which histogram
# matching makes agree. One connected region where the two differ by more than STRICT_COLOUR_DELTA (OpenCV's
# 8-bit Lab units) over more than STRICT_COLOUR_REGION of the compared area rejects the pair; a copy's
# resampling and JPEG noise disagree in scattered pixels and thin fringes (at most 0.12 on the system folder).
STRICT_COLOUR_DELTA = 30.0
STRICT_COLOUR_REGION = 0.2
# Below STRICT_ALWAYS_COLOUR_BELOW px a stroke is a pixel or two wide, and cells (a few pixels each, blurred)
# average an emblem away: a folder with a music note and one with a house agreed in every cell. There two
# pictures of one size also have their lightness compared pixel by pixel (histogram-matched both ways, as
# the cells): at most STRICT_PIXEL_SHARE of the covered pixels may differ by more than STRICT_PIXEL_LEVELS.
# Measured on the system folder's 16-48 px place icons: JPEG (q60-90) copies at most 0.004 of their pixels,
# two different emblems at least 0.019 (at 16-32 px at least 0.036).
STRICT_PIXEL_LEVELS = 25.0
STRICT_PIXEL_SHARE = 0.01
# Drawn graphics: either picture has at least STRICT_DRAWN_SHARE of its frame see-through (a cut-out, as the
# grouping's `weak_transparent` says). A theme's 512 px place icons are one folder with different emblems: their
# features sit on the emblem and a few outlines, so a re-encoded copy matched its original on too little of it
# (5 of 68 made copies), and an emblem that differs by a few dashes agreed in all but 1.6 % of cells. Such a pair
# is laid box on box when features do not align it (a graphic's copies are resized, not cropped), and from
# STRICT_ALWAYS_COLOUR_BELOW px up at most STRICT_SHAPE_SHARE of the covered pixels may lie in solid shapes
# (surviving a 3 x 3 opening) that differ by more than STRICT_PIXEL_LEVELS. Measured on the 17 place icons of
# 512 px and 68 copies (resized PNG, JPEG q70-85, WebP): copies at most 0.0019, different emblems at least 0.011.
STRICT_DRAWN_SHARE = GroupingConfig.weak_transparent  # one threshold: the grouping's says which pairs come here
STRICT_SHAPE_SHARE = 0.005
# A drawn graphic's copies are resized, not cropped: from STRICT_ALWAYS_COLOUR_BELOW px up, the smaller must cover
# at least this share of the other's frame once aligned (a theme's headset is its headphones with a microphone
# added below: 0.84; the 68 made copies of the place icons: all above).
STRICT_DRAWN_COVER = 0.9


def compare_strict(a: Picture, b: Picture) -> Verdict:
    """The check for weak pictures (module docstring): aligned by features where they align the two,
    else content box on content box, then every cell must agree in lightness and colour, and ink on a light
    ground pixel by pixel."""
    import cv2

    # Imported here: `verify` imports this module (its verdict version and `GeometricVerifier`).
    from photodedup.client.verify import FEATURE_POOR, Verdict, agreement, align, upright_affine

    found = align(a, b)
    transform, a_inside = found.transform, found.a_inside
    aligned_by = "features"
    drawn = max(a.transparent, b.transparent) >= STRICT_DRAWN_SHARE
    if transform is not None:
        # A weak picture and its turn are two pictures (an arrow up and an arrow right): only small tilts.
        if abs(np.degrees(np.arctan2(transform[1, 0], transform[0, 0]))) > STRICT_MAX_TILT:
            v = found.verdict
            return Verdict(False, v.inliers, v.coverage, reason="turned (no evidence for a weak picture)", strict=True)
        # Features aligned the two: what a copy must pass anyway (overlays aside, `verify.agreement`) comes first.
        loose = agreement(a, b, found)
        if not loose.same:
            return dataclasses.replace(loose, strict=True)
    elif min(len(a.points), len(b.points)) >= FEATURE_POOR and max(a.native, b.native) > STRICT_SIDE and not drawn:
        # Both are large with features that do not align (two text pages of one site): two pictures.
        return dataclasses.replace(found.verdict, strict=True)
    else:
        # Too few features to align (a flat sky), both small (an icon, whose enlarged features repeat) or a
        # drawn graphic (features on a few outlines): content boxes laid on each other, since copies of such
        # pictures are resized, not cropped.
        (ha, wa), (hb, wb) = a.gray.shape, b.gray.shape
        transform = np.array([[wb / wa, 0.0, 0.0], [0.0, hb / ha, 0.0]])
        a_inside = a.gray.size <= b.gray.size
        aligned_by = "content boxes"
    ink_a, ink_b = ink_of(a), ink_of(b)
    inked = ink_a is not None and ink_b is not None
    upright = upright_affine(a, b, transform)
    v = found.verdict
    if inked and max(ink_a.strength, ink_b.strength) > INK_STRENGTH_RATIO * min(ink_a.strength, ink_b.strength):  # type: ignore[union-attr]
        return Verdict(False, v.inliers, v.coverage, 1.0, "ink of another strength", upright, True, aligned_by)
    if not a_inside:
        a, b, transform = b, a, cv2.invertAffineTransform(transform)
    frame = _strict_frame(a, b, transform)
    # Ink on a light ground is also compared pixel by pixel (`_ink_distance`), on top of the cells.
    bad, counted = _strict_bad_cells(frame)
    ink = _ink_distance(frame) if counted and inked else 0.0
    icon = counted and frame.side < STRICT_ALWAYS_COLOUR_BELOW
    region = _colour_region(frame) if icon else 0.0
    # Pixel by pixel only between pictures of one size: a theme draws each size of an icon anew (its 16 and
    # 24 px strokes are placed differently), so across sizes the pixels of one icon disagree; at one size a
    # copy is a re-encode or a flattening, whose pixels agree.
    pixels = _pixel_share(frame) if icon and a.native == b.native else 0.0
    # A drawn graphic's emblem differs in solid shapes, which cells mostly of one flat colour average away.
    shape = _shape_share(frame) if counted and drawn and not icon else 0.0
    if drawn and counted and not icon and float(frame.inside.mean()) < STRICT_DRAWN_COVER:
        return Verdict(False, v.inliers, v.coverage, bad, "one covers part of the other", upright, True, aligned_by)
    same = (
        counted
        and bad <= STRICT_BAD_CELLS
        and ink <= STRICT_INK_DISTANCE
        and region <= STRICT_COLOUR_REGION
        and pixels <= STRICT_PIXEL_SHARE
        and shape <= STRICT_SHAPE_SHARE
    )
    if same or not counted:
        reason = "" if same else "too little overlap"
    elif bad > STRICT_BAD_CELLS:
        reason = "content differs"
    elif pixels > STRICT_PIXEL_SHARE:
        reason = "pixels differ"
    elif shape > STRICT_SHAPE_SHARE:
        reason = "shapes differ"
    else:
        reason = "ink differs" if ink > STRICT_INK_DISTANCE else "colour or tone differs"
    return Verdict(bool(same), v.inliers, v.coverage, max(bad, ink), reason, upright, True, aligned_by)


def _match_histogram(values: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """`values` mapped onto the distribution of `reference` (ties keep one value): tone does not count."""
    # Average ranks of ties (scipy's rankdata, method "average", less one) without importing scipy.stats,
    # whose first import costs seconds per process.
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    average = np.cumsum(counts) - counts + (counts - 1) / 2.0
    quantile = average[inverse.reshape(-1)] / max(values.size - 1, 1)
    return np.interp(quantile, np.linspace(0.0, 1.0, reference.size), np.sort(reference))


@dataclass
class StrictFrame:
    """Two pictures in one frame for the strict check: a (the smaller) warped onto b, in Lab, at the smaller
    picture's own resolution; `inside` marks the pixels a covers."""

    warped: np.ndarray
    target: np.ndarray
    inside: np.ndarray
    side: int


def _strict_frame(a: Picture, b: Picture, transform: np.ndarray) -> StrictFrame:
    """a (the smaller) warped onto b's Lab frame scaled to the smaller picture's own resolution: no detail is
    invented by enlarging a 48 px icon."""
    import cv2

    assert a.lab is not None and b.lab is not None
    side = max(4, min(STRICT_SIDE, a.native, b.native))
    hb, wb = b.lab.shape[:2]
    k = side / max(hb, wb)
    size = (max(1, round(wb * k)), max(1, round(hb * k)))
    target = cv2.resize(b.lab, size, interpolation=cv2.INTER_AREA) if k < 1 else b.lab
    size = (target.shape[1], target.shape[0])
    # transform: a.gray -> b.gray; compose a.lab -> a.gray -> b.gray -> target.
    to_gray_a = a.gray.shape[1] / a.lab.shape[1]
    to_target = target.shape[1] / b.gray.shape[1]
    m = transform.astype(np.float64).copy()
    m[:, :2] *= to_gray_a
    m *= to_target
    # Edge pixels repeat: blending in a black border made the last row of a small picture disagree.
    warped = cv2.warpAffine(a.lab, m, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    inside = cv2.warpAffine(np.full(a.lab.shape[:2], 255, np.uint8), m, size, flags=cv2.INTER_NEAREST) > 0
    return StrictFrame(warped, target, inside, side)


@dataclass
class Ink:
    """A picture mostly of one flat ground (a glyph, a logo, text on white): where its ink lies and how strong
    it is, measured on its strict-scale lightness."""

    background: float
    strength: float  # typical departure of the ink from the ground (0..255)


def _departure(lightness: np.ndarray) -> tuple[float, np.ndarray, float]:
    """(ground level, each pixel's departure from it, share of pixels on the ground). The ground is the
    lightest level: transparency is flattened onto white (`imaging.load_rgb`), and in a tightly trimmed
    glyph the ink can outnumber the ground, so the most common level is not it."""
    light = lightness.astype(np.float32)
    level = float(np.percentile(light, 99))
    departure = level - light
    return level, departure, float((departure <= INK_LEVELS).mean())


def ink_of(pic: Picture) -> Ink | None:
    """The picture's ink, or None when it is not mostly one flat ground (a photo, a sky, a gradient)."""
    if pic.lab is None:
        return None
    background, departure, share = _departure(pic.lab[..., 0])
    weights = np.where(departure > INK_LEVELS, departure, 0.0)
    total = float(weights.sum())
    if share < INK_BACKGROUND_SHARE or share > 0.999 or total == 0.0:
        return None
    strength = float(np.percentile(departure[departure > INK_LEVELS], 90))
    if strength < INK_MIN_STRENGTH:
        return None
    return Ink(background, strength)


def _ink_distance(frame: StrictFrame) -> float:
    """Soft Jaccard distance (0..1) between the ink of two pictures on a flat ground, each normalised by its
    own strength, counted in pixels, not in cells: two thin glyphs differ in a few strokes on a ground they
    share, which cells averaging mostly background hide. 1.0 when one has ink and the other none."""
    import cv2

    maps = []
    for lab in (frame.warped, frame.target):
        _, departure, _ = _departure(lab[..., 0])
        ink = np.where(departure > INK_LEVELS, departure, 0.0).astype(np.float32)
        strong = ink[frame.inside & (ink > 0)]
        if strong.size:
            ink = np.clip(ink / float(np.percentile(strong, 90)), 0.0, 1.0)
        maps.append(cv2.GaussianBlur(ink, (0, 0), INK_BLUR)[frame.inside])
    union = float(np.maximum(*maps).sum())
    if union == 0.0:
        return 0.0  # two blank pictures
    return float(np.abs(maps[0] - maps[1]).sum()) / union


def _lightness_differences(frame: StrictFrame, sigma: float) -> np.ndarray:
    """Per covered pixel, how far the two lightnesses (blurred by `sigma` px) are apart after histogram
    matching both ways: tone does not count, and a flat picture matched onto a glyph, which would take on
    its strokes, is compared the other way too."""
    import cv2

    inside = frame.inside
    la = cv2.GaussianBlur(frame.warped[..., 0].astype(np.float32), (0, 0), sigma)[inside]
    lb = cv2.GaussianBlur(frame.target[..., 0].astype(np.float32), (0, 0), sigma)[inside]
    if not la.size:
        return la
    return np.maximum(np.abs(_match_histogram(la, lb) - lb), np.abs(_match_histogram(lb, la) - la))


def _pixel_share(frame: StrictFrame) -> float:
    """Share of the covered pixels whose lightness differs by more than STRICT_PIXEL_LEVELS (a half-pixel
    blur: a copy's resampling moves edges by less)."""
    differs = _lightness_differences(frame, 0.5)
    return float((differs > STRICT_PIXEL_LEVELS).mean()) if differs.size else 0.0


def _shape_share(frame: StrictFrame) -> float:
    """Share of the covered pixels in solid shapes whose lightness differs by more than STRICT_PIXEL_LEVELS:
    the differing pixels that survive a 3 x 3 opening. A copy's resampling and JPEG noise differ in thin
    fringes along edges, which the opening removes; another emblem on the same frame differs in blobs."""
    import cv2

    differs = np.zeros(frame.inside.shape, np.uint8)
    differs[frame.inside] = _lightness_differences(frame, 0.5) > STRICT_PIXEL_LEVELS
    opened = cv2.morphologyEx(differs, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    return float(opened.sum()) / max(int(frame.inside.sum()), 1)


def _colour_region(frame: StrictFrame) -> float:
    """Share of the compared area taken by the largest connected region where the two pictures differ in raw
    Lab colour (tone counted) by more than STRICT_COLOUR_DELTA: a whole shape in another grey or hue, which the
    tone-free cells accept; a copy differs in scattered pixels and thin fringes."""
    import cv2

    warped = cv2.GaussianBlur(frame.warped.astype(np.float32), (0, 0), 0.6)
    target = cv2.GaussianBlur(frame.target.astype(np.float32), (0, 0), 0.6)
    differs = (np.linalg.norm(warped - target, axis=2) > STRICT_COLOUR_DELTA) & frame.inside
    count, _, stats, _ = cv2.connectedComponentsWithStats(differs.astype(np.uint8), connectivity=8)
    if count < 2:
        return 0.0
    return float(stats[1:, cv2.CC_STAT_AREA].max()) / max(int(frame.inside.sum()), 1)


def _strict_bad_cells(frame: StrictFrame) -> tuple[float, bool]:
    """(share of cells that disagree, whether enough of b is covered) in the strict frame.

    Lightness after histogram matching both ways (a flat picture matched onto a glyph would take on the
    glyph's strokes; the glyph matched onto the flat one loses them), colour by hue where both cells are
    coloured and by presence where one is strongly coloured and the other is not."""
    import cv2

    from photodedup.client.verify import cell_sums  # imported here: `verify` imports this module

    warped, target, mask, side = frame.warped, frame.target, frame.inside, frame.side
    h, w = target.shape[:2]
    grid = min(16, max(4, side // 3))
    if mask.mean() < 0.5:
        return 1.0, False
    differs = np.zeros((h, w), np.float32)
    differs[mask] = _lightness_differences(frame, 1.0)
    ca = cv2.GaussianBlur(warped[..., 1:].astype(np.float32) - 128.0, (0, 0), 1.5)
    cb = cv2.GaussianBlur(target[..., 1:].astype(np.float32) - 128.0, (0, 0), 1.5)
    levels = STRICT_GREY_LEVELS[0] if side < STRICT_SIDE else STRICT_GREY_LEVELS[1]
    strong, moderate = (np.cos(np.radians(d)) for d in STRICT_HUE_DEGREES)
    # A grey copy of a colour picture says nothing about colour: then lightness alone decides, except
    # for icon-sized pictures, whose themes ship grey, black and coloured variants of one glyph.
    colourless = side >= STRICT_ALWAYS_COLOUR_BELOW and (
        min(
            np.percentile(np.hypot(ca[..., 0], ca[..., 1])[mask], 99),
            np.percentile(np.hypot(cb[..., 0], cb[..., 1])[mask], 99),
        )
        < 6
    )
    ys, xs = np.linspace(0, h, grid + 1).astype(int), np.linspace(0, w, grid + 1).astype(int)
    # Per-cell means from summed-area tables (`verify.cell_sums`): a Python loop over 256 cells cost more than
    # all the rest of the check.
    inside = mask[..., None]
    counts, sums, sizes = cell_sums(
        mask, np.dstack([differs, np.where(inside, ca, 0.0), np.where(inside, cb, 0.0)]), ys, xs
    )
    counted = (sizes > 0) & ~(counts < 0.5 * sizes)
    n = np.where(counted, counts, 1)[..., None]
    means = sums / n
    light_bad = counted & (means[..., 0] > levels)
    bad_cells = light_bad
    if not colourless:
        va, vb = means[..., 1:3], means[..., 3:5]
        na, nb = np.hypot(va[..., 0], va[..., 1]), np.hypot(vb[..., 0], vb[..., 1])
        both = (na > 10) & (nb > 10)
        with np.errstate(invalid="ignore", divide="ignore"):
            cosine = (va * vb).sum(axis=-1) / (na * nb)
        limit = np.where(np.minimum(na, nb) > 20, strong, moderate)
        hue_bad = np.where(both, cosine < limit, (np.maximum(na, nb) > 20) & (np.minimum(na, nb) < 6))
        bad_cells = light_bad | (counted & hue_bad)
    bad, total = int(np.count_nonzero(bad_cells)), int(np.count_nonzero(counted))
    if total < 0.5 * grid * grid:
        return 1.0, False
    return bad / total, True
