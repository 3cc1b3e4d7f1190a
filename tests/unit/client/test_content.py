"""Border trimming and sub-window hashes (`client.content`)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from photodedup.client.content import (
    WINDOWS,
    _profile,
    _straight_tip,
    content_box,
    corner_fill,
    picture_pixels,
    window_hashes,
)
from photodedup.client.grouping import hamming_bits

from helpers import photo
from scenes import scene, studio

COLOURS = {"black": (0, 0, 0), "white": (255, 255, 255), "grey": (128, 128, 128), "teal": (20, 140, 150)}


def bordered(
    img: Image.Image, colour: tuple[int, int, int], left: int, top: int, right: int, bottom: int
) -> np.ndarray:
    out = Image.new("RGB", (img.width + left + right, img.height + top + bottom), colour)
    out.paste(img, (left, top))
    return np.asarray(out)


@pytest.mark.parametrize("colour", COLOURS.values(), ids=COLOURS.keys())
@pytest.mark.parametrize(
    "sides",
    [(20, 0, 0, 0), (0, 15, 0, 0), (0, 0, 25, 0), (0, 0, 0, 30), (0, 18, 0, 18), (22, 0, 22, 0), (12, 9, 14, 7)],
    ids=["left", "top", "right", "bottom", "letterbox", "pillarbox", "all four"],
)
def test_uniform_borders_are_trimmed(colour: tuple[int, int, int], sides: tuple[int, int, int, int]) -> None:
    img = scene(1, (300, 200))
    rgb = bordered(img, colour, *sides)
    left, top, right, bottom = sides
    got = content_box(rgb)
    want = (left, top, left + 300, top + 200)
    assert all(abs(g - w) <= 1 for g, w in zip(got, want, strict=True)), (got, want)


def test_bars_inside_bars_are_all_trimmed() -> None:
    inner = bordered(scene(1, (300, 200)), (0, 0, 0), 30, 0, 30, 0)
    rgb = bordered(Image.fromarray(inner), (255, 255, 255), 20, 20, 20, 20)
    got = content_box(rgb)
    assert all(abs(g - w) <= 1 for g, w in zip(got, (50, 20, 350, 220), strict=True)), got


def test_no_border_keeps_the_frame() -> None:
    rgb = np.asarray(scene(2, (300, 200)))
    assert content_box(rgb) == (0, 0, 300, 200)


def test_flat_picture_is_content_not_border() -> None:
    sky = np.full((200, 300, 3), (90, 140, 220), dtype=np.uint8)
    assert content_box(sky) == (0, 0, 300, 200)


def test_added_bars_are_not_picture() -> None:
    for colour in COLOURS.values():
        rgb = bordered(scene(1, (300, 200)), colour, 30, 12, 30, 12)
        assert abs(picture_pixels(rgb) - 300 * 200) <= 300 + 200, colour


def test_a_product_shots_background_is_picture() -> None:
    """Trimmed for matching (the margins are uniform), but every pixel of the frame counts as held."""
    rgb = np.asarray(studio(3, (300, 200)))
    assert content_box(rgb) != (0, 0, 300, 200)
    assert corner_fill(rgb) == 0
    assert picture_pixels(rgb) == 300 * 200


def test_bars_around_a_product_shot_are_peeled_not_its_background() -> None:
    rgb = bordered(studio(3, (300, 200)), (0, 0, 0), 40, 0, 40, 0)
    assert abs(picture_pixels(rgb) - 300 * 200) <= 2 * 200


@pytest.mark.parametrize("angle", [2.0, -4.0])
def test_a_tilted_copy_holds_its_pictures_pixels_not_its_frames(angle: float) -> None:
    tilted = scene(1, (300, 200)).rotate(angle, resample=Image.Resampling.BICUBIC, expand=True)
    got = picture_pixels(np.asarray(tilted))
    assert got < 0.97 * tilted.width * tilted.height
    assert abs(got - 300 * 200) <= 0.04 * 300 * 200, got


def test_full_frame_window_is_imagehash_recipe_on_cells() -> None:
    """The full-frame window agrees with ImageHash's dHash/pHash to within resampling noise."""
    import imagehash

    gray = scene(3, (320, 240)).convert("L")
    (d, p), *_ = window_hashes(np.asarray(gray), WINDOWS[:1])

    def as_int(h: imagehash.ImageHash) -> int:
        return int("".join("1" if b else "0" for b in h.hash.flatten()), 2)

    assert hamming_bits((d, p), (as_int(imagehash.dhash(gray)), as_int(imagehash.phash(gray)))) <= 12


