"""The scan index: one SQLite file (WAL) holding what a scan learned, so a rescan does only new work.

Files are keyed by absolute path and are current while their size and mtime match. Every write is a
short transaction, so Ctrl-C or a crash at any moment leaves finished files recorded and the rest
simply missing: the next scan picks up exactly those. Files that vanished are forgotten only after a
walk of their root completed. "Not duplicates" decisions live in their own table and outlive rescans.
"""

from __future__ import annotations

import glob
import json
import logging
import shutil
import sqlite3
import struct
import sys
import time
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from photodedup.client.grouping.records import FileRecord, HashPairs, StoredWindows, WindowSource
from photodedup.client.schema import MIGRATIONS, SCHEMA_VERSION
from photodedup.errors import PhotodedupError

if TYPE_CHECKING:
    import numpy as np

    from photodedup.client.hashing import HashResult

log = logging.getLogger(__name__)


class IndexSchemaError(PhotodedupError):
    """The index file cannot be used by this release (written by a newer one)."""


class IndexDamagedError(PhotodedupError):
    """The index file is not a readable SQLite database (empty, truncated, overwritten)."""


@dataclass(frozen=True)
class ScanInfo:
    id: int
    started: float
    finished: float | None
    roots: list[str]
    model_id: str | None
    options: dict[str, Any]


def _under(root: str) -> tuple[str, str]:
    """Bounds of the paths strictly below `root` for a range query ('0' sorts right after '/')."""
    root = root.rstrip("/")
    return root + "/", root + "0"


def _pack_rotated(rotated: Sequence[tuple[int, int]]) -> bytes | None:
    """(dhash, phash) pairs, signed, as int64 LE; used for the turned-image and the window hashes."""
    return struct.pack(f"<{2 * len(rotated)}q", *(v for pair in rotated for v in pair)) if rotated else None


def _unpack_rotated(blob: bytes | None) -> HashPairs | tuple[()]:
    """Back to unsigned 64-bit (dhash, phash) pairs, as grouping compares them (packed: `HashPairs`)."""
    return HashPairs(blob) if blob else ()


def _unpack_windows(blob: bytes | None) -> bytes:
    """Window hashes as stored: uint64 (dhash, phash) pairs, little-endian, read by `hamming.window_array`
    without a copy when a search needs them. As tuples of ints they cost ~120 bytes a hash and most of an
    unchanged rescan's time; as numpy views, the import of numpy itself (a search needs it anyway)."""
    return blob or b""


def _pack_content(box: tuple[int, int, int, int] | None) -> bytes | None:
    return None if box is None else struct.pack("<4i", *box)


def _unpack_content(blob: bytes | None) -> tuple[int, int, int, int] | None:
    if not blob:
        return None
    a, b, c, d = struct.unpack("<4i", blob)
    return a, b, c, d


def _unpack_vector(blob: bytes) -> np.ndarray:
    import numpy as np  # only where embeddings are read: an unchanged rescan without them needs no numpy

    return np.frombuffer(blob, dtype="<f2").astype(np.float32)


def _unsigned64(value: int) -> int:
    return value & 0xFFFF_FFFF_FFFF_FFFF  # SQLite's signed INTEGER back to the 64-bit hash


def _record(row: tuple[Any, ...], windows_in: WindowSource | None = None) -> FileRecord:
    """One row of `Index._RECORD_COLUMNS` as a grouping FileRecord; with `windows_in`, its window hashes are
    left there (`StoredWindows`) instead of held."""
    (path, size, w, h, md5, dh, ph, vec, exif_time, mtime_ns, fmt, rotated, content, picture_pixels, windows, camera,
     quality, grey, contrast, transparent) = row  # fmt: skip
    return FileRecord(
        path=path,
        size=size,
        width=w or 0,
        height=h or 0,
        md5=md5,
        dhash=None if dh is None else _unsigned64(dh),
        phash=None if ph is None else _unsigned64(ph),
        embedding=None if vec is None else _unpack_vector(vec),
        exif_time=exif_time,
        mtime=mtime_ns / 1e9,
        format=sys.intern(fmt) if fmt else "",  # a few names: one string each, not one a record
        rotated_hashes=_unpack_rotated(rotated),
        content=_unpack_content(content),
        picture_pixels=picture_pixels,
        windows=StoredWindows.of(windows_in, path, windows) if windows_in and windows else _unpack_windows(windows),
        camera=None if camera is None else bool(camera),
        quality=quality,
        grey=None if grey is None else bool(grey),
        contrast=contrast,
        transparent=transparent,
    )


