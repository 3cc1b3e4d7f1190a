"""The strict check for weak pictures on made pictures: copies of icons and skies accepted; plus and minus,
recoloured and turned icons, other glyphs of one theme and other skies rejected."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from photodedup.client.hashing import hash_file
from photodedup.client.verify import GeometricVerifier

from scenes import glyph, icon, sky


def save(img: Image.Image, path: Path, **kw: object) -> str:
    img.save(path, **kw)
    return str(path)


def test_strict_check_accepts_copies_of_weak_pictures(tmp_path: Path) -> None:
    """Copies of an icon (resized, re-encoded) and of a flat sky (re-encoded) pass the check for weak pictures."""
    v = GeometricVerifier()
    arrow = save(icon("arrow"), tmp_path / "arrow.png")
    bigger = save(icon("arrow").resize((96, 96), Image.Resampling.LANCZOS), tmp_path / "arrow96.png")
    flat = icon("arrow").convert("RGBA")
    white = Image.new("RGBA", flat.size, (255, 255, 255, 255))
    as_jpeg = save(Image.alpha_composite(white, flat).convert("RGB"), tmp_path / "arrow.jpg", quality=85)
    sky_png = save(sky(0.4), tmp_path / "sky.png")
    sky_jpg = save(sky(0.4), tmp_path / "sky.jpg", quality=80)
    for a, b in ((arrow, bigger), (arrow, as_jpeg), (sky_png, sky_jpg)):
        verdict = v.verdict(a, None, b, None, strict=True)
        assert verdict.same, (a, b, verdict)


def test_strict_check_rejects_different_weak_pictures(tmp_path: Path) -> None:
    """Plus and minus, a recoloured icon, an arrow and its turn, two skies: each pair is two pictures."""
    v = GeometricVerifier()
    plus, minus = save(icon("plus"), tmp_path / "plus.png"), save(icon("minus"), tmp_path / "minus.png")
    arrow = save(icon("arrow"), tmp_path / "arrow.png")
    turned = save(icon("arrow").rotate(90), tmp_path / "turned.png")
    red = icon("minus")
    red.paste((200, 40, 40, 255), mask=red.split()[3].point(lambda a: 255 if a else 0).convert("1"))
    red.paste(icon("minus"), mask=Image.eval(icon("minus").split()[0], lambda v: 255 if v > 250 else 0))
    recoloured = save(red, tmp_path / "red_minus.png")
    skies = save(sky(0.45), tmp_path / "sky1.jpg", quality=90), save(sky(0.6), tmp_path / "sky2.jpg", quality=90)
    for a, b in ((plus, minus), (minus, recoloured), (arrow, turned), skies):
        verdict = v.verdict(a, None, b, None, strict=True)
        assert not verdict.same, (a, b, verdict)


GLYPH_COPIES = {
    "16 px and 64 px renders": (("battery-20", 16, "png"), ("battery-20", 64, "png")),
    "24 px and 48 px renders": (("chevron-left", 24, "png"), ("chevron-left", 48, "png")),
    "32 px and 64 px renders": (("signal", 32, "png"), ("signal", 64, "png")),
    "16 px and 32 px renders of the dim one": (("signal-dim", 16, "png"), ("signal-dim", 32, "png")),
    "flattened to a JPEG": (("battery-60", 48, "png"), ("battery-60", 48, "jpg")),
    "resized to 40 px and re-encoded": (("chevron-right", 64, "png"), ("chevron-right", 40, "jpg")),
}


def content_of(path: str) -> tuple[int, int, int, int] | None:
    """The content box the scanner stores for a file (a glyph's transparent margin trimmed)."""
    st = Path(path).stat()
    return hash_file(path, st.st_size, st.st_mtime_ns, 10**8).content


def save_glyph(kind: str, size: int, fmt: str, folder: Path, **style: object) -> str:
    img = glyph(kind, size, **style)  # type: ignore[arg-type]
    name = f"{kind}{size}{'-'.join(str(v) for v in style.values())}"
    if fmt == "jpg":
        white = Image.new("RGBA", img.size, (255, 255, 255, 255))
        return save(Image.alpha_composite(white, img).convert("RGB"), folder / f"{name}.jpg", quality=85)
    return save(img, folder / f"{name}.png")


@pytest.mark.xfail(
    strict=True,
    reason="not solved: a glyph rendered at two sizes differs in its anti-aliased fringe, a pixel that is a tenth of "
    "a 16 px glyph, and the cells disagree; refining the content-box alignment sub-pixel (ECC) did not help "
    "(docs/BENCHMARKS.md, system folder)",
)
@pytest.mark.parametrize("pair", GLYPH_COPIES.values(), ids=GLYPH_COPIES.keys())
def test_strict_check_accepts_one_glyph_at_other_sizes(pair, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A theme's thin-stroke glyph rendered at another size, or flattened and re-encoded, is a copy."""
    a, b = (save_glyph(*side, tmp_path) for side in pair)
    verdict = GeometricVerifier().verdict(a, content_of(a), b, content_of(b), strict=True)
    assert verdict.same, verdict


GLYPH_PAIRS = {
    "a chevron and its mirror": ("chevron-left", "chevron-right"),
    "two battery levels": ("battery-20", "battery-60"),
    "a glyph and its dimmed state": ("signal", "signal-dim"),
    "a blank picture and a glyph": ("blank", "battery-20"),
}


@pytest.mark.parametrize("kinds", GLYPH_PAIRS.values(), ids=GLYPH_PAIRS.keys())
@pytest.mark.parametrize("sizes", [(16, 16), (24, 48), (48, 48), (32, 96)], ids=lambda s: f"{s[0]}-{s[1]}px")
def test_strict_check_rejects_different_thin_glyphs(kinds, sizes, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Thin glyphs of one theme on a transparent ground differ in a few strokes or in the grey of their ink;
    compared by cells that are mostly background they agreed (and a flat picture agreed with anything)."""
    a = save_glyph(kinds[0], sizes[0], "png", tmp_path)
    b = save_glyph(kinds[1], sizes[1], "png", tmp_path)
    verdict = GeometricVerifier().verdict(a, content_of(a), b, content_of(b), strict=True)
    assert not verdict.same, verdict


ICON_VARIANTS = {
    "a black and a grey bubble": (("bubble", {}), ("bubble", {"grey": 150})),
    "a green and a yellow bubble": (("bubble", {"colour": (80, 170, 60)}), ("bubble", {"colour": (230, 200, 40)})),
    "a thin and a bold plus": (("plus", {}), ("plus-bold", {})),
}


@pytest.mark.parametrize("variants", ICON_VARIANTS.values(), ids=ICON_VARIANTS.keys())
@pytest.mark.parametrize("sizes", [(16, 16), (24, 24), (32, 32), (24, 16)], ids=lambda s: f"{s[0]}-{s[1]}px")
def test_strict_check_rejects_icons_in_another_tone_or_hue(variants, sizes, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A theme's status variants of one shape (a grey "idle" and a black "available" bubble, a green and a
    yellow arrow, a thin and a bold plus) agree once tone is matched away; at icon size tone and hue count.
    The grey bubble at 16 and 32 px is what only the colour-region rule rejects; the rest guard it."""
    (kind_a, style_a), (kind_b, style_b) = variants
    a = save_glyph(kind_a, sizes[0], "png", tmp_path, **style_a)
    b = save_glyph(kind_b, sizes[1], "png", tmp_path, **style_b)
    verdict = GeometricVerifier().verdict(a, content_of(a), b, content_of(b), strict=True)
    assert not verdict.same, verdict


@pytest.mark.parametrize("kind", ["bubble", "plus-bold"])
def test_strict_check_accepts_an_icon_and_its_flattened_copy(kind: str, tmp_path: Path) -> None:
    """The colour-region rule leaves copies alone: one icon flattened onto white (as a JPEG it is the open
    gap marked in `test_strict_check_accepts_one_glyph_at_other_sizes`)."""
    a = save_glyph(kind, 24, "png", tmp_path)
    img = glyph(kind, 24)
    white = Image.alpha_composite(Image.new("RGBA", img.size, (255, 255, 255, 255)), img).convert("RGB")
    b = save(white, tmp_path / "flat.png")
    verdict = GeometricVerifier().verdict(a, content_of(a), b, content_of(b), strict=True)
    assert verdict.same, verdict


@pytest.mark.parametrize("n", [1, 7, 2000])
def test_histogram_matching_ranks_ties_as_their_average(n: int) -> None:
    """The strict check's tone matching, without scipy.stats: the same as its average ranks would give."""
    from scipy.stats import rankdata

    from photodedup.client.strict import _match_histogram

    rng = np.random.default_rng(n)
    values, reference = rng.integers(0, 12, n).astype(np.float32), rng.normal(size=2 * n)
    quantile = (rankdata(values, method="average") - 1) / max(n - 1, 1)
    expected = np.interp(quantile, np.linspace(0.0, 1.0, reference.size), np.sort(reference))
    assert np.allclose(_match_histogram(values, reference), expected)


def test_strict_frame_is_built_on_first_use_and_decides_as_one_built_up_front(tmp_path: Path) -> None:
    """`Picture.lab` is decoded only when the strict check asks for it: the verdicts on copies and on other
    pictures (icons at their own size, skies reduced to the strict side) equal those with the frame built at
    load time, as it was before."""
    import dataclasses

    from photodedup.client.strict import compare_strict
    from photodedup.client.verify import load_lab, load_picture

    arrow = save(icon("arrow"), tmp_path / "arrow.png")
    bigger = save(icon("arrow").resize((96, 96), Image.Resampling.LANCZOS), tmp_path / "arrow96.png")
    plus, minus = save(icon("plus"), tmp_path / "plus.png"), save(icon("minus"), tmp_path / "minus.png")
    sky_png, sky_jpg = save(sky(0.4), tmp_path / "sky.png"), save(sky(0.4), tmp_path / "sky.jpg", quality=80)
    other_sky = save(sky(0.6), tmp_path / "sky2.jpg", quality=90)
    verdicts = []
    for a, b in ((arrow, bigger), (plus, minus), (sky_png, sky_jpg), (sky_jpg, other_sky)):
        lazy = [load_picture(p) for p in (a, b)]
        assert all(p._lab is None for p in lazy)
        eager = [dataclasses.replace(load_picture(p), source=None, _lab=load_lab(p)) for p in (a, b)]
        verdicts.append(compare_strict(*lazy))
        assert verdicts[-1] == compare_strict(*eager)
        assert all(np.array_equal(x._lab, y._lab) for x, y in zip(lazy, eager, strict=True) if x._lab is not None)
    assert [v.same for v in verdicts] == [True, False, True, False]


def test_a_picture_loaded_for_the_strict_check_gets_its_frame_from_the_same_decode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A strict verdict on pictures not yet cached decodes each once, the strict frame made from that decode
    (equal to the one a second decode gives); a picture cached for features still gets it on first use."""
    import photodedup.client.verify as verify

    arrow = save(icon("arrow"), tmp_path / "arrow.png")
    bigger = save(icon("arrow").resize((96, 96), Image.Resampling.LANCZOS), tmp_path / "arrow96.png")
    sky_jpg = save(sky(0.4), tmp_path / "sky.jpg", quality=80)
    decodes: list[str] = []
    real = verify._decode

    def counted(path, content, side):  # type: ignore[no-untyped-def]
        decodes.append(path)
        return real(path, content, side)

    monkeypatch.setattr(verify, "_decode", counted)
    v = GeometricVerifier()
    assert v.verdict(arrow, None, bigger, None, strict=True).same
    assert sorted(decodes) == sorted([arrow, bigger])
    pic = v.picture(arrow, None)
    assert pic is not None and np.array_equal(pic._lab, verify.load_lab(arrow))
    decodes.clear()
    v.picture(sky_jpg, None)  # features only
    assert v.picture(sky_jpg, None, lab=True)._lab is None  # cached: its frame comes on first use
    v.verdict(sky_jpg, None, arrow, None, strict=True)
    assert decodes == [sky_jpg, sky_jpg]


def test_a_file_gone_before_its_strict_frame_is_not_verified(tmp_path: Path) -> None:
    """A file decoded for features and gone when the strict frame is wanted: 'cannot decode', not an error."""
    v = GeometricVerifier()
    arrow = save(icon("arrow"), tmp_path / "arrow.png")
    copy = tmp_path / "arrow96.png"
    save(icon("arrow").resize((96, 96), Image.Resampling.LANCZOS), copy)
    v.picture(str(copy), None)  # features cached, no strict frame yet
    copy.unlink()
    verdict = v.verdict(arrow, None, str(copy), None, strict=True)
    assert not verdict.same and verdict.reason == "cannot decode", verdict


_EMBLEMS = {  # 6 x 6 one-pixel strokes, as a theme draws them at 16 px
    "note": ["..####", "..#..#", "..#..#", "..#..#", "###.##", "##..##"],
    "house": ["..##..", ".#..#.", "#....#", ".#..#.", ".#..#.", ".####."],
}


def _folder(emblem: str, size: int = 16) -> Image.Image:
    """A small folder icon in a theme's blues with an emblem of one-pixel strokes in the folder's darker
    blue, drawn at 16 px and scaled (nearest) to `size`, as the system folder's place icons look."""
    img = Image.new("RGBA", (16, 16), (0, 0, 0, 0))
    px = img.load()
    for y in range(2, 15):
        for x in range(1, 15):
            px[x, y] = (40, 110, 210, 255) if y < 5 and x < 8 else (150, 190, 235, 255)
    for r, row in enumerate(_EMBLEMS[emblem]):
        for c, ch in enumerate(row):
            if ch == "#":
                px[5 + c, 7 + r] = (60, 120, 215, 255)
    return img.resize((size, size), Image.Resampling.NEAREST)


@pytest.mark.parametrize("size", [16, 24])
def test_strict_check_tells_small_emblems_apart_and_keeps_copies(size: int, tmp_path: Path) -> None:
    """At 16-24 px an emblem's strokes are single pixels that cells average away: a folder with a note and
    one with a house are two icons, while a flattened and an enlarged copy of one are still copies (a JPEG
    of an icon is the open gap marked in `test_strict_check_accepts_one_glyph_at_other_sizes`)."""
    note = save_glyph_image(_folder("note", size), tmp_path / "note.png")
    house = save_glyph_image(_folder("house", size), tmp_path / "house.png")
    white = Image.alpha_composite(Image.new("RGBA", (size, size), (255, 255, 255, 255)), _folder("note", size))
    flat = save(white.convert("RGB"), tmp_path / "flat.png")
    bigger = save(_folder("note", size).resize((2 * size, 2 * size), Image.Resampling.NEAREST), tmp_path / "big.png")
    v = GeometricVerifier()
    different = v.verdict(note, content_of(note), house, content_of(house), strict=True)
    assert not different.same, different
    if size == 16:  # there the cells agree: only the pixels tell the emblems apart
        assert different.reason == "pixels differ", different
    for copy in (flat, bigger):
        verdict = v.verdict(note, content_of(note), copy, content_of(copy), strict=True)
        assert verdict.same, (copy, verdict)


def save_glyph_image(img: Image.Image, path: Path) -> str:
    img.save(path)
    return str(path)


def _strict_bad_cells_by_loop(frame) -> tuple[float, bool]:  # type: ignore[no-untyped-def]
    """The strict check's cells as first written, a Python loop over them: the reference for `_strict_bad_cells`."""
    import cv2

    from photodedup.client.strict import (
        STRICT_ALWAYS_COLOUR_BELOW,
        STRICT_GREY_LEVELS,
        STRICT_HUE_DEGREES,
        STRICT_SIDE,
        _lightness_differences,
    )

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


@pytest.mark.parametrize("side", [8, 16, 48, 256])
@pytest.mark.parametrize("kind", ["recoloured", "grey copy", "noisy copy", "part covered"])
def test_strict_cells_from_summed_areas_equal_the_loop_over_cells(side: int, kind: str) -> None:
    """Made Lab frames whose cells disagree in lightness, hue or colour presence, at the grid sizes the strict
    check uses (4 cells a side for tiny icons up to 16)."""
    from photodedup.client.strict import StrictFrame, _strict_bad_cells

    rng = np.random.default_rng(side)
    h, w = max(4, side * 3 // 4), side
    lab = np.empty((h, w, 3), np.uint8)
    lab[..., 0] = np.clip(rng.normal(120, 60, (h, w)), 0, 255)
    yy, xx = np.mgrid[0:h, 0:w]
    lab[..., 1] = np.clip(128 + 50 * np.sin(xx / max(2, w / 5)), 0, 255)  # hue bands: colour counts
    lab[..., 2] = np.clip(128 + 40 * np.cos(yy / max(2, h / 4)), 0, 255)
    other = lab.copy()
    inside = np.ones((h, w), bool)
    if kind == "recoloured":
        other[: h // 2, ..., 1] = 255 - other[: h // 2, ..., 1]
    elif kind == "grey copy":
        other[..., 1:] = 128
    elif kind == "noisy copy":
        other[..., 0] = np.clip(other[..., 0] + rng.normal(0, 20, (h, w)), 0, 255)
    else:
        inside[:, : w // 3] = False
        other[h // 3 :, w // 2 :, 0] = 255 - other[h // 3 :, w // 2 :, 0]
    frame = StrictFrame(lab, other, inside, side)
    assert _strict_bad_cells(frame) == _strict_bad_cells_by_loop(frame)