@pytest.mark.parametrize(
    "box", [(0.1, 0.1, 0.9, 0.9), (0.0, 0.0, 0.8, 0.8), (0.2, 0.0, 1.0, 1.0), (0.05, 0.15, 0.85, 0.95)]
)
def test_a_crop_meets_a_window_of_its_original(box: tuple[float, float, float, float]) -> None:
    original = photo(4, (480, 360))
    w, h = original.size
    crop = original.crop((int(box[0] * w), int(box[1] * h), int(box[2] * w), int(box[3] * h)))
    windows = window_hashes(np.asarray(original.convert("L")), WINDOWS)
    whole = window_hashes(np.asarray(crop.convert("L")), WINDOWS[:1])[0]
    best = min(hamming_bits(whole, win) for win in windows)
    assert best <= 20, best
    assert hamming_bits(whole, windows[0]) > best  # the window, not the whole frame, is what matches


def test_windows_of_different_pictures_stay_apart() -> None:
    a = window_hashes(np.asarray(photo(5, (480, 360)).convert("L")), WINDOWS)
    b = window_hashes(np.asarray(photo(6, (480, 360)).convert("L")), WINDOWS[:1])[0]
    assert min(hamming_bits(b, win) for win in a) > 30


def test_a_frame_edge_lost_in_dark_picture_is_still_frame() -> None:
    """Black bars on four sides, the bottom one running into a dark foreground without an edge: the bar
    opposite ends at a hard edge, so the black margin there is the same bar, as deep as that one."""
    img = np.asarray(scene(1, (300, 200))).copy()
    ramp = np.linspace(1.0, 0.0, 40)[:, None, None] ** 2  # the foreground fades to black at the bottom
    img[160:] = (img[160:] * ramp).astype(np.uint8)
    rgb = bordered(Image.fromarray(img), (0, 0, 0), 30, 25, 30, 25)
    got = picture_pixels(rgb)
    assert 300 * 200 - 2 * 300 <= got <= 300 * 200 + 300, got
    assert picture_pixels(img) == 300 * 200  # without bars, nothing is frame
    # Dark picture running into the right bar is cut only as deep as the left bar, not as far as it is dark.
    dark = np.asarray(scene(1, (300, 200))).copy()
    dark[:, 260:] = (dark[:, 260:] * np.linspace(1.0, 0.0, 40)[None, :, None] ** 2).astype(np.uint8)
    pillarbox = bordered(Image.fromarray(dark), (0, 0, 0), 10, 0, 10, 0)
    assert picture_pixels(pillarbox) >= 300 * 200 - 2 * 200