def _flag(value: bool | None) -> int | None:
    return None if value is None else int(value)


def _is_damage(exc: sqlite3.DatabaseError) -> bool:
    """SQLite says the file is corrupt or not a database (not: locked, a constraint, a bug in a query)."""
    return (getattr(exc, "sqlite_errorcode", 0) & 0xFF) in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)


class Index:
    """A connection to the index; use as a context manager or call close()."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.is_file() and self.path.stat().st_size == 0:
            # SQLite would take an empty file for a new index and history would vanish without a word
            self._damaged("it is empty (0 bytes)")
        self.conn = sqlite3.connect(str(self.path), timeout=30.0, isolation_level=None)
        try:
            self.conn.execute("PRAGMA journal_mode=WAL")
            # NORMAL is durable across process crashes under WAL; only a power cut may drop the last commits.
            self.conn.execute("PRAGMA synchronous=NORMAL")
            self.conn.execute("PRAGMA foreign_keys=ON")
            self.migrate()
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
                raise
            self.conn.close()
            self._damaged(str(exc))

    def _damaged(self, reason: str) -> None:
        """Keep a copy of a damaged index and stop with one line; nothing is overwritten or recreated."""
        backup = self._backup()
        raise IndexDamagedError(
            f"the index {self.path} cannot be read ({reason}); a copy is at {backup}. Move the index away "
            '(or delete it) to start a new one: the next scan rebuilds it, but its "not duplicates" '
            "decisions and review choices are lost"
        )

    def _backup(self) -> Path:
        """A copy of the damaged file, once: a copy with the same size and time already there is reused."""
        st = self.path.stat()
        for old in sorted(self.path.parent.glob(f"{glob.escape(self.path.name)}.damaged-*")):
            o = old.stat()
            if (o.st_size, o.st_mtime_ns) == (st.st_size, st.st_mtime_ns):
                return old
        backup = self.path.with_name(f"{self.path.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
        shutil.copy2(self.path, backup)
        return backup

    # -- plumbing ---------------------------------------------------------------------------------

    def migrate(self) -> None:
        """Bring the schema to SCHEMA_VERSION, one step per transaction, so a crash mid-way resumes at the
        last finished step. An index from a newer release is refused rather than half-understood."""
        version = self.conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise IndexSchemaError(
                f"{self.path} was written by a newer photodedup (schema {version}); upgrade to open it"
            )
        for step in range(version, SCHEMA_VERSION):
            # executescript runs the step, its version bump and the mirror for older releases atomically
            self.conn.executescript(
                "BEGIN IMMEDIATE;"
                + MIGRATIONS[step]
                + f"\nINSERT OR REPLACE INTO meta VALUES ('schema_version', '{step + 1}');"
                + f"\nPRAGMA user_version = {step + 1};\nCOMMIT;"
            )
            log.debug("index %s migrated to schema %d", self.path, step + 1)

    class _Tx:
        def __init__(self, conn: sqlite3.Connection) -> None:
            self.conn = conn

        def __enter__(self) -> sqlite3.Connection:
            self.conn.execute("BEGIN IMMEDIATE")
            return self.conn

        def __exit__(self, exc_type: object, *rest: object) -> None:
            self.conn.execute("ROLLBACK" if exc_type is not None else "COMMIT")

    def transaction(self) -> Index._Tx:
        """All or nothing: a crash inside leaves the index as it was before."""
        return Index._Tx(self.conn)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Index:
        return self

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        self.close()
        if isinstance(exc, sqlite3.DatabaseError) and _is_damage(exc):
            self._damaged(str(exc))  # damaged after it was opened: the same one line and backup as at open

    # -- scans ------------------------------------------------------------------------------------

    def start_scan(self, roots: Sequence[str], model_id: str | None, options: dict[str, Any]) -> int:
        with self.transaction() as c:
            cur = c.execute(
                "INSERT INTO scans (started, roots, model_id, options) VALUES (?, ?, ?, ?)",
                (time.time(), json.dumps(list(roots)), model_id, json.dumps(options)),
            )
            return int(cur.lastrowid or 0)

    def set_scan_model_id(self, scan_id: int, model_id: str) -> None:
        """The embedder switched models mid-scan (a quantised engine fell back to fp32 before any vector)."""
        with self.transaction() as c:
            c.execute("UPDATE scans SET model_id=? WHERE id=?", (model_id, scan_id))

    def finish_scan(self, scan_id: int) -> None:
        with self.transaction() as c:
            c.execute("UPDATE scans SET finished=? WHERE id=?", (time.time(), scan_id))

    def last_scan(self, finished_only: bool = False) -> ScanInfo | None:
        where = "WHERE finished IS NOT NULL" if finished_only else ""
        row = self.conn.execute(
            f"SELECT id, started, finished, roots, model_id, options FROM scans {where} ORDER BY id DESC LIMIT 1"
        ).fetchone()
        if row is None:
            return None
        return ScanInfo(row[0], row[1], row[2], json.loads(row[3]), row[4], json.loads(row[5] or "{}"))

    # -- files ------------------------------------------------------------------------------------

    def known(self, paths: Sequence[str]) -> dict[str, tuple[int, int, bool]]:
        """path -> (size, mtime_ns, done) for the given paths that the index has."""
        out: dict[str, tuple[int, int, bool]] = {}
        for i in range(0, len(paths), 500):
            chunk = list(paths[i : i + 500])
            marks = ",".join("?" * len(chunk))
            for path, size, mtime_ns, md5, error in self.conn.execute(
                f"SELECT path, size, mtime_ns, md5, error FROM files WHERE path IN ({marks})", chunk
            ):
                out[path] = (size, mtime_ns, md5 is not None or error is not None)
        return out

    # Answered from the `files_walk` index alone (schema v12).
    KNOWN_UNDER = (
        "SELECT path, size, mtime_ns, md5 IS NOT NULL OR error IS NOT NULL FROM files WHERE path >= ? AND path < ?"
    )

    def known_under(self, roots: Sequence[str]) -> dict[str, tuple[int, int, bool]]:
        """`known` for every file under `roots`, read in one range scan per root: a walk's worth of
        `known` lookups by path cost five times as much (an unchanged rescan of 12,000 files: 84 ms)."""
        out: dict[str, tuple[int, int, bool]] = {}
        for lo, hi in self._ranges(roots):
            for path, size, mtime_ns, done in self.conn.execute(self.KNOWN_UNDER, (lo, hi)):
                out[path] = (size, mtime_ns, bool(done))
        return out

    def put_hashes(self, results: Iterable[HashResult], scan_id: int) -> None:
        """Record hashed files; a changed file's old embedding goes with its old row."""
        rows = [
            (
                r.path,
                r.size,
                r.mtime_ns,
                r.md5,
                r.dhash,
                r.phash,
                r.width,
                r.height,
                r.format,
                r.exif_time,
                _pack_rotated(r.rotated),
                _pack_content(r.content),
                r.picture_pixels,
                _pack_rotated(r.windows),
                _flag(r.camera),
                r.quality,
                _flag(r.grey),
                r.contrast,
                r.transparent,
                r.error,
                scan_id,
            )
            for r in results
        ]
        if not rows:
            return
        with self.transaction() as c:
            c.executemany("DELETE FROM embeddings WHERE path=?", ((r[0],) for r in rows))
            c.executemany(
                "INSERT OR REPLACE INTO files (path, size, mtime_ns, md5, dhash, phash, width, height, format,"
                " exif_time, rotated, content, picture_pixels, windows, camera, quality, grey, contrast, transparent,"
                " error, seen_scan)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                rows,
            )

    def put_embeddings(self, model_id: str, items: Iterable[tuple[str, np.ndarray | None, str | None]]) -> None:
        """Store (path, vector or None, error or None); rows for files no longer indexed are dropped."""
        import numpy as np

        rows = [
            (path, model_id, None if vec is None else np.asarray(vec, dtype="<f2").tobytes(), err)
            for path, vec, err in items
        ]
        if not rows:
            return
        with self.transaction() as c:
            c.executemany(
                "INSERT OR REPLACE INTO embeddings (path, model_id, vector, error)"
                " SELECT ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM files WHERE path=?)",
                ((*row, row[0]) for row in rows),
            )

    def needing_embedding(self, roots: Sequence[str], model_id: str) -> list[tuple[str, int, int]]:
        """Hashed images under `roots` without an embedding (or a recorded refusal) from `model_id`."""
        out: list[tuple[str, int, int]] = []
        for lo, hi in self._ranges(roots):
            out.extend(
                self.conn.execute(
                    "SELECT f.path, f.size, f.mtime_ns FROM files f LEFT JOIN embeddings e"
                    " ON e.path=f.path AND e.model_id=? WHERE f.path >= ? AND f.path < ?"
                    " AND f.error IS NULL AND f.md5 IS NOT NULL AND e.path IS NULL",
                    (model_id, lo, hi),
                )
            )
        return out

    def forget_missing(self, roots: Sequence[str], found: Collection[str], unreadable: Sequence[str] = ()) -> int:
        """Drop files under `roots` that this scan's complete walk did not find (deleted or moved), and the
        verification verdicts and lineage answers no file's content can use any more.

        The walk's paths are compared here rather than marked on every row: an unchanged rescan then writes
        nothing (each mark rewrote a whole row, ~2 KB with its window hashes). Files under `unreadable`
        folders (permission denied, an unmounted drive) are kept: not seeing them is not evidence that they
        are gone."""
        kept = self._ranges(unreadable)
        removed = 0
        with self.transaction() as c:
            for lo, hi in self._ranges(roots):
                gone = [
                    (p,)
                    for (p,) in c.execute("SELECT path FROM files WHERE path >= ? AND path < ?", (lo, hi))
                    if p not in found and not any(klo <= p < khi for klo, khi in kept)
                ]
                c.executemany("DELETE FROM files WHERE path=?", gone)
                removed += len(gone)
            # Verdicts are keyed by content ("md5" or "md5@box"): once no file has a side's bytes any more
            # (deleted, or edited into new bytes) the pair can never be asked again. Only when some file row
            # changed since the last pruning (the generation says so): an unchanged rescan writes nothing.
            generation = str(c.execute("SELECT n FROM generation").fetchone()[0])
            pruned = c.execute("SELECT value FROM meta WHERE key='pruned_at'").fetchone()
            if pruned is not None and pruned[0] == generation:
                return removed
            c.execute("INSERT OR REPLACE INTO meta VALUES ('pruned_at', ?)", (generation,))
            # A strict verdict's first side carries a "strict:" prefix before its MD5 (`client.verdicts`).
            c.execute(
                "DELETE FROM verdicts WHERE substr(replace(a, 'strict:', ''), 1, 32) NOT IN"
                " (SELECT md5 FROM files WHERE md5 IS NOT NULL)"
                " OR substr(b, 1, 32) NOT IN (SELECT md5 FROM files WHERE md5 IS NOT NULL)"
            )
            c.execute(
                "DELETE FROM lineage WHERE a NOT IN (SELECT md5 FROM files WHERE md5 IS NOT NULL)"
                " OR b NOT IN (SELECT md5 FROM files WHERE md5 IS NOT NULL)"
            )
        return removed

    @staticmethod
    def _ranges(roots: Sequence[str]) -> list[tuple[str, str]]:
        """Path ranges covering each root itself (a file given as a root) and everything below it.
        A root inside another root adds nothing: its files would otherwise be counted (and grouped) twice."""
        out = []
        kept: list[str] = []
        for root in sorted({r.rstrip("/") or "/" for r in roots}, key=len):
            if any(root == k or root.startswith(k.rstrip("/") + "/") for k in kept):
                continue
            kept.append(root)
            lo, hi = _under(root)
            out.append((root.rstrip("/"), root.rstrip("/") + "\x00"))
            out.append((lo, hi))
        return out

    def forget(self, paths: Iterable[str]) -> None:
        """Drop files an action moved away or deleted (their embeddings go with them)."""
        with self.transaction() as c:
            c.executemany("DELETE FROM files WHERE path=?", ((p,) for p in paths))

    def errors(self, roots: Sequence[str]) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        for lo, hi in self._ranges(roots):
            out.extend(
                self.conn.execute(
                    "SELECT path, error FROM files WHERE path >= ? AND path < ? AND error IS NOT NULL ORDER BY path",
                    (lo, hi),
                )
            )
        return out

    def counts(self, roots: Sequence[str], model_id: str | None) -> dict[str, int]:
        files = errors = embedded = 0
        total_bytes = 0
        for lo, hi in self._ranges(roots):
            n, e, b = self.conn.execute(
                "SELECT COUNT(*), COUNT(error), COALESCE(SUM(size), 0) FROM files WHERE path >= ? AND path < ?",
                (lo, hi),
            ).fetchone()
            files, errors, total_bytes = files + n, errors + e, total_bytes + b
            if model_id:
                embedded += self.conn.execute(
                    "SELECT COUNT(*) FROM embeddings WHERE path >= ? AND path < ? AND model_id=?"
                    " AND vector IS NOT NULL",
                    (lo, hi, model_id),
                ).fetchone()[0]
        return {"files": files, "errors": errors, "bytes": total_bytes, "embedded": embedded}

    _RECORD_COLUMNS = (
        "SELECT f.path, f.size, f.width, f.height, f.md5, f.dhash, f.phash, e.vector, f.exif_time,"
        " f.mtime_ns, f.format, f.rotated, f.content, f.picture_pixels, f.windows, f.camera, f.quality, f.grey,"
        " f.contrast, f.transparent FROM files f LEFT JOIN embeddings e ON e.path=f.path AND e.model_id=?"
        " WHERE f.error IS NULL AND f.md5 IS NOT NULL"
    )

    # The same columns with the turned and window hashes left out (grouping reads them; nothing after it does).
    _SHOWN_COLUMNS = _RECORD_COLUMNS.replace("f.rotated,", "NULL,").replace("f.windows,", "NULL,")

    def records(
        self, roots: Sequence[str], model_id: str | None, *, leave_windows: bool = False
    ) -> Iterator[FileRecord]:
        """Every hashed image under `roots` as a grouping FileRecord (embedding only from `model_id`). With
        `leave_windows`, their window hashes stay in the index (`StoredWindows`, read back by `read_windows`,
        so only while this index is open): held, they are most of a large library's memory."""
        source = self if leave_windows else None
        for lo, hi in self._ranges(roots):
            cur = self.conn.execute(
                self._RECORD_COLUMNS + " AND f.path >= ? AND f.path < ? ORDER BY f.path", (model_id or "", lo, hi)
            )
            for row in cur:
                yield _record(row, source)

    def read_windows(self, paths: Sequence[str]) -> list[bytes | None]:
        """The stored window hashes of each path, in order (None: not there any more), in one query."""
        cur = self.conn.execute(
            "SELECT path, windows FROM files WHERE path IN (SELECT value FROM json_each(?))", (json.dumps(paths),)
        )
        found = dict(cur.fetchall())
        return [found.get(p) for p in paths]

    def records_of(self, paths: Collection[str], model_id: str | None, *, hashes: bool = True) -> dict[str, FileRecord]:
        """The records of just these paths (those the index holds as hashed images), in one query. Without
        `hashes` their turned and window hashes are left empty: showing kept groups and acting on them never
        reads those, and unpacking them was half of reading an unchanged rescan's 4,000 group members."""
        columns = self._RECORD_COLUMNS if hashes else self._SHOWN_COLUMNS
        cur = self.conn.execute(
            columns + " AND f.path IN (SELECT value FROM json_each(?))", (model_id or "", json.dumps(list(paths)))
        )
        return {r.path: r for r in map(_record, cur)}

    def generation(self) -> int:
        """Moves on with every change to a file or an embedding (triggers, migration 10)."""
        return int(self.conn.execute("SELECT n FROM generation").fetchone()[0])

    def file_md5(self, path: str) -> str | None:
        row = self.conn.execute("SELECT md5 FROM files WHERE path=?", (path,)).fetchone()
        return None if row is None else row[0]

    # -- "not duplicates" decisions ---------------------------------------------------------------

    def add_ignore(self, paths: Collection[str]) -> int:
        """Declare every pair among `paths` not duplicates; returns how many pairs are new."""
        ordered = sorted(set(paths))
        pairs = [(a, b) for i, a in enumerate(ordered) for b in ordered[i + 1 :]]
        now = time.time()
        with self.transaction() as c:
            before = c.total_changes
            c.executemany(
                "INSERT OR IGNORE INTO ignores (a, b, created) VALUES (?, ?, ?)", ((a, b, now) for a, b in pairs)
            )
            return c.total_changes - before

    def remove_ignore(self, paths: Collection[str]) -> int:
        ordered = sorted(set(paths))
        pairs = [(a, b) for i, a in enumerate(ordered) for b in ordered[i + 1 :]]
        with self.transaction() as c:
            before = c.total_changes
            c.executemany("DELETE FROM ignores WHERE a=? AND b=?", pairs)
            return c.total_changes - before

    def ignored(self) -> list[frozenset[str]]:
        return [frozenset(row) for row in self.conn.execute("SELECT a, b FROM ignores ORDER BY a, b")]

    # -- review decisions -------------------------------------------------------------------------

    def choose_keeper(self, path: str, others: Collection[str]) -> None:
        """Keep `path` in its group; a choice made earlier for another file of that group is dropped."""
        with self.transaction() as c:
            c.executemany("DELETE FROM keeper_choices WHERE path=?", ((p,) for p in others if p != path))
            c.execute("INSERT OR REPLACE INTO keeper_choices (path, created) VALUES (?, ?)", (path, time.time()))

    def keeper_choices(self) -> dict[str, float]:
        """path -> when the user chose to keep it."""
        return dict(self.conn.execute("SELECT path, created FROM keeper_choices"))

    def set_done(self, members_key: str, done: bool) -> None:
        with self.transaction() as c:
            if done:
                c.execute(
                    "INSERT OR REPLACE INTO done_groups (members_key, created) VALUES (?, ?)",
                    (members_key, time.time()),
                )
            else:
                c.execute("DELETE FROM done_groups WHERE members_key=?", (members_key,))

    def done_groups(self) -> set[str]:
        return {row[0] for row in self.conn.execute("SELECT members_key FROM done_groups")}

    # -- the last grouping answer (client.groupcache) ----------------------------------------------

    def stored_groups(self, scope: str) -> tuple[str, str | None, bytes] | None:
        """(digest, quick digest, groups blob) stored for `scope`, or None."""
        row = self.conn.execute("SELECT digest, quick, groups FROM groups_cache WHERE scope=?", (scope,)).fetchone()
        return None if row is None else (row[0], row[1], bytes(row[2]))

    def store_groups(self, scope: str, digest: str, quick: str, blob: bytes) -> None:
        with self.transaction() as c:
            c.execute(
                "INSERT OR REPLACE INTO groups_cache (scope, digest, quick, groups, created) VALUES (?, ?, ?, ?, ?)",
                (scope, digest, quick, blob, time.time()),
            )

    def set_groups_quick(self, scope: str, quick: str) -> None:
        """The stored answer of `scope` also stands for this quick digest (its full digest matched)."""
        with self.transaction() as c:
            c.execute("UPDATE groups_cache SET quick=? WHERE scope=?", (quick, scope))

    # -- lineage of copies (client.lineage) --------------------------------------------------------

    def lineages(self, version: str) -> dict[tuple[str, str], int]:
        """(md5 a, md5 b) -> source, for every pair the lineage test `version` decided."""
        rows = self.conn.execute("SELECT a, b, source FROM lineage WHERE version=?", (version,))
        return {(a, b): int(source) for a, b, source in rows}

    def put_lineages(self, version: str, items: Iterable[tuple[str, str, int]]) -> None:
        """Store (md5 a, md5 b, source) with a < b; answers of other test versions go."""
        now = time.time()
        with self.transaction() as c:
            c.execute("DELETE FROM lineage WHERE version<>?", (version,))
            c.executemany(
                "INSERT OR REPLACE INTO lineage (a, b, version, source, created) VALUES (?, ?, ?, ?, ?)",
                ((a, b, version, int(src), now) for a, b, src in items),
            )

    # -- geometric verification verdicts ----------------------------------------------------------

    def _verdicts_version(self, c: sqlite3.Connection | None = None) -> str | None:
        """The verifier version the stored verdicts are of (one at a time), None when none were stored."""
        row = (c or self.conn).execute("SELECT value FROM meta WHERE key='verdicts_version'").fetchone()
        return None if row is None else str(row[0])

    def verdicts(self, version: str) -> dict[tuple[str, str], bool]:
        """(a, b) -> same picture, for every pair decided by verifier `version`. Each side's key is interned: a
        picture's key recurs in every pair it is in (a large library stores about eight a picture)."""
        if self._verdicts_version() != version:
            return {}
        rows = self.conn.execute("SELECT a, b, same FROM verdicts")
        return {(sys.intern(a), sys.intern(b)): bool(same) for a, b, same in rows}

    def verdict_details(self, version: str, accepted_only: bool = False) -> dict[tuple[str, str], str]:
        """(a, b) -> what verifier `version` found for the pair (JSON), where it was stored; with
        `accepted_only`, for the pairs found to be the same picture only."""
        if self._verdicts_version() != version:
            return {}
        rows = self.conn.execute(
            "SELECT a, b, detail FROM verdicts WHERE detail IS NOT NULL" + (" AND same=1" if accepted_only else "")
        )
        return {(sys.intern(a), sys.intern(b)): detail for a, b, detail in rows}

    def put_verdicts(
        self, version: str, items: Iterable[tuple[str, str, bool] | tuple[str, str, bool, str | None]]
    ) -> None:
        """Store verdicts (a, b, same[, detail JSON]) in one transaction; verdicts of another verifier version
        are dropped first (the index keeps one version's, `meta`'s verdicts_version)."""
        now = time.time()
        with self.transaction() as c:
            if self._verdicts_version(c) != version:
                c.execute("DELETE FROM verdicts")
                c.execute("INSERT OR REPLACE INTO meta VALUES ('verdicts_version', ?)", (version,))
            c.executemany(
                "INSERT OR REPLACE INTO verdicts (a, b, same, created, detail) VALUES (?, ?, ?, ?, ?)",
                ((it[0], it[1], int(it[2]), now, it[3] if len(it) > 3 else None) for it in items),
            )
