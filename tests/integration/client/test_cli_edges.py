"""CLI edges that must lose nothing: symlinked folders out of the scanned folders, a keeper swapped for a
symlink, a damaged index, file names with newlines, a move-to folder inside a scanned folder."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from review_library import index_files

from photodedup.cli import main

from helpers import photo


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def _pair(folder: Path, name: str, seed: int) -> tuple[Path, Path]:
    """A photo (the larger file: the keeper) and an exact copy of it."""
    keep = folder / "keep" / name
    keep.parent.mkdir(parents=True, exist_ok=True)
    photo(seed, (200, 150)).save(keep, quality=90)
    copy = folder / "copies" / name
    copy.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(keep, copy)
    return keep, copy


def test_files_reached_through_a_symlinked_folder_are_refused_unless_allowed(tmp_path: Path) -> None:
    lib, outside = tmp_path / "lib", tmp_path / "elsewhere"
    keep, _ = _pair(lib, "a.jpg", 1)
    (outside / "copies").mkdir(parents=True)
    shutil.copy(keep, outside / "copies" / "a.jpg")
    (lib / "linked").symlink_to(outside, target_is_directory=True)
    via_link = lib / "linked" / "copies" / "a.jpg"
    db = tmp_path / "index.sqlite3"
    index_files(db, [lib], [keep, lib / "copies" / "a.jpg", via_link])
    code, out = _run("apply", "--db", str(db), "--trash")
    assert code == 0 and f"outside the scanned folders, refused: {via_link} -> {outside / 'copies' / 'a.jpg'}" in out
    assert "1 files from 1 groups" in out and f"trash {via_link}" not in out
    code, out = _run("apply", "--db", str(db), "--move-to", str(tmp_path / "moved"), "--yes")
    assert code == 0 and (outside / "copies" / "a.jpg").exists() and not (lib / "copies" / "a.jpg").exists()
    code, out = _run("apply", "--db", str(db), "--move-to", str(tmp_path / "moved2"), "--allow-outside-roots")
    assert "acting on it (--allow-outside-roots)" in out and f"move {via_link}" in out


def test_a_keeper_swapped_for_a_symlink_after_the_scan_is_not_trusted(tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    keep, copy = _pair(lib, "a.jpg", 2)
    db = tmp_path / "index.sqlite3"
    index_files(db, [lib], [keep, copy])
    moved_away = tmp_path / "a-real.jpg"
    os.replace(keep, moved_away)
    keep.symlink_to(copy)  # the keeper now points at the very copy that apply would delete
    code, out = _run("apply", "--db", str(db), "--delete", "--yes")
    assert "skipped" in out and "symbolic link" in out
    assert copy.is_file() and moved_away.is_file()


def test_a_folder_link_swapped_in_after_planning_is_caught_at_apply_time(tmp_path: Path) -> None:
    from photodedup.client.actions import apply_actions, plan_actions
    from photodedup.client.grouping import GroupingConfig, find_groups
    from photodedup.client.index import Index

    lib, outside = tmp_path / "lib", tmp_path / "elsewhere"
    keep, copy = _pair(lib, "a.jpg", 3)
    db = tmp_path / "index.sqlite3"
    index_files(db, [lib], [keep, copy])
    with Index(db) as index:
        groups = find_groups(list(index.records([str(lib)], None)), GroupingConfig())
    actions = plan_actions(groups, "delete", None, roots=[str(lib)])
    shutil.move(lib / "copies", outside)  # the folder goes elsewhere and a link takes its place
    (lib / "copies").symlink_to(outside, target_is_directory=True)
    result = apply_actions(actions, tmp_path / "j.jsonl", roots=[str(lib)])
    assert result.done == [] and "outside the scanned folders" in result.skipped[0][1]
    assert (outside / "a.jpg").is_file()


def test_a_move_to_folder_inside_a_scanned_folder_is_refused(tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    keep, copy = _pair(lib, "a.jpg", 4)
    db = tmp_path / "index.sqlite3"
    index_files(db, [lib], [keep, copy])
    code, out = _run("apply", "--db", str(db), "--move-to", str(lib / "dupes"), "--yes")
    assert code == 2 and "inside the scanned folder" in out and copy.exists()
    assert len(out.strip().splitlines()) == 1


def test_newlines_in_file_names_cannot_fake_plan_lines(tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    keep, _ = _pair(lib, "a.jpg", 5)
    evil = lib / "copies" / "x.jpg\n  trash precious.jpg  (keep x)"
    shutil.copy(keep, evil)
    db = tmp_path / "index.sqlite3"
    index_files(db, [lib], [keep, lib / "copies" / "a.jpg", evil])
    code, out = _run("apply", "--db", str(db), "--trash")
    assert code == 0
    assert not any(line.startswith("  trash precious") for line in out.splitlines())
    assert "x.jpg\\n  trash precious.jpg" in out
    code, out = _run("report", "--db", str(db), "--format", "table")
    assert "x.jpg\\n" in out


@pytest.mark.parametrize("content", [b"", b"garbage" * 500])
def test_a_damaged_index_is_one_line_and_a_backup(tmp_path: Path, content: bytes) -> None:
    db = tmp_path / "index.sqlite3"
    db.write_bytes(content)
    for args in (("report",), ("apply", "--trash"), ("ignore", "--list")):
        code, out = _run(*args, "--db", str(db))
        assert code == 2 and out.startswith("photodedup: error: the index") and len(out.strip().splitlines()) == 1, out
    assert db.read_bytes() == content and list(tmp_path.glob("index.sqlite3.damaged-*"))


def test_an_index_damaged_after_it_was_opened_is_one_line_and_one_backup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from photodedup.client.index import Index

    lib = tmp_path / "lib"
    lib.mkdir()
    paths = []
    for i in range(200):  # enough rows that the files table spans pages beyond the schema's
        paths.append(lib / f"p{i:03d}.jpg")
        photo(i % 5, (64, 48)).save(paths[-1])
    db = tmp_path / "index.sqlite3"
    index_files(db, [lib], paths)
    migrate = Index.migrate

    def migrate_then_damage(self: Index) -> None:
        migrate(self)
        if not list(tmp_path.glob("index.sqlite3.damaged-*")):
            with open(self.path, "r+b") as f:  # another program overwrites the data pages while we hold it open
                f.seek(4096 * 2)
                f.write(b"\xa5" * (self.path.stat().st_size - 4096 * 2))

    monkeypatch.setattr(Index, "migrate", migrate_then_damage)
    backups = []
    for args in (("report",), ("apply", "--trash")):
        code, out = _run(*args, "--db", str(db))
        assert code == 2 and len(out.strip().splitlines()) == 1, out
        assert out.startswith("photodedup: error: the index") and "malformed" in out
        backups.append(out.split("a copy is at ")[1].split(". Move")[0])
        time.sleep(1.1)  # a new copy would get a new name
    assert backups[0] == backups[1] and len(list(tmp_path.glob("index.sqlite3.damaged-*"))) == 1
