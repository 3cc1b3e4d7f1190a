"""Where the picture is inside the frame, and hashes of parts of it.

Two jobs of one kind (geometry of the content), both run on the scanner's reduced decode:
- `content_box` trims uniform borders (letterbox, padding; any solid colour, one to four sides), so
  the hashes see the picture, not the bars; `picture_pixels` counts what the keeper compares: the frame
  less added bars (`added_bars`: a uniform band ending at a hard edge) and the filled corners of a
  rotated-and-expanded copy (`corner_fill`), which add frame but no picture;
- `window_hashes` hashes sub-windows of the content (centre, corner and one-side crops at a few
  scales), so a cropped copy's whole-picture hash meets the window of its original that it is.
The hashes are bit-for-bit ImageHash's dHash and pHash of the cropped window, computed for all windows
with vectorised numpy instead of one ImageHash call per window. `transparent_share` says how much of the
frame is see-through: a cut-out (icon, logo, sticker) is drawn, not photographed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# A border line: at least this share of its pixels within `BORDER_TOLERANCE` levels of the border colour.
BORDER_SHARE = 0.98
BORDER_TOLERANCE = 14
# Trimming never leaves less than this share of a side: a flat picture is content, not border.
MIN_CONTENT_SHARE = 0.4
# A border whose colour also covers this share of the picture inside it is the picture's own background
# (the white margin of a text page), not a bar: it stays, for pictures under `PAGE_CONTRAST` (see `contrast`).
BACKGROUND_SHARE = 0.3
PAGE_CONTRAST = 12.5
# An added bar ends at a hard edge: at least this share of the line inside it differs from its colour.
HARD_EDGE_SHARE = 0.5
# A filled corner's edge is the straight side of a turned picture: its runs along the lines stray from a
# straight line by at most this many pixels (median deviation, plus 3 % of the longest run).
CORNER_SLACK = 1.5


def _window_fractions() -> tuple[tuple[float, float, float, float], ...]:
    """(left, top, right, bottom) as fractions of the content: the crops people make.

    Centre/corner/edge crops keeping 72-90 % per side (3 x 3 scales, 3 x 3 positions of the slack),
    and one-side crops keeping 70-85 % of one dimension.
    """
    boxes: list[tuple[float, float, float, float]] = []
    for kx in (0.74, 0.82, 0.9):
        for ky in (0.74, 0.82, 0.9):
            for px in (0.0, 0.5, 1.0):
                for py in (0.0, 0.5, 1.0):
                    x0, y0 = (1 - kx) * px, (1 - ky) * py
                    boxes.append((x0, y0, x0 + kx, y0 + ky))
    for k in (0.72, 0.78, 0.84):
        boxes += [(0.0, 0.0, k, 1.0), (1 - k, 0.0, 1.0, 1.0), (0.0, 0.0, 1.0, k), (0.0, 1 - k, 1.0, 1.0)]
    return tuple(boxes)


# The full frame first: a picture's whole-frame window hash is what meets the windows of others.
WINDOWS = ((0.0, 0.0, 1.0, 1.0), *_window_fractions())


def channel_max(pixels: np.ndarray) -> np.ndarray:
    """`pixels.max(axis=-1)` for three channels: numpy reduces a 3-long last axis an element at a time,
    which made it most of the border and grey tests' cost."""
    return np.maximum(np.maximum(pixels[..., 0], pixels[..., 1]), pixels[..., 2])


def channel_min(pixels: np.ndarray) -> np.ndarray:
    """`pixels.min(axis=-1)` for three channels, as `channel_max`."""
    return np.minimum(np.minimum(pixels[..., 0], pixels[..., 1]), pixels[..., 2])


def _line_colour(line: np.ndarray) -> np.ndarray:
    """`np.median(line, axis=0).astype(np.int16)` of a line of uint8 RGB pixels, bit for bit: the middle of
    the line (the two middles' mean, truncated, for an even length) found by partitioning. np.median's
    general path took ~45 us a call where this takes ~8 us, and hashing asks eight or more times a file."""
    if line.dtype != np.uint8 or not len(line):
        return np.median(line, axis=0).astype(np.int16)
    mid = len(line) // 2
    if len(line) % 2:
        return np.partition(line, mid, axis=0)[mid].astype(np.int16)
    middles = np.partition(line, (mid - 1, mid), axis=0)
    return (middles[mid - 1].astype(np.int16) + middles[mid]) // 2


