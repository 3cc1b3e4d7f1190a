"""Drawn graphics (cut-outs: a theme's 512 px place icons, one folder with different emblems) are weak pictures:
their hash neighbours join only through the strict check, which tells emblems apart and keeps true copies."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import numpy as np
import pytest
from fakes import record
from PIL import Image, ImageDraw

from photodedup.client.content import transparent_share
from photodedup.client.grouping import GroupingConfig, find_groups
from photodedup.client.grouping.hamming import hamming_bits
from photodedup.client.grouping.near import is_drawn, is_weak
from photodedup.client.hashing import hash_file
from photodedup.client.index import Index
from photodedup.client.scan import run_scan
from photodedup.client.verify import GeometricVerifier
from photodedup.settings import Settings

from scenes import scene

BLUE = (60, 130, 220, 255)


def _emblem(draw: ImageDraw.ImageDraw, kind: str, k: float) -> None:
    """An emblem of thick strokes in the folder's darker blue, as a theme draws place icons."""
    w = round(10 * k)
    if kind == "note":
        draw.ellipse([180 * k, 300 * k, 250 * k, 370 * k], outline=BLUE, width=w)
        draw.ellipse([270 * k, 300 * k, 340 * k, 370 * k], outline=BLUE, width=w)
        draw.line([243 * k, 335 * k, 243 * k, 220 * k, 333 * k, 220 * k, 333 * k, 335 * k], fill=BLUE, width=w)
    elif kind == "house":
        draw.line([180 * k, 290 * k, 260 * k, 215 * k, 340 * k, 290 * k], fill=BLUE, width=w)
        draw.rectangle([200 * k, 285 * k, 320 * k, 370 * k], outline=BLUE, width=w)
    else:  # "page", or "dashed": the same page with its left and bottom edges drawn as dashes
        draw.rectangle([200 * k, 215 * k, 320 * k, 375 * k], outline=BLUE, width=round(16 * k))
        if kind == "dashed":
            clear = (175, 205, 240, 255)
            for y in range(300, 360, 32):
                draw.rectangle([196 * k, y * k, 220 * k, (y + 16) * k], fill=clear)
            for x in range(240, 300, 32):
                draw.rectangle([x * k, 355 * k, (x + 16) * k, 380 * k], fill=clear)


def folder(emblem: str, size: int = 512) -> Image.Image:
    """A place icon: a rounded folder with a shaded front and a darker tab on a transparent frame."""
    k = size / 512
    img = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    ImageDraw.Draw(img).rounded_rectangle([48 * k, 48 * k, 464 * k, 420 * k], radius=30 * k, fill=(55, 125, 215, 255))
    front = Image.new("L", (size, size), 0)
    ImageDraw.Draw(front).rounded_rectangle([48 * k, 130 * k, 464 * k, 462 * k], radius=24 * k, fill=255)
    t = np.add.outer(np.arange(size), np.arange(size)) / (2 * size)  # shaded corner to corner, as drawn icons are
    shade = np.stack([160 + 40 * t, 195 + 30 * t, np.full_like(t, 240), np.full_like(t, 255)], axis=-1)
    img.paste(Image.fromarray(shade.round().astype(np.uint8), "RGBA"), mask=front)
    _emblem(ImageDraw.Draw(img), emblem, k)
    return img


def content_of(path: str) -> tuple[int, int, int, int] | None:
    """The content box the scanner stores for a file (the transparent margin trimmed)."""
    st = Path(path).stat()
    return hash_file(path, st.st_size, st.st_mtime_ns, 10**8).content


def save(img: Image.Image, path: Path, **kw: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **kw)


def on_white(img: Image.Image) -> Image.Image:
    return Image.alpha_composite(Image.new("RGBA", img.size, (255, 255, 255, 255)), img).convert("RGB")


def test_a_cut_out_graphic_is_drawn_and_a_photo_is_not() -> None:
    """The measure: a photo (JPEG or PNG, RGB or with an all-opaque alpha channel) has no see-through pixel; a
    place icon has a third of its frame see-through, a palette icon with a transparent colour too."""
    photo = scene(3, (640, 480))
    assert transparent_share(photo) == 0.0
    assert transparent_share(photo.convert("RGBA")) == 0.0
    for fmt in ("JPEG", "PNG"):
        buf = io.BytesIO()
        photo.save(buf, format=fmt)
        with Image.open(buf) as img:
            img.load()
            assert transparent_share(img) == 0.0
    icon = folder("note")
    assert 0.2 < transparent_share(icon) < 0.5
    assert transparent_share(icon.convert("P")) == 0.0  # a palette without a transparent colour
    palette = icon.convert("RGB").quantize(16)
    palette.info["transparency"] = palette.getpixel((0, 0))
    assert transparent_share(palette) == pytest.approx(transparent_share(icon), abs=0.05)
    assert transparent_share(on_white(icon)) == 0.0  # flattened, it no longer says so: its pairs still do


