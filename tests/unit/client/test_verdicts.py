"""Stored verification verdicts: an unchanged pair is verified once, a changed file or rule again."""

from __future__ import annotations

from pathlib import Path

import pytest
from fakes import record

from photodedup.client.grouping import FileRecord
from photodedup.client.index import Index
from photodedup.client.verdicts import StoredVerifier, side_key
from photodedup.client.verify import CANNOT_DECODE, GeometricVerifier, Verdict


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Every pair the geometric verifier is asked about; the answer: same when both names share a letter."""
    asked: list[tuple[str, str]] = []

    def verdict(
        self: GeometricVerifier, path_a: str, content_a: object, path_b: str, content_b: object, strict: bool = False
    ) -> Verdict:
        asked.append((path_a, path_b))
        if "gone" in path_a + path_b:
            return Verdict(False, reason=CANNOT_DECODE)
        return Verdict(Path(path_a).name[0] == Path(path_b).name[0])

    monkeypatch.setattr(GeometricVerifier, "verdict", verdict)
    return asked


def rec(path: str, md5: str, content: tuple[int, int, int, int] | None = None) -> FileRecord:
    return record(path, md5=md5, content=content)


def test_a_stored_verdict_is_not_verified_again(tmp_path: Path, calls: list) -> None:
    a, a2, b = rec("/p/a.jpg", "m1"), rec("/p/a2.jpg", "m2"), rec("/p/b.jpg", "m3")
    with Index(tmp_path / "index.sqlite3") as index:
        first = StoredVerifier(index)
        assert first(a, a2) and not first(a, b)
        first.flush()
        assert len(calls) == 2
    with Index(tmp_path / "index.sqlite3") as index:
        again = StoredVerifier(index)
        # Either order reads the same stored verdict.
        assert again(a2, a) and not again(b, a) and again(a, a2)
        assert len(calls) == 2 and again.hits == 3 and again.misses == 0


def test_a_pair_is_stored_once_in_canonical_order(tmp_path: Path, calls: list) -> None:
    a, b = rec("/p/a.jpg", "m2"), rec("/p/b.jpg", "m1", (0, 0, 8, 6))
    with Index(tmp_path / "index.sqlite3") as index:
        v = StoredVerifier(index)
        v(a, b)
        v.flush()
        assert index.verdicts(v.version) == {("m1@0,0,8,6", "m2"): False}


def test_a_changed_file_or_content_box_is_verified_again(tmp_path: Path, calls: list) -> None:
    a, b = rec("/p/a.jpg", "m1"), rec("/p/a2.jpg", "m2")
    with Index(tmp_path / "index.sqlite3") as index:
        v = StoredVerifier(index)
        v(a, b)
        v.flush()
        StoredVerifier(index)(a, rec("/p/a2.jpg", "m2-edited"))
        StoredVerifier(index)(a, rec("/p/a2.jpg", "m2", (0, 10, 100, 90)))
    assert len(calls) == 3
    assert side_key(rec("/x", "m", (1, 2, 3, 4))) == "m@1,2,3,4" and side_key(a) == "m1"


def test_a_new_verifier_version_verifies_again_and_drops_old_verdicts(tmp_path: Path, calls: list) -> None:
    a, b, c = rec("/p/a.jpg", "m1"), rec("/p/a2.jpg", "m2"), rec("/p/a3.jpg", "m3")
    with Index(tmp_path / "index.sqlite3") as index:
        old = StoredVerifier(index, version="1")
        old(a, b)
        old.flush()
        new = StoredVerifier(index, version="2")
        new(a, b)
        assert len(calls) == 2
        new(a, c)
        new.flush()
        assert index.verdicts("1") == {} and len(index.verdicts("2")) == 2


def test_a_file_that_cannot_be_decoded_is_not_stored(tmp_path: Path, calls: list) -> None:
    a, gone = rec("/p/a.jpg", "m1"), rec("/p/gone.jpg", "m2")
    with Index(tmp_path / "index.sqlite3") as index:
        v = StoredVerifier(index)
        assert not v(a, gone)
        v.flush()
        assert index.verdicts(v.version) == {}


def test_verdicts_are_written_in_batches(tmp_path: Path, calls: list, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("photodedup.client.verdicts.FLUSH_EVERY", 2)
    files = [rec(f"/p/a{k}.jpg", f"m{k}") for k in range(5)]
    with Index(tmp_path / "index.sqlite3") as index:
        v = StoredVerifier(index)
        for f in files[1:]:
            v(files[0], f)
        assert len(index.verdicts(v.version)) == 4 and v.pending == []