def _border_depth(lines: np.ndarray, colour: np.ndarray, limit: int) -> int:
    """How many leading lines (axis 0 of `lines`, each a row of RGB pixels) are of `colour`.

    Read in chunks: most pictures have no border, and the first chunk settles it."""
    start = 0
    while start < limit:
        chunk = lines[start : min(limit, start + 8)].astype(np.int16)
        near = (channel_max(np.abs(chunk - colour)) <= BORDER_TOLERANCE).mean(axis=1)
        bad = np.nonzero(near < BORDER_SHARE)[0]
        if len(bad):
            return start + int(bad[0])
        start += len(chunk)
    return limit


def _sides(rgb: np.ndarray) -> dict[str, np.ndarray]:
    """The picture seen from each side: axis 0 runs inward from that edge, each line a row of RGB pixels."""
    return {
        "top": rgb,
        "bottom": rgb[::-1],
        "left": rgb.transpose(1, 0, 2),
        "right": rgb.transpose(1, 0, 2)[::-1],
    }


Borders = dict[str, tuple[np.ndarray, int]]


def outer_borders(rgb: np.ndarray) -> Borders:
    """Each side's outermost line colour and how many lines from that side are of it: the first round of
    both `content_box` and `added_bars`, measured once when hashing asks both about the same frame."""
    h, w = rgb.shape[:2]
    out: Borders = {}
    for name, lines in _sides(rgb).items():
        colour = _line_colour(lines[0])
        out[name] = (colour, _border_depth(lines, colour, h if name in ("top", "bottom") else w))
    return out


def content_box(
    rgb: np.ndarray, _depth: int = 0, keep_background: bool = False, borders: Borders | None = None
) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the picture inside uniform borders, in `rgb`'s pixels (H x W x 3).

    Each side is trimmed while its lines are of one colour (the median of its outermost line), so
    black, white or grey bars on any of the four sides go; the whole frame when nothing is trimmed or
    when trimming would leave under `MIN_CONTENT_SHARE` of a side (a flat picture is all content). A side
    whose colour is also the background inside (`BACKGROUND_SHARE`), such as a text page's white margin,
    is not a bar and stays: trimming it would cut a page differently from its own cropped copy.
    `borders` is `outer_borders(rgb)` when already measured.
    """
    h, w = rgb.shape[:2]
    sides = _sides(rgb)
    found = borders if borders is not None else outer_borders(rgb)
    colours = {name: colour for name, (colour, _) in found.items()}
    depth = {name: d for name, (_, d) in found.items()}
    left, right = depth["left"], w - depth["right"]
    top, bottom = depth["top"], h - depth["bottom"]
    if right - left < MIN_CONTENT_SHARE * w or bottom - top < MIN_CONTENT_SHARE * h:
        return 0, 0, w, h
    inside = rgb[top:bottom:4, left:right:4].astype(np.int16)
    for name in [n for n in sides if depth[n] and keep_background]:
        if (channel_max(np.abs(inside - colours[name])) <= BORDER_TOLERANCE).mean() >= BACKGROUND_SHARE:
            depth[name] = 0
    left, right = depth["left"], w - depth["right"]
    top, bottom = depth["top"], h - depth["bottom"]
    if (left, top, right, bottom) != (0, 0, w, h) and _depth < 2:
        # Bars inside bars (white padding around a picture that had black ones): trim again.
        il, it, ir, ib = content_box(rgb[top:bottom, left:right], _depth + 1, keep_background)
        if ir - il >= MIN_CONTENT_SHARE * w and ib - it >= MIN_CONTENT_SHARE * h:
            return left + il, top + it, left + ir, top + ib
    return left, top, right, bottom


_OPPOSITE = {"top": "bottom", "bottom": "top", "left": "right", "right": "left"}


def added_bars(rgb: np.ndarray, borders: Borders | None = None) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the frame less its added bars, in `rgb`'s pixels (H x W x 3).

    `content_box` trims every uniform margin, which is right for matching but not for counting what a
    file holds: the white background of a product shot is picture, the black bars of a letterboxed copy
    are not. A bar ends at a hard edge, where most of the next line differs from its colour; a natural
    background ends where the subject touches it, a few pixels of the line (`HARD_EDGE_SHARE`). Bars
    inside bars (white padding around black ones) are peeled one level at a time. `borders` is
    `outer_borders(rgb)` when already measured (the first round's).
    """
    h, w = rgb.shape[:2]
    left, top, right, bottom = 0, 0, w, h
    for _ in range(3):
        region = rgb[top:bottom, left:right]
        sides = _sides(region)
        cut = dict.fromkeys(sides, 0)
        soft: dict[str, tuple[int, np.ndarray]] = {}
        hard: dict[str, np.ndarray] = {}
        first = borders if borders is not None and (left, top, right, bottom) == (0, 0, w, h) else None
        for name, lines in sides.items():
            if first is not None:
                colour, depth = first[name]
            else:
                colour = _line_colour(lines[0])
                depth = _border_depth(lines, colour, len(lines))
            # The line after the first mixed one: an encoder's ringing blurs the edge by a pixel.
            inner = min(depth + 1, len(lines) - 1)
            if depth and inner > depth:
                far = (np.abs(lines[inner].astype(np.int16) - colour).max(axis=1) > BORDER_TOLERANCE).mean()
                if far >= HARD_EDGE_SHARE:
                    cut[name] = depth
                    hard[name] = colour
                else:
                    soft[name] = (depth, colour)
        # A padded copy's bars come in pairs of one colour: where the bar opposite ends at a hard edge, a
        # margin of its colour is the same bar even where dark picture runs into it without an edge, as deep
        # as the bar opposite (a page's white margin beside a thin window border is not a bar).
        for name, (depth, colour) in soft.items():
            opposite = _OPPOSITE[name]
            if opposite in hard and int(np.abs(colour - hard[opposite]).max()) <= BORDER_TOLERANCE:
                cut[name] = min(depth, cut[opposite] + 1)
        if not any(cut.values()):
            break
        new_left, new_top = left + cut["left"], top + cut["top"]
        new_right, new_bottom = right - cut["right"], bottom - cut["bottom"]
        if new_right - new_left < MIN_CONTENT_SHARE * w or new_bottom - new_top < MIN_CONTENT_SHARE * h:
            break
        left, top, right, bottom = new_left, new_top, new_right, new_bottom
    return left, top, right, bottom


