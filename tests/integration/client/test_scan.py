"""A scan over real files in a temp folder: every format, EXIF-rotated, broken files, then rescans."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from client_files import BROKEN, save_broken, save_exif_rotated, save_formats

from photodedup.client.index import Index
from photodedup.client.scan import grouping_config, load_groups, run_scan
from photodedup.settings import Settings

from helpers import encode, photo, tiny_settings


@pytest.fixture
def library(tmp_path: Path) -> dict[str, list[Path]]:
    lib = tmp_path / "lib"
    img = photo(11, (480, 360))
    copies = list(save_formats(lib / "formats", img).values())
    (lib / "copies").mkdir()
    copies.append(Path(shutil.copy(copies[0], lib / "copies" / "img-copy.jpg")))
    copies.append(save_exif_rotated(lib / "rotated.jpg", img))
    others = [lib / "other.jpg", lib / "third.png"]
    photo(12, (480, 360)).save(others[0], quality=90)
    photo(13, (480, 360)).save(others[1])
    broken = list(save_broken(lib / "broken", encode(img, "JPEG")).values())
    return {"root": [lib], "copies": copies, "others": others, "broken": broken}


def _scan(settings: Settings, root: Path, db: Path, mode: str = "none") -> tuple[object, list]:
    with Index(db) as index:
        summary = run_scan([str(root)], settings, index, mode=mode, progress=False)  # type: ignore[arg-type]
        groups = load_groups(index, summary.roots, summary.model_id, grouping_config(settings))
    return summary, groups


def test_every_file_ends_up_in_the_right_place(library: dict[str, list[Path]], tmp_path: Path) -> None:
    summary, groups = _scan(Settings(), library["root"][0], tmp_path / "db.sqlite3")
    assert summary.files == len(library["copies"]) + len(library["others"]) + len(library["broken"])
    assert sorted(Path(p).name for p, _ in summary.errors) == sorted(BROKEN)
    assert summary.skipped_reason is not None
    assert len(groups) == 1
    grouped = {m.record.path for m in groups[0].members}
    assert grouped == {str(p) for p in library["copies"]}
    # The lossless formats keep full quality; the keeper is never the GIF or a lossy copy.
    assert groups[0].keep.format in ("PNG", "TIFF", "BMP", "HEIF")


def test_local_embeddings_are_stored_for_every_good_file(
    library: dict[str, list[Path]], tmp_path: Path, model_cache: Path
) -> None:
    summary, _ = _scan(tiny_settings(model_cache), library["root"][0], tmp_path / "db.sqlite3", mode="local")
    good = len(library["copies"]) + len(library["others"])
    assert summary.skipped_reason is None and summary.model_id
    assert summary.embedded == good and summary.embed_failed == 0
    with Index(tmp_path / "db.sqlite3") as index:
        assert index.counts(summary.roots, summary.model_id)["embedded"] == good


def test_rescan_touches_only_new_or_changed_files_and_forgets_deleted(
    library: dict[str, list[Path]], tmp_path: Path
) -> None:
    db = tmp_path / "db.sqlite3"
    root = library["root"][0]
    first, _ = _scan(Settings(), root, db)
    again, _ = _scan(Settings(), root, db)
    assert again.hashed == 0 and again.unchanged == first.files and again.removed == 0

    changed, deleted = library["others"]
    photo(14, (300, 200)).save(changed, quality=80)
    os.utime(changed, ns=(1, 1_000_000_000))  # a different mtime even on coarse clocks
    deleted.unlink()
    photo(15, (200, 100)).save(root / "new.webp")
    third, _ = _scan(Settings(), root, db)
    assert third.hashed == 2 and third.removed == 1 and third.unchanged == first.files - 2
    with Index(db) as index:
        paths = {r.path for r in index.records([str(root)], None)}
    assert str(deleted) not in paths and str(root / "new.webp") in paths


def test_an_interrupted_walk_does_not_forget_files(library: dict[str, list[Path]], tmp_path: Path) -> None:
    db = tmp_path / "db.sqlite3"
    root = library["root"][0]
    first, _ = _scan(Settings(), root, db)
    # Scanning a sub-folder must not drop the rest of the library.
    sub, _ = _scan(Settings(), root / "copies", db)
    assert sub.removed == 0
    with Index(db) as index:
        assert index.counts([str(root)], None)["files"] == first.files


def test_ignore_decisions_hold_on_rescan(library: dict[str, list[Path]], tmp_path: Path) -> None:
    db = tmp_path / "db.sqlite3"
    root = library["root"][0]
    _, groups = _scan(Settings(), root, db)
    keep = groups[0].keep.path
    with Index(db) as index:
        index.add_ignore([keep, str(library["copies"][-1])])
    _, groups = _scan(Settings(), root, db)
    for g in groups:
        paths = {m.record.path for m in g.members}
        assert not {keep, str(library["copies"][-1])} <= paths


def test_scan_counts_add_up_when_files_are_read_again_for_embeddings(
    library: dict[str, list[Path]], tmp_path: Path, model_cache: Path
) -> None:
    db = tmp_path / "db.sqlite3"
    root = library["root"][0]
    first, _ = _scan(Settings(), root, db, mode="none")
    second, _ = _scan(tiny_settings(model_cache), root, db, mode="local")  # same files, now with a model
    assert second.hashed + second.unchanged == second.files == first.files
    assert second.unchanged < second.files


def test_the_model_is_opened_only_for_files_that_need_embeddings(
    library: dict[str, list[Path]], tmp_path: Path, model_cache: Path
) -> None:
    db, root = tmp_path / "db.sqlite3", library["root"][0]
    settings = tiny_settings(model_cache)
    first, _ = _scan(settings, root, db, mode="auto")
    assert first.embedder is not None and first.embedded > 0
    again, _ = _scan(settings, root, db, mode="auto")
    assert again.embedder is None and again.hashed == 0 and again.embedded == 0
    assert again.model_id == first.model_id and again.skipped_reason is None
    photo(16, (300, 200)).save(root / "new.jpg", quality=85)
    third, _ = _scan(settings, root, db, mode="auto")
    assert third.embedder is not None and third.hashed == 1 and third.embedded == 1


def test_a_missing_model_is_known_before_hashing_and_no_thumbnails_are_made(
    library: dict[str, list[Path]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from photodedup.client import hashing as hashing_module

    kinds = []
    real = hashing_module.HashPool

    def spy(*args: object, **kw: object) -> object:
        kinds.append(args[2:4])  # thumb_size, thumb_kind
        return real(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(hashing_module, "HashPool", spy)  # the scan imports it when it has files to hash
    missing = Settings(weights=str(tmp_path / "no-such-weights.bin"))
    summary, _ = _scan(missing, library["root"][0], tmp_path / "db.sqlite3", mode="auto")
    assert summary.skipped_reason and "no-such-weights.bin" in summary.skipped_reason
    assert summary.embedder is None and kinds == [(None, "none")]


def _rescan_imports(root: Path, db: Path, tmp_path: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    """An unchanged rescan by the CLI in a fresh interpreter; prints the heavy packages it imported."""
    code = textwrap.dedent(
        f"""
        import sys
        from photodedup.cli import main
        try:
            main(["--log-level", "WARNING", "scan", {str(root)!r}, "--db", {str(db)!r}, *{list(flags)!r},
                  "--format", "json", "-o", {str(tmp_path / "r.json")!r}])
        except SystemExit as exc:
            assert not exc.code, exc.code
        heavy = ("torch", "open_clip", "faiss", "rich", "numpy", "PIL", "cv2", "asyncio", "grpc", "pydantic")
        print("IMPORTED", sorted({{m.split(".")[0] for m in sys.modules}} & set(heavy)))
        """
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)


def test_an_unchanged_rescan_imports_no_model_code(
    library: dict[str, list[Path]], tmp_path: Path, model_cache: Path
) -> None:
    db, root = tmp_path / "db.sqlite3", library["root"][0]
    first, _ = _scan(tiny_settings(model_cache), root, db, mode="auto")
    assert first.embedded > 0
    flags = ("--model", "photodedup-tiny", "--weights", "random", "--cache-dir", str(model_cache))
    out = _rescan_imports(root, db, tmp_path, *flags)
    assert "IMPORTED ['numpy']" in out.stdout, out.stdout + out.stderr  # the stored embeddings are arrays
    assert "Embeddings: " + str(first.model_id) in out.stderr


def test_an_unchanged_rescan_without_embeddings_imports_no_image_code(
    library: dict[str, list[Path]], tmp_path: Path
) -> None:
    """The default offline rescan: its interpreter start was most of its time (numpy, Pillow, rich, pydantic)."""
    db, root = tmp_path / "db.sqlite3", library["root"][0]
    first, groups = _scan(Settings(), root, db, mode="auto")
    assert first.skipped_reason and groups
    out = _rescan_imports(root, db, tmp_path)
    assert "IMPORTED []" in out.stdout, out.stdout + out.stderr
    assert "0 hashed" in out.stderr and json.loads((tmp_path / "r.json").read_text())["groups"]


def _shape(groups: list) -> list:
    """What a group says, by path (records hold arrays, which do not compare as values)."""
    return [(g.kind, g.keep.path, [(m.record.path, m.tier, m.distance, m.evidence) for m in g.members]) for g in groups]


def test_an_unchanged_library_is_not_grouped_again_until_something_changes(
    library: dict[str, list[Path]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second grouping of an unchanged index is the kept answer; a "not duplicates" decision, a setting or
    an edited file makes it group afresh."""
    import photodedup.client.scan as scan

    db, root, settings = tmp_path / "db.sqlite3", library["root"][0], Settings()
    first_summary, first = _scan(settings, root, db)
    computed: list[int] = []
    real = scan._group
    monkeypatch.setattr(scan, "_group", lambda *a: computed.append(1) or real(*a))
    read: list[int] = []
    real_records = Index.records
    monkeypatch.setattr(Index, "records", lambda *a, **k: read.append(1) or real_records(*a, **k))
    summary, again = _scan(settings, root, db)
    assert summary.unchanged > 0 and not computed
    assert _shape(again) == _shape(first) and len(again) == 1
    assert not read  # the index's generation said nothing changed: only the members' records were read
    with Index(db) as index:  # a write that changes no record: the records are read, digested and found equal
        index.conn.execute("UPDATE files SET seen_scan = seen_scan")
    _, same = _scan(settings, root, db)
    assert len(read) == 1 and not computed and _shape(same) == _shape(first)
    _scan(settings, root, db)
    assert len(read) == 1  # ... and the kept answer stands for the new generation
    with Index(db) as index:
        a, b = sorted(m.record.path for m in first[0].members)[:2]
        index.add_ignore([a, b])
    _, split = _scan(settings, root, db)
    assert len(computed) == 1 and _shape(split) != _shape(first)
    _scan(settings.replace(near_threshold=3), root, db)
    assert len(computed) == 2
    photo(14, (480, 360)).save(library["others"][0], quality=90)
    _scan(settings, root, db)
    assert len(computed) == 3
