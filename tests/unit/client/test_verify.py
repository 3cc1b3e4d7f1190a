"""Geometric verification on made pictures: copies accepted, other pictures and other shots rejected (the
strict check for weak pictures: test_strict.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from photodedup.client.verify import CANNOT_DECODE, GeometricVerifier

from scenes import crop, letterbox, overlay, scene


def save(img: Image.Image, path: Path, **kw: object) -> str:
    img.save(path, **kw)
    return str(path)


@pytest.fixture(scope="module")
def original(tmp_path_factory: pytest.TempPathFactory) -> tuple[Image.Image, str]:
    img = scene(11, (800, 600))
    return img, save(img, tmp_path_factory.mktemp("orig") / "original.jpg", quality=92)


EDITS = {
    "crop 80 % off-centre": lambda im: crop(im, (0.15, 0.05, 0.95, 0.85)),
    "crop from one side": lambda im: crop(im, (0.0, 0.0, 0.72, 1.0)),
    "rotated 4 degrees": lambda im: im.rotate(4, resample=Image.Resampling.BICUBIC, expand=True),
    "rotated 2 degrees in frame": lambda im: im.rotate(-2.5, resample=Image.Resampling.BICUBIC),
    "overlay": overlay,
    "letterboxed": letterbox,
    "half size": lambda im: im.resize((im.width // 2, im.height // 2), Image.Resampling.LANCZOS),
    "turned 90": lambda im: im.transpose(Image.Transpose.ROTATE_90),
    "grey": lambda im: im.convert("L").convert("RGB"),
}


@pytest.mark.parametrize("edit", EDITS.values(), ids=EDITS.keys())
def test_edited_copies_are_the_same_picture(edit, original, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    img, path = original
    copy = save(edit(img), tmp_path / "copy.jpg", quality=85)
    verdict = GeometricVerifier().verdict(path, None, copy, None)
    assert verdict.same, verdict


def test_a_different_picture_is_rejected(original, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _, path = original
    other = save(scene(12, (800, 600)), tmp_path / "other.jpg", quality=92)
    verdict = GeometricVerifier().verdict(path, None, other, None)
    assert not verdict.same, verdict


def test_a_different_shot_of_one_scene_is_rejected(tmp_path: Path) -> None:
    """Same background, the subjects moved and the camera shifted a little: a burst, not a copy."""
    first = scene(13, (800, 600), movers=5, mover_seed=1)
    second = crop(scene(13, (840, 630), movers=5, mover_seed=2), (0.03, 0.02, 0.98, 0.97))
    a = save(first, tmp_path / "a.jpg", quality=92)
    b = save(second, tmp_path / "b.jpg", quality=92)
    verdict = GeometricVerifier().verdict(a, None, b, None)
    assert not verdict.same, verdict
    # The same shot, re-encoded, passes: it is the moved subjects that fail the pair above.
    c = save(first, tmp_path / "c.jpg", quality=70)
    assert GeometricVerifier().verdict(a, None, c, None).same


def test_content_box_is_honoured(original, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    img, path = original
    boxed = letterbox(img, 0.15, (255, 255, 255))
    copy = save(boxed, tmp_path / "boxed.png")
    pad = int(img.height * 0.15)
    verdict = GeometricVerifier().verdict(path, None, copy, (0, pad, img.width, pad + img.height))
    assert verdict.same and verdict.coverage > 0.8, verdict


def test_a_missing_file_is_not_verified(original, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _, path = original
    verdict = GeometricVerifier().verdict(path, None, str(tmp_path / "gone.jpg"), None)
    assert not verdict.same and verdict.reason == "cannot decode"


def test_ranks_order_by_value_with_ties_at_their_average_rank() -> None:
    """The agreement check's ranks (a lookup table over the 256 levels): each pixel's 0-based position in sorted
    order, ties averaged, over n - 1; a monotonic tone change leaves them as they are."""
    import numpy as np

    from photodedup.client.verify import _ranks

    values = np.random.default_rng(3).integers(0, 128, 5000).astype(np.uint8)
    ranks = _ranks(values)
    order = np.argsort(values, kind="stable")
    position = np.empty(values.size)
    position[order] = np.arange(values.size)
    expected = np.array([position[values == v].mean() for v in values]) / (values.size - 1)
    assert np.allclose(ranks, expected, atol=1e-6)
    assert ranks.min() >= 0.0 and ranks.max() <= 1.0 and ranks.dtype == np.float32
    assert np.array_equal(_ranks(2 * values + 1), ranks)  # brighter, more contrast: the same ranks
    assert _ranks(np.full(7, 9, np.uint8)).tolist() == [0.5] * 7  # one flat level: all at the middle


def test_only_the_scanners_decoders_are_opened(original, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A library file in a format outside the allow-list (a TGA under a .jpg name) is never decoded."""
    img, path = original
    tga = tmp_path / "copy.jpg"
    img.save(tga, format="TGA")
    verdict = GeometricVerifier().verdict(path, None, str(tga), None)
    assert not verdict.same and verdict.reason == CANNOT_DECODE