def picture_pixels(rgb: np.ndarray, borders: Borders | None = None) -> int:
    """Pixels of `rgb` (H x W x 3) that are picture: the frame less added bars and filled corners.

    What the keeper compares as resolution: a letterboxed or padded copy gains frame, a tilted copy
    loses corners, and neither gains picture; a product shot keeps its background."""
    left, top, right, bottom = added_bars(rgb, borders)
    inside = rgb[top:bottom, left:right]
    return max(0, (right - left) * (bottom - top) - corner_fill(inside))


def corner_fill(rgb: np.ndarray) -> int:
    """Pixels of the four filled corner triangles a rotate-and-expand leaves, in `rgb`'s pixels; 0 if none.

    All four corners of one colour, each a triangle of it whose hypotenuse is straight (its run along
    each line shrinks linearly to nothing), opposite corners alike: the frame of a straightened or tilted
    copy, whose picture is that much smaller than its frame. A background that merely reaches the corners
    (a subject on white) has ragged edges, and a bar has no tip."""
    h, w = rgb.shape[:2]
    if h < 16 or w < 16:
        return 0
    colour = rgb[0, 0].astype(np.int16)
    corners = (rgb[0, -1], rgb[-1, 0], rgb[-1, -1])
    if any(np.abs(c.astype(np.int16) - colour).max() > BORDER_TOLERANCE for c in corners):
        return 0
    fill = channel_max(np.abs(rgb.astype(np.int16) - colour)) <= BORDER_TOLERANCE
    # An expanded frame rounds up: a line or two of pure fill can run along an edge before the corners.
    rows, cols = fill.all(axis=1), fill.all(axis=0)
    top, bottom = _leading(rows), h - _leading(rows[::-1])
    left, right = _leading(cols), w - _leading(cols[::-1])
    if max(top, h - bottom, left, w - right) > 3 or bottom - top < 16 or right - left < 16:
        return 0
    full = h * w - (bottom - top) * (right - left)
    fill = fill[top:bottom, left:right]
    areas = []
    for corner in (fill, fill[::-1, ::-1], fill[:, ::-1], fill[::-1]):  # TL, BR, TR, BL, each turned to TL
        # Profile the triangle along its longer leg: there it is many lines of a few pixels each.
        profiles = [_profile(corner), _profile(corner.T)]
        seg = max(profiles, key=len)
        if not _straight_tip(seg):
            return 0
        areas.append(float(seg.sum()))
    tl, br, tr, bl = areas
    if abs(tl - br) > 0.35 * max(tl, br) or abs(tr - bl) > 0.35 * max(tr, bl):
        return 0
    area = full + sum(areas)
    return int(area) if area < 0.5 * w * h else 0


