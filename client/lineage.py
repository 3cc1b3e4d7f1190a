"""Which of two JPEG copies of one picture was made from the other: the re-compression test.

A copy made from a JPEG (re-saved, brightened, recoloured, turned by 90 degrees, EXIF-turned, stamped) is
the decoded original, edited pixel by pixel, encoded again with the copy's own quantisation tables. Doing
that again from the original (its pixels as they are, or mapped onto the copy's with per-channel tone
curves and a saturation change; turned the same way; encoded with the copy's tables) gives back the copy
almost exactly, block for block. The other way round it cannot: the copy's second round of quantisation
noise is not in the original and no encoding removes it. So the error of re-making B from A, against that
of re-making A from B, says which came first; when the two are close (edits that curves and a saturation
change do not describe) the test says nothing and the keeper policy's later rules decide. A HEIC converted from
a JPEG keeps that JPEG's quantisation lattice in its 8 x 8 DCT coefficients, which a picture first saved as
HEIC never had: a HEIC on a tied JPEG's lattice was made from a JPEG (`_converted`).

Measured on the dev set (originals against their bright, tone, turn, exif_turn, jpeg_q60, jpeg_low and
overlay copies; see docs/BENCHMARKS.md): the rule below names the original in most groups and the copy in
none where it decides.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger(__name__)

LINEAGE_VERSION = "6"
# Re-making the derived copy must be this much more exact than the other way, by both measures below.
RATIO = 0.6
MARGIN = 0.3  # grey levels of median block error
# Rounds of refining the fitted curves on the re-made copy (see `_remake_error`).
REFINE_ROUNDS = 2
# Saturation changes (luma kept) tried before or after the curves: 0.4x to 2.5x in 15 geometric steps,
# 1x among them, chosen once for each way on this many pixels spread over the picture.
SATURATIONS = tuple(float(v) for v in np.exp(np.linspace(np.log(0.4), np.log(2.5), 15)))
SATURATION_PIXELS = 16_384
_ONE = SATURATIONS.index(1.0)  # 1x: no saturation change
_LUMA = np.array([0.299, 0.587, 0.114])
# When both ways re-make most blocks exactly (median error 0), the shares of blocks not re-made exactly
# (mean error over EXACT_BLOCK grey levels) decide, by ratio and margin as above.
EXACT_BLOCK = 0.05
RATIO_EXACT = 0.25
MARGIN_EXACT = 0.1
WINDOW = 256  # pixels per side of the sampled windows (a multiple of the 16 px MCU)
WINDOWS_PER_SIDE = 3
MAX_PIXELS = 40_000_000  # larger pictures are not tested (two full decodes)
# The two must be copies: their 32 x 32 grey reductions, after the dihedral turn, correlate this well
# (correlation, so brightened and toned copies count).
MIN_CORRELATION = 0.9
# `_small` box-reduces a picture to about this many pixels on its short side before resampling it to 32 x 32.
SMALL_REDUCE_TO = 128
# Share of the 32 x 32 cells a stamp may cover: left out when the whole correlates less (`_correlation`).
STAMP_SHARE = 0.1
# A JPEG and a HEIC: the HEIC was converted from a JPEG when its luma 8 x 8 DCT coefficients sit within
# LATTICE_DISTANCE steps (mean) of the JPEG table's lattice, measured on steps of at least LATTICE_STEP over at
# least LATTICE_COEFFICIENTS coefficients (`_converted`). Measured (docs/BENCHMARKS.md): 40 camera JPEGs
# converted to HEIC at q60-90 0.025-0.098; 40 pictures first saved as HEIC, against their JPEG exports,
# 0.234-0.435; LATTICE_DISTANCE is the middle of that gap. WebP is not tested: its conversions keep no lattice
# (0.22-0.34) and pictures first saved as WebP came as close as 0.18.
CONVERTED_FORMATS = frozenset({"HEIF"})
_FORMATS = ("JPEG", *sorted(CONVERTED_FORMATS))
LATTICE_STEP = 8
LATTICE_DISTANCE = 0.165
LATTICE_COEFFICIENTS = 500
LATTICE_BLOCKS = 65_536
_DCT = np.sqrt(2 / 8) * np.cos((2 * np.arange(8)[None, :] + 1) * np.arange(8)[:, None] * np.pi / 16)
_DCT[0] /= np.sqrt(2)  # JPEG's orthonormal 8-point DCT
# Pixel values (pixels x channels) from which `_curve` bins them in a (channel, level, level) histogram
# first; below it, building the histogram costs more than it saves.
HISTOGRAM_CELLS = 65_536


@dataclass(frozen=True)
class Lineage:
    """`source`: 1 when B was made from A, -1 when A was made from B, 0 when the test cannot say."""

    source: int
    a_from_b: float  # median block error re-making A from B (grey levels)
    b_from_a: float


def _dihedral(a: np.ndarray, k: int) -> np.ndarray:
    """One of the eight turns and mirrors of an H x W x C array."""
    if k >= 4:
        a = a[:, ::-1]
    return np.ascontiguousarray(np.rot90(a, k % 4))


_INVERSE = {0: 0, 1: 3, 2: 2, 3: 1, 4: 4, 5: 5, 6: 6, 7: 7}


def _small(img: Image.Image) -> np.ndarray:
    """The picture's standardised 32 x 32 grey reduction. From the decoded image itself: through an array it
    cost two more copies of a camera file's pixels, a quarter of the test on 12 MP pictures."""
    from PIL import Image

    factor = min(img.width, img.height) // SMALL_REDUCE_TO
    if factor >= 2:  # a box reduction first: converting and resampling every pixel of a 12 MP file cost 15 ms
        img = img.reduce(factor)
    g = np.asarray(img.convert("L").resize((32, 32), Image.Resampling.BILINEAR), np.float32)
    g -= g.mean()
    return g / max(float(np.sqrt((g * g).mean())), 1e-6)


