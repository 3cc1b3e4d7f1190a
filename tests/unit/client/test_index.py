"""The index: incremental keys, embeddings per model, forgetting deleted files, ignore decisions, atomicity."""

from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from photodedup.client.grouping.hamming import window_array, window_key, window_neighbours
from photodedup.client.grouping.records import HashPairs, StoredWindows
from photodedup.client.hashing import HashResult, to_signed64
from photodedup.client.index import Index, IndexSchemaError
from photodedup.client.schema import MIGRATIONS, SCHEMA_VERSION
from photodedup.errors import PhotodedupError


def _res(path: str, md5: str = "a" * 32, size: int = 10, mtime_ns: int = 1, error: str | None = None) -> HashResult:
    if error:
        return HashResult(path, size, mtime_ns, md5=md5, error=error)
    return HashResult(
        path,
        size,
        mtime_ns,
        md5=md5,
        dhash=to_signed64((1 << 64) - 1),
        phash=to_signed64(1 << 63),
        width=4,
        height=3,
        format="JPEG",
        exif_time=1.5e9,
        rotated=((to_signed64(1 << 63), 5), (6, 7), (8, 9)),
    )


@pytest.fixture
def index(tmp_path: Path) -> Index:
    with Index(tmp_path / "sub" / "index.sqlite3") as idx:
        yield idx


def test_wal_and_keys(index: Index) -> None:
    assert index.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    scan = index.start_scan(["/p"], None, {})
    index.put_hashes([_res("/p/a.jpg", size=10, mtime_ns=5), _res("/p/b.jpg", error="broken")], scan)
    known = index.known(["/p/a.jpg", "/p/b.jpg", "/p/c.jpg"])
    assert known == {"/p/a.jpg": (10, 5, True), "/p/b.jpg": (10, 1, True)}


def test_known_under_reads_every_file_below_the_roots_and_nothing_beside_them(index: Index) -> None:
    scan = index.start_scan(["/p"], None, {})
    rows = [
        _res("/p/a.jpg", size=10, mtime_ns=5),
        _res("/p/sub/b.jpg", error="broken"),
        _res("/pq/c.jpg"),  # beside /p, with /p as a prefix of its name
        _res("/p0.jpg"),  # sorts right after every path below /p
        _res("/q/d.jpg"),  # given as a root itself
    ]
    index.put_hashes(rows, scan)
    assert index.known_under(["/p", "/q/d.jpg"]) == {
        "/p/a.jpg": (10, 5, True),
        "/p/sub/b.jpg": (10, 1, True),
        "/q/d.jpg": (10, 1, True),
    }
    assert index.known_under(["/p/sub/", "/p/sub/b.jpg"]) == {"/p/sub/b.jpg": (10, 1, True)}
    # ... from one index, without reading the rows and their hashes (the plan of every rescan)
    plan = index.conn.execute("EXPLAIN QUERY PLAN " + Index.KNOWN_UNDER, ("/p/", "/p0")).fetchall()
    assert "COVERING INDEX" in str(plan), plan


def test_records_round_trip_unsigned_hashes_and_embeddings(index: Index) -> None:
    scan = index.start_scan(["/p"], "m1", {})
    index.put_hashes([_res("/p/a.jpg"), _res("/p/bad.jpg", error="nope")], scan)
    vec = np.linspace(-1, 1, 16, dtype=np.float32)
    index.put_embeddings("m1", [("/p/a.jpg", vec, None), ("/p/unknown.jpg", vec, None)])
    (rec,) = list(index.records(["/p"], "m1"))
    assert rec.dhash == (1 << 64) - 1 and rec.phash == 1 << 63
    assert rec.rotated_hashes == ((1 << 63, 5), (6, 7), (8, 9))
    turns = rec.rotated_hashes  # packed as stored, read as the tuple of pairs
    assert isinstance(turns, HashPairs) and len(turns) == 3 and turns[-1] == (8, 9) and turns[1:] == ((6, 7), (8, 9))
    assert list(turns) == [(1 << 63, 5), (6, 7), (8, 9)] and repr(turns) == repr(((1 << 63, 5), (6, 7), (8, 9)))
    assert hash(turns) == hash(tuple(turns)) and turns != ((1 << 63, 5),)
    assert rec.mtime == 1e-9 and rec.format == "JPEG" and rec.exif_time == 1.5e9
    np.testing.assert_allclose(rec.embedding, vec, atol=1e-3)
    # Another model's vectors never mix in.
    assert next(index.records(["/p"], "m2")).embedding is None
    assert index.conn.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0] == 1