def _profile(fill: np.ndarray) -> np.ndarray:
    """Run of fill from the left along each line from the top, up to the first line that has none.

    A line or two without fill between lines with fill of a few pixels or more (an encoder's noise at the
    edge of a thin triangle) does not end it: those lines take the run of the line after them. Runs that
    grow again after shrinking to a quarter or less are the next corner's triangle: the profile ends at
    the smallest run before them."""
    runs = np.where(fill.all(axis=1), fill.shape[1], np.argmin(fill, axis=1)).astype(np.float64)
    n, tip = len(runs), 0
    while tip < n:
        if runs[tip] > 0:
            tip += 1
            continue
        after = next((k for k in range(tip + 1, min(n, tip + 3)) if runs[k] > 0), None)
        # Not at the tip itself, where the next corner's triangle may start along the same edge.
        if after is None or tip == 0 or runs[tip - 1] < 3 or runs[after] > runs[tip - 1] + 1:
            break
        runs[tip:after] = runs[after]
        tip = after
    runs = runs[:tip]
    # Past a triangle's tip the runs grow again when the next corner's triangle starts along the same edge
    # without a line between them: the profile ends at the tip.
    low, high = np.minimum.accumulate(runs), np.maximum.accumulate(runs)
    rising = np.nonzero((runs > low + 2) & (low <= 0.25 * high))[0]
    if len(rising):
        end = int(rising[0])
        runs = runs[: int(np.argmin(runs[:end])) + 1]
    return runs


def _straight_tip(seg: np.ndarray) -> bool:
    """True when run lengths shrink along a straight line to (nearly) nothing: a triangle's hypotenuse.

    Judged on the median deviation: dark picture next to a black fill lengthens a few runs."""
    if len(seg) < 3 or seg[0] < 2 or seg[-1] > 0.25 * seg[0] + 2:
        return False
    y = np.arange(len(seg))
    slope, icpt = np.polyfit(y, seg, 1)
    return bool(slope < 0 and np.median(np.abs(seg - (slope * y + icpt))) <= CORNER_SLACK + 0.03 * seg[0])


def _leading(flags: np.ndarray) -> int:
    """How many leading entries of a boolean array are True."""
    return int(np.argmin(flags)) if not flags.all() else len(flags)


def summed_area(gray: np.ndarray) -> np.ndarray:
    """The summed-area table of an 8-bit grayscale picture ((H + 1) x (W + 1), float64 holding exact integers).

    OpenCV's `integral`: the same exact sums as two numpy cumulative sums, at a fiftieth of their cost."""
    import cv2

    return cv2.integral(np.ascontiguousarray(gray), sdepth=cv2.CV_64F)


