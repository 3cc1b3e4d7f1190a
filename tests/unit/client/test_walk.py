"""The walk finds photos by content, skips hidden/system folders and links, and never loops."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from photodedup.client.walk import Walker, sniff_format

from helpers import encode, photo


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [
        ("JPEG", "JPEG"),
        ("PNG", "PNG"),
        ("GIF", "GIF"),
        ("WEBP", "WEBP"),
        ("TIFF", "TIFF"),
        ("BMP", "BMP"),
        ("HEIF", "HEIF"),
    ],
)
def test_sniff_every_format(fmt: str, expected: str) -> None:
    from photodedup.imaging import register_heif

    register_heif()
    assert sniff_format(encode(photo(1, (64, 48)), fmt)[:32]) == expected


def test_sniff_rejects_text_and_empty() -> None:
    assert sniff_format(b"hello world, not an image") is None
    assert sniff_format(b"") is None


def _touch_jpeg(path: Path, seed: int = 1) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode(photo(seed, (64, 48))))
    return path


def test_walk_skips_hidden_system_and_non_photos(tmp_path: Path) -> None:
    keep = [
        _touch_jpeg(tmp_path / "a.jpg"),
        _touch_jpeg(tmp_path / "sub" / "deeper" / "b.JPG"),
        _touch_jpeg(tmp_path / "no_extension"),  # found by its content
        _touch_jpeg(tmp_path / "photo.dat"),
    ]
    (tmp_path / "notes.txt").write_text("not a photo")
    (tmp_path / "data.bin").write_bytes(b"\x00\x01\x02" * 50)
    _touch_jpeg(tmp_path / ".hidden" / "c.jpg")
    _touch_jpeg(tmp_path / "@eaDir" / "thumb.jpg")
    _touch_jpeg(tmp_path / ".dotfile.jpg")
    walker = Walker([tmp_path])
    found = sorted(f.path for f in walker.walk())
    assert found == sorted(str(p) for p in keep)
    assert walker.stats.skipped_folders == 2
    assert walker.stats.not_photos == 2

    everything = sorted(f.path for f in Walker([tmp_path], include_hidden=True).walk())
    assert str(tmp_path / ".hidden" / "c.jpg") in everything
    assert str(tmp_path / "@eaDir" / "thumb.jpg") in everything


def test_a_photo_extension_is_a_candidate_even_when_content_is_not(tmp_path: Path) -> None:
    # The hasher, which reads the bytes anyway, reports it as an error: listed, not silently dropped.
    (tmp_path / "fake.jpg").write_text("text")
    (tmp_path / "empty.png").write_bytes(b"")
    assert sorted(Path(f.path).name for f in Walker([tmp_path]).walk()) == ["empty.png", "fake.jpg"]


def test_symlink_loops_and_links_are_visited_once(tmp_path: Path) -> None:
    root = tmp_path / "root"
    _touch_jpeg(root / "a" / "one.jpg")
    os.symlink(root, root / "a" / "loop")  # a link back up the tree
    os.symlink(root / "a", root / "alias")  # the same folder under a second name
    os.symlink(root / "a" / "one.jpg", root / "link.jpg")  # a file link: same bytes, not a duplicate
    walker = Walker([root])
    found = [f.path for f in walker.walk()]
    assert found == [str(root / "a" / "one.jpg")]
    assert walker.stats.skipped_links >= 2


def test_hard_links_are_reported_once(tmp_path: Path) -> None:
    first = _touch_jpeg(tmp_path / "a.jpg")
    os.link(first, tmp_path / "b.jpg")
    walker = Walker([tmp_path])
    assert [Path(f.path).name for f in walker.walk()] == ["a.jpg"]
    assert walker.stats.hardlink_repeats == 1


def test_overlapping_roots_and_a_file_root(tmp_path: Path) -> None:
    a = _touch_jpeg(tmp_path / "x" / "a.jpg")
    found = [f.path for f in Walker([tmp_path, tmp_path / "x", a]).walk()]
    assert found == [str(a)]
    f = next(Walker([a]).walk())
    assert f.size == a.stat().st_size and f.mtime_ns == a.stat().st_mtime_ns


def test_missing_root_is_reported_not_raised(tmp_path: Path) -> None:
    walker = Walker([tmp_path / "nope"])
    assert list(walker.walk()) == []
    assert walker.stats.unreadable and walker.stats.unreadable[0][0] == str(tmp_path / "nope")


@pytest.mark.parametrize(
    "name", ["a.jpg", "A.JPG", ".jpg", "..jpg", ".x.jpg", "noext", "a.b.c.PNG", ".", "..", "a.", "...a.jpg", "x..jpg"]
)
def test_the_extension_is_what_splitext_says(name: str) -> None:
    from photodedup.client.walk import _extension

    assert _extension(name) == os.path.splitext(name)[1].lower()