def test_needing_embedding_and_refusals(index: Index) -> None:
    scan = index.start_scan(["/p"], "m1", {})
    index.put_hashes([_res("/p/a.jpg"), _res("/p/b.jpg"), _res("/p/c.jpg", error="x")], scan)
    assert sorted(p for p, *_ in index.needing_embedding(["/p"], "m1")) == ["/p/a.jpg", "/p/b.jpg"]
    index.put_embeddings("m1", [("/p/a.jpg", np.ones(4), None), ("/p/b.jpg", None, "model refused it")])
    assert index.needing_embedding(["/p"], "m1") == []
    assert len(index.needing_embedding(["/p"], "m2")) == 2
    # A changed file loses its old embedding and needs a new one.
    index.put_hashes([_res("/p/a.jpg", size=11, mtime_ns=9)], scan)
    assert [p for p, *_ in index.needing_embedding(["/p"], "m1")] == ["/p/a.jpg"]


def test_verdicts_go_when_no_file_has_their_content_any_more(index: Index) -> None:
    a, b, c = "a" * 32, "b" * 32, "c" * 32
    first = index.start_scan(["/p"], None, {})
    index.put_hashes([_res("/p/a.jpg", md5=a), _res("/p/b.jpg", md5=b), _res("/p/c.jpg", md5=c)], first)
    index.put_verdicts("v1", [(a, b, True), (a + "@0,0,9,9", c, False), (b, c, False)])
    index.forget_missing(["/p"], {"/p/a.jpg", "/p/b.jpg"})  # c.jpg was deleted
    assert index.verdicts("v1") == {(a, b): True}
    # Pruning runs only when a file row changed since it last ran: an unchanged rescan leaves the tables be.
    index.put_verdicts("v1", [(a, b, True), (a, c, False)])  # c's content is gone: prunable
    index.forget_missing(["/p"], {"/p/a.jpg", "/p/b.jpg"})
    assert (a, c) in index.verdicts("v1")
    index.put_hashes([_res("/p/b.jpg", md5=b, size=11)], first)  # a file changed: the next one prunes
    index.forget_missing(["/p"], {"/p/a.jpg", "/p/b.jpg"})
    assert index.verdicts("v1") == {(a, b): True}


def test_strict_verdicts_stay_while_their_files_do(index: Index) -> None:
    """A strict verdict's key starts with "strict:" before its MD5: pruning reads the MD5 behind it (it once read
    the prefix as the MD5, and every change to any file dropped every strict verdict)."""
    a, b, c = "a" * 32, "b" * 32, "c" * 32
    first = index.start_scan(["/p"], None, {})
    index.put_hashes([_res("/p/a.jpg", md5=a), _res("/p/b.jpg", md5=b), _res("/p/c.jpg", md5=c)], first)
    index.put_verdicts("v1", [("strict:" + a, b, True), ("strict:" + a + "@0,0,9,9", c, False)])
    index.forget_missing(["/p"], {"/p/a.jpg", "/p/b.jpg"})  # c.jpg was deleted
    assert index.verdicts("v1") == {("strict:" + a, b): True}


def test_forget_missing_only_below_the_scanned_roots(index: Index) -> None:
    first = index.start_scan(["/p"], None, {})
    index.put_hashes([_res(p) for p in ("/p/a.jpg", "/p/x/b.jpg", "/pq/c.jpg", "/other/d.jpg", "/p")], first)
    assert index.forget_missing(["/p"], {"/p/a.jpg"}) == 2  # /p/x/b.jpg and the file named /p itself
    left = [r[0] for r in index.conn.execute("SELECT path FROM files ORDER BY path")]
    assert left == ["/other/d.jpg", "/p/a.jpg", "/pq/c.jpg"]


def test_ignores_are_pairs_and_survive_reopening(tmp_path: Path) -> None:
    db = tmp_path / "i.sqlite3"
    with Index(db) as idx:
        assert idx.add_ignore(["/b", "/a", "/c"]) == 3
        assert idx.add_ignore(["/a", "/b"]) == 0
        assert idx.remove_ignore(["/c", "/a"]) == 1
    with Index(db) as idx:
        assert set(idx.ignored()) == {frozenset({"/a", "/b"}), frozenset({"/b", "/c"})}


