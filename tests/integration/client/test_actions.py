"""Actions on real files: move, trash, hardlink, delete; verification; journal; undo, also after SIGKILL."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import asdict
from pathlib import Path

import pytest
from fakes import record as fake_record

from photodedup.client.actions import (
    BACKUP_PREFIX,
    TEMP_PREFIX,
    ActionError,
    apply_actions,
    plan_actions,
    purge_backups,
    read_journal,
    undo,
)
from photodedup.client.actions.journal import Done
from photodedup.client.grouping import FileRecord, Group, GroupingConfig, Member, Tier, find_groups


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def record(path: Path, width: int = 100) -> FileRecord:
    st = path.stat()
    return fake_record(
        path, size=st.st_size, width=width, height=width, md5=md5(path), dhash=None, phash=None, mtime=st.st_mtime
    )


def library(root: Path, copies: int = 2, originals: int = 3) -> tuple[list[Group], dict[Path, str]]:
    """`originals` photos under root/keep, each with exact copies under root/dups/<k>/; returns groups."""
    records, content = [], {}
    for k in range(originals):
        data = os.urandom(2000 + k)
        keep = root / "keep" / f"photo{k}.jpg"
        keep.parent.mkdir(parents=True, exist_ok=True)
        keep.write_bytes(data)
        records.append(record(keep, width=200))
        content[keep] = md5(keep)
        for c in range(copies):
            dup = root / "dups" / str(c) / f"photo{k}.jpg"
            dup.parent.mkdir(parents=True, exist_ok=True)
            dup.write_bytes(data)
            records.append(record(dup))
            content[dup] = md5(dup)
    return find_groups(records, GroupingConfig()), content


def assert_restored(content: dict[Path, str]) -> None:
    for path, digest in content.items():
        assert path.is_file(), path
        assert md5(path) == digest, path
        assert path.stat().st_nlink == 1, path  # no hardlink to a keeper or a backup is left
    leftovers = [
        p for p in next(iter(content)).parents[1].rglob("*") if p.name.startswith((BACKUP_PREFIX, TEMP_PREFIX))
    ]
    assert leftovers == []


def test_move_keeps_relative_paths_and_undo_moves_back(tmp_path: Path) -> None:
    groups, content = library(tmp_path / "lib")
    dest = tmp_path / "removed"
    actions = plan_actions(groups, "move", dest, reference_dirs=(), root=tmp_path / "lib")
    assert {a.dest for a in actions} == {
        str(dest / "dups" / str(c) / f"photo{k}.jpg") for c in range(2) for k in range(3)
    }
    result = apply_actions(actions, tmp_path / "j.jsonl")
    assert len(result.done) == 6 and not result.skipped and not result.failed
    assert not (tmp_path / "lib" / "dups" / "0" / "photo0.jpg").exists()
    assert md5(dest / "dups" / "1" / "photo2.jpg") == content[tmp_path / "lib" / "dups" / "1" / "photo2.jpg"]
    assert all((tmp_path / "lib" / "keep" / f"photo{k}.jpg").exists() for k in range(3))
    res = undo(tmp_path / "j.jsonl")
    assert len(res.restored) == 6 and not res.failed
    assert_restored(content)
    assert list(dest.rglob("*.jpg")) == []
    assert undo(tmp_path / "j.jsonl").restored == []  # a second undo has nothing left to do


def test_undo_never_overwrites_a_file_that_took_the_original_path(tmp_path: Path) -> None:
    groups, _ = library(tmp_path / "lib", copies=1, originals=1)
    actions = plan_actions(groups, "move", tmp_path / "out", ())
    apply_actions(actions, tmp_path / "j.jsonl")
    original = Path(actions[0].path)
    original.write_bytes(b"a new photo")
    res = undo(tmp_path / "j.jsonl")
    assert [p for p, _ in res.failed] == [str(original)]
    assert original.read_bytes() == b"a new photo"
    assert Path(actions[0].dest).exists()  # type: ignore[arg-type]


def test_hardlink_undo_never_overwrites_a_file_that_took_the_original_path(tmp_path: Path) -> None:
    groups, _ = library(tmp_path / "lib", copies=1, originals=1)
    actions = plan_actions(groups, "hardlink", None, ())
    apply_actions(actions, tmp_path / "j.jsonl")
    replaced = Path(actions[0].path)
    replaced.unlink()
    replaced.write_bytes(b"a new photo the user saved here")
    res = undo(tmp_path / "j.jsonl")
    assert [p for p, _ in res.failed] == [str(replaced)]
    assert replaced.read_bytes() == b"a new photo the user saved here"
    assert len(list((tmp_path / "lib").rglob(BACKUP_PREFIX + "*"))) == 1  # the original is still kept


def test_move_default_root_is_the_deepest_common_folder(tmp_path: Path) -> None:
    groups, _ = library(tmp_path / "lib")
    actions = plan_actions(groups, "move", tmp_path / "out", ())
    assert {Path(a.dest).relative_to(tmp_path / "out").parts[0] for a in actions} == {"0", "1"}


def test_move_needs_a_destination(tmp_path: Path) -> None:
    groups, _ = library(tmp_path / "lib")
    with pytest.raises(ActionError):
        plan_actions(groups, "move", None, ())


def test_hardlink_replaces_atomically_and_undo_restores_the_original_inode(tmp_path: Path) -> None:
    groups, content = library(tmp_path / "lib", copies=1)
    target = tmp_path / "lib" / "dups" / "0" / "photo1.jpg"
    inode = target.stat().st_ino
    result = apply_actions(plan_actions(groups, "hardlink", None, ()), tmp_path / "j.jsonl")
    assert len(result.done) == 3
    keeper = tmp_path / "lib" / "keep" / "photo1.jpg"
    assert target.stat().st_ino == keeper.stat().st_ino
    assert md5(target) == content[target]
    res = undo(tmp_path / "j.jsonl")
    assert len(res.restored) == 3
    assert target.stat().st_ino == inode
    assert_restored(content)


def test_purge_removes_backups_of_hardlinked_files(tmp_path: Path) -> None:
    groups, _ = library(tmp_path / "lib", copies=1)
    apply_actions(plan_actions(groups, "hardlink", None, ()), tmp_path / "j.jsonl")
    assert len(list((tmp_path / "lib").rglob(BACKUP_PREFIX + "*"))) == 3
    assert len(purge_backups(tmp_path / "j.jsonl", dry_run=True)) == 3
    assert len(list((tmp_path / "lib").rglob(BACKUP_PREFIX + "*"))) == 3  # a dry run touches nothing
    assert len(purge_backups(tmp_path / "j.jsonl")) == 3
    assert purge_backups(tmp_path / "j.jsonl") == []
    assert list((tmp_path / "lib").rglob(BACKUP_PREFIX + "*")) == []


@pytest.mark.skipif(
    not os.path.isdir("/dev/shm") or os.stat("/dev/shm").st_dev == os.stat(os.getcwd()).st_dev,
    reason="needs a second filesystem",
)
def test_hardlink_across_filesystems_is_refused_clearly(tmp_path: Path) -> None:
    shm = Path("/dev/shm") / f"photodedup-test-{os.getpid()}"
    shm.mkdir()
    try:
        data = os.urandom(500)
        keep, dup = tmp_path / "keep.jpg", shm / "dup.jpg"
        keep.write_bytes(data)
        dup.write_bytes(data)
        groups = find_groups([record(keep, 200), record(dup)], GroupingConfig())
        result = apply_actions(plan_actions(groups, "hardlink", None, ()), tmp_path / "j.jsonl")
        assert result.done == []
        assert result.skipped == [(str(dup), "hardlink needs the file and its keeper on one filesystem")]
        assert dup.read_bytes() == data
    finally:
        for p in shm.iterdir():
            p.unlink()
        shm.rmdir()


@pytest.mark.skipif(
    not os.path.isdir("/dev/shm") or os.stat("/dev/shm").st_dev == os.stat(os.getcwd()).st_dev,
    reason="needs a second filesystem",
)
def test_move_across_filesystems_copies_then_unlinks_and_undo_copies_back(tmp_path: Path) -> None:
    groups, content = library(tmp_path / "lib", copies=1)
    dest = Path("/dev/shm") / f"photodedup-test-move-{os.getpid()}"
    try:
        result = apply_actions(plan_actions(groups, "move", dest, ()), tmp_path / "j.jsonl")
        assert len(result.done) == 3
        assert sorted(p.name for p in dest.rglob("*.jpg")) == ["photo0.jpg", "photo1.jpg", "photo2.jpg"]
        assert not list((tmp_path / "lib" / "dups").rglob("*.jpg"))
        assert len(undo(tmp_path / "j.jsonl").restored) == 3
        assert_restored(content)
        assert not list(dest.rglob("*.jpg"))
    finally:
        shutil.rmtree(dest, ignore_errors=True)


def test_changed_files_are_skipped(tmp_path: Path) -> None:
    groups, _ = library(tmp_path / "lib", copies=1)
    actions = plan_actions(groups, "move", tmp_path / "out", ())
    changed = tmp_path / "lib" / "dups" / "0" / "photo0.jpg"
    changed.write_bytes(b"x" * changed.stat().st_size)  # same size, new content
    keeper = tmp_path / "lib" / "keep" / "photo1.jpg"
    keeper.write_bytes(b"y" * keeper.stat().st_size)
    result = apply_actions(actions, tmp_path / "j.jsonl")
    reasons = dict(result.skipped)
    assert reasons[str(changed)] == "content changed since the scan"
    assert reasons[str(tmp_path / "lib" / "dups" / "0" / "photo1.jpg")] == "the kept file changed since the scan"
    assert result.done == [str(tmp_path / "lib" / "dups" / "0" / "photo2.jpg")]
    assert changed.exists()


def test_near_member_is_checked_against_its_own_scan_hash(tmp_path: Path) -> None:
    keep, near = tmp_path / "a.jpg", tmp_path / "b.jpg"
    keep.write_bytes(os.urandom(900))
    near.write_bytes(os.urandom(800))
    ka, kb = record(keep, 300), record(near)
    group = Group(Tier.NEAR, ka, [Member(ka, 0, Tier.EXACT), Member(kb, 3, Tier.NEAR)])
    actions = plan_actions([group], "delete", None, ())
    near.write_bytes(os.urandom(800))
    assert apply_actions(actions, tmp_path / "j.jsonl").skipped == [(str(near), "content changed since the scan")]
    assert near.exists()


def test_reference_files_are_never_targets(tmp_path: Path) -> None:
    data = os.urandom(700)
    ref, lib = tmp_path / "ref", tmp_path / "lib"
    ref.mkdir()
    lib.mkdir()
    for p in (ref / "a.jpg", ref / "b.jpg", lib / "c.jpg"):
        p.write_bytes(data)
    records = [record(ref / "a.jpg", 10), record(ref / "b.jpg", 10), record(lib / "c.jpg", 4000)]
    groups = find_groups(records, GroupingConfig(), reference_dirs=[str(ref)])
    actions = plan_actions(groups, "delete", None, reference_dirs=[str(ref)])
    assert [a.path for a in actions] == [str(lib / "c.jpg")]
    apply_actions(actions, tmp_path / "j.jsonl")
    assert (ref / "a.jpg").read_bytes() == data and (ref / "b.jpg").read_bytes() == data


def test_delete_is_permanent_and_undo_says_so(tmp_path: Path) -> None:
    groups, _ = library(tmp_path / "lib", copies=1, originals=1)
    result = apply_actions(plan_actions(groups, "delete", None, ()), tmp_path / "j.jsonl")
    assert len(result.done) == 1 and not (tmp_path / "lib" / "dups" / "0" / "photo0.jpg").exists()
    res = undo(tmp_path / "j.jsonl")
    assert res.failed == [
        (str(tmp_path / "lib" / "dups" / "0" / "photo0.jpg"), "permanently deleted; cannot be restored")
    ]


def test_a_journal_is_never_reused(tmp_path: Path) -> None:
    groups, _ = library(tmp_path / "lib", copies=1, originals=1)
    apply_actions(plan_actions(groups, "delete", None, ()), tmp_path / "j.jsonl")
    with pytest.raises(ActionError):
        apply_actions([], tmp_path / "j.jsonl")


DRIVER = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from photodedup.client.actions import Action, apply_actions
    plan = [Action(**a) for a in json.loads(Path(sys.argv[1]).read_text())]
    r = apply_actions(plan, Path(sys.argv[2]))
    print(json.dumps({"done": len(r.done), "skipped": r.skipped, "failed": r.failed}))
    """
)


