"""Which of two JPEG copies of one picture was made from the other: the re-compression test.

A copy made from a JPEG (re-saved, brightened, turned by 90 degrees, EXIF-turned, stamped) is the decoded
original, edited pixel by pixel, encoded again with the copy's own quantisation tables. Doing that again
from the original (map its pixels onto the copy's with a per-channel tone curve, turn them the same way,
encode with the copy's tables) gives back the copy almost exactly, block for block. The other way round
it cannot: the copy's second round of quantisation noise is not in the original and no encoding removes
it. So the error of re-making B from A, against that of re-making A from B, says which came first; when
the two are close (the same tables, where re-encoding is nearly idempotent, or edits no curve describes)
the test says nothing and the keeper policy's later rules decide.

Measured on the dev set (originals against their bright, tone, turn, exif_turn, jpeg_q60 and overlay
copies; see docs/BENCHMARKS.md): the rule below names the original in most groups and the copy in none
where it decides.
"""

from __future__ import annotations

import dataclasses
import io
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from photodedup.client.grouping import FileRecord, Group, GroupingConfig, Tier, keeper_key

if TYPE_CHECKING:
    from photodedup.client.index import Index

log = logging.getLogger(__name__)

LINEAGE_VERSION = "1"
# Re-making the derived copy must be this much more exact than the other way, by both measures below.
RATIO = 0.6
MARGIN = 0.3  # grey levels of median block error
WINDOW = 256  # pixels per side of the sampled windows (a multiple of the 16 px MCU)
WINDOWS_PER_SIDE = 3
MAX_PIXELS = 40_000_000  # larger pictures are not tested (two full decodes)
# Members tested per group: a folder of many same-looking copies (a burst re-saved, an export run twice)
# costs a few tests, not one per file.
MAX_TESTS_PER_GROUP = 8
# The two must be copies: their 32 x 32 grey reductions, after the dihedral turn, correlate this well
# (correlation, so brightened and toned copies count).
MIN_CORRELATION = 0.9


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


def _small(a: np.ndarray) -> np.ndarray:
    from PIL import Image

    g = np.asarray(Image.fromarray(a).convert("L").resize((32, 32), Image.Resampling.BILINEAR), np.float32)
    g -= g.mean()
    return g / max(float(np.sqrt((g * g).mean())), 1e-6)