def test_a_failed_transaction_leaves_nothing(index: Index) -> None:
    scan = index.start_scan(["/p"], None, {})
    with pytest.raises(sqlite3.IntegrityError), index.transaction() as c:
        c.execute("INSERT INTO files (path, size, mtime_ns, seen_scan) VALUES ('/p/a', 1, 1, ?)", (scan,))
        c.execute("INSERT INTO files (path, size, mtime_ns, seen_scan) VALUES ('/p/a', 1, 1, ?)", (scan,))
    assert index.conn.execute("SELECT COUNT(*) FROM files").fetchone()[0] == 0


def test_scans_are_recorded(index: Index) -> None:
    assert index.last_scan() is None
    sid = index.start_scan(["/p"], "m", {"reference": ["/r"]})
    assert index.last_scan(finished_only=True) is None
    index.finish_scan(sid)
    last = index.last_scan()
    assert last is not None and last.id == sid and last.roots == ["/p"] and last.options["reference"] == ["/r"]
    assert last.finished is not None


def test_files_under_unreadable_folders_are_not_forgotten(index: Index) -> None:
    first = index.start_scan(["/p"], None, {})
    index.put_hashes([_res("/p/locked/a.jpg"), _res("/p/b.jpg")], first)
    assert index.forget_missing(["/p"], set(), unreadable=["/p/locked"]) == 1
    assert [r[0] for r in index.conn.execute("SELECT path FROM files")] == ["/p/locked/a.jpg"]


def test_nested_roots_are_not_counted_twice() -> None:
    from photodedup.client.index import Index

    ranges = Index._ranges(["/p/lib", "/p/lib/ref", "/p/lib/", "/p/other"])
    covered = [r for r in ranges if r[0] <= "/p/lib/ref/x.jpg" < r[1]]
    assert len(covered) == 1
    assert any(r[0] <= "/p/other/y.jpg" < r[1] for r in ranges)


FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"


def _at_version(path: Path, version: int) -> None:
    """An index as the release with schema `version` left it: the migrations up to there, nothing after."""
    conn = sqlite3.connect(path)
    for step in MIGRATIONS[:version]:
        conn.executescript(step)
    conn.execute(f"PRAGMA user_version = {version}")
    conn.commit()
    conn.close()


@pytest.mark.parametrize("version", range(len(MIGRATIONS)))
def test_every_older_schema_migrates_to_the_current_one(tmp_path: Path, version: int) -> None:
    db = tmp_path / "index.sqlite3"
    _at_version(db, version)
    with Index(db) as idx:
        assert idx.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        scan = idx.start_scan(["/p"], None, {})
        idx.put_hashes([_res("/p/a.jpg")], scan)
        idx.add_ignore(["/p/a.jpg", "/p/b.jpg"])
    with Index(db) as idx:  # opening a current index again changes nothing
        assert idx.counts(["/p"], None)["files"] == 1
        assert idx.ignored() == [frozenset({"/p/a.jpg", "/p/b.jpg"})]


def test_an_index_written_by_release_1_opens_with_everything_kept(tmp_path: Path) -> None:
    """tests/fixtures/index-v1.sql is the dump of an index the release before user_version wrote
    (user_version 0, schema_version 1 in meta): a scan, three files, embeddings, an ignore pair."""
    db = tmp_path / "index.sqlite3"
    conn = sqlite3.connect(db)
    conn.executescript((FIXTURES / "index-v1.sql").read_text())
    conn.close()
    with Index(db) as idx:
        assert idx.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        last = idx.last_scan()
        assert last is not None and last.roots == ["/lib"] and last.options["reference"] == ["/lib/ref"]
        assert idx.counts(["/lib"], "photodedup-tiny/random") == {"files": 3, "errors": 1, "bytes": 23, "embedded": 1}
        recs = {r.path: r for r in idx.records(["/lib"], "photodedup-tiny/random")}
        assert recs["/lib/a.jpg"].dhash == (1 << 64) - 1 and recs["/lib/a.jpg"].rotated_hashes[0] == (1, 2)
        assert recs["/lib/a.jpg"].embedding is not None
        assert idx.ignored() == [frozenset({"/lib/a.jpg", "/lib/b.jpg"})]


