"""End to end: a small made library of edited copies, scanned offline with the defaults, grouped right.

Each original gets the edits people make (crop, one-side crop, letterbox, small rotation, overlay, grey,
lossless conversion); a different shot of one scene and unrelated pictures must stay out."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from photodedup.client.grouping import Tier, keeper_key
from photodedup.client.index import Index
from photodedup.client.scan import grouping_config, load_groups, run_scan
from photodedup.settings import Settings

from scenes import crop, letterbox, overlay, scene, studio

EDITS = {
    "crop.jpg": lambda im: crop(im, (0.12, 0.08, 0.9, 0.86)),
    "side.jpg": lambda im: crop(im, (0.0, 0.0, 0.75, 1.0)),
    "boxed.jpg": lambda im: letterbox(im, 0.12, (255, 255, 255)),
    "tilted.jpg": lambda im: im.rotate(3, resample=Image.Resampling.BICUBIC, expand=True),
    "logo.jpg": overlay,
    "grey.jpg": lambda im: im.convert("L").convert("RGB"),
}


def build(root: Path) -> dict[str, list[Path]]:
    truth: dict[str, list[Path]] = {}
    for k in range(2):
        folder = root / f"set{k}"
        folder.mkdir(parents=True)
        img = scene(40 + k, (720, 540))
        original = folder / "original.jpg"
        exif = Image.Exif()
        exif[0x010F] = "Canon"
        img.save(original, quality=92, exif=exif.tobytes())
        files = [original]
        for name, edit in EDITS.items():
            edit(img).save(folder / name, quality=88)
            files.append(folder / name)
        # A lossless conversion of the camera file: same pixels, no EXIF, JPEG block traces.
        Image.open(io.BytesIO(original.read_bytes())).save(folder / "converted.png")
        files.append(folder / "converted.png")
        truth[str(original)] = files
    (root / "others").mkdir()
    for k in range(3):
        scene(60 + k, (720, 540)).save(root / "others" / f"other{k}.jpg", quality=90)
    # Two shots of one scene with the subjects moved: not copies.
    scene(70, (720, 540), movers=5, mover_seed=1).save(root / "others" / "shot1.jpg", quality=90)
    scene(70, (720, 540), movers=5, mover_seed=2).save(root / "others" / "shot2.jpg", quality=90)
    return truth


def test_edited_copies_group_with_their_original_which_is_kept(tmp_path: Path) -> None:
    truth = build(tmp_path / "lib")
    settings = Settings()
    with Index(tmp_path / "index.sqlite3") as index:
        summary = run_scan([str(tmp_path / "lib")], settings, index, mode="none", progress=False)
        groups = load_groups(index, summary.roots, summary.model_id, grouping_config(settings))
    found = {g.keep.path: {m.record.path for m in g.members} for g in groups}
    assert {k: {str(p) for p in v} for k, v in truth.items()} == found
    assert all(g.kind is Tier.NEAR for g in groups)


def test_a_studio_shot_ranks_above_its_tilted_and_letterboxed_copies(tmp_path: Path) -> None:
    """No camera EXIF to go by: the plain background is picture, which the copies do not add to.

    The content box trims the background for matching; counting only it made the original look smaller
    than a tilted copy, whose filled corners stop the trim. The policy now ranks the original first."""
    lib = tmp_path / "lib"
    lib.mkdir()
    img = studio(44, (720, 540))
    img.save(lib / "original.jpg", quality=90)
    img.rotate(3, resample=Image.Resampling.BICUBIC, expand=True).save(lib / "tilted.jpg", quality=90)
    letterbox(img, 0.12, (0, 0, 0)).save(lib / "boxed.jpg", quality=90)
    settings = Settings()
    with Index(tmp_path / "index.sqlite3") as index:
        summary = run_scan([str(lib)], settings, index, mode="none", progress=False)
        records = list(index.records(summary.roots, None))
    config = grouping_config(settings)
    ranked = sorted(records, key=lambda r: keeper_key(r, config))
    assert [Path(r.path).name for r in ranked][0] == "original.jpg"
    by_name = {Path(r.path).name: r for r in records}
    assert by_name["boxed.jpg"].picture_pixels == by_name["original.jpg"].picture_pixels == 720 * 540
    assert abs(by_name["tilted.jpg"].picture_pixels - 720 * 540) <= 0.03 * 720 * 540


def test_without_verification_crops_are_missed(tmp_path: Path) -> None:
    """The loose candidates are only joined through the verifier: the hash tier alone misses crops."""
    build(tmp_path / "lib")
    settings = Settings(verify=False)
    with Index(tmp_path / "index.sqlite3") as index:
        summary = run_scan([str(tmp_path / "lib")], settings, index, mode="none", progress=False)
        groups = load_groups(index, summary.roots, summary.model_id, grouping_config(settings))
    grouped = {Path(m.record.path).name for g in groups for m in g.members}
    assert "side.jpg" not in grouped


def test_grouping_an_unchanged_library_again_verifies_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Verdicts are stored in the index: a rescan of unchanged files reads them instead of verifying."""
    from photodedup.client.verify import GeometricVerifier

    truth = build(tmp_path / "lib")
    real = GeometricVerifier.verdict
    calls: list[str] = []

    def counted(self: GeometricVerifier, *args: object) -> object:
        calls.append(str(args[0]))
        return real(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(GeometricVerifier, "verdict", counted)
    settings = Settings()
    found, verified = [], []
    with Index(tmp_path / "index.sqlite3") as index:
        for k in range(2):
            summary = run_scan([str(tmp_path / "lib")], settings, index, mode="none", progress=False)
            if k:  # an unrelated decision: the groups are computed again, the verdicts are reused
                index.add_ignore([str(tmp_path / "lib" / "others" / "other0.jpg"), str(tmp_path / "lib" / "x.jpg")])
            groups = load_groups(index, summary.roots, summary.model_id, grouping_config(settings))
            found.append({g.keep.path: {m.record.path for m in g.members} for g in groups})
            verified.append(len(calls))
            calls.clear()
    assert found[0] == found[1] == {k: {str(p) for p in v} for k, v in truth.items()}
    assert verified[0] > 0 and verified[1] == 0, verified


def test_the_copy_the_others_were_made_from_is_kept_when_no_rule_tells_them_apart(tmp_path: Path) -> None:
    """Same size, no camera EXIF, qualities in one step: the policy alone would keep the oldest file, a copy.
    The re-compression test finds the JPEG the turned and re-saved copies were made from."""
    import os

    lib = tmp_path / "lib"
    lib.mkdir()
    scene(45, (720, 540)).save(lib / "original.jpg", quality=90)
    decoded = Image.open(lib / "original.jpg").convert("RGB")
    decoded.transpose(Image.Transpose.ROTATE_90).save(lib / "turned.jpg", quality=90)
    decoded.save(lib / "resaved.jpg", quality=88)
    for age, name in enumerate(("original.jpg", "turned.jpg", "resaved.jpg")):
        os.utime(lib / name, (1_600_000_000 - age * 86_400,) * 2)  # the copies look older
    settings = Settings()
    with Index(tmp_path / "index.sqlite3") as index:
        summary = run_scan([str(lib)], settings, index, mode="none", progress=False)
        (group,) = load_groups(index, summary.roots, summary.model_id, grouping_config(settings))
    assert {Path(m.record.path).name for m in group.members} == {"original.jpg", "turned.jpg", "resaved.jpg"}
    assert Path(group.keep.path).name == "original.jpg"
    assert group.members[0].record is group.keep and all(m.distance >= 0 for m in group.members)


def test_the_grouping_phase_counts_pairs_verified_and_keeper_tests_as_it_goes(tmp_path: Path) -> None:
    """After hashing, a large library's verification and keeper tests can take minutes: with progress on, each
    is counted as it goes (pairs verified, lineage tests answered), as hashing is."""
    from rich.console import Console

    lib = tmp_path / "lib"
    lib.mkdir()
    img = scene(41, (720, 540))
    img.save(lib / "original.jpg", quality=92)
    crop(img, (0.12, 0.08, 0.9, 0.86)).save(lib / "crop.jpg", quality=88)  # found by verification
    Image.open(lib / "original.jpg").save(lib / "resaved.jpg", quality=70)  # a keeper test: made from the original
    settings = Settings()
    shown = io.StringIO()
    with Index(tmp_path / "index.sqlite3") as index:
        summary = run_scan([str(lib)], settings, index, mode="none", progress=False)
        config = grouping_config(settings)
        groups = load_groups(index, summary.roots, summary.model_id, config, console=Console(file=shown), progress=True)
    assert [{Path(m.record.path).name for m in g.members} for g in groups] == [
        {"original.jpg", "crop.jpg", "resaved.jpg"}
    ]
    lines = shown.getvalue().splitlines()
    verifying = next(line for line in lines if line.startswith("verifying"))
    keeper = next(line for line in lines if line.startswith("keeper"))
    assert "/s pairs" in verifying and int(verifying.split("/?")[0].split()[-1]) >= 1
    assert "/s tests" in keeper and int(keeper.split("/?")[0].split()[-1]) >= 1