def _curve(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """`src` through the per-channel tone curve that best maps it onto `dst` (mean of dst per src level).

    Fitted twice: pixels the first curve misses by far (a box or caption stamped on the copy) are left out
    of the second, so an overlay does not bend the curve for the rest of the picture."""
    out = np.empty_like(src)
    levels = np.arange(256)
    for c in range(src.shape[2]):
        s, d = src[..., c].ravel(), dst[..., c].ravel().astype(np.float64)
        keep = np.ones(len(s), dtype=bool)
        for _ in range(2):
            sums = np.bincount(s[keep], weights=d[keep], minlength=256)
            counts = np.bincount(s[keep], minlength=256)
            seen = counts > 0
            lut = np.interp(levels, levels[seen], sums[seen] / counts[seen])
            miss = np.abs(lut[s] - d)
            keep = miss <= max(4.0, 3.0 * float(np.median(miss)))
        out[..., c] = np.clip(np.rint(lut), 0, 255).astype(np.uint8)[src[..., c]]
    return out


def _windows(h: int, w: int) -> list[tuple[int, int, int, int]]:
    """Up to 3 x 3 windows on the 16 px grid, spread over the picture (the whole picture when small)."""
    if h <= WINDOW or w <= WINDOW:
        return [(0, 0, h // 16 * 16 or h, w // 16 * 16 or w)]
    ys = np.linspace(0, (h - WINDOW) // 16, WINDOWS_PER_SIDE).astype(int) * 16
    xs = np.linspace(0, (w - WINDOW) // 16, WINDOWS_PER_SIDE).astype(int) * 16
    return [(int(y), int(x), int(y) + WINDOW, int(x) + WINDOW) for y in sorted(set(ys)) for x in sorted(set(xs))]


def _remake_error(src: np.ndarray, dst: np.ndarray, dst_image: object) -> float:
    """Median 8 x 8 block error of re-making `dst` from `src` (same frame) with `dst_image`'s tables."""
    from PIL import Image, JpegImagePlugin

    tables = dst_image.quantization  # type: ignore[attr-defined]
    sampling = JpegImagePlugin.get_sampling(dst_image)
    errors = []
    for y0, x0, y1, x1 in _windows(*dst.shape[:2]):
        s, d = src[y0:y1, x0:x1], dst[y0:y1, x0:x1]
        buf = io.BytesIO()
        Image.fromarray(_curve(s, d)).save(buf, "JPEG", qtables=tables, subsampling=sampling)
        again = np.asarray(Image.open(buf, formats=("JPEG",)).convert("RGB"), np.int16)
        err = np.abs(again - d.astype(np.int16)).mean(axis=2)[8:-8, 8:-8]  # edges see other blocks' chroma
        hh, ww = err.shape[0] // 8 * 8, err.shape[1] // 8 * 8
        if hh and ww:
            errors.append(err[:hh, :ww].reshape(hh // 8, 8, ww // 8, 8).mean(axis=(1, 3)).ravel())
    return float(np.median(np.concatenate(errors))) if errors else float("nan")


def lineage(path_a: str, path_b: str) -> Lineage:
    """Which of two JPEG copies of one picture was made from the other; 0 when the test cannot say."""
    from PIL import Image

    unknown = Lineage(0, float("nan"), float("nan"))
    try:
        with Image.open(path_a, formats=("JPEG",)) as ia, Image.open(path_b, formats=("JPEG",)) as ib:
            if ia.format != "JPEG" or ib.format != "JPEG" or ia.mode not in ("RGB", "L") or ib.mode != ia.mode:
                return unknown
            if ia.width * ia.height > MAX_PIXELS or ib.width * ib.height > MAX_PIXELS:
                return unknown
            a, b = np.asarray(ia.convert("RGB")), np.asarray(ib.convert("RGB"))
            # The turn is found on 32 x 32 reductions (turning the reduction, not the full picture), and
            # the full-size picture is turned once, for the chosen turn only.
            small_a, small_b = _small(a), _small(b)
            h, w = a.shape[:2]
            fits = [
                (float((_dihedral(small_a[..., None], k)[..., 0] * small_b).mean()), k)
                for k in range(8)
                if ((w, h) if k % 2 else (h, w)) == b.shape[:2]
            ]
            if not fits or max(fits)[0] < MIN_CORRELATION:
                return unknown
            k = max(fits)[1]
            turned = _dihedral(a, k)
            if np.array_equal(turned, b):
                return unknown  # the same pixels (a file re-tagged, a comment added): nothing to tell
            b_from_a = _remake_error(turned, b, ib)
            a_from_b = _remake_error(_dihedral(b, _INVERSE[k]), a, ia)
    except (OSError, ValueError, SyntaxError) as exc:  # unreadable now: say nothing
        log.debug("lineage of %s and %s: %s", path_a, path_b, exc)
        return unknown
    if b_from_a < RATIO * a_from_b and a_from_b - b_from_a >= MARGIN:
        return Lineage(1, a_from_b, b_from_a)
    if a_from_b < RATIO * b_from_a and b_from_a - a_from_b >= MARGIN:
        return Lineage(-1, a_from_b, b_from_a)
    return Lineage(0, a_from_b, b_from_a)


# Keeper rules that say which file is the better picture; lineage refines them, the rules after them
# (dates, size, format, path) only break ties it leaves.
_CONTENT_RULES = ("resolution", "camera", "quality", "colour", "borders")


def _content_key(record: FileRecord, config: GroupingConfig) -> tuple:
    rules = []
    for rule in config.keep_policy:
        if rule not in _CONTENT_RULES:
            break
        rules.append(rule)
    return keeper_key(record, dataclasses.replace(config, keep_policy=tuple(rules)))[:-1]


def lineage_of(a: FileRecord, b: FileRecord) -> int:
    """`lineage(a.path, b.path).source`: the test on two records, without a store."""
    return lineage(a.path, b.path).source


class StoredLineage:
    """`lineage_of` that keeps its answers in the index, keyed by both files' MD5s and `LINEAGE_VERSION`:
    a pair of photos is decoded and re-encoded once, not on every regrouping."""

    def __init__(self, index: Index) -> None:
        self.index = index
        self.known = index.lineages(LINEAGE_VERSION)
        self.new: dict[tuple[str, str], int] = {}

    def __call__(self, a: FileRecord, b: FileRecord) -> int:
        flip = a.md5 > b.md5
        key = (b.md5, a.md5) if flip else (a.md5, b.md5)
        source = self.known.get(key)
        if source is None:
            source = lineage(b.path, a.path).source if flip else lineage(a.path, b.path).source
            self.known[key] = self.new[key] = source
        return -source if flip else source

    def flush(self) -> None:
        if self.new:
            self.index.put_lineages(LINEAGE_VERSION, [(a, b, s) for (a, b), s in self.new.items()])
            self.new.clear()


def prefer_sources(
    groups: Sequence[Group], config: GroupingConfig, test: Callable[[FileRecord, FileRecord], int] = lineage_of
) -> list[Group]:
    """Groups whose keeper the re-compression test shows to be made from a near copy that ties with it on
    the content rules get that copy as keeper (the original, not its re-encode, turn or brightened copy).

    Only JPEG near copies of the keeper's own size (any turn) are tested, at most `MAX_TESTS_PER_GROUP` per
    group, best-ranked first; a keeper under a reference folder stays; what the test cannot tell leaves the
    policy's choice."""
    from photodedup.client.decisions import with_keeper

    out, changed = [], 0
    for group in groups:
        keep = group.keep
        if group.kind is Tier.EXACT or keep.path in group.protected:
            out.append(group)
            continue
        want = _content_key(keep, config)
        tied = sorted(
            (
                m.record
                for m in group.members
                if m.tier is Tier.NEAR
                and m.record.md5 != keep.md5
                and m.record.path not in group.protected
                and _content_key(m.record, config) == want
            ),
            key=lambda r: keeper_key(r, config),
        )
        current = keep
        for rec in tied[:MAX_TESTS_PER_GROUP]:
            if rec.md5 != current.md5 and test(current, rec) == -1:
                current = rec  # the current choice was made from this copy
        if current is not keep:
            changed += 1
            group = with_keeper(group, current)
        out.append(group)
    if changed:
        log.info("keeper: %d groups keep the copy the others were made from", changed)
    return out