def test_an_index_from_before_the_transparency_measure_still_groups_and_rehashes_only_what_can_be_drawn(
    tmp_path: Path,
) -> None:
    """Migration 11: a JPEG has no alpha channel, so its row reads 0 and is not hashed again; a PNG's reads as
    unknown (not drawn: it groups as before) until the next scan hashes it again (its mtime no longer matches)."""
    from photodedup.client.grouping import GroupingConfig
    from photodedup.client.grouping.near import is_drawn

    db = tmp_path / "index.sqlite3"
    _at_version(db, 10)
    conn = sqlite3.connect(db)
    rows = [("/p/a.jpg", "JPEG", None), ("/p/b.png", "PNG", None), ("/p/c.png", None, "cannot decode")]
    for path, fmt, error in rows:
        conn.execute(
            "INSERT INTO files (path, size, mtime_ns, md5, dhash, phash, width, height, format, error, seen_scan)"
            " VALUES (?, 10, 7, ?, 1, 2, 640, 480, ?, ?, 1)",
            (path, path, fmt, error),
        )
    conn.commit()
    conn.close()
    with Index(db) as idx:
        stored = {p: (t, m) for p, t, m in idx.conn.execute("SELECT path, transparent, mtime_ns FROM files")}
        records = {r.path: r for r in idx.records(["/p"], None)}
    assert stored == {"/p/a.jpg": (0.0, 7), "/p/b.png": (None, -1), "/p/c.png": (None, 7)}
    assert records["/p/a.jpg"].transparent == 0.0 and records["/p/b.png"].transparent is None
    assert not any(is_drawn(r, GroupingConfig()) for r in records.values())


def test_the_transparency_measure_is_stored_and_read_back(index: Index) -> None:
    scan = index.start_scan(["/p"], None, {})
    drawn = _res("/p/icon.png")
    drawn.format, drawn.transparent = "PNG", 0.375
    index.put_hashes([drawn, _res("/p/photo.jpg", md5="b" * 32)], scan)
    records = {r.path: r for r in index.records(["/p"], None)}
    assert records["/p/icon.png"].transparent == 0.375 and records["/p/photo.jpg"].transparent is None


def test_an_index_from_a_newer_release_is_refused_untouched(tmp_path: Path) -> None:
    db = tmp_path / "index.sqlite3"
    _at_version(db, SCHEMA_VERSION)
    sqlite3.connect(db).execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}").connection.close()
    with pytest.raises(IndexSchemaError, match="newer photodedup"):
        Index(db)
    assert sqlite3.connect(db).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1


def test_content_windows_and_keeper_signals_round_trip(index: Index) -> None:
    scan = index.start_scan(["/p"], None, {})
    res = _res("/p/a.jpg")
    res.content, res.picture_pixels = (1, 2, 3, 3), 2
    res.windows = ((to_signed64(1 << 63), 1), (2, 3))
    res.camera, res.quality, res.grey = True, 0, False
    index.put_hashes([res, _res("/p/b.jpg")], scan)
    a, b = list(index.records(["/p"], None))
    assert a.content == (1, 2, 3, 3) and a.picture_pixels == 2 and a.content_pixels == 2
    assert window_array(a.windows).tolist() == [[1 << 63, 1], [2, 3]]
    assert (a.camera, a.quality, a.grey) == (True, 0, False)
    assert b.content is None and len(b.windows) == 0 and (b.camera, b.quality, b.grey) == (None, None, None)


def test_files_hashed_before_schema_3_still_group_and_are_rehashed(tmp_path: Path) -> None:
    """Schema 1 rows lack the content box, windows and keeper signals: they keep grouping by their
    hashes, and the next scan hashes them again (they are no longer current) to fill the new columns."""
    db = tmp_path / "index.sqlite3"
    _at_version(db, 2)
    conn = sqlite3.connect(db)
    conn.execute(
        "INSERT INTO files (path, size, mtime_ns, md5, dhash, phash, width, height, format, seen_scan)"
        " VALUES ('/p/a.jpg', 10, 5, ?, 1, 2, 4, 3, 'JPEG', 1)",
        ("a" * 32,),
    )
    conn.commit()
    conn.close()
    with Index(db) as idx:
        (rec,) = list(idx.records(["/p"], None))
        assert rec.md5 == "a" * 32 and (rec.dhash, rec.phash) == (1, 2) and rec.content is None
        assert len(rec.windows) == 0
        size, mtime_ns, done = idx.known(["/p/a.jpg"])["/p/a.jpg"]
        assert done and size == 10 and mtime_ns != 5


