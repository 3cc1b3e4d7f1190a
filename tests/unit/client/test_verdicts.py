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
        # what was found: path_a's upright pixels lie at half size, 10 px right, in path_b's
        return Verdict(Path(path_a).name[0] == Path(path_b).name[0], 40, 0.8, 0.05, "", SHIFT, strict, "features")

    monkeypatch.setattr(GeometricVerifier, "verdict", verdict)
    return asked


SHIFT = (0.5, 0.0, 10.0, 0.0, 0.5, 0.0)


def rec(path: str, md5: str, content: tuple[int, int, int, int] | None = None) -> FileRecord:
    return record(path, md5=md5, content=content)


def test_a_stored_verdict_is_not_verified_again(tmp_path: Path, calls: list) -> None:
    a, a2, b = rec("/p/a.jpg", "m1"), rec("/p/a2.jpg", "m2"), rec("/p/b.jpg", "m3")
    with Index(tmp_path / "index.sqlite3") as index:
        first = StoredVerifier(index)
        assert first(a, a2).same and not first(a, b).same
        first.flush()
        assert len(calls) == 2
    with Index(tmp_path / "index.sqlite3") as index:
        again = StoredVerifier(index)
        # Either order reads the same stored verdict.
        assert again(a2, a).same and not again(b, a).same and again(a, a2).same
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
        assert not v(a, gone).same
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


def test_what_verification_found_is_stored_and_read_back_either_way_round(tmp_path: Path, calls: list) -> None:
    """The detail (transform, inliers, coverage, cells, which check) survives the index; asked the other
    way round, the transform comes back inverted."""
    a, b = rec("/p/a.jpg", "m2"), rec("/p/a2.jpg", "m1")  # stored flipped: m1 sorts first
    with Index(tmp_path / "index.sqlite3") as index:
        v = StoredVerifier(index)
        fresh = v(a, b, strict=True)
        v.flush()
        assert fresh.transform == SHIFT and fresh.strict
    with Index(tmp_path / "index.sqlite3") as index:
        again = StoredVerifier(index)
        same_way, other_way = again(a, b, strict=True), again(b, a, strict=True)
        assert again.misses == 0 and len(calls) == 1
    assert same_way.transform == pytest.approx(SHIFT)
    assert other_way.transform == pytest.approx((2.0, 0.0, -20.0, 0.0, 2.0, 0.0))
    for got in (same_way, other_way):
        assert (got.inliers, got.coverage, got.bad_cells, got.strict, got.aligned_by) == (
            40,
            0.8,
            0.05,
            True,
            "features",
        )


def test_a_verdict_stored_without_detail_still_decides_and_shows_none(tmp_path: Path, calls: list) -> None:
    """Rows written before details were stored (schema 5) keep their decision and carry no detail."""
    a, b = rec("/p/a.jpg", "m1"), rec("/p/a2.jpg", "m2")
    with Index(tmp_path / "index.sqlite3") as index:
        index.put_verdicts(StoredVerifier(index).version, [("m1", "m2", True)])
        got = StoredVerifier(index)(a, b)
    assert got.same and got.transform is None and got.aligned_by == "" and calls == []