def _curve(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Per-channel tone curves (256 x C, float) that best map `src` onto `dst` (mean of dst per src level).

    Fitted twice: pixels the first curve misses by far (a box or caption stamped on the copy) are left out
    of the second, so an overlay does not bend the curve for the rest of the picture. With more pixel values
    than `HISTOGRAM_CELLS`, both fits work on the joint histogram of (channel, src level, dst level), a few
    thousand occupied cells instead of every pixel: a pixel's miss depends only on its cell, and the sums
    are of whole numbers (exact in float64 in any order), so the curves are the per-pixel fit's, bit for
    bit. The channels are fitted in one pass (channel x 65,536 + src level x 256 + dst level as the cell)."""
    channels = src.shape[2]
    pixels: np.ndarray | None = None  # pixels per cell; None: one cell per pixel
    if src.size >= HISTOGRAM_CELLS:
        cell = (src.reshape(-1, channels).astype(np.int32) << 8 | dst.reshape(-1, channels)) + np.arange(
            channels, dtype=np.int32
        ) * 65_536
        hist = np.bincount(cell.ravel(), minlength=65_536 * channels)
        occupied = np.flatnonzero(hist)
        pixels = hist[occupied]
        row, level_out = occupied >> 8, (occupied & 255).astype(np.float64)  # row: channel x 256 + src level
        ends = np.searchsorted(occupied >> 16, np.arange(channels + 1))
    else:  # channel by channel, pixel by pixel
        row = (src.reshape(-1, channels).T + (np.arange(channels) * 256)[:, None]).ravel()
        level_out = dst.reshape(-1, channels).T.astype(np.float64).ravel()
        ends = np.arange(channels + 1) * (src.size // channels)
    curves = np.empty((256, channels))
    levels = np.arange(256)
    weights = pixels
    for round_ in range(2):
        sums = np.bincount(
            row, weights=level_out if weights is None else level_out * weights, minlength=256 * channels
        ).reshape(channels, 256)
        counts = np.bincount(row, weights=weights, minlength=256 * channels).reshape(channels, 256)
        for c in range(channels):
            seen = counts[c] > 0
            curves[:, c] = np.interp(levels, levels[seen], sums[c, seen] / counts[c, seen])
        if round_ == 0:
            miss = np.abs(curves.T.ravel()[row] - level_out)
            if pixels is None:
                middle = np.median(miss.reshape(channels, -1), axis=1)
            else:
                middle = np.array([_median(miss[i:j], pixels[i:j]) for i, j in zip(ends[:-1], ends[1:], strict=True)])
            keep = miss <= np.repeat(np.maximum(4.0, 3.0 * middle), np.diff(ends))
            weights = keep.astype(np.float64) if pixels is None else np.where(keep, pixels, 0)
    return curves


def _median(values: np.ndarray, counts: np.ndarray) -> float:
    """`np.median` of `values` each repeated `counts` times (the two middle ones averaged), without
    repeating them."""
    order = np.argsort(values, kind="stable")
    ordered, through = values[order], np.cumsum(counts[order])
    total = int(through[-1])
    upper = ordered[np.searchsorted(through, total // 2, side="right")]
    if total % 2:
        return float(upper)
    lower = ordered[np.searchsorted(through, total // 2 - 1, side="right")]
    return float(np.mean(np.array([lower, upper])))


def _through(curves: np.ndarray, src: np.ndarray) -> np.ndarray:
    """`src` (H x W x C, uint8) through per-channel curves, rounded to levels: a table lookup per channel
    (OpenCV's LUT; Pillow's `point` gave the same pixels at three times the cost, from an image copy each way
    and its table rounded again in Python, a sixth of a small sibling pair's test)."""
    import cv2

    tables = np.clip(np.rint(curves), 0, 255).astype(np.uint8)  # (256, C)
    return cv2.LUT(src, np.ascontiguousarray(tables).reshape(256, 1, src.shape[2])).reshape(src.shape)


def _windows(h: int, w: int) -> list[tuple[int, int, int, int]]:
    """Up to 3 x 3 windows on the 16 px grid, spread over the picture (the whole picture when small)."""
    if h <= WINDOW or w <= WINDOW:
        return [(0, 0, h // 16 * 16 or h, w // 16 * 16 or w)]
    ys = np.linspace(0, (h - WINDOW) // 16, WINDOWS_PER_SIDE).astype(int) * 16
    xs = np.linspace(0, (w - WINDOW) // 16, WINDOWS_PER_SIDE).astype(int) * 16
    return [(int(y), int(x), int(y) + WINDOW, int(x) + WINDOW) for y in sorted(set(ys)) for x in sorted(set(xs))]


def _saturated(rgb: np.ndarray, factor: float) -> np.ndarray:
    """`rgb` with its saturation scaled by `factor` about each pixel's luma (kept), rounded to levels."""
    x = rgb.astype(np.float64)
    luma = (x @ _LUMA)[..., None]
    return np.clip(np.rint(luma + factor * (x - luma)), 0, 255).astype(np.uint8)


@dataclass
class _Edit:
    """A pointwise colour edit: per-channel `curves` applied to `inputs` (the source, or the source after a
    saturation change), then a saturation change by `after` (None: none)."""

    inputs: np.ndarray
    curves: np.ndarray
    after: float | None

    def apply(self) -> np.ndarray:
        out = _through(self.curves, self.inputs)
        return out if self.after is None else _saturated(out, self.after)


def _choose_saturation(src: np.ndarray, dst: np.ndarray, whole_family: bool = False) -> tuple[float, bool]:
    """(factor, after): the saturation change that, with per-channel tone curves, best maps `src` onto `dst`
    (a colour or vibrance slider before or after a curve), chosen on at most `SATURATION_PIXELS` pixels
    spread over the picture. The family holds the inverse of each of its edits (a curve after a saturation
    change is undone by the inverse change after the inverse curve), so the fit favours neither direction
    of the test.

    The error over the factors has one valley where a saturation change was made, so each side (before or
    after the curves) is walked down from 1x to the bottom of its valley instead of fitting all 30: two saves
    of one picture at two qualities (the pairs a library holds most of) take 1x after five fits, a copy made
    with a change a few more. Measured on 1,202 choices (both ways of every keeper test stored for the dev,
    camera and library sets): 6.3 s of CPU against 12.2 s for 1x's neighbours then the whole family; 4
    choices differ, each in a wide flat valley where the two choices' errors lie under a hundredth of a level
    apart (0.005-0.009), and every test's answer and errors stayed the same (docs/BENCHMARKS.md).
    `whole_family` tries every factor."""
    step = max(1, int(np.ceil(np.sqrt(src.shape[0] * src.shape[1] / SATURATION_PIXELS))))
    s, d = src[::step, ::step], dst[::step, ::step]
    errors: dict[tuple[float, bool], float] = {}

    def error(factor: float, after: bool) -> float:
        if (factor, after) not in errors:
            edit = _fit_edit(s, d, factor, after)
            errors[factor, after] = float(np.abs(edit.apply().astype(np.int16) - d).mean())
        return errors[factor, after]

    # The family's order breaks ties (the first best stands): the smaller factor, then before the curves. As
    # (error, place, after) tuples, that is their minimum.
    if whole_family:
        _, place, after = min((error(f, a), p, a) for p, f in enumerate(SATURATIONS) for a in (False, True))
        return SATURATIONS[place], after

    def valley(after: bool) -> tuple[float, int, bool]:
        """(error, place, after) at the bottom of the valley of one side's errors, walked down from 1x (1x
        after the curves is the same edit as 1x before them: not fitted again). The family's order breaks
        ties as the whole family's search does: a step down to a smaller factor is taken on an equal error, a
        step up only on a smaller one."""

        def at(place: int) -> float:
            return error(1.0, False) if place == _ONE else error(SATURATIONS[place], after)

        place = _ONE
        while place > 0 and at(place - 1) <= at(place):
            place -= 1
        if place == _ONE:
            while place + 1 < len(SATURATIONS) and at(place + 1) < at(place):
                place += 1
        return at(place), place, after

    _, place, after = min(valley(False), valley(True))
    return SATURATIONS[place], after if place != _ONE else False


def _fit_edit(src: np.ndarray, dst: np.ndarray, factor: float, after: bool) -> _Edit:
    """Per-channel tone curves from `src` onto `dst`, with the saturation change `factor` before or after."""
    if after:
        return _Edit(src, _curve(src, _saturated(dst, 1.0 / factor)), factor)
    inputs = _saturated(src, factor) if factor != 1.0 else src
    return _Edit(inputs, _curve(inputs, dst), None)


def _block_errors(again: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Mean absolute error of each whole 8 x 8 block (one pixel ring in from the window's edge, where
    other blocks' chroma reaches in)."""
    diff = np.abs(again - dst.astype(np.int16))
    # The channels' mean as a sum of whole numbers over 3: what `.mean(axis=2)` gives, four times faster.
    err = ((diff[..., 0] + diff[..., 1] + diff[..., 2]) / 3.0)[8:-8, 8:-8]
    hh, ww = err.shape[0] // 8 * 8, err.shape[1] // 8 * 8
    return err[:hh, :ww].reshape(hh // 8, 8, ww // 8, 8).mean(axis=(1, 3)).ravel()


def _remake_error(
    frames: _Frames, dst_image: object, saturation: tuple[float, bool] = (1.0, False)
) -> tuple[float, float]:
    """(median error, inexact share) of the 8 x 8 blocks of re-making the destination of `frames` from its
    turned source (`_Frames`) with `dst_image`'s tables.

    The source is tried as it is (a copy re-saved or turned without an edit) and through per-channel tone
    curves fitted on the decoded pixels, with the saturation change `saturation` (factor, after the curves)
    too (`_choose_saturation`, `_fit_edit`). A
    fitted curve is off by a level here and there (the mean of a JPEG's noisy levels), and each such level
    changes whole blocks once encoded, so the fit is refined on its result: each round moves every level by
    the mean error it left, encoded again (`REFINE_ROUNDS`). The best try counts. A copy made from the source
    through such an edit is then re-made nearly block for block, while no edit removes the other file's own
    quantisation noise the other way round."""
    from PIL import Image, JpegImagePlugin

    tables = dst_image.quantization  # type: ignore[attr-defined]
    sampling = JpegImagePlugin.get_sampling(dst_image)

    def remade(pixels: np.ndarray) -> np.ndarray:
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, "JPEG", qtables=tables, subsampling=sampling)
        made = Image.open(buf, formats=("JPEG",))
        return np.asarray(made if made.mode == "RGB" else made.convert("RGB"), np.int16)

    factor, after = saturation
    errors = []
    for box in _windows(*frames.shape):
        s, d = frames.window(*box)
        best = _block_errors(remade(s), d)
        if _score(best) == (0.0, 0.0):
            errors.append(best)  # re-made exactly as it is: no edit does better
            continue
        edit = _fit_edit(s, d, factor, after)
        # Each input level of each channel as one bin (channel x 256 + level), for the refining rounds.
        channels = s.shape[2]
        level = (edit.inputs.reshape(-1, channels) + np.arange(channels) * 256).ravel()
        counts = np.maximum(np.bincount(level, minlength=256 * channels), 1).reshape(channels, 256).T
        for round_ in range(REFINE_ROUNDS + 1):
            again = remade(edit.apply())
            blocks = _block_errors(again, d)
            if _score(blocks) < _score(best):
                best = blocks
            if round_ < REFINE_ROUNDS:
                left = (d - again).ravel()  # whole numbers: their sums are exact in any order
                sums = np.bincount(level, weights=left, minlength=256 * channels).reshape(channels, 256).T
                edit.curves += sums / counts
        if best.size:
            errors.append(best)
    if not errors:
        return float("nan"), float("nan")
    return _score(np.concatenate(errors))


def _score(blocks: np.ndarray) -> tuple[float, float]:
    """(median block error, share of blocks not re-made exactly) of one re-make."""
    if not blocks.size:
        return float("inf"), 1.0
    return float(np.median(blocks)), float((blocks > EXACT_BLOCK).mean())


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Correlation of two standardised 32 x 32 reductions, the cells that differ most left out.

    A box or caption stamped on a copy covers a few cells and, bright on a dark picture, moves the whole
    picture's mean and spread: the correlation is taken again without the `STAMP_SHARE` of cells that
    differ most, so a stamped copy still counts as a copy and two different pictures still do not."""
    whole = float((a * b).mean())
    if whole >= MIN_CORRELATION:
        return whole
    far = np.abs(a - b).ravel()
    rest = far <= np.quantile(far, 1.0 - STAMP_SHARE)
    x, y = a.ravel()[rest], b.ravel()[rest]
    x, y = x - x.mean(), y - y.mean()
    return float((x * y).sum() / max(float(np.sqrt((x * x).sum() * (y * y).sum())), 1e-9))


def _turn(a: Image.Image, b: Image.Image) -> int | None:
    """The dihedral turn `k` with `_dihedral(a, k)` (as arrays) most like `b`, or None when no turn fits the
    frame or the two are not copies (`MIN_CORRELATION`). Found on 32 x 32 reductions (turning the reduction,
    not the full picture)."""
    small_a, small_b = _small(a), _small(b)
    w, h = a.size
    fits = [
        (float((_dihedral(small_a[..., None], k)[..., 0] * small_b).mean()), k)
        for k in range(8)
        if ((w, h) if k % 2 else (h, w)) == (b.height, b.width)
    ]
    if not fits:
        return None
    k = max(fits)[1]
    if _correlation(_dihedral(small_a[..., None], k)[..., 0], small_b) < MIN_CORRELATION:
        return None
    return k


def lineage(path_a: str, path_b: str) -> Lineage:
    """Which of two copies of one picture was made from the other; 0 when the test cannot say.

    Two JPEGs: the re-compression test. A JPEG and a file of a lossy kind of its own (`CONVERTED_FORMATS`):
    the other file was made from a JPEG when its pixels sit on the JPEG's quantisation lattice
    (`_converted`); the other way round this test says nothing."""
    from PIL import Image

    from photodedup.imaging import register_heif

    unknown = Lineage(0, float("nan"), float("nan"))
    try:
        register_heif()
        with Image.open(path_a, formats=_FORMATS) as ia, Image.open(path_b, formats=_FORMATS) as ib:
            if ia.width * ia.height > MAX_PIXELS or ib.width * ib.height > MAX_PIXELS:
                return unknown
            if ia.format == "JPEG" and ib.format == "JPEG":
                return _recompression(ia, ib)
            if ia.format == "JPEG" and ib.format in CONVERTED_FORMATS and _converted(ia, ib):
                return Lineage(1, float("nan"), float("nan"))
            if ib.format == "JPEG" and ia.format in CONVERTED_FORMATS and _converted(ib, ia):
                return Lineage(-1, float("nan"), float("nan"))
    except (OSError, ValueError, SyntaxError) as exc:  # unreadable now: say nothing
        log.debug("lineage of %s and %s: %s", path_a, path_b, exc)
    return unknown


def _recompression(ia: object, ib: object) -> Lineage:
    """The re-compression test of two opened JPEGs (see the module's docstring)."""
    unknown = Lineage(0, float("nan"), float("nan"))
    if ia.mode not in ("RGB", "L") or ib.mode != ia.mode:  # type: ignore[attr-defined]
        return unknown
    rgb_a, rgb_b = _rgb(ia), _rgb(ib)
    k = _turn(rgb_a, rgb_b)
    if k is None:
        return unknown
    # Each way reads only its windows (`_Frames`): a 12 MP pair was two full-size copies of every pixel
    # before, and their page faults, for the few windows the test looks at.
    to_b, to_a = _Frames(rgb_a, rgb_b, k), _Frames(rgb_b, rgb_a, _INVERSE[k])
    if to_b.same_pixels():
        return unknown  # the same pixels (a file re-tagged, a comment added): nothing to tell
    # Per-channel curves first; the saturation family (slower) only where they leave it open.
    b_from_a, b_inexact = _remake_error(to_b, ib)
    a_from_b, a_inexact = _remake_error(to_a, ia)
    source = _verdict(a_from_b, a_inexact, b_from_a, b_inexact)
    if not source:
        sat_b, sat_a = _choose_saturation(*to_b.whole()), _choose_saturation(*to_a.whole())
        # No saturation change fits either way better than the curves alone: the family's fit is the one just
        # made, so it cannot tell either (a library's siblings, saved from the same pixels at two qualities,
        # spent most of a first scan here). A 1x candidate keeps the re-make just made (the same fit, so the
        # same errors).
        if (sat_b, sat_a) != ((1.0, False), (1.0, False)):
            # The family holds each change's inverse, so each way also tries the inverse of the other way's
            # choice (the choice on a sample's mean error can miss the change the noisier way needs); the
            # better re-make counts.
            plain = {(1.0, False): (b_from_a, b_inexact)}, {(1.0, False): (a_from_b, a_inexact)}
            b_from_a, b_inexact = min(
                plain[0].get(edit) or _remake_error(to_b, ib, edit) for edit in {sat_b, _inverse(sat_a)}
            )
            a_from_b, a_inexact = min(
                plain[1].get(edit) or _remake_error(to_a, ia, edit) for edit in {sat_a, _inverse(sat_b)}
            )
            source = _verdict(a_from_b, a_inexact, b_from_a, b_inexact)
    return Lineage(source, a_from_b, b_from_a)


class _Frames:
    """One way of the test: the source picture turned into the destination's frame (`_dihedral(src, k)`) and the
    destination, as arrays read window by window from the decoded images (a window of the turned source is
    the turned crop of the source's matching box), and whole only when asked for."""

    def __init__(self, src: Image.Image, dst: Image.Image, k: int) -> None:
        self.src, self.dst, self.k = src, dst, k
        self.shape = (dst.height, dst.width)
        # Row and column of the source pixel at each place of the turned frame: views, nothing allocated.
        h, w = src.height, src.width
        self._rows = _dihedral_view(np.broadcast_to(np.arange(h)[:, None], (h, w)), k)
        self._cols = _dihedral_view(np.broadcast_to(np.arange(w)[None, :], (h, w)), k)

    def window(self, y0: int, x0: int, y1: int, x1: int) -> tuple[np.ndarray, np.ndarray]:
        """(turned source, destination) over rows y0:y1 and columns x0:x1 of the destination's frame, as
        `_dihedral(np.asarray(src), k)[y0:y1, x0:x1]` and `np.asarray(dst)[y0:y1, x0:x1]`."""
        rows, cols = self._rows[y0:y1, x0:x1], self._cols[y0:y1, x0:x1]
        box = (int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1)
        src = _dihedral(np.asarray(self.src.crop(box)), self.k)
        return src, np.asarray(self.dst.crop((x0, y0, x1, y1)))

    def whole(self) -> tuple[np.ndarray, np.ndarray]:
        """The whole turned source and destination (the saturation choice samples pixels over all of it)."""
        return _dihedral(np.asarray(self.src), self.k), np.asarray(self.dst)

    def same_pixels(self) -> bool:
        """Whether the turned source equals the destination pixel for pixel: its windows are compared first,
        and only when they all agree the whole (a difference is nearly always in a window)."""
        if any(not np.array_equal(*self.window(*box)) for box in _windows(*self.shape)):
            return False
        return bool(np.array_equal(*self.whole()))


def _dihedral_view(a: np.ndarray, k: int) -> np.ndarray:
    """`_dihedral` as a view (no copy)."""
    if k >= 4:
        a = a[:, ::-1]
    return np.rot90(a, k % 4)


def _rgb(img: Image.Image) -> Image.Image:
    """The decoded picture in RGB: itself when it is RGB already (`convert` would copy every pixel)."""
    img.load()
    return img if img.mode == "RGB" else img.convert("RGB")


def _inverse(edit: tuple[float, bool]) -> tuple[float, bool]:
    """The saturation change that undoes `edit` (factor, after the curves) from the other side of the curves."""
    factor, after = edit
    return (1.0, False) if factor == 1.0 else (1.0 / factor, not after)


def _converted(jpeg: object, other: object) -> bool:
    """True when `other` (opened, another format) was made from a JPEG with `jpeg`'s luminance table: its
    pixels, in the JPEG's frame (any turn), have 8 x 8 DCT coefficients near that table's lattice.

    A conversion decodes the JPEG, whose coefficients are multiples of its table, and adds its own, smaller
    noise; a picture first saved as HEIC or WebP never had such a lattice (and a JPEG exported from it got
    its lattice from rounding the HEIC's coefficients, which stay where they were). Only coarse steps
    (`LATTICE_STEP`) and coefficients not rounded to zero are measured: the conversion's noise drowns fine
    steps, and every smooth picture has near-zero coefficients."""
    table = (getattr(jpeg, "quantization", None) or {}).get(0)
    if not table or len(table) != 64 or jpeg.mode not in ("RGB", "L"):  # type: ignore[attr-defined]
        return False
    k = _turn(_rgb(jpeg), rgb := _rgb(other))
    if k is None:
        return False
    distance, measured = lattice_distance(_dihedral(np.asarray(rgb), _INVERSE[k]), table)
    return measured >= LATTICE_COEFFICIENTS and distance < LATTICE_DISTANCE


def lattice_distance(rgb: np.ndarray, table: Sequence[int]) -> tuple[float, int]:
    """(mean distance, count): how far the luma 8 x 8 DCT coefficients of `rgb` (on the grid from its top left
    corner) sit from the lattice of the JPEG luminance `table` (natural order), in steps (0: on it; about a
    quarter or more: no lattice), over the coefficients with steps of at least `LATTICE_STEP` and at least
    half a step from zero; about `LATTICE_BLOCKS` blocks at most (whole rows of blocks, spread over the picture)."""
    steps = np.asarray(table, np.float64).reshape(8, 8)
    h, w = rgb.shape[0] // 8 * 8, rgb.shape[1] // 8 * 8
    every = max(1, int(np.ceil(h * w / 64 / LATTICE_BLOCKS)))  # rows of blocks
    rows = rgb[:h, :w].reshape(h // 8, 8, w, rgb.shape[2])[::every]
    luma = rows @ _LUMA - 128.0
    blocks = luma.reshape(-1, 8, w // 8, 8).transpose(0, 2, 1, 3).reshape(-1, 8, 8)
    coefficients = (_DCT @ blocks @ _DCT.T) / steps
    measured = (steps >= LATTICE_STEP) & (np.abs(coefficients) >= 0.5)
    off = np.abs(coefficients - np.rint(coefficients))[measured]
    return (float(off.mean()) if off.size else float("nan")), int(off.size)


def _verdict(a_from_b: float, a_inexact: float, b_from_a: float, b_inexact: float) -> int:
    """1 when B was made from A, -1 when A was made from B, 0 when the errors cannot tell."""
    if b_from_a < RATIO * a_from_b and a_from_b - b_from_a >= MARGIN:
        return 1
    if a_from_b < RATIO * b_from_a and b_from_a - a_from_b >= MARGIN:
        return -1
    # Both re-made with most blocks exact (a copy re-saved at another quality, turned or not): the one
    # re-made bit for bit in more blocks by far was made from the other.
    if max(a_from_b, b_from_a) < MARGIN:
        if b_inexact < RATIO_EXACT * a_inexact and a_inexact - b_inexact >= MARGIN_EXACT:
            return 1
        if a_inexact < RATIO_EXACT * b_inexact and b_inexact - a_inexact >= MARGIN_EXACT:
            return -1
    return 0