def run_driver(tmp_path: Path, actions: list, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps([asdict(a) for a in actions]))
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    return subprocess.Popen(
        [sys.executable, str(script), str(plan), str(tmp_path / "j.jsonl")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )


def test_trash_and_undo_from_the_freedesktop_trash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data_home = tmp_path / "xdg"
    data_home.mkdir()
    groups, content = library(tmp_path / "lib", copies=1)
    proc = run_driver(tmp_path, plan_actions(groups, "trash", None, ()), {"XDG_DATA_HOME": str(data_home)})
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert json.loads(out)["done"] == 3
    assert sorted(p.name for p in (data_home / "Trash" / "files").iterdir()) == [
        "photo0.jpg",
        "photo1.jpg",
        "photo2.jpg",
    ]
    assert len(list((data_home / "Trash" / "info").glob("*.trashinfo"))) == 3
    assert not (tmp_path / "lib" / "dups" / "0" / "photo0.jpg").exists()
    monkeypatch.setenv("XDG_DATA_HOME", str(data_home))
    res = undo(tmp_path / "j.jsonl")
    assert len(res.restored) == 3 and not res.failed
    assert_restored(content)
    assert list((data_home / "Trash" / "files").iterdir()) == []
    assert list((data_home / "Trash" / "info").iterdir()) == []


@pytest.mark.parametrize("mode", ["hardlink", "move"])
def test_undo_after_sigkill_mid_apply(tmp_path: Path, mode: str) -> None:
    groups, content = library(tmp_path / "lib", copies=3, originals=400)
    actions = plan_actions(groups, mode, tmp_path / "out" if mode == "move" else None, ())  # type: ignore[arg-type]
    assert len(actions) == 1200
    proc = run_driver(tmp_path, actions)
    journal = tmp_path / "j.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if journal.exists() and journal.read_text().count('"done"') >= 50:
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    entries = list(read_journal(journal))
    done = sum(isinstance(e, Done) for e in entries)
    assert 50 <= done < len(actions), "the kill must land mid-way"
    res = undo(journal)
    assert not res.failed
    assert len(res.restored) >= done
    assert_restored(content)


FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"


@pytest.mark.parametrize("mode", ["move", "hardlink", "trash"])
def test_a_journal_written_by_release_1_still_undoes(tmp_path: Path, mode: str) -> None:
    """tests/fixtures/journal-v1-*.jsonl were written by the release before operations became classes
    (two exact copies, dups/p0.jpg and dups/p1.jpg of keep/p0.jpg and keep/p1.jpg); the disk is set up
    as that apply left it."""
    journal = tmp_path / "j.jsonl"
    journal.write_text((FIXTURES / f"journal-v1-{mode}.jsonl").read_text().replace("@ROOT@", str(tmp_path)))
    lib, content = tmp_path / mode, {}
    for k in range(2):
        data = bytes([k]) * 100
        keep, dup = lib / "keep" / f"p{k}.jpg", lib / "dups" / f"p{k}.jpg"
        keep.parent.mkdir(parents=True, exist_ok=True)
        dup.parent.mkdir(parents=True, exist_ok=True)
        keep.write_bytes(data)
        content[keep] = content[dup] = md5(keep)
        if mode == "move":
            moved = tmp_path / "moved" / "dups" / f"p{k}.jpg"
            moved.parent.mkdir(parents=True, exist_ok=True)
            moved.write_bytes(data)
        elif mode == "hardlink":
            (dup.parent / f"{BACKUP_PREFIX}{k}-p{k}.jpg").write_bytes(data)
            os.link(keep, dup)
        else:
            trash = tmp_path / "xdg" / "Trash"
            (trash / "files").mkdir(parents=True, exist_ok=True)
            (trash / "info").mkdir(parents=True, exist_ok=True)
            (trash / "files" / f"p{k}.jpg").write_bytes(data)
            (trash / "info" / f"p{k}.jpg.trashinfo").write_text(f"[Trash Info]\nPath={dup}\n")
    res = undo(journal)
    assert sorted(res.restored) == [str(lib / "dups" / "p0.jpg"), str(lib / "dups" / "p1.jpg")] and not res.failed
    for path, digest in content.items():
        assert md5(path) == digest and path.stat().st_nlink == 1, path
    assert [p for p in lib.rglob("*") if p.name.startswith(BACKUP_PREFIX)] == []
    assert undo(journal).restored == []  # the undone lines are recorded in the same format


def test_journal_lines_keep_the_release_1_format(tmp_path: Path) -> None:
    """The on-disk shape of each entry is unchanged, so older releases can undo our journals too."""
    groups, _ = library(tmp_path / "lib", copies=1, originals=1)
    apply_actions(plan_actions(groups, "hardlink", None, ()), tmp_path / "j.jsonl")
    ours = [json.loads(line) for line in (tmp_path / "j.jsonl").read_text().splitlines()]
    old = [json.loads(line) for line in (FIXTURES / "journal-v1-hardlink.jsonl").read_text().splitlines()[:3]]
    assert [sorted(e) for e in ours] == [sorted(e) for e in old]


def test_planning_applies_kinds_and_the_hardlink_rules(tmp_path: Path) -> None:
    """--kinds picks files by how they match their keeper; hardlinks join only byte-identical copies
    and never link to a keeper in a reference folder."""
    data = os.urandom(900)
    ref = tmp_path / "ref"
    ref.mkdir()
    keep, exact, near = tmp_path / "keep.jpg", tmp_path / "exact.jpg", tmp_path / "near.jpg"
    keep.write_bytes(data)
    exact.write_bytes(data)
    near.write_bytes(os.urandom(800))
    rk, re_, rn = record(keep, 300), record(exact), record(near)
    group = Group(Tier.NEAR, rk, [Member(rk, 0, Tier.EXACT), Member(re_, 0, Tier.EXACT), Member(rn, 3, Tier.NEAR)])
    assert [a.path for a in plan_actions([group], "delete", None, kinds={"exact"})] == [str(exact)]
    assert [a.kind for a in plan_actions([group], "delete", None, kinds={"exact", "near"})] == ["exact", "near"]
    assert [a.path for a in plan_actions([group], "hardlink", None)] == [str(exact)]
    (ref / "keep.jpg").write_bytes(data)
    rr = record(ref / "keep.jpg", 300)
    ref_group = Group(Tier.EXACT, rr, [Member(rr, 0, Tier.EXACT), Member(re_, 0, Tier.EXACT)])
    assert plan_actions([ref_group], "hardlink", None, reference_dirs=[str(ref)]) == []
    assert [a.path for a in plan_actions([ref_group], "trash", None, reference_dirs=[str(ref)])] == [str(exact)]
    with pytest.raises(ActionError, match="unknown kinds"):
        plan_actions([group], "trash", None, kinds={"blurry"})


def test_a_cross_device_rename_falls_back_to_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    groups, content = library(tmp_path / "lib", copies=1, originals=1)
    real_rename = os.rename

    def no_rename(src: str, dst: str) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "rename", no_rename)
    result = apply_actions(plan_actions(groups, "move", tmp_path / "out", ()), tmp_path / "j.jsonl")
    assert len(result.done) == 1 and list((tmp_path / "out").rglob("*.jpg"))
    monkeypatch.setattr(os, "rename", real_rename)
    assert len(undo(tmp_path / "j.jsonl").restored) == 1
    assert_restored(content)