def test_ratio_test_matches_are_brute_force_knn_matches(original, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """`_matches` reads the two nearest descriptors from one batch distance call: the same pairs, in the
    same order, as OpenCV's brute-force knnMatch with Lowe's ratio test, for a copy and for another picture."""
    import cv2
    import numpy as np

    from photodedup.client.verify import _matches, load_picture

    img, path = original
    a = load_picture(path)
    for other in (crop(img, (0.1, 0.1, 0.9, 0.85)), scene(12, (800, 600))):
        b = load_picture(save(other, tmp_path / "b.jpg", quality=85))
        ia, ib = [], []
        for pair in cv2.BFMatcher(cv2.NORM_HAMMING).knnMatch(a.descriptors, b.descriptors, k=2):
            if len(pair) == 2 and pair[0].distance < 0.8 * pair[1].distance:
                ia.append(pair[0].queryIdx)
                ib.append(pair[0].trainIdx)
        pa, pb = _matches(a, b)
        assert len(ia) > 0 and np.array_equal(pa, a.points[ia]) and np.array_equal(pb, b.points[ib])


def test_photos_are_resampled_in_grey_and_icons_in_colour(tmp_path: Path) -> None:
    """Up to GREY_FIRST_MAX_SCALE of enlargement the picture is made grey, then resampled (cheap); an icon
    enlarged more is resampled in colour first, as before, since its strict verdicts hang on interpolated edges."""
    import cv2
    import numpy as np

    from photodedup.client.verify import GREY_FIRST_MAX_SCALE, VERIFY_SIDE, load_picture

    for size in ((320, 240), (48, 48)):
        img = scene(5, size)
        path = save(img, tmp_path / f"{size[0]}.png")
        scale = VERIFY_SIDE / max(size)
        out = (round(size[0] * scale), round(size[1] * scale))
        if scale <= GREY_FIRST_MAX_SCALE:
            expected = cv2.resize(np.asarray(img.convert("L")), out, interpolation=cv2.INTER_LINEAR)
        else:
            expected = np.asarray(img.resize(out, Image.Resampling.BILINEAR).convert("L"))
        assert np.array_equal(load_picture(path).gray, expected), size


def _bad_cells_by_loop(a, b, transform, grid: int = 12) -> float:  # type: ignore[no-untyped-def]
    """The agreement check as first written, a Python loop over the cells: the reference for `_bad_cells`."""
    import warnings

    import cv2
    import numpy as np

    from photodedup.client.verify import CELL_TOLERANCE, _ranks

    h, w = b.gray.shape
    warped = cv2.warpAffine(a.gray, transform, (w, h), flags=cv2.INTER_AREA)
    mask = cv2.warpAffine(np.full(a.gray.shape, 255, np.uint8), transform, (w, h), flags=cv2.INTER_NEAREST) > 0
    mask = cv2.erode(mask.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    if mask.sum() < 0.1 * h * w:
        return 1.0
    diff = np.zeros((h, w), np.float32)
    diff[mask] = np.abs(
        _ranks(cv2.GaussianBlur(warped, (0, 0), 2.0)[mask]) - _ranks(cv2.GaussianBlur(b.gray, (0, 0), 2.0)[mask])
    )
    ys, xs = np.linspace(0, h, grid + 1).astype(int), np.linspace(0, w, grid + 1).astype(int)
    bad = total = 0
    for r in range(grid):
        for c in range(grid):
            cell = mask[ys[r] : ys[r + 1], xs[c] : xs[c + 1]]
            with warnings.catch_warnings():  # an empty cell: counted, never bad
                warnings.simplefilter("ignore", RuntimeWarning)
                if cell.mean() < 0.5:
                    continue
                total += 1
                bad += float(diff[ys[r] : ys[r + 1], xs[c] : xs[c + 1]][cell].mean()) > CELL_TOLERANCE
    return bad / total if total else 1.0


def _grey_picture(img: Image.Image):  # type: ignore[no-untyped-def]
    import numpy as np

    from photodedup.client.verify import Picture

    return Picture(np.asarray(img.convert("L")), np.zeros((0, 2), np.float32), None, 0.0)


@pytest.mark.parametrize(
    "size, other, transform",
    [
        ((512, 384), 11, (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)),  # the same picture: every cell agrees
        ((512, 384), 12, (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)),  # another picture: most cells disagree
        ((400, 300), 11, (1.2, 0.05, 20.0, -0.05, 1.2, 10.0)),  # a crop laid into its original, tilted
        ((512, 384), 11, (0.5, 0.0, 300.0, 0.0, 0.5, 200.0)),  # a small overlap: edge cells left out
        ((512, 8), 11, (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)),  # a strip: rows of empty cells
    ],
)
def test_cell_agreement_from_summed_areas_equals_the_loop_over_cells(size, other, transform) -> None:  # type: ignore[no-untyped-def]
    import numpy as np

    from photodedup.client.verify import _bad_cells

    a = _grey_picture(overlay(scene(11, size)))
    b = _grey_picture(scene(other, (512, 384) if size[1] > 8 else size))
    m = np.array(transform, np.float64).reshape(2, 3)
    assert _bad_cells(a, b, m) == _bad_cells_by_loop(a, b, m)
    assert _bad_cells(b, a, m) == _bad_cells_by_loop(b, a, m)


def test_the_two_nearest_are_those_opencv_finds() -> None:
    """faiss's popcount search (when installed) and OpenCV's give the same distances, and the same nearest
    row wherever it is nearer than the second (of two equally near rows either may come first: the ratio test
    drops those)."""
    import cv2
    import numpy as np

    from photodedup.client import verify

    if verify._faiss() is None:
        pytest.skip("faiss not installed: OpenCV's search is the only one")
    rng = np.random.default_rng(5)
    a = rng.integers(0, 256, (600, 32), dtype=np.uint8)
    b = rng.integers(0, 256, (500, 32), dtype=np.uint8)
    b[:100] = a[:100]  # exact matches
    b[100:150] = a[100:150] ^ 1  # one bit off
    b[150:160] = b[160:170]  # equally near pairs
    got_d, got_i = verify.two_nearest(a, b)
    want_d, want_i = cv2.batchDistance(a, b, cv2.CV_32S, normType=cv2.NORM_HAMMING, K=2)
    assert np.array_equal(got_d, want_d)
    clear = want_d[:, 0] < want_d[:, 1]
    assert clear.sum() > 500 and np.array_equal(got_i[clear, 0], want_i[clear, 0])


def test_verdicts_do_not_depend_on_the_search(original, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    from photodedup.client import verify

    img, path = original
    copies = [save(edit(img), tmp_path / f"{k}.jpg", quality=85) for k, edit in enumerate(EDITS.values())]
    other = save(scene(12, (800, 600)), tmp_path / "other.jpg", quality=92)
    pictures = [verify.load_picture(p) for p in (path, *copies, other)]
    found = [verify.align(pictures[0], p).verdict for p in pictures[1:]]
    monkeypatch.setattr(verify, "_faiss", lambda: None)
    assert [verify.align(pictures[0], p).verdict for p in pictures[1:]] == found
    assert all(v.same for v in found[:-1]) and not found[-1].same
