"""Chosen keepers applied to groups: tiers and distances are re-measured to the new keeper."""

from __future__ import annotations

import numpy as np

from photodedup.client.decisions import apply_keeper_choices, members_key, with_keeper
from photodedup.client.grouping import FileRecord, Group, Member


def _rec(path: str, md5: str, dhash: int, size: int = 100, emb: list[float] | None = None) -> FileRecord:
    return FileRecord(
        path, size, 10, 10, md5, dhash, 0, None if emb is None else np.asarray(emb, np.float32), None, 0.0, "JPEG"
    )


def _group() -> tuple[Group, FileRecord, FileRecord, FileRecord]:
    keep, copy, edit = _rec("/a.jpg", "m1", 0b0000, 300), _rec("/b.jpg", "m1", 0b0000), _rec("/c.jpg", "m2", 0b0111)
    members = [Member(keep, 0.0, "keep"), Member(copy, 0.0, "exact"), Member(edit, 3.0, "near")]
    return Group("near", keep, members), keep, copy, edit


def test_a_chosen_keeper_takes_over_and_distances_follow() -> None:
    group, keep, copy, edit = _group()
    changed = with_keeper(group, edit)
    assert changed.keep is edit and changed.members[0].record is edit
    assert changed.kind == "near" and changed.members[0].tier == "keep"
    by_path = {m.record.path: m for m in changed.members[1:]}
    assert by_path["/a.jpg"].tier == "near" and by_path["/a.jpg"].distance == 3.0
    assert by_path["/b.jpg"].tier == "near" and by_path["/b.jpg"].distance == 3.0
    assert [m.record.path for m in changed.targets] == ["/a.jpg", "/b.jpg"]
    same = with_keeper(group, copy)  # same bytes as the old keeper: the old keeper is now an exact copy
    assert {m.record.path: m.tier for m in same.members[1:]} == {"/a.jpg": "exact", "/c.jpg": "near"}


def test_choices_apply_by_path_and_the_latest_wins() -> None:
    group, keep, copy, edit = _group()
    assert apply_keeper_choices([group], {})[0] is group
    assert apply_keeper_choices([group], {"/elsewhere.jpg": 1.0})[0] is group
    assert apply_keeper_choices([group], {"/b.jpg": 1.0, "/c.jpg": 2.0})[0].keep is edit
    assert apply_keeper_choices([group], {"/b.jpg": 3.0, "/c.jpg": 2.0})[0].keep is copy


def test_a_group_is_named_by_its_members_not_their_order() -> None:
    group, keep, copy, edit = _group()
    assert members_key(group) == members_key(with_keeper(group, edit))
    assert members_key(group) != members_key(Group("exact", keep, group.members[:2]))
