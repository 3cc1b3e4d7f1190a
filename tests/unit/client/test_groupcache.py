"""The kept grouping answer: given back only for identical inputs, and given back whole."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from fakes import record

from photodedup.client import groupcache
from photodedup.client.grouping import FileRecord, GroupingConfig, find_groups
from photodedup.client.index import Index
from photodedup.client.verify import Verdict


def _library() -> list[FileRecord]:
    keep = record("/a.jpg", width=1000, height=800, dhash=0, phash=0, windows=((0, 0), (1, 0)))
    crop = record("/b.jpg", width=400, height=200, dhash=-1 & (2**64 - 1), phash=2**64 - 1, windows=((1, 0),))
    copy = record("/c.png", md5="md5-/a.jpg", format="PNG", embedding=np.ones(4, np.float32))
    other = record("/d.jpg", dhash=2**63, phash=5)
    return [keep, crop, copy, other]


def _verifier(a: FileRecord, b: FileRecord) -> Verdict:
    return Verdict(True, 50, 0.9, 0.01, "", (0.5, 0.0, -100.0, 0.0, 0.5, -200.0), False, "features")


CONFIG = GroupingConfig(near_threshold=10, candidate_threshold=12)


def test_kept_groups_come_back_equal_evidence_and_all(tmp_path: Path) -> None:
    records = _library()
    groups = find_groups(records, CONFIG, verifier=_verifier)
    assert any(m.evidence is not None and m.evidence.transform for g in groups for m in g.members)
    digest = groupcache.grouping_digest(records, CONFIG, [], [])
    with Index(tmp_path / "i.sqlite3") as index:
        groupcache.store(index, "scope", digest, "q", groups)
        back = groupcache.load(index, "scope", digest, records, "q")
        assert back == groups
        assert all(m.record is next(r for r in records if r.path == m.record.path) for g in back for m in g.members)
        assert groupcache.load(index, "scope", "other digest", records, "q") is None
        assert groupcache.load(index, "other scope", digest, records, "q") is None


def test_an_unreadable_kept_answer_is_computed_again(tmp_path: Path) -> None:
    records = _library()
    with Index(tmp_path / "i.sqlite3") as index:
        index.store_groups("scope", "d", "q", b"not zlib")
        assert groupcache.load(index, "scope", "d", records, "q") is None
        assert groupcache.load_quick(index, "scope", "q", None) is None
        # a kept answer naming a file the records (or the index) no longer hold
        groupcache.store(index, "scope", "d", "q", find_groups(records, CONFIG, verifier=_verifier))
        assert groupcache.load(index, "scope", "d", records[1:], "q") is None
        assert groupcache.load_quick(index, "scope", "q", None) is None


def _changed(records: list[FileRecord], i: int, **fields: object) -> list[FileRecord]:
    out = list(records)
    out[i] = dataclasses.replace(out[i], **fields)
    return out


@pytest.mark.parametrize(
    "change",
    [
        lambda r: (_changed(r, 1, md5="edited"), CONFIG, [], []),
        lambda r: (_changed(r, 0, mtime=5.0), CONFIG, [], []),
        lambda r: (_changed(r, 0, windows=((0, 0), (1, 1))), CONFIG, [], []),
        lambda r: (_changed(r, 0, windows=np.array([[0, 0], [1, 1]], dtype=np.uint64)), CONFIG, [], []),
        lambda r: (_changed(r, 2, embedding=np.full(4, 2, np.float32)), CONFIG, [], []),
        lambda r: (_changed(r, 3, contrast=3.0), CONFIG, [], []),
        lambda r: (_changed(r, 3, transparent=0.4), CONFIG, [], []),
        lambda r: (r[:-1], CONFIG, [], []),
        lambda r: (r, dataclasses.replace(CONFIG, near_threshold=11), [], []),
        lambda r: (r, CONFIG, [frozenset({"/a.jpg", "/b.jpg"})], []),
        lambda r: (r, CONFIG, [], ["/keep"]),
    ],
    ids=[
        "content",
        "mtime",
        "windows",
        "windows-array",
        "embedding",
        "contrast",
        "transparent",
        "file-gone",
        "setting",
        "not-duplicates",
        "reference",
    ],
)
def test_any_changed_input_changes_the_digest(change) -> None:  # type: ignore[no-untyped-def]
    records = _library()
    before = groupcache.grouping_digest(records, CONFIG, [], [])
    assert groupcache.grouping_digest(_library(), CONFIG, [], []) == before
    assert groupcache.grouping_digest(*change(records)) != before


def test_windows_as_int_pairs_or_as_an_array_are_the_same_input() -> None:
    records = _library()
    arrays = [dataclasses.replace(r, windows=np.array(r.windows, dtype=np.uint64).reshape(-1, 2)) for r in records]
    assert groupcache.grouping_digest(records, CONFIG, [], []) == groupcache.grouping_digest(arrays, CONFIG, [], [])


def test_the_quick_digest_follows_the_generation_and_the_other_inputs() -> None:
    before = groupcache.quick_digest(7, CONFIG, [], [])
    assert groupcache.quick_digest(7, CONFIG, [], []) == before
    for other in (
        groupcache.quick_digest(8, CONFIG, [], []),
        groupcache.quick_digest(7, dataclasses.replace(CONFIG, near_threshold=11), [], []),
        groupcache.quick_digest(7, CONFIG, [frozenset({"/a.jpg", "/b.jpg"})], []),
        groupcache.quick_digest(7, CONFIG, [], ["/keep"]),
    ):
        assert other != before


def test_a_quick_load_reads_its_members_from_the_index(tmp_path: Path) -> None:
    from photodedup.client.hashing import HashResult, to_signed64

    def res(path: str, md5: str, dhash: int) -> HashResult:
        return HashResult(path, 10, 1, md5=md5, dhash=to_signed64(dhash), phash=to_signed64(dhash), width=900,
                          height=600, format="JPEG")  # fmt: skip

    with Index(tmp_path / "i.sqlite3") as index:
        scan = index.start_scan(["/p"], None, {})
        index.put_hashes(
            [res("/p/a.jpg", "a" * 32, 0), res("/p/b.jpg", "b" * 32, 1), res("/p/c.jpg", "c" * 32, 2**63 - 1)], scan
        )
        records = list(index.records(["/p"], None))
        groups = find_groups(records, CONFIG)
        assert [sorted(m.record.path for m in g.members) for g in groups] == [["/p/a.jpg", "/p/b.jpg"]]
        quick = groupcache.quick_digest(index.generation(), CONFIG, [], [])
        groupcache.store(index, "scope", "d", quick, groups)
        assert groupcache.load_quick(index, "scope", quick, None) == groups
        assert groupcache.load_quick(index, "scope", "another generation", None) is None


def test_a_kept_answer_stands_when_the_index_cannot_be_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Marking the kept answer current for a new generation is a write; a read-only or busy index refuses it,
    and the answer, found equal by the full digest, is still given back rather than grouped again."""
    import sqlite3

    records = _library()
    groups = find_groups(records, CONFIG, verifier=_verifier)
    with Index(tmp_path / "i.sqlite3") as index:
        groupcache.store(index, "scope", "d", "old generation", groups)

        def refuse(*_: object) -> None:
            raise sqlite3.OperationalError("attempt to write a readonly database")

        monkeypatch.setattr(index, "set_groups_quick", refuse)
        assert groupcache.load(index, "scope", "d", records, "new generation") == groups
