"""End to end: pictures that are not camera photos (text pages, icons, flat skies) are not grouped unless
they are copies; a photo's pixel turn still is. Scanned offline with the defaults, as a user would."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from photodedup.client.grouping import GroupingConfig, is_weak
from photodedup.client.index import Index
from photodedup.client.scan import grouping_config, load_groups, run_scan
from photodedup.settings import Settings

from scenes import glyph, icon, page, scene, sky


def build(root: Path) -> None:
    root.mkdir()
    page(1).save(root / "page1.png")
    page(2).save(root / "page2.png")
    page(1).resize((405, 900), Image.Resampling.LANCZOS).save(root / "page1_copy.jpg", quality=85)
    page(1).crop((0, 36, 540, 1200)).save(root / "page1_no_status_bar.png")  # a phone's status bar cropped off
    icon("arrow").save(root / "arrow_up.png")
    icon("arrow").rotate(90).save(root / "arrow_left.png")
    icon("plus").save(root / "plus.png")
    icon("minus").save(root / "minus.png")
    photo = scene(5, (720, 540))
    photo.save(root / "photo.jpg", quality=92)
    photo.rotate(90, expand=True).save(root / "photo_turned.jpg", quality=90)
    sky(0.45).save(root / "sky1.jpg", quality=90)
    sky(0.6).save(root / "sky2.jpg", quality=90)


def test_only_copies_group_among_pages_icons_skies_and_a_turned_photo(tmp_path: Path) -> None:
    build(tmp_path / "lib")
    settings = Settings()
    with Index(tmp_path / "index.sqlite3") as index:
        summary = run_scan([str(tmp_path / "lib")], settings, index, mode="none", progress=False)
        config = grouping_config(settings)
        groups = load_groups(index, summary.roots, summary.model_id, config)
        weak = {Path(r.path).name for r in index.records(summary.roots, None) if is_weak(r, config)}
    found = sorted(sorted(Path(m.record.path).name for m in g.members) for g in groups)
    assert found == [["page1.png", "page1_copy.jpg", "page1_no_status_bar.png"], ["photo.jpg", "photo_turned.jpg"]]
    # The rule that decided it: icons, pages and skies are weak pictures, the photo is not.
    assert {"arrow_up.png", "plus.png", "page1.png", "sky1.jpg"} <= weak and "photo.jpg" not in weak


def test_without_the_weak_picture_rule_hashes_alone_group_different_pictures(tmp_path: Path) -> None:
    """The made set is hard enough: with every picture trusted as a photo, some of them group."""
    build(tmp_path / "lib")
    settings = Settings()
    with Index(tmp_path / "index.sqlite3") as index:
        summary = run_scan([str(tmp_path / "lib")], settings, index, mode="none", progress=False)
        records = list(index.records(summary.roots, None))
    from photodedup.client.grouping import find_groups
    from photodedup.client.verify import GeometricVerifier

    trusting = GroupingConfig(weak_side=0, weak_contrast=0.0, weak_transparent=2.0, turn_asymmetry=0, turn_margin=-128)
    groups = find_groups(records, trusting, verifier=GeometricVerifier())
    names = [{Path(m.record.path).name for m in g.members} for g in groups]
    right = ({"page1.png", "page1_copy.jpg", "page1_no_status_bar.png"}, {"photo.jpg", "photo_turned.jpg"})
    wrong = [n for n in names if n not in right]
    assert wrong, names


def build_glyphs(root: Path) -> None:
    """A theme's 64 and 96 px glyphs: within the near threshold of one another, yet different pictures."""
    root.mkdir()
    for kind in ("battery-20", "battery-60", "plus", "plus-bold"):
        glyph(kind, 96).save(root / f"{kind}.png")
    flat = glyph("battery-60", 96)
    flat = Image.alpha_composite(Image.new("RGBA", flat.size, (255, 255, 255, 255)), flat).convert("RGB")
    flat.save(root / "battery-60-flattened.png")
    glyph("plus-bold", 64).save(root / "plus-bold-64.png")


def test_glyphs_below_128_px_join_only_through_the_strict_check(tmp_path: Path) -> None:
    """96 px battery levels (18 bits apart) and a thin and a bold plus are two pictures each: a pair of pictures
    both under `icon_side` (128) px is icon-sized, so the strict check decides; without that, hashes alone did."""
    build_glyphs(tmp_path / "lib")
    with Index(tmp_path / "index.sqlite3") as index:
        summary = run_scan([str(tmp_path / "lib")], Settings(), index, mode="none", progress=False)
        records = list(index.records(summary.roots, None))
    from photodedup.client.grouping import find_groups
    from photodedup.client.verify import GeometricVerifier

    def names(config: GroupingConfig) -> list[set[str]]:
        groups = find_groups(records, config, verifier=GeometricVerifier())
        return [{Path(m.record.path).name for m in g.members} for g in groups]

    found = names(GroupingConfig(icon_side=128))
    assert {"battery-60.png", "battery-60-flattened.png"} in found
    for group in found:
        assert not {"battery-20.png", "battery-60.png"} <= group and not {"plus.png", "plus-bold.png"} <= group
    old = names(GroupingConfig(icon_side=0, weak_transparent=2.0))  # nor drawn: glyphs are cut-outs
    assert any({"battery-20.png", "battery-60.png"} <= g or {"plus.png", "plus-bold.png"} <= g for g in old), old
