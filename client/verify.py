"""Geometric verification: are two files the same picture, up to crop, scale, small rotation, turn,
borders, overlay and tone? Local features (ORB) matched with Lowe's ratio test, a similarity transform fitted by
RANSAC, then two checks a copy passes and a different shot of the same scene does not:

- coverage: the inliers spread over most of the smaller picture (a crop is all inside its original);
- agreement: warped onto each other, the two pictures agree cell by cell over the overlap after each
  is rank-normalised (so tone, gamma and grey conversion do not count), except a few cells (an
  overlay). Moving people, a shifted viewpoint or a different moment fail it.

Features are recomputed from the files for the candidates only (decoded at `VERIFY_SIDE` px with JPEG
DCT scaling) and cached per run, rather than stored in the index; docs/BENCHMARKS.md has the numbers.

`compare_strict` is the check for weak pictures (tiny, flat or low-contrast: icons, text pages, sky),
where a hash distance says little and features match shared outlines: the same alignment (RANSAC, or
the content boxes laid on each other when features cannot align them), then agreement at the smaller
picture's own resolution with no allowance for overlays, lightness compared after histogram matching
(tone still does not count) and colour compared cell by cell (a recoloured icon is another icon); dark ink on a
light ground (a glyph, a logo) must also agree pixel by pixel, in shape and strength (`_ink_distance`), and
icon-sized pictures must agree in raw colour, tone included, over any large connected region (`_colour_region`:
a theme's grey and black, or green and yellow, variants of one shape are two icons).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from photodedup.client.grouping import FileRecord

log = logging.getLogger(__name__)

VERIFY_SIDE = 512  # long side of the decode features are found on
FEATURES = 600  # ORB keypoints per picture: matching cost grows with the square
MIN_INLIERS = 12
MIN_COVERAGE = 0.45  # share of the smaller picture's keypoint hull inside the inliers' hull
MAX_BAD_CELLS = 0.12  # share of overlap cells allowed to disagree (overlays, logos)
CELL_TOLERANCE = 0.16  # mean rank difference at which a cell disagrees
# The strict check (`compare_strict`): cells compared at most STRICT_SIDE px on the long side, never above
# the smaller picture's own size; a cell disagrees on lightness at this mean difference (0..255 after
# histogram matching) or on colour at these hue angles; at most STRICT_BAD_CELLS of cells may disagree.
STRICT_SIDE = 256
STRICT_GREY_LEVELS = (12.0, 16.0)  # compared at native size / downscaled to STRICT_SIDE (aliasing)
STRICT_HUE_DEGREES = (35.0, 50.0)  # strongly (chroma > 20) / moderately (chroma > 10) coloured cells
STRICT_BAD_CELLS = 0.02
STRICT_MAX_TILT = 10.0  # degrees of rotation the strict check accepts between two pictures
FEATURE_POOR = 4 * MIN_INLIERS  # keypoints below which the strict check may align content boxes instead
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
CANNOT_DECODE = "cannot decode"  # the one verdict reason that says nothing about the pair
# Verdicts are stored in the index under this version (`client.verdicts`): bump it whenever the decision
# rule changes, so verdicts of the old rule are not reused. The tuning constants above are part of it.
VERIFIER_VERSION = (
    f"2:{VERIFY_SIDE}:{FEATURES}:{MIN_INLIERS}:{MIN_COVERAGE}:{MAX_BAD_CELLS}:{CELL_TOLERANCE}"
    f":{STRICT_SIDE}:{STRICT_GREY_LEVELS}:{STRICT_HUE_DEGREES}:{STRICT_BAD_CELLS}:{STRICT_MAX_TILT}"
    f":{STRICT_ALWAYS_COLOUR_BELOW}:{FEATURE_POOR}:{INK_LEVELS}:{INK_BACKGROUND_SHARE}:{INK_MIN_STRENGTH}:{INK_BLUR}:{STRICT_INK_DISTANCE}:{INK_STRENGTH_RATIO}"
    f":{STRICT_COLOUR_DELTA}:{STRICT_COLOUR_REGION}"
)


@dataclass
class Picture:
    """What verification needs of one file: grey pixels, keypoints and their descriptors."""

    gray: np.ndarray
    points: np.ndarray  # (n, 2) float32, pixel coordinates in `gray`
    descriptors: np.ndarray | None  # (n, 32) uint8
    reach: float  # area of the keypoints' convex hull: the most that matches can cover
    # For the strict check: CIELAB (L, a, b as uint8, OpenCV's scaling) at up to STRICT_SIDE px on the
    # long side, and the long side of the content as decoded (a 48 px icon is compared at 48 px).
    lab: np.ndarray | None = None
    native: int = 0
    # `gray` pixel (x, y) lies at (x0 + sx * x, y0 + sy * y) in the file's upright full-size pixels: lets a
    # verdict say where one picture lies in the other in terms a person can check.
    to_upright: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0)


@dataclass
class Verdict:
    """Why a pair was accepted or not (for tuning and for the benchmark)."""

    same: bool
    inliers: int = 0
    coverage: float = 0.0
    bad_cells: float = 1.0
    reason: str = ""
    # Where a lies on b once aligned: a 2x3 affine (row-major) from a's upright full-size pixels to b's;
    # None when nothing aligned them. What is shown to people (crop box, tilt, scale), never decided on.
    transform: tuple[float, ...] | None = None
    strict: bool = False  # decided by `compare_strict` (the check for weak pictures)
    aligned_by: str = ""  # "features" (RANSAC on ORB matches) or "content boxes" (laid on each other)


def load_picture(path: str, content: tuple[int, int, int, int] | None = None, side: int = VERIFY_SIDE) -> Picture:
    """Decode upright grey pixels of the content box at about `side` px on the long side, with features.

    `content` is (left, top, right, bottom) in upright full-size pixels, as hashing stored it.
    """
    import cv2
    from PIL import Image

    from photodedup.imaging import load_rgb, register_heif

    register_heif()
    with Image.open(path) as img:
        full_w, full_h = _upright_size(img)
        rgb = load_rgb(img, min_side=side // 2)
        if content is not None and content != (0, 0, full_w, full_h):
            sx, sy = rgb.width / full_w, rgb.height / full_h
            rgb = rgb.crop(
                (round(content[0] * sx), round(content[1] * sy), round(content[2] * sx), round(content[3] * sy))
            )
        native = max(rgb.size)
        small = rgb
        if native > STRICT_SIDE:
            small = rgb.resize(
                (max(1, round(rgb.width * STRICT_SIDE / native)), max(1, round(rgb.height * STRICT_SIDE / native))),
                Image.Resampling.LANCZOS,
            )
        lab = cv2.cvtColor(np.asarray(small.convert("RGB")), cv2.COLOR_RGB2LAB)
        # Every picture at the same long side: a 160 px copy is enlarged, so its features meet the
        # original's at a similar scale.
        scale = side / max(rgb.size)
        if abs(scale - 1.0) > 0.02:
            rgb = rgb.resize(
                (max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale))),
                Image.Resampling.BILINEAR if scale > 1 else Image.Resampling.BOX,
            )
        gray = np.asarray(rgb.convert("L"))
    box = content or (0, 0, full_w, full_h)
    to_upright = (box[0], box[1], (box[2] - box[0]) / gray.shape[1], (box[3] - box[1]) / gray.shape[0])
    orb = cv2.ORB_create(nfeatures=FEATURES, fastThreshold=10)
    keypoints, descriptors = orb.detectAndCompute(gray, None)
    points = np.array([k.pt for k in keypoints], dtype=np.float32).reshape(-1, 2)
    return Picture(gray, points, descriptors, _hull_area(points), lab, native, to_upright)


def _upright_size(img: object) -> tuple[int, int]:
    """Upright full-size (width, height) of an opened, not yet decoded image."""
    w, h = img.size  # type: ignore[attr-defined]
    try:
        orientation = int(img.getexif().get(0x0112, 1) or 1)  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - broken EXIF: assume upright, as hashing does
        orientation = 1
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


def _matches(a: Picture, b: Picture) -> tuple[np.ndarray, np.ndarray]:
    """Keypoint pairs whose best match from a to b passes Lowe's ratio test (RANSAC removes the rest)."""
    import cv2

    if a.descriptors is None or b.descriptors is None or len(a.points) < 2 or len(b.points) < 2:
        return np.zeros((0, 2), np.float32), np.zeros((0, 2), np.float32)
    ia, ib = [], []
    for pair in cv2.BFMatcher(cv2.NORM_HAMMING).knnMatch(a.descriptors, b.descriptors, k=2):
        if len(pair) == 2 and pair[0].distance < 0.8 * pair[1].distance:
            ia.append(pair[0].queryIdx)
            ib.append(pair[0].trainIdx)
    return a.points[ia], b.points[ib]