def crop_summed_area(integral: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """The summed-area table of the `box` (left, top, right, bottom) of a picture, from the picture's own:
    exact (integer sums), so a crop need not be summed again."""
    left, top, right, bottom = box
    sub = integral[top : bottom + 1, left : right + 1]
    return sub - sub[0:1, :] - sub[:, 0:1] + sub[0, 0]


def contrast(gray: np.ndarray, integral: np.ndarray | None = None) -> float:
    """Grey standard deviation (0..127.5) of the picture reduced to 32 x 32 area-averaged cells.

    What the hashes see: both are made of a 32 x 32 (pHash) or 9 x 8 (dHash) reduction, so a picture
    that is flat at that scale (sky, a night shot, a page of text on white) has hash bits decided by
    noise, and a small hash distance between two of them is weak evidence (`grouping.config.weak_contrast`).
    """
    h, w = gray.shape
    integral = summed_area(gray) if integral is None else integral
    cells = _cell_means(integral, np.array([[0.0, 0.0, w, h]]), 32, 32)
    return round(float(cells.std()), 2)


def transparent_share(img: object) -> float:
    """Share (0..1) of a decoded PIL image's pixels that are at most half opaque; 0.0 without an alpha channel.

    A photo has no see-through pixels (none of the dev set's 934 files, or 750 camera files, has one); a theme's
    icons are cut-outs, a third or more of their frame see-through. It decides which pictures are drawn
    graphics (`grouping.config.weak_transparent`), whose hash neighbours are other drawings of one frame.
    Read on the full decode before alpha is flattened onto white, so a JPEG costs a mode check.
    """
    mode = img.mode  # type: ignore[attr-defined]
    if mode in ("RGBA", "LA"):
        alpha = img.getchannel("A")  # type: ignore[attr-defined]
    elif mode == "PA" or (mode == "P" and "transparency" in img.info):  # type: ignore[attr-defined]
        alpha = img.convert("RGBA").getchannel("A")  # type: ignore[attr-defined]
    else:
        return 0.0
    counts = alpha.histogram()
    return round(sum(counts[:128]) / max(sum(counts), 1), 3)


def rows_to_ints(bits: np.ndarray) -> list[int]:
    """Each row of 64 bits as an unsigned int, most significant first."""
    return [int(v) for v in np.packbits(bits, axis=1).view(">u8").ravel()]


def row_medians(values: np.ndarray) -> np.ndarray:
    """`np.median(values, axis=1, keepdims=True)` of a 2-D float array, bit for bit: the mean of each row's two
    middles (or its middle) found by partitioning, without np.median's general path (a quarter of a ms a
    picture, for the hashes' 64 DCT terms against their median)."""
    n = values.shape[1]
    mid = n // 2
    if n == 0 or np.isnan(values).any():
        return np.median(values, axis=1, keepdims=True)
    if n % 2:
        return np.partition(values, mid, axis=1)[:, mid : mid + 1]
    middles = np.partition(values, (mid - 1, mid), axis=1)
    return (middles[:, mid - 1 : mid] + middles[:, mid : mid + 1]) / 2


def _cell_means(integral: np.ndarray, boxes: np.ndarray, cols: int, rows: int) -> np.ndarray:
    """Mean of each cell of a rows x cols grid over each box (n x 4, pixels), from a summed-area table."""
    steps = np.linspace(0.0, 1.0, cols + 1)
    xs = np.round(boxes[:, 0:1] + (boxes[:, 2:3] - boxes[:, 0:1]) * steps).astype(np.int64)
    steps = np.linspace(0.0, 1.0, rows + 1)
    ys = np.round(boxes[:, 1:2] + (boxes[:, 3:4] - boxes[:, 1:2]) * steps).astype(np.int64)
    # Every cell at least one pixel: a tiny picture still gives a defined (if blocky) reduction.
    xs = np.minimum(np.maximum.accumulate(xs, axis=1), integral.shape[1] - 1)
    ys = np.minimum(np.maximum.accumulate(ys, axis=1), integral.shape[0] - 1)
    # The sums are exact integers: gathered and differenced as 32-bit integers when they fit (the table's last
    # entry is its largest), a sixth of the cost of float64 for a picture's 94 windows of 32 x 32 cells, and
    # divided in float64, so every mean is the same bit for bit. Corners are gathered by flat index (a third of
    # what two broadcast index arrays cost); the double difference is the four-corner formula.
    kind = np.int32 if integral[-1, -1] < 2**31 and integral.size < 2**31 else np.int64
    table = integral.astype(kind).ravel()
    xs, ys = xs.astype(kind), ys.astype(kind)
    corners = table.take((ys * kind(integral.shape[1]))[:, :, None] + xs[:, None, :])
    rows_apart = corners[:, 1:] - corners[:, :-1]  # np.diff's subtractions, without its per-call overhead
    total = rows_apart[:, :, 1:] - rows_apart[:, :, :-1]
    area = (ys[:, 1:] - ys[:, :-1])[:, :, None] * (xs[:, 1:] - xs[:, :-1])[:, None, :]
    np.maximum(area, 1, out=area)
    return total / area


def window_hashes(
    gray: np.ndarray, fractions: Sequence[tuple[float, float, float, float]], integral: np.ndarray | None = None
) -> list[tuple[int, int]]:
    """(dHash, pHash) as unsigned ints of each window of a grayscale picture (H x W array).

    ImageHash's recipe (dHash: 9 x 8 gradient signs; pHash: 8 x 8 low DCT terms of a 32 x 32 reduction
    against their median) on area-averaged cells read from one summed-area table, so ~90 windows cost
    less than one Lanczos resize. Compare window hashes with window hashes (the full frame is a window):
    the resampling differs slightly from ImageHash's.
    """
    from scipy.fft import dct

    h, w = gray.shape
    integral = summed_area(gray) if integral is None else integral
    boxes = np.asarray(fractions, dtype=np.float64) * np.array([w, h, w, h], dtype=np.float64)
    small = _cell_means(integral, boxes, 9, 8)
    big = _cell_means(integral, boxes, 32, 32)
    dbits = small[:, :, 1:] > small[:, :, :-1]
    # The second transform only over the 8 lowest rows the hash keeps: each row's transform is computed on its
    # own, so the kept terms are the same bit for bit.
    low = dct(dct(big, axis=1)[:, :8, :], axis=2)[:, :, :8].reshape(len(boxes), 64)
    pbits = low > row_medians(low)
    dints = rows_to_ints(dbits.reshape(len(boxes), -1))
    return list(zip(dints, rows_to_ints(pbits), strict=True))
