"""What grouping says about each member: the crop box and tilt verification found, a hash match's turn."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from fakes import record
from PIL import Image

from photodedup.client.grouping import FileRecord, GroupingConfig, Tier, find_groups
from photodedup.client.grouping.evidence import Evidence, invert_affine
from photodedup.client.hashing import hash_file
from photodedup.client.index import Index
from photodedup.client.scan import grouping_config
from photodedup.client.verify import GeometricVerifier, Verdict
from photodedup.settings import Settings

from scenes import crop, scene


def indexed(tmp_path: Path, files: list[Path]) -> list[FileRecord]:
    """The files hashed as a scan hashes them, read back as grouping reads them."""
    with Index(tmp_path / "index.sqlite3") as index:
        scan = index.start_scan([str(tmp_path)], None, {})
        index.put_hashes([hash_file(str(f), os.path.getsize(f), os.stat(f).st_mtime_ns, 10**8) for f in files], scan)
        return list(index.records([str(tmp_path)], None))


def member(groups: list, path: Path):  # type: ignore[no-untyped-def]
    (group,) = groups
    return group, next(m for m in group.members if m.record.path == str(path))


def test_a_verified_crop_carries_where_it_lies_in_the_keeper(tmp_path: Path) -> None:
    img = scene(40, (720, 540))
    img.save(tmp_path / "original.jpg", quality=92)
    crop(img, (0.12, 0.08, 0.9, 0.86)).save(tmp_path / "crop.jpg", quality=88)
    groups = find_groups(
        indexed(tmp_path, [tmp_path / "original.jpg", tmp_path / "crop.jpg"]),
        grouping_config(Settings()),
        verifier=GeometricVerifier(),
    )
    group, m = member(groups, tmp_path / "crop.jpg")
    assert group.keep.path == str(tmp_path / "original.jpg") and m.tier is Tier.NEAR
    ev = m.evidence
    assert ev is not None and ev.verified and not ev.strict and ev.aligned_by == "features"
    assert ev.against == group.keep.path and ev.is_crop
    assert ev.box == pytest.approx((0.12 * 720, 0.08 * 540, 0.9 * 720, 0.86 * 540), abs=8)
    assert abs(ev.angle) < 0.5 and ev.scale == pytest.approx(1.0, abs=0.02)  # type: ignore[arg-type]
    assert ev.inliers >= 12 and ev.coverage >= 0.45 and 0 <= ev.bad_cells <= 0.12
    text = ev.describe()
    assert "crop of the keeper: x 12–90 %, y 8–86 %" in text and "inliers" in text, text
    assert ev.hash_bits is not None and ev.as_dict()["crop"] is True


def test_a_tilted_copy_carries_its_angle(tmp_path: Path) -> None:
    img = scene(41, (720, 540))
    img.save(tmp_path / "original.jpg", quality=92)
    img.rotate(3, resample=Image.Resampling.BICUBIC, expand=True).save(tmp_path / "tilted.jpg", quality=88)
    groups = find_groups(
        indexed(tmp_path, [tmp_path / "original.jpg", tmp_path / "tilted.jpg"]),
        grouping_config(Settings()),
        verifier=GeometricVerifier(),
    )
    _, m = member(groups, tmp_path / "tilted.jpg")
    assert m.evidence is not None and m.evidence.verified
    assert m.evidence.angle == pytest.approx(3.0, abs=0.5)  # PIL turns counter-clockwise
    assert "tilted 3.0° counter-clockwise" in m.evidence.describe()


def test_a_pixel_turned_copy_says_its_turn_and_hash_distance(tmp_path: Path) -> None:
    img = scene(42, (720, 540))
    img.save(tmp_path / "original.jpg", quality=92)
    img.transpose(Image.Transpose.ROTATE_90).save(tmp_path / "turned.jpg", quality=92)  # 90° counter-clockwise
    groups = find_groups(indexed(tmp_path, [tmp_path / "original.jpg", tmp_path / "turned.jpg"]), GroupingConfig())
    group, m = member(groups, tmp_path / "turned.jpg")
    assert group.keep.path == str(tmp_path / "original.jpg") and m.tier is Tier.NEAR
    ev = m.evidence
    assert ev is not None and not ev.verified
    assert ev.turned == 90 and ev.hash_bits is not None and ev.hash_bits == m.distance <= 10
    assert f"hash distance {ev.hash_bits} bits, turned 90° counter-clockwise" in ev.describe()


def test_evidence_is_measured_from_the_member_to_the_keeper_whichever_way_it_was_verified() -> None:
    """The verifier is asked keeper-first; the box is still where the member lies in the keeper."""
    keep = record("/a.jpg", width=1000, height=800, dhash=0, phash=0, windows=((0, 0), (1, 0)))
    crop_rec = record("/b.jpg", width=400, height=200, dhash=-1, phash=-1, windows=((1, 0),))
    # the keeper's pixels at half size, 100 px left and 200 px up, are the crop's
    keeper_to_crop = (0.5, 0.0, -100.0, 0.0, 0.5, -200.0)
    asked = []

    def verifier(a: FileRecord, b: FileRecord) -> Verdict:
        asked.append((a.path, b.path))
        return Verdict(True, 50, 0.9, 0.01, "", keeper_to_crop, False, "features")

    (group,) = find_groups(
        [keep, crop_rec], GroupingConfig(near_threshold=10, candidate_threshold=12), verifier=verifier
    )
    assert asked == [("/a.jpg", "/b.jpg")] and group.keep is keep
    ev = group.members[1].evidence
    assert ev is not None and ev.transform == pytest.approx(invert_affine(keeper_to_crop))
    assert ev.box == (200, 400, 1000, 800) and ev.keeper_box == (0, 0, 1000, 800) and ev.is_crop
    assert ev.scale == pytest.approx(2.0) and ev.angle == pytest.approx(0.0)
    assert ev.describe().startswith("crop of the keeper: x 20–100 %, y 50–100 % (200,400–1000,800 px)")
    # A verifier that answers only yes or no leaves no verification evidence, and nothing breaks.
    (plain,) = find_groups(
        [keep, crop_rec], GroupingConfig(near_threshold=10, candidate_threshold=12), verifier=lambda a, b: True
    )
    assert plain.members[1].evidence is not None and not plain.members[1].evidence.verified


def test_the_keeper_and_exact_copies_carry_no_evidence() -> None:
    a, b = record("/a.jpg", md5="same"), record("/b.jpg", md5="same")
    (group,) = find_groups([a, b], GroupingConfig())
    assert [m.evidence for m in group.members] == [None, None]
    assert Evidence("/a.jpg").describe() == ""


def test_a_chosen_keeper_turns_the_evidence_round() -> None:
    """Keep the crop instead (review): the original's evidence is now against the crop, seen from its side."""
    from photodedup.client.decisions import with_keeper

    keep = record("/a.jpg", width=1000, height=800, dhash=0, phash=0, windows=((0, 0), (1, 0)))
    crop_rec = record("/b.jpg", width=400, height=200, dhash=-1, phash=-1, windows=((1, 0),))
    verdict = Verdict(True, 50, 0.9, 0.01, "", (0.5, 0.0, -100.0, 0.0, 0.5, -200.0), False, "features")
    cfg = GroupingConfig(near_threshold=10, candidate_threshold=12)
    (group,) = find_groups([keep, crop_rec], cfg, verifier=lambda a, b: verdict)
    turned = with_keeper(group, crop_rec)
    assert turned.keep is crop_rec and turned.members[0].evidence is None
    ev = turned.members[1].evidence
    assert ev is not None and ev.against == "/b.jpg" and ev.verified and ev.inliers == 50
    assert ev.box == (0, 0, 400, 200) and not ev.is_crop and ev.scale == pytest.approx(0.5)
    assert ev.describe().startswith("covers the whole keeper, scale ×0.50")


def test_the_json_report_carries_the_evidence() -> None:
    import json

    from photodedup.client.report import to_dict

    keep = record("/a.jpg", width=1000, height=800, dhash=0, phash=0, windows=((0, 0), (1, 0)))
    crop_rec = record("/b.jpg", width=400, height=200, dhash=-1, phash=-1, windows=((1, 0),))
    verdict = Verdict(True, 50, 0.9, 0.01, "", (0.5, 0.0, -100.0, 0.0, 0.5, -200.0), False, "features")
    groups = find_groups(
        [keep, crop_rec], GroupingConfig(near_threshold=10, candidate_threshold=12), verifier=lambda a, b: verdict
    )
    keeper, member_file = json.loads(json.dumps(to_dict(groups, {})))["groups"][0]["files"]
    assert "evidence" not in keeper
    ev = member_file["evidence"]
    assert ev["box"] == [200, 400, 1000, 800] and ev["crop"] is True and ev["inliers"] == 50 and ev["scale"] == 2.0
    assert ev["summary"].startswith("crop of the keeper")