@pytest.mark.parametrize("content", [b"", b"this is not a database" * 100, b"SQLite format 3\x00" + b"\xff" * 200])
def test_a_damaged_or_empty_index_is_one_error_and_a_backup(tmp_path: Path, content: bytes) -> None:
    from photodedup.client.index import IndexDamagedError

    db = tmp_path / "index.sqlite3"
    db.write_bytes(content)
    with pytest.raises(IndexDamagedError, match="cannot be read") as err:
        Index(db)
    assert "\n" not in str(err.value)
    (backup,) = tmp_path.glob("index.sqlite3.damaged-*")
    assert backup.read_bytes() == content and db.read_bytes() == content  # nothing overwritten


def test_an_index_at_schema_3_gains_the_verdicts_table_with_its_files_kept(tmp_path: Path) -> None:
    """Schema 4 adds stored verification verdicts; files and decisions of schema 3 stay as they were."""
    db = tmp_path / "index.sqlite3"
    _at_version(db, 3)
    conn = sqlite3.connect(db)
    conn.execute(
        "INSERT INTO files (path, size, mtime_ns, md5, width, height, format, seen_scan, content)"
        " VALUES ('/p/a.jpg', 10, 1, 'm1', 4, 3, 'JPEG', 1, NULL)"
    )
    conn.execute("INSERT INTO ignores VALUES ('/p/a.jpg', '/p/b.jpg', 1.0)")
    conn.commit()
    assert "verdicts" not in {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    conn.close()
    with Index(db) as idx:
        assert idx.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION >= 4
        assert idx.file_md5("/p/a.jpg") == "m1"
        assert idx.ignored() == [frozenset({"/p/a.jpg", "/p/b.jpg"})]
        assert idx.verdicts("v1") == {}
        idx.put_verdicts("v1", [("m1", "m2@0,0,4,3", True), ("m1", "m3", False)])
    with Index(db) as idx:
        assert idx.verdicts("v1") == {("m1", "m2@0,0,4,3"): True, ("m1", "m3"): False}


def test_an_index_at_schema_5_keeps_its_verdicts_and_gains_their_detail(tmp_path: Path) -> None:
    """Schema 6 adds what verification found beside each verdict; verdicts of schema 5 stay, without it."""
    db = tmp_path / "index.sqlite3"
    _at_version(db, 5)
    conn = sqlite3.connect(db)
    conn.execute("INSERT INTO verdicts (a, b, version, same, created) VALUES ('m1', 'm2', 'v1', 1, 1.0)")
    conn.commit()
    conn.close()
    with Index(db) as idx:
        assert idx.verdicts("v1") == {("m1", "m2"): True} and idx.verdict_details("v1") == {}
        idx.put_verdicts("v1", [("m1", "m3", True, '{"inliers": 40}')])
        assert idx.verdict_details("v1") == {("m1", "m3"): '{"inliers": 40}'}


def test_an_index_at_schema_12_keeps_the_newest_verifiers_verdicts_with_the_version_stored_once(tmp_path: Path) -> None:
    """Schema 13 keeps the verifier version once (`meta`) instead of on every row: the newest version's verdicts
    and their detail stay, an older version's go (as the next write would have dropped them)."""
    db = tmp_path / "index.sqlite3"
    _at_version(db, 12)
    conn = sqlite3.connect(db)
    conn.executemany(
        "INSERT INTO verdicts (a, b, version, same, created, detail) VALUES (?, ?, ?, ?, ?, ?)",
        [
            ("m1", "m2", "old", 1, 1.0, None),
            ("m1", "m3", "new", 1, 2.0, '{"inliers": 40}'),
            ("m2", "m3", "new", 0, 2.0, None),
        ],
    )
    conn.commit()
    conn.close()
    with Index(db) as idx:
        columns = [r[1] for r in idx.conn.execute("PRAGMA table_info(verdicts)")]
        assert "version" not in columns
        assert idx.verdicts("old") == {}
        assert idx.verdicts("new") == {("m1", "m3"): True, ("m2", "m3"): False}
        assert idx.verdict_details("new") == {("m1", "m3"): '{"inliers": 40}'}
        idx.put_verdicts("newer", [("m1", "m4", False)])  # another version: the rows of the last one go
        assert idx.verdicts("new") == {} and idx.verdicts("newer") == {("m1", "m4"): False}


def test_an_index_at_schema_12_without_verdicts_migrates(tmp_path: Path) -> None:
    db = tmp_path / "index.sqlite3"
    _at_version(db, 12)
    with Index(db) as idx:
        assert idx.verdicts("v1") == {}
        idx.put_verdicts("v1", [("m1", "m2", True)])
        assert idx.verdicts("v1") == {("m1", "m2"): True}


def test_the_generation_moves_with_every_change_to_a_file_or_an_embedding(index: Index) -> None:
    """The kept groups stand while the generation stands (client.groupcache), so every write that can change
    a record must move it, and decisions, verdicts and scans (kept apart in the grouping digest) need not."""
    scan = index.start_scan(["/p"], None, {})
    moves = [
        lambda: index.put_hashes([_res("/p/a.jpg"), _res("/p/b.jpg", md5="b" * 32)], scan),
        lambda: index.put_embeddings("m", [("/p/a.jpg", np.ones(4, np.float32), None)]),
        lambda: index.put_embeddings("m", [("/p/a.jpg", np.zeros(4, np.float32), None)]),
        lambda: index.put_hashes([_res("/p/a.jpg", size=11)], scan),  # changed: its embedding goes too
        lambda: index.forget(["/p/b.jpg"]),
        lambda: index.forget_missing(["/p"], set()),
    ]
    for move in moves:
        before = index.generation()
        move()
        assert index.generation() > before
    before = index.generation()
    index.add_ignore(["/p/x", "/p/y"])
    index.put_verdicts("v", [("a" * 32, "b" * 32, True)])
    index.finish_scan(index.start_scan(["/p"], None, {}))
    index.forget_missing(["/p"], set())  # nothing left to forget
    assert index.generation() == before


def test_records_leave_window_hashes_in_the_index_and_read_them_back_checked(index: Index) -> None:
    """A large library's window hashes were most of its records' memory: `records` leaves them in the index
    (the full frame and a digest held), the loose search reads them back, and a change in between is one clear
    error, never groups made from hashes other than those digested."""
    scan = index.start_scan(["/p"], None, {})
    pairs = ((1, 2), (3, 4), (5, 6))
    index.put_hashes([dataclasses.replace(_res("/p/a.jpg"), windows=pairs), _res("/p/b.jpg", md5="b" * 32)], scan)
    assert isinstance(next(index.records(["/p"], None)).windows, bytes)  # held unless asked
    by_path = {r.path: r for r in index.records(["/p"], None, leave_windows=True)}
    stored, empty = by_path["/p/a.jpg"].windows, by_path["/p/b.jpg"].windows
    assert isinstance(stored, StoredWindows) and len(stored) == 3 and not empty
    assert window_array(stored).tolist() == [list(p) for p in pairs]
    assert window_key(stored) == window_key(pairs) == window_key(np.array(pairs, dtype=np.uint64))
    index.put_hashes([dataclasses.replace(_res("/p/a.jpg"), windows=((1, 2), (3, 5), (5, 6)))], scan)
    with pytest.raises(PhotodedupError, match="changed while grouping"):
        window_array(stored)
    index.forget(["/p/a.jpg"])
    with pytest.raises(PhotodedupError, match="changed while grouping"):
        window_neighbours([stored, ((1, 2),)], 12)


def test_records_of_reads_just_the_named_hashed_images(index: Index) -> None:
    scan = index.start_scan(["/p"], None, {})
    windowed = dataclasses.replace(_res("/p/a.jpg"), windows=((1, 2), (3, 4)))
    index.put_hashes([windowed, _res("/p/b.jpg", md5="b" * 32), _res("/p/bad.jpg", error="broken")], scan)
    index.put_embeddings("m", [("/p/a.jpg", np.ones(4, np.float32), None)])
    every = {r.path: r for r in index.records(["/p"], "m")}
    got = index.records_of(["/p/a.jpg", "/p/bad.jpg", "/p/none.jpg"], "m")
    assert list(got) == ["/p/a.jpg"]
    assert got["/p/a.jpg"].md5 == every["/p/a.jpg"].md5 and got["/p/a.jpg"].embedding is not None
    assert (window_array(got["/p/a.jpg"].windows) == window_array(every["/p/a.jpg"].windows)).all()
    shown = index.records_of(["/p/a.jpg", "/p/b.jpg"], "m", hashes=False)  # for reports: no grouping hashes
    assert sorted(shown) == ["/p/a.jpg", "/p/b.jpg"]
    assert every["/p/a.jpg"].windows and every["/p/a.jpg"].rotated_hashes
    full, light = every["/p/a.jpg"], shown["/p/a.jpg"]
    assert light.embedding is not None and (light.embedding == full.embedding).all()
    unhashed = dataclasses.replace(full, windows=b"", rotated_hashes=(), embedding=None)
    assert dataclasses.replace(light, embedding=None) == unhashed
