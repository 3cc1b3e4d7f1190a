"""Geometric verification: are two files the same picture, up to crop, scale, small rotation, turn,
borders, overlay and tone? Local features (ORB) matched with Lowe's ratio test, a similarity transform fitted by
RANSAC, then two checks a copy passes and a different shot of the same scene does not:

- coverage: the inliers spread over most of the smaller picture (a crop is all inside its original);
- agreement: warped onto each other, the two pictures agree cell by cell over the overlap after each
  is rank-normalised (so tone, gamma and grey conversion do not count), except a few cells (an
  overlay). Moving people, a shifted viewpoint or a different moment fail it.

Features are computed from the files for the candidates only (decoded at `VERIFY_SIDE` px with JPEG DCT
scaling), once a run: kept on disk until the run ends (`featurestore`), so a picture met by many candidates
is decoded once. Not stored in the index: up to 24 KB a candidate picture (17.4 KB measured on generated
photos: ~3.2 GB for the 182,559 candidates among 204,000 of them, whose index is 665 MB), needed again only
for pairs not verified yet, since verdicts are stored (`verdicts`); docs/BENCHMARKS.md has the numbers.

Where the CPU goes (the dev set's 248 verified pairs of 298 pictures, one thread; on the first machine, 2026-11-30
morning): loading a picture about 15 ms, of which ORB 9 ms and a JPEG's reduced decode 2 ms (a 6 MP PNG has no
reduced decode: 110-190 ms); a pair about 9 ms, of which the Hamming search for each descriptor's two nearest among
600 about 4-5 ms (this OpenCV build counts bits byte by byte) and the agreement check 3 ms. On the faster machine
of the evening: a picture 6.5 ms (ORB 3.6, decode 1.75), a pair about 2 ms (the search 0.8 ms of wall time, 1.8 ms
of CPU over both cores; with faiss, `two_nearest`, 0.35 ms of CPU). The agreement's cells
are summed from summed-area tables (`cell_sums`) and its ranks read from a 256-level table (`_ranks`); a Python
loop over the cells and a stable argsort cost more than twice as much (the pairs: 3.3 s -> 2.3 s, all 248 verdicts
kept). Loading is two thirds of the cost or more. Cheaper loading changed verdicts or margins on the dev set: 400
features or a FAST threshold of 15 each lost a true pair, four pyramid levels brought an unrelated pair to 19
inliers, decoding at 256-384 px lost tiny copies; six levels kept every verdict but saved only 8 % of ORB.

Weak pictures (tiny, flat, low-contrast or drawn: icons, text pages, sky, cut-out graphics) are compared by the
strict check (`client.strict.compare_strict`), which builds on this module's alignment; `GeometricVerifier` runs
either.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from photodedup.client.featurestore import Features, FeatureStore
from photodedup.client.strict import (
    INK_BACKGROUND_SHARE,
    INK_BLUR,
    INK_LEVELS,
    INK_MIN_STRENGTH,
    INK_STRENGTH_RATIO,
    STRICT_ALWAYS_COLOUR_BELOW,
    STRICT_BAD_CELLS,
    STRICT_COLOUR_DELTA,
    STRICT_COLOUR_REGION,
    STRICT_DRAWN_COVER,
    STRICT_DRAWN_SHARE,
    STRICT_GREY_LEVELS,
    STRICT_HUE_DEGREES,
    STRICT_INK_DISTANCE,
    STRICT_MAX_TILT,
    STRICT_PIXEL_LEVELS,
    STRICT_PIXEL_SHARE,
    STRICT_SHAPE_SHARE,
    STRICT_SIDE,
    compare_strict,
)

if TYPE_CHECKING:
    from PIL import Image

    from photodedup.client.grouping import FileRecord

log = logging.getLogger(__name__)

VERIFY_SIDE = 512  # long side of the decode features are found on
FEATURES = 600  # ORB keypoints per picture: matching cost grows with the square
# Pictures enlarged at most this much to VERIFY_SIDE are converted to grey before resampling. Icons, enlarged
# more, keep colour resampling: their features come from interpolated edges, and on the system folder's icons
# grey-first moved 165 of 10,878 strict verdicts both ways (photos: none of 7,165 candidate pairs).
GREY_FIRST_MAX_SCALE = 2.0
MIN_INLIERS = 12
MIN_COVERAGE = 0.45  # share of the smaller picture's keypoint hull inside the inliers' hull
MAX_BAD_CELLS = 0.12  # share of overlap cells allowed to disagree (overlays, logos)
CELL_TOLERANCE = 0.16  # mean rank difference at which a cell disagrees
FEATURE_POOR = 4 * MIN_INLIERS  # keypoints below which the strict check may align content boxes instead
CANNOT_DECODE = "cannot decode"  # the one verdict reason that says nothing about the pair
# Verdicts are stored in the index under this version (`client.verdicts`): bump it whenever the decision
# rule changes, so verdicts of the old rule are not reused. The tuning constants (here and the strict
# check's) are part of it.
VERIFIER_VERSION = (
    f"3:{VERIFY_SIDE}:{FEATURES}:{MIN_INLIERS}:{MIN_COVERAGE}:{MAX_BAD_CELLS}:{CELL_TOLERANCE}"
    f":{STRICT_SIDE}:{STRICT_GREY_LEVELS}:{STRICT_HUE_DEGREES}:{STRICT_BAD_CELLS}:{STRICT_MAX_TILT}"
    f":{STRICT_ALWAYS_COLOUR_BELOW}:{FEATURE_POOR}:{INK_LEVELS}:{INK_BACKGROUND_SHARE}:{INK_MIN_STRENGTH}:{INK_BLUR}:{STRICT_INK_DISTANCE}:{INK_STRENGTH_RATIO}"
    f":{STRICT_COLOUR_DELTA}:{STRICT_COLOUR_REGION}:{STRICT_PIXEL_LEVELS}:{STRICT_PIXEL_SHARE}:{GREY_FIRST_MAX_SCALE}"
    f":{STRICT_DRAWN_SHARE}:{STRICT_SHAPE_SHARE}:{STRICT_DRAWN_COVER}"
)


@dataclass
class Picture:
    """What verification needs of one file: grey pixels, keypoints and their descriptors."""

    gray: np.ndarray
    points: np.ndarray  # (n, 2) float32, pixel coordinates in `gray`
    descriptors: np.ndarray | None  # (n, 32) uint8
    reach: float  # area of the keypoints' convex hull: the most that matches can cover
    # The long side of the content as decoded (the strict check compares a 48 px icon at 48 px).
    native: int = 0
    # `gray` pixel (x, y) lies at (x0 + sx * x, y0 + sy * y) in the file's upright full-size pixels: lets a
    # verdict say where one picture lies in the other in terms a person can check.
    to_upright: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0)
    # Where the strict frame (`lab`) is decoded from when first asked for: `load_lab`'s arguments.
    source: tuple[str, tuple[int, int, int, int] | None, int] | None = None
    # Share of the file's frame that is see-through (`content.transparent_share`): a cut-out is drawn.
    transparent: float = 0.0
    _lab: np.ndarray | None = field(default=None, repr=False)

    @property
    def area(self) -> int:
        """Pixels of the grey frame the points lie in (`align` asks this of a picture or its `Features`)."""
        return int(self.gray.size)

    def features(self) -> Features:
        """What alignment needs of this picture, to keep for the run (`featurestore`)."""
        return Features(self.points, self.descriptors, self.reach, (self.gray.shape[0], self.gray.shape[1]))

    @property
    def lab(self) -> np.ndarray | None:
        """For the strict check: CIELAB (L, a, b as uint8, OpenCV's scaling) at up to STRICT_SIDE px on the
        long side. Built on first use from a second decode: only pairs of weak pictures need it, and building
        it for every picture was a third of what a picture cost to load. Raises FrameUnavailableError when
        the file can no longer be decoded."""
        if self._lab is None and self.source is not None:
            try:
                self._lab = load_lab(*self.source)
            except Exception as exc:  # noqa: BLE001 - decoded once already: the file changed or went since
                raise FrameUnavailableError(f"cannot decode {self.source[0]} again: {exc}") from exc
        return self._lab


class FrameUnavailableError(RuntimeError):
    """The strict frame of a picture could not be decoded (the file went or changed since its first decode)."""


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


def _decode(path: str, content: tuple[int, int, int, int] | None, side: int) -> tuple[Image.Image, int, int, float]:
    """Upright RGB of the content box, decoded at about `side` px on the long side or more, the file's
    upright full-size (width, height) and the see-through share of its frame. `content` is (left, top,
    right, bottom) in upright full-size pixels, as hashing stored it."""
    from PIL import Image

    from photodedup.client.content import transparent_share
    from photodedup.imaging import ALLOWED_FORMATS, load_rgb, register_heif

    register_heif()
    with Image.open(path, formats=ALLOWED_FORMATS) as img:  # the scanner's decoders, nothing else
        full_w, full_h = _upright_size(img)
        rgb = load_rgb(img, min_side=side // 2)
        transparent = transparent_share(img)
        if content is not None and content != (0, 0, full_w, full_h):
            sx, sy = rgb.width / full_w, rgb.height / full_h
            rgb = rgb.crop(
                (round(content[0] * sx), round(content[1] * sy), round(content[2] * sx), round(content[3] * sy))
            )
    return rgb, full_w, full_h, transparent


def load_lab(path: str, content: tuple[int, int, int, int] | None = None, side: int = VERIFY_SIDE) -> np.ndarray:
    """The strict check's frame of a file (`Picture.lab`): its content box in CIELAB at up to STRICT_SIDE px
    on the long side, from the same decode `load_picture` makes."""
    rgb, _, _, _ = _decode(path, content, side)
    return _lab(rgb)


def _lab(rgb: Image.Image) -> np.ndarray:
    """`load_lab` of a decoded content box."""
    import cv2
    from PIL import Image

    native = max(rgb.size)
    if native > STRICT_SIDE:
        rgb = rgb.resize(
            (max(1, round(rgb.width * STRICT_SIDE / native)), max(1, round(rgb.height * STRICT_SIDE / native))),
            Image.Resampling.LANCZOS,
        )
    return cv2.cvtColor(np.asarray(rgb.convert("RGB")), cv2.COLOR_RGB2LAB)


def load_picture(
    path: str, content: tuple[int, int, int, int] | None = None, side: int = VERIFY_SIDE, lab: bool = False
) -> Picture:
    """Decode upright grey pixels of the content box at about `side` px on the long side, with features.

    `content` is (left, top, right, bottom) in upright full-size pixels, as hashing stored it. The strict
    check's colour frame is made from the same decode with `lab` (a picture loaded for the strict check),
    else decoded again when first asked for (`Picture.lab`).
    """
    import cv2
    from PIL import Image

    rgb, full_w, full_h, transparent = _decode(path, content, side)
    native = max(rgb.size)
    # Every picture at the same long side: a 160 px copy is enlarged, so its features meet the
    # original's at a similar scale.
    scale = side / native
    size = (max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale)))
    if abs(scale - 1.0) <= 0.02:
        gray = np.asarray(rgb.convert("L"))
    elif scale <= GREY_FIRST_MAX_SCALE:
        # Grey first, then OpenCV's resampling: a third of the cost of resampling three channels in Pillow.
        interpolation = cv2.INTER_LINEAR if scale > 1 else cv2.INTER_AREA
        gray = cv2.resize(np.asarray(rgb.convert("L")), size, interpolation=interpolation)
    else:
        gray = np.asarray(rgb.resize(size, Image.Resampling.BILINEAR).convert("L"))
    box = content or (0, 0, full_w, full_h)
    to_upright = (box[0], box[1], (box[2] - box[0]) / gray.shape[1], (box[3] - box[1]) / gray.shape[0])
    orb = cv2.ORB_create(nfeatures=FEATURES, fastThreshold=10)
    keypoints, descriptors = orb.detectAndCompute(gray, None)
    points = np.asarray(cv2.KeyPoint_convert(keypoints), dtype=np.float32).reshape(-1, 2)  # each one's (x, y)
    source = (path, content, side)
    frame = _lab(rgb) if lab else None
    return Picture(gray, points, descriptors, _hull_area(points), native, to_upright, source, transparent, frame)


def _upright_size(img: object) -> tuple[int, int]:
    """Upright full-size (width, height) of an opened, not yet decoded image."""
    w, h = img.size  # type: ignore[attr-defined]
    try:
        orientation = int(img.getexif().get(0x0112, 1) or 1)  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - broken EXIF: assume upright, as hashing does
        orientation = 1
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


def _matches(a: Picture | Features, b: Picture | Features) -> tuple[np.ndarray, np.ndarray]:
    """Keypoint pairs whose best match from a to b passes Lowe's ratio test (RANSAC removes the rest)."""
    if a.descriptors is None or b.descriptors is None or len(a.points) < 2 or len(b.points) < 2:
        return np.zeros((0, 2), np.float32), np.zeros((0, 2), np.float32)
    dist, nearest = two_nearest(a.descriptors, b.descriptors)
    keep = dist[:, 0] < 0.8 * dist[:, 1]
    return a.points[keep], b.points[nearest[keep, 0]]


_threads = threading.local()


@functools.cache
def _faiss() -> Any:
    """faiss when installed, else None (asked once: a failed import searches the whole path each time)."""
    try:
        import faiss
    except ImportError:
        return None
    return faiss


def two_nearest(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each descriptor (row) of `a`, the Hamming distances to its two nearest rows of `b` and their indices.

    With faiss installed (the `local` and `ann` extras), its binary flat index, which counts bits a 64-bit word
    at a time: 0.35 ms of CPU for 600 x 600 descriptors here, against 1.77 ms for OpenCV's `batchDistance`
    (what BFMatcher.knnMatch calls; this wheel's baseline is SSE3, and it spreads one search over every core).
    Without faiss, `batchDistance`. The distances are
    the same whole numbers either way; of two equally near rows either may come first, which the ratio test
    (`_matches`) rejects anyway, so verdicts do not depend on which one runs. Each verifying thread asks
    faiss for one thread of its own: the verifiers already run one per core."""
    faiss = _faiss()
    if faiss is None or not b.flags.c_contiguous or not a.flags.c_contiguous:
        import cv2

        return cv2.batchDistance(a, b, cv2.CV_32S, normType=cv2.NORM_HAMMING, K=2)
    if not getattr(_threads, "one", False):
        faiss.omp_set_num_threads(1)  # this thread's OpenMP setting only
        _threads.one = True
    index = faiss.IndexBinaryFlat(b.shape[1] * 8)
    index.add(b)
    return index.search(a, 2)


def _hull_area(points: np.ndarray) -> float:
    import cv2

    if len(points) < 3:
        return 0.0
    return float(cv2.contourArea(cv2.convexHull(points.astype(np.float32))))


def _ranks(values: np.ndarray) -> np.ndarray:
    """Each uint8 value's rank among `values`, scaled to 0..1, ties at their average rank (as the strict check's
    histogram matching ranks them): invariant to any monotonic tone change.

    From the 256 levels' counts, a lookup table instead of a sort: ties were once ranked by position (a stable
    argsort, most of the agreement check's cost), which spread a flat area's pixels over a range of ranks by
    where they lie; on the dev set's 132 aligned pairs one cell of one pair moved (version 3)."""
    counts = np.bincount(values, minlength=256)
    middle = np.cumsum(counts) - (counts + 1) / 2.0  # average 0-based position of each level's values
    return (middle / max(len(values) - 1, 1)).astype(np.float32)[values]


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
    counts, sums, sizes = cell_sums(mask, diff, ys, xs)
    counted = ~(counts < 0.5 * sizes)  # cells mostly outside the overlap are left out
    with np.errstate(invalid="ignore", divide="ignore"):  # an empty cell (a strip): counted, never bad
        bad = int(np.count_nonzero(sums[counted] / counts[counted] > CELL_TOLERANCE))
    total = int(np.count_nonzero(counted))
    return bad / total if total else 1.0


def cell_sums(
    mask: np.ndarray, values: np.ndarray, ys: np.ndarray, xs: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per cell of the grid with row edges `ys` and column edges `xs`: how many pixels `mask` holds, the sum of
    `values` (zero outside `mask`; (h, w) or (h, w, channels)) over the cell, and the cell's size in pixels. From
    summed-area tables (float64 sums), instead of a Python loop over the cells: a tenth of the cost."""
    import cv2

    count_table = cv2.integral(mask.view(np.uint8) if mask.dtype == bool else mask.astype(np.uint8))
    if values.ndim == 2:
        sum_table = cv2.integral(values, sdepth=cv2.CV_64F)
    else:
        planes = [cv2.integral(np.ascontiguousarray(values[..., i]), sdepth=cv2.CV_64F) for i in range(values.shape[2])]
        sum_table = np.dstack(planes)

    def per_cell(table: np.ndarray) -> np.ndarray:
        t = table[ys][:, xs]
        return t[1:, 1:] - t[:-1, 1:] - t[1:, :-1] + t[:-1, :-1]

    sizes = np.outer(np.diff(ys), np.diff(xs))
    return per_cell(count_table), per_cell(sum_table), sizes


@dataclass
class Alignment:
    """Where a lies on b: `transform` maps a's `gray` pixels onto b's; None with `verdict` when it fails."""

    transform: np.ndarray | None
    a_inside: bool  # a is the smaller picture (it lies inside b)
    verdict: Verdict


def align(a: Picture | Features, b: Picture | Features) -> Alignment:
    """A similarity transform from ORB matches and RANSAC whose inliers cover most of the smaller picture.
    Reads only points, descriptors, hull and frame size: a picture's kept `Features` do."""
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
    area_a, area_b = a.area, b.area / (scale * scale)  # both in a's pixels
    small, points = (a, pa) if area_a <= area_b else (b, pb)
    coverage = _hull_area(points[keep]) / max(small.reach, 1.0)
    if coverage < MIN_COVERAGE:
        return Alignment(None, area_a <= area_b, Verdict(False, count, coverage, reason="inliers cover too little"))
    return Alignment(transform, area_a <= area_b, Verdict(True, count, coverage))


def upright_affine(a: Picture, b: Picture, transform: np.ndarray) -> tuple[float, ...]:
    """`transform` (a's gray pixels to b's) as a map from a's upright full-size pixels to b's."""
    ax, ay, asx, asy = a.to_upright
    bx, by, bsx, bsy = b.to_upright
    from_a = np.array([[1 / asx, 0.0, -ax / asx], [0.0, 1 / asy, -ay / asy], [0.0, 0.0, 1.0]])
    to_b = np.array([[bsx, 0.0, bx], [0.0, bsy, by], [0.0, 0.0, 1.0]])
    m = to_b @ np.vstack([np.asarray(transform, np.float64), [0.0, 0.0, 1.0]]) @ from_a
    return tuple(float(v) for v in m[:2].ravel())


def agreement(a: Picture, b: Picture, found: Alignment) -> Verdict:
    """Same picture up to a similarity transform, tone and small local edits (see module docstring), given the
    pictures' alignment (`align`): aligned cells agree, a few (an overlay) excepted."""
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
        upright_affine(a, b, found.transform),
        aligned_by="features",
    )


class GeometricVerifier:
    """Verifies pairs of files, decoding each at most once per run (thread-safe).

    Two levels: every picture's features (what alignment reads, at most 24 KB) are kept for the whole run in a
    `FeatureStore` on disk, so a picture in many pairs is decoded once; the decoded pictures themselves
    (~220 KB: the 512 px grey frame, 600 descriptors; ~150 KB more once the strict check has built its Lab
    frame) in a cache of the last 256 (at most ~90 MB; 2,048 held ~740 MB, most of a 12,000-file scan's
    970 MB peak). A pair whose features do not align is decided from the features alone: among a large
    library's chance candidates nearly every pair. One that aligns needs both pictures' pixels for the
    agreement check: from the cache, else decoded again. Candidates are verified centre by centre, so the
    centre being verified stays cached.

    `spill_dir` is where the features' temporary file goes (the index's folder; None: the system's)."""

    def __init__(self, cache_size: int = 256, spill_dir: str | Path | None = None) -> None:
        self._cache: OrderedDict[str, Picture | None] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Event] = {}  # pictures being decoded, set when cached
        self.store = FeatureStore(spill_dir)
        self._failed: set[str] = set()  # paths that could not be decoded this run
        self.pairs = 0
        self.decodes = 0

    def picture(self, path: str, content: tuple[int, int, int, int] | None, lab: bool = False) -> Picture | None:
        """The file's picture, decoded once: a thread asking for one another thread is decoding waits for it
        (threads verifying different centres can need the same candidate). With `lab` (for the strict
        check) a picture decoded now gets its strict frame from the same decode; a second decode cost the dev
        set's 8 strict pairs 0.4 s of CPU, as much as 60 pictures' features."""
        while True:
            with self._lock:
                if path in self._cache:
                    self._cache.move_to_end(path)
                    return self._cache[path]
                loading = self._loading.get(path)
                if loading is None:
                    self._loading[path] = threading.Event()
                    break
            loading.wait()  # then read it from the cache (or decode it, if it has been evicted since)
        pic: Picture | None = None
        try:
            pic = load_picture(path, content, lab=lab)
            self.store.put(path, pic.features())
        except Exception as exc:  # noqa: BLE001 - a file gone or broken since the scan is just not verified
            log.debug("cannot verify %s: %s", path, exc)
        finally:
            with self._lock:
                self.decodes += 1
                if pic is None:
                    self._failed.add(path)
                self._cache[path] = pic
                if len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
                self._loading.pop(path).set()
        return pic

    def features(self, path: str, content: tuple[int, int, int, int] | None) -> Picture | Features | None:
        """What alignment needs of the file: its cached picture, else its features kept on disk, else a
        decode (which keeps both). None when it cannot be decoded."""
        with self._lock:
            if path in self._cache:
                self._cache.move_to_end(path)
                return self._cache[path]
            if path in self._failed:
                return None
            kept = path in self.store
        if kept:
            found = self.store.get(path)
            if found is not None:
                return found
        return self.picture(path, content)

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
        with self._lock:
            self.pairs += 1
        if not strict:
            fa, fb = self.features(path_a, content_a), self.features(path_b, content_b)
            if fa is None or fb is None:
                return Verdict(False, reason=CANNOT_DECODE)
            found = align(fa, fb)
            if found.transform is None:
                return found.verdict
        a, b = self.picture(path_a, content_a, strict), self.picture(path_b, content_b, strict)
        if a is None or b is None:
            return Verdict(False, reason=CANNOT_DECODE)
        if not strict:
            return agreement(a, b, found)
        try:
            return compare_strict(a, b)
        except FrameUnavailableError as exc:
            log.debug("cannot verify strictly: %s", exc)
            return Verdict(False, reason=CANNOT_DECODE)

    def close(self) -> None:
        """Drop the cached pictures and the features kept on disk."""
        with self._lock:
            self._cache.clear()
        self.store.close()