def test_hashing_stores_the_measure_and_grouping_reads_it(tmp_path: Path) -> None:
    root = tmp_path / "lib"
    save(folder("note"), root / "note.png")
    save(scene(4, (640, 480)), root / "photo.jpg", quality=90)
    save(on_white(folder("note")), root / "note.jpg", quality=85)
    config = GroupingConfig()
    with Index(tmp_path / "index.sqlite3") as index:
        run_scan([str(root)], Settings(), index, mode="none", progress=False)
        records = {Path(r.path).name: r for r in index.records([str(root)], None)}
    assert records["note.png"].transparent is not None and records["note.png"].transparent > 0.2
    assert records["photo.jpg"].transparent == 0.0 and records["note.jpg"].transparent == 0.0
    assert is_drawn(records["note.png"], config) and is_weak(records["note.png"], config)
    assert not is_weak(records["photo.jpg"], config)
    assert not is_drawn(dataclasses.replace(records["note.png"], transparent=None), config)  # unknown: not drawn


def build(root: Path) -> None:
    """Place icons of one theme with different emblems, and true copies of one of them."""
    for emblem in ("note", "house", "page", "dashed"):
        save(folder(emblem), root / f"folder-{emblem}.png")
    save(on_white(folder("note")).resize((300, 300), Image.Resampling.LANCZOS), root / "copy-note.jpg", quality=85)
    save(folder("page").resize((256, 256), Image.Resampling.LANCZOS), root / "copy-page-256.png")


def test_place_icons_with_other_emblems_do_not_group_and_their_copies_do(tmp_path: Path) -> None:
    build(tmp_path / "lib")
    config = GroupingConfig()
    with Index(tmp_path / "index.sqlite3") as index:
        run_scan([str(tmp_path / "lib")], Settings(), index, mode="none", progress=False)
        records = list(index.records([str(tmp_path / "lib")], None))
    by_name = {Path(r.path).name: r for r in records}
    # The set is hard: the different emblems are hash neighbours, so hashes alone would group them.
    key = {n: (r.dhash, r.phash) for n, r in by_name.items()}
    assert hamming_bits(key["folder-page.png"], key["folder-dashed.png"]) <= config.near_threshold
    groups = find_groups(records, config, verifier=GeometricVerifier())
    found = sorted(sorted(Path(m.record.path).name for m in g.members) for g in groups)
    assert found == [["copy-note.jpg", "folder-note.png"], ["copy-page-256.png", "folder-page.png"]]
    # Without the drawn-graphic rule, icons with different emblems join on hashes alone.
    trusting = dataclasses.replace(config, weak_transparent=2.0)
    groups = find_groups(records, trusting, verifier=GeometricVerifier())
    emblems = [{Path(m.record.path).name for m in g.members if m.record.path.endswith(".png")} for g in groups]
    assert any(len({n.split("-")[1].split(".")[0] for n in e}) > 1 for e in emblems), emblems


def test_the_strict_check_tells_emblems_of_one_frame_apart_by_their_shapes(tmp_path: Path) -> None:
    """A page and the same page with dashed edges differ in a few small solid shapes, which cells of mostly one
    flat colour average away; a re-encoded, resized copy differs only in thin fringes."""
    save(folder("page"), tmp_path / "page.png")
    save(folder("dashed"), tmp_path / "dashed.png")
    save(on_white(folder("page")).resize((384, 384), Image.Resampling.LANCZOS), tmp_path / "copy.jpg", quality=70)
    v = GeometricVerifier()
    page, dashed, copy = (str(tmp_path / n) for n in ("page.png", "dashed.png", "copy.jpg"))
    different = v.verdict(page, content_of(page), dashed, content_of(dashed), strict=True)
    assert not different.same and different.reason == "shapes differ", different
    same = v.verdict(page, content_of(page), copy, content_of(copy), strict=True)
    assert same.same, same


def test_a_photo_pair_is_not_affected_by_the_rule() -> None:
    """Photos have no see-through pixels: a hash pair of two photos still joins without any check."""
    a = record("/p/a.jpg", dhash=0xFF00FF, phash=7, transparent=0.0, contrast=40.0)
    b = record("/p/b.jpg", dhash=0xFF00FF, phash=6, transparent=0.0, contrast=41.0)
    cut = [
        dataclasses.replace(r, path=r.path.replace(".jpg", ".png"), md5=r.md5 + "x", transparent=0.4) for r in (a, b)
    ]
    groups = find_groups([a, b], GroupingConfig(), verifier=None)
    assert [sorted(m.record.path for m in g.members) for g in groups] == [["/p/a.jpg", "/p/b.jpg"]]
    assert find_groups(cut, GroupingConfig(), verifier=None) == []  # drawn: no verifier, no join


def test_a_drawn_graphic_with_a_part_added_is_another_picture(tmp_path: Path) -> None:
    """A theme's headset is its headphones with a microphone added: a drawn graphic's copies are resized, not
    cropped, so one that covers only part of the other once aligned is another picture."""
    plain = folder("note")
    added = plain.copy()
    draw = ImageDraw.Draw(added)  # a cable leaving the folder's corner: the frame grows right and down
    draw.line([464, 300, 495, 300, 495, 495, 300, 495], fill=(55, 125, 215, 255), width=14)
    save(plain, tmp_path / "plain.png")
    save(added, tmp_path / "added.png")
    a, b = str(tmp_path / "plain.png"), str(tmp_path / "added.png")
    verdict = GeometricVerifier().verdict(a, content_of(a), b, content_of(b), strict=True)
    assert not verdict.same and verdict.reason == "one covers part of the other", verdict
