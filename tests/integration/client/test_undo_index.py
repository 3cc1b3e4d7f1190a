"""After an undo the index is as the disk is: files put back are indexed where they are again, and the
places `apply` had moved them to are forgotten, so report, apply and review see the library as it is."""

from __future__ import annotations

from pathlib import Path

from review_library import index_files, make_library

from photodedup.client.actions import apply_actions, move_root, plan_actions, undo
from photodedup.client.grouping import GroupingConfig
from photodedup.client.index import Index
from photodedup.client.scan import load_groups, refresh_after_undo


def _grouped(index: Index, roots: list[str]) -> list[list[str]]:
    groups = load_groups(index, roots, None, GroupingConfig(verify=False))
    return sorted(sorted(m.record.path for m in g.members) for g in groups)


def test_an_undone_move_is_indexed_where_the_files_are_again(tmp_path: Path) -> None:
    db, root = tmp_path / "state" / "index.sqlite3", tmp_path / "photos"
    files = make_library(root, db)
    with Index(db) as index:
        scan = index.last_scan()
        assert scan is not None
        before = _grouped(index, scan.roots)
        groups = load_groups(index, scan.roots, None, GroupingConfig(verify=False))
    dest = tmp_path / "moved"
    actions = plan_actions(groups, "move", dest, root=move_root(scan.roots, []), kinds={"exact"}, roots=scan.roots)
    assert {a.path for a in actions} == {str(c) for c in files["copies"]}
    journal = tmp_path / "apply.jsonl"
    result = apply_actions(actions, journal, roots=scan.roots)
    with Index(db) as index:
        index.forget(result.done)  # as `apply` does
    # a scan of both folders between apply and undo finds the copies where they were moved to
    index_files(db, [root, dest], [Path(a.dest) for a in actions if a.dest])
    undone = undo(journal)
    assert sorted(undone.restored) == sorted(str(c) for c in files["copies"])
    with Index(db) as index:
        assert refresh_after_undo(index, journal, undone.restored, 80_000_000) == len(actions)
        assert all(index.file_md5(str(c)) for c in files["copies"])
        assert not any(index.file_md5(str(a.dest)) for a in actions)
        assert _grouped(index, scan.roots) == before
        assert _grouped(index, [str(root), str(dest)]) == before