def test_a_noisy_line_inside_a_thin_corner_does_not_end_its_profile() -> None:
    """A thin filled triangle (a few degrees of tilt): runs shrink from 14 px to nothing over 160 lines. A
    line where noise broke the fill at the edge does not end the profile; the tip does, even where the next
    corner's triangle starts along the same edge right after it."""
    runs = np.round(np.linspace(14, 0, 160)).astype(int)
    lines = 200
    fill = np.zeros((lines, 40), dtype=bool)
    for y, r in enumerate(runs):
        fill[y, :r] = True
    for y in range(165, lines):  # the next corner's triangle, growing again
        fill[y, : (y - 164) // 10 + 1] = True
    clean = _profile(fill)
    assert 140 <= len(clean) <= 160 and _straight_tip(clean)
    fill[90, 0] = False  # noise: run 0 on one line
    noisy = _profile(fill)
    assert len(noisy) == len(clean) and _straight_tip(noisy)


def test_a_corner_profile_ends_at_the_tip_where_the_next_triangle_starts_without_a_gap() -> None:
    """Rotate-and-expand by a few degrees: along one edge, one corner's wide triangle shrinks to its tip and the
    next corner's thin triangle grows from there, with no line free of fill between them."""
    runs = np.concatenate([np.round(np.linspace(170, 1, 15)), np.round(np.linspace(1, 26, 300))]).astype(int)
    fill = np.zeros((len(runs), 200), dtype=bool)
    for y, r in enumerate(runs):
        fill[y, :r] = True
    profile = _profile(fill)
    assert 14 <= len(profile) <= 16 and profile[0] == 170 and _straight_tip(profile)


@pytest.mark.parametrize("size", [(320, 240), (7, 5), (1, 1), (3200, 3000)])
def test_cell_means_are_the_exact_mean_of_each_cell(size: tuple[int, int]) -> None:
    """The summed-area table and the cell means read from it equal the plain sums of each cell's pixels,
    bit for bit: the hashes must not move when the arithmetic is rearranged for speed (a picture smaller
    than the grid gets one-pixel cells, some repeated; a large bright one sums past 32-bit integers)."""
    from photodedup.client.content import _cell_means, summed_area

    low = 200 if size[0] > 1000 else 0  # 3200 x 3000 pixels of 200-255 sum to about 2.2e9
    gray = np.random.default_rng(size[0]).integers(low, 256, (size[1], size[0])).astype(np.uint8)
    integral = summed_area(gray)
    assert np.array_equal(integral[1:, 1:], gray.astype(np.int64).cumsum(0).cumsum(1)) and not integral[0].any()
    boxes = np.asarray(WINDOWS[:7]) * np.array([size[0], size[1]] * 2, dtype=np.float64)
    for cols, rows in ((9, 8), (32, 32)):
        got = _cell_means(integral, boxes, cols, rows)
        for b, box in enumerate(boxes):
            xs = np.round(box[0] + (box[2] - box[0]) * np.linspace(0.0, 1.0, cols + 1)).astype(int)
            ys = np.round(box[1] + (box[3] - box[1]) * np.linspace(0.0, 1.0, rows + 1)).astype(int)
            xs = np.minimum(np.maximum.accumulate(xs), size[0])
            ys = np.minimum(np.maximum.accumulate(ys), size[1])
            for r in range(rows):
                for c in range(cols):
                    cell = gray[ys[r] : ys[r + 1], xs[c] : xs[c + 1]]
                    assert got[b, r, c] == int(cell.sum()) / max(cell.size, 1)


@pytest.mark.parametrize("length", [1, 2, 3, 320, 321])
def test_a_border_lines_colour_is_numpys_median_bit_for_bit(length: int) -> None:
    """The border tests' line colour (partitioned for speed) is `np.median(line, axis=0)` truncated to int16, for
    odd and even lines and for a column read across rows (strided), so trimming does not move."""
    from photodedup.client.content import _line_colour

    rgb = np.random.default_rng(length).integers(0, 256, (length, length, 3)).astype(np.uint8)
    for line in (rgb[0], rgb[:, -1], rgb[::-1][0].astype(np.int16)):
        assert np.array_equal(_line_colour(line), np.median(line, axis=0).astype(np.int16))


@pytest.mark.parametrize("columns", [1, 2, 63, 64])
def test_the_hashes_row_medians_are_numpys_bit_for_bit(columns: int) -> None:
    """pHash compares each DCT term with its row's median: the partitioned median must equal np.median exactly
    (ties and negative values included), or hash bits would flip."""
    from photodedup.client.content import row_medians

    rng = np.random.default_rng(columns)
    for values in (rng.normal(0, 1e4, (94, columns)), rng.integers(-3, 3, (5, columns)).astype(np.float64)):
        assert np.array_equal(row_medians(values), np.median(values, axis=1, keepdims=True))