def _hull_area(points: np.ndarray) -> float:
    import cv2

    if len(points) < 3:
        return 0.0
    return float(cv2.contourArea(cv2.convexHull(points.astype(np.float32))))


def _ranks(values: np.ndarray) -> np.ndarray:
    """Each value's rank among `values`, scaled to 0..1: invariant to any monotonic tone change.

    Pass the uint8 pixels themselves: numpy's stable sort of 8-bit integers is a radix sort, seven times
    faster here than sorting them as floats, with the same order (ties by position either way)."""
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values), dtype=np.float32)
    ranks[order] = np.linspace(0.0, 1.0, len(values), dtype=np.float32)
    return ranks


def _bad_cells(a: Picture, b: Picture, transform: np.ndarray, grid: int = 12) -> float:
    """Share of overlap cells where a warped onto b disagrees with b (rank-normalised grey)."""
    import cv2

    h, w = b.gray.shape
    warped = cv2.warpAffine(a.gray, transform, (w, h), flags=cv2.INTER_AREA)
    mask = cv2.warpAffine(np.full(a.gray.shape, 255, np.uint8), transform, (w, h), flags=cv2.INTER_NEAREST) > 0
    mask = cv2.erode(mask.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    if mask.sum() < 0.1 * h * w:
        return 1.0
    blur_a = cv2.GaussianBlur(warped, (0, 0), 2.0)[mask]
    blur_b = cv2.GaussianBlur(b.gray, (0, 0), 2.0)[mask]
    diff = np.zeros((h, w), np.float32)
    diff[mask] = np.abs(_ranks(blur_a) - _ranks(blur_b))
    ys, xs = np.linspace(0, h, grid + 1).astype(int), np.linspace(0, w, grid + 1).astype(int)
    bad = total = 0
    for r in range(grid):
        for c in range(grid):
            cell = mask[ys[r] : ys[r + 1], xs[c] : xs[c + 1]]
            if cell.mean() < 0.5:  # mostly outside the overlap
                continue
            total += 1
            bad += float(diff[ys[r] : ys[r + 1], xs[c] : xs[c + 1]][cell].mean()) > CELL_TOLERANCE
    return bad / total if total else 1.0


@dataclass
class Alignment:
    """Where a lies on b: `transform` maps a's `gray` pixels onto b's; None with `verdict` when it fails."""

    transform: np.ndarray | None
    a_inside: bool  # a is the smaller picture (it lies inside b)
    verdict: Verdict


def _align(a: Picture, b: Picture) -> Alignment:
    """A similarity transform from ORB matches and RANSAC whose inliers cover most of the smaller picture."""
    import cv2

    pa, pb = _matches(a, b)
    if len(pa) < MIN_INLIERS:
        return Alignment(None, True, Verdict(False, len(pa), reason="too few matches"))
    transform, inliers = cv2.estimateAffinePartial2D(
        pa, pb, method=cv2.RANSAC, ransacReprojThreshold=4.0, maxIters=4000, confidence=0.995
    )
    if transform is None:
        return Alignment(None, True, Verdict(False, reason="no transform"))
    keep = inliers.ravel().astype(bool)
    count = int(keep.sum())
    scale = float(np.hypot(transform[0, 0], transform[1, 0]))
    if count < MIN_INLIERS or not 0.1 < scale < 10:
        return Alignment(None, True, Verdict(False, count, reason="too few inliers"))
    # Coverage is measured in the smaller picture: all of a crop lies inside its original.
    area_a, area_b = a.gray.size, b.gray.size / (scale * scale)  # both in a's pixels
    small, points = (a, pa) if area_a <= area_b else (b, pb)
    coverage = _hull_area(points[keep]) / max(small.reach, 1.0)
    if coverage < MIN_COVERAGE:
        return Alignment(None, area_a <= area_b, Verdict(False, count, coverage, reason="inliers cover too little"))
    return Alignment(transform, area_a <= area_b, Verdict(True, count, coverage))


def _upright(a: Picture, b: Picture, transform: np.ndarray) -> tuple[float, ...]:
    """`transform` (a's gray pixels to b's) as a map from a's upright full-size pixels to b's."""
    ax, ay, asx, asy = a.to_upright
    bx, by, bsx, bsy = b.to_upright
    from_a = np.array([[1 / asx, 0.0, -ax / asx], [0.0, 1 / asy, -ay / asy], [0.0, 0.0, 1.0]])
    to_b = np.array([[bsx, 0.0, bx], [0.0, bsy, by], [0.0, 0.0, 1.0]])
    m = to_b @ np.vstack([np.asarray(transform, np.float64), [0.0, 0.0, 1.0]]) @ from_a
    return tuple(float(v) for v in m[:2].ravel())


def compare(a: Picture, b: Picture) -> Verdict:
    """Same picture up to a similarity transform, tone and small local edits (see module docstring)."""
    return _agreement(a, b, _align(a, b))


def _agreement(a: Picture, b: Picture, found: Alignment) -> Verdict:
    """`compare`'s verdict for an alignment: aligned cells agree, a few (an overlay) excepted."""
    import cv2

    if found.transform is None:
        return found.verdict
    v = found.verdict
    if found.a_inside:
        bad = _bad_cells(a, b, found.transform)
    else:
        bad = _bad_cells(b, a, cv2.invertAffineTransform(found.transform))
    return Verdict(
        bad <= MAX_BAD_CELLS,
        v.inliers,
        v.coverage,
        bad,
        "" if bad <= MAX_BAD_CELLS else "content differs",
        _upright(a, b, found.transform),
        aligned_by="features",
    )


def compare_strict(a: Picture, b: Picture) -> Verdict:
    """The check for weak pictures (module docstring): aligned by features where they align the two,
    else content box on content box, then every cell must agree in lightness and colour, and ink on a light
    ground pixel by pixel."""
    import cv2

    found = _align(a, b)
    transform, a_inside = found.transform, found.a_inside
    aligned_by = "features"
    if transform is not None:
        # A weak picture and its turn are two pictures (an arrow up and an arrow right): only small tilts.
        if abs(np.degrees(np.arctan2(transform[1, 0], transform[0, 0]))) > STRICT_MAX_TILT:
            v = found.verdict
            return Verdict(False, v.inliers, v.coverage, reason="turned (no evidence for a weak picture)", strict=True)
        # Features aligned the two: what a copy must pass anyway (overlays aside, `compare`) comes first.
        loose = _agreement(a, b, found)
        if not loose.same:
            return dataclasses.replace(loose, strict=True)
    elif min(len(a.points), len(b.points)) >= FEATURE_POOR and max(a.native, b.native) > STRICT_SIDE:
        # Both are large with features that do not align (two text pages of one site): two pictures.
        return dataclasses.replace(found.verdict, strict=True)
    else:
        # Too few features to align (a flat sky), or both small (an icon, whose enlarged features
        # repeat): content boxes laid on each other, since copies of such pictures are resized, not cropped.
        (ha, wa), (hb, wb) = a.gray.shape, b.gray.shape
        transform = np.array([[wb / wa, 0.0, 0.0], [0.0, hb / ha, 0.0]])
        a_inside = a.gray.size <= b.gray.size
        aligned_by = "content boxes"
    ink_a, ink_b = ink_of(a), ink_of(b)
    inked = ink_a is not None and ink_b is not None
    upright = _upright(a, b, transform)
    v = found.verdict
    if inked and max(ink_a.strength, ink_b.strength) > INK_STRENGTH_RATIO * min(ink_a.strength, ink_b.strength):  # type: ignore[union-attr]
        return Verdict(False, v.inliers, v.coverage, 1.0, "ink of another strength", upright, True, aligned_by)
    if not a_inside:
        a, b, transform = b, a, cv2.invertAffineTransform(transform)
    frame = _strict_frame(a, b, transform)
    # Ink on a light ground is also compared pixel by pixel (`_ink_distance`), on top of the cells.
    bad, counted = _strict_bad_cells(frame)
    ink = _ink_distance(frame) if counted and inked else 0.0
    region = _colour_region(frame) if counted and frame.side < STRICT_ALWAYS_COLOUR_BELOW else 0.0
    same = counted and bad <= STRICT_BAD_CELLS and ink <= STRICT_INK_DISTANCE and region <= STRICT_COLOUR_REGION
    if same or not counted:
        reason = "" if same else "too little overlap"
    elif bad > STRICT_BAD_CELLS:
        reason = "content differs"
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

    warped, target, mask, side = frame.warped, frame.target, frame.inside, frame.side
    h, w = target.shape[:2]
    grid = min(16, max(4, side // 3))
    if mask.mean() < 0.5:
        return 1.0, False
    la = cv2.GaussianBlur(warped[..., 0].astype(np.float32), (0, 0), 1.0)
    lb = cv2.GaussianBlur(target[..., 0].astype(np.float32), (0, 0), 1.0)
    differs = np.zeros((h, w), np.float32)
    differs[mask] = np.maximum(
        np.abs(_match_histogram(la[mask], lb[mask]) - lb[mask]),
        np.abs(_match_histogram(lb[mask], la[mask]) - la[mask]),
    )
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
    bad = total = 0
    for r in range(grid):
        for c in range(grid):
            cell = mask[ys[r] : ys[r + 1], xs[c] : xs[c + 1]]
            if not cell.size or cell.mean() < 0.5:
                continue
            total += 1
            if float(differs[ys[r] : ys[r + 1], xs[c] : xs[c + 1]][cell].mean()) > levels:
                bad += 1
                continue
            if colourless:
                continue
            va = ca[ys[r] : ys[r + 1], xs[c] : xs[c + 1]][cell].mean(axis=0)
            vb = cb[ys[r] : ys[r + 1], xs[c] : xs[c + 1]][cell].mean(axis=0)
            na, nb = float(np.hypot(*va)), float(np.hypot(*vb))
            if na > 10 and nb > 10:
                bad += float(va @ vb) / (na * nb) < (strong if min(na, nb) > 20 else moderate)
            elif max(na, nb) > 20 and min(na, nb) < 6:
                bad += 1
    if total < 0.5 * grid * grid:
        return 1.0, False
    return bad / total, True


class GeometricVerifier:
    """Verifies pairs of files, decoding each at most once per run (bounded cache, thread-safe).

    A cached picture holds ~360 KB (the 512 px grey decode, the Lab strict frame, 600 descriptors): the
    cache keeps the last 256 (~90 MB); 2,048 held ~740 MB, most of a 12,000-file scan's 970 MB peak.
    Candidates are verified centre by centre, so the centre being verified stays cached."""

    def __init__(self, cache_size: int = 256) -> None:
        self._cache: OrderedDict[str, Picture | None] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()
        self.pairs = 0
        self.decodes = 0

    def picture(self, path: str, content: tuple[int, int, int, int] | None) -> Picture | None:
        with self._lock:
            if path in self._cache:
                self._cache.move_to_end(path)
                return self._cache[path]
        try:
            pic: Picture | None = load_picture(path, content)
        except Exception as exc:  # noqa: BLE001 - a file gone or broken since the scan is just not verified
            log.debug("cannot verify %s: %s", path, exc)
            pic = None
        with self._lock:
            self.decodes += 1
            self._cache[path] = pic
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return pic

    def __call__(self, a: FileRecord, b: FileRecord, strict: bool = False) -> Verdict:
        """The grouping verifier: are these two indexed files the same picture (`.same`), and what was
        found? `strict` for weak ones."""
        return self.verdict(a.path, a.content, b.path, b.content, strict)

    def verdict(
        self,
        path_a: str,
        content_a: tuple[int, int, int, int] | None,
        path_b: str,
        content_b: tuple[int, int, int, int] | None,
        strict: bool = False,
    ) -> Verdict:
        self.pairs += 1
        a, b = self.picture(path_a, content_a), self.picture(path_b, content_b)
        if a is None or b is None:
            return Verdict(False, reason=CANNOT_DECODE)
        return compare_strict(a, b) if strict else compare(a, b)