def test_prefetched_pairs_are_verified_on_several_threads_once(
    tmp_path: Path, calls: list[tuple[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading
    import time

    threads: set[str] = set()
    real = GeometricVerifier.verdict

    def slow(self: GeometricVerifier, *args: object, **kwargs: object) -> Verdict:
        threads.add(threading.current_thread().name)
        time.sleep(0.05)  # a decode and a feature search: long enough for the other thread to start
        return real(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(GeometricVerifier, "verdict", slow)
    centre, second = rec("/p/a0.jpg", "0" * 32), rec("/p/b9.jpg", "9" * 31 + "8")
    others = [rec(f"/p/{c}{i}.jpg", f"{i + 1:032d}") for i, c in enumerate("abab")]
    with Index(tmp_path / "i.sqlite3") as index:
        stored = StoredVerifier(index, workers=2)
        # Two centres: each one's pairs are verified in turn on one thread, the centres side by side.
        stored.prefetch(
            [(centre, o, False) for o in others[:3]] + [(others[0], centre, False), (second, others[3], False)]
        )
        assert len(stored.inflight) == 4  # handed to the threads; prefetch does not wait for them
        answers = [stored(centre, o).same for o in others[:3]] + [stored(second, others[3]).same]
        assert answers == [True, False, True, True] and len(calls) == 4  # answered from what was prefetched
        assert len({t for t in threads if t.startswith("verify")}) == 2 and not stored.inflight
        assert [pair for pair in calls if pair[0] == centre.path] == [(centre.path, o.path) for o in others[:3]]
        assert (stored.misses, stored.hits) == (4, 0)  # four verified in this run, none read from the index
        # Asked ahead and never asked for (a centre taken by another before its turn): kept all the same.
        late = rec("/p/late.jpg", "9" * 32)
        stored.prefetch([(centre, late, False)])
        stored.flush()
        stored.close()
        assert len(calls) == 5 and stored.misses == 5
    with Index(tmp_path / "i.sqlite3") as index:
        again = StoredVerifier(index)
        assert again(centre, others[2]).same and not again(centre, late).same and len(calls) == 5  # kept


def test_a_check_made_ahead_that_fails_does_not_stop_the_rest_being_kept(
    tmp_path: Path, calls: list[tuple[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`flush` runs when grouping ends, also after an error: a check made ahead that raised is left out (the
    next grouping asks again), the others are kept, and nothing is raised from there."""
    real = GeometricVerifier.verdict

    def broken(self: GeometricVerifier, path_a: str, *args: object, **kwargs: object) -> Verdict:
        if "bad" in path_a:
            raise RuntimeError("a feature search bug")
        return real(self, path_a, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(GeometricVerifier, "verdict", broken)
    good, bad, other = rec("/p/a1.jpg", "1" * 32), rec("/p/bad.jpg", "2" * 32), rec("/p/a2.jpg", "3" * 32)
    with Index(tmp_path / "i.sqlite3") as index:
        stored = StoredVerifier(index, workers=2)
        stored.prefetch([(bad, other, False), (good, other, False)])
        stored.flush()
        stored.close()
    with Index(tmp_path / "i.sqlite3") as index:
        again = StoredVerifier(index, workers=1)
        assert again(good, other).same and again.hits == 1  # kept
        with pytest.raises(RuntimeError):
            again(bad, other)  # not kept: asked again, and a check asked for still raises


def test_what_a_rejected_pair_showed_is_stored_but_not_held(tmp_path: Path, calls: list) -> None:
    """All of what verification found goes to the index, but only accepted pairs' detail stays in memory
    (grouping shows it as a member's evidence; a large library's rejected pairs are nearly all of them). A
    rejected pair still decides, either way round, from the index too; each picture's key is one string."""
    from photodedup.client.verify import VERIFIER_VERSION

    a, a2, b = rec("/p/a.jpg", "m1"), rec("/p/a2.jpg", "m2"), rec("/p/b.jpg", "m3")
    with Index(tmp_path / "index.sqlite3") as index:
        v = StoredVerifier(index)
        assert v(a, a2).same and not v(a, b).same
        v.flush()
        assert len(index.verdict_details(VERIFIER_VERSION)) == 2
        assert list(index.verdict_details(VERIFIER_VERSION, accepted_only=True)) == [("m1", "m2")]
        assert list(v.details) == [("m1", "m2")]
        again = StoredVerifier(index)
        assert list(again.details) == [("m1", "m2")]
        assert again(a2, a).transform is not None and not again(b, a).same and len(calls) == 2
        keys = list(again.known)
        assert keys[0][0] is keys[1][0]  # "m1", read from two rows
