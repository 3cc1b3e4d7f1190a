"""The index's schema as numbered migrations: each step takes an index from `PRAGMA user_version` i to
i + 1 (`Index.migrate` runs them, one transaction each). Kept apart from the code that reads and writes
the index, because these steps are history: released steps are never edited, only appended to."""

from __future__ import annotations

# Schema migrations, in order: MIGRATIONS[i] takes an index from `PRAGMA user_version` i to i + 1 inside
# one transaction. Never edit a released step; append a new one. The first step is the schema of the
# releases before user_version was used; its statements are idempotent (IF NOT EXISTS) because those
# indexes already hold it at user_version 0.
# `files.seen_scan` below now holds the last scan that hashed the file: deleted files are found by comparing the
# walk with the index (`Index.forget_missing`), not by marking rows seen. The column stays for the releases that
# still read it.
_V1_RELEASE = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files (
    path TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    md5 TEXT,
    dhash INTEGER,              -- 64-bit perceptual hashes, stored as signed two's complement
    phash INTEGER,
    width INTEGER,
    height INTEGER,
    format TEXT,
    exif_time REAL,             -- capture time from EXIF, seconds since the epoch (camera clock as UTC)
    rotated BLOB,               -- dhash, phash of the image turned 90, 180, 270 degrees: 6 x int64 LE
    error TEXT,                 -- why the file could not be hashed; NULL when it was
    seen_scan INTEGER NOT NULL  -- the last scan whose walk found the file
);
CREATE INDEX IF NOT EXISTS files_md5 ON files(md5);
CREATE TABLE IF NOT EXISTS embeddings (
    path TEXT PRIMARY KEY REFERENCES files(path) ON DELETE CASCADE,
    model_id TEXT NOT NULL,
    vector BLOB,                -- float16 little-endian; NULL when the model refused the image
    error TEXT
);
CREATE TABLE IF NOT EXISTS ignores (
    a TEXT NOT NULL,            -- a pair of paths the user declared not duplicates, a < b
    b TEXT NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (a, b)
);
CREATE TABLE IF NOT EXISTS scans (
    id INTEGER PRIMARY KEY,
    started REAL NOT NULL,
    finished REAL,              -- NULL while running or after an interrupted scan
    roots TEXT NOT NULL,        -- JSON list of absolute roots
    model_id TEXT,
    options TEXT NOT NULL DEFAULT '{}'
);
"""

# Review decisions (photodedup review): the files the user chose to keep, which beat the keep policy in
# any group that holds them, and the groups marked done, keyed by a digest of their member paths (a group
# that gains or loses a file after a rescan is a new group to review).
_V2_REVIEW = """
CREATE TABLE keeper_choices (path TEXT PRIMARY KEY, created REAL NOT NULL);
CREATE TABLE done_groups (members_key TEXT PRIMARY KEY, created REAL NOT NULL);
"""


# Content box, picture pixels, sub-window hashes and keeper signals. Files hashed before them are hashed
# again by the next scan (an mtime of -1 never matches a file's), and group as before until then.
_V3_CONTENT = """
ALTER TABLE files ADD COLUMN content BLOB;          -- picture inside uniform borders: l, t, r, b as 4 x int32 LE
ALTER TABLE files ADD COLUMN picture_pixels INTEGER; -- pixels of the picture (content box less rotated corners)
ALTER TABLE files ADD COLUMN windows BLOB;          -- dhash, phash of sub-windows, full frame first: n x 2 x int64 LE
ALTER TABLE files ADD COLUMN camera INTEGER;        -- 1 when EXIF names a camera make or model
ALTER TABLE files ADD COLUMN quality INTEGER;       -- estimated quality 1..100; 0: lossless with JPEG block traces
ALTER TABLE files ADD COLUMN grey INTEGER;          -- 1 for a colour-less picture
UPDATE files SET mtime_ns = -1 WHERE error IS NULL;
"""

# Geometric verification verdicts (`client.verdicts`), so an unchanged library is not verified again. A pair
# is keyed by each side's content MD5 and content box ("md5" or "md5@l,t,r,b"), a < b, and the verifier
# version; a file whose bytes change gets a new MD5 and so new pairs.
_V4_VERDICTS = """
CREATE TABLE verdicts (
    a TEXT NOT NULL,
    b TEXT NOT NULL,
    version TEXT NOT NULL,      -- client.verify.VERIFIER_VERSION that decided
    same INTEGER NOT NULL,      -- 1: the same picture
    created REAL NOT NULL,
    PRIMARY KEY (a, b, version)
) WITHOUT ROWID;
"""

# Contrast of the content (how much a hash distance says about it: `client.content.contrast`). Files hashed
# before it are hashed again by the next scan, as for v3; until then they count as not weak.
_V5_CONTRAST = """
ALTER TABLE files ADD COLUMN contrast REAL;         -- grey standard deviation of the content at 32 x 32 px
UPDATE files SET mtime_ns = -1 WHERE error IS NULL;
"""

# What verification found for a pair (`client.verdicts`: transform, inliers, coverage, disagreeing cells, which
# check), as JSON, shown in review. Verdicts stored before it keep deciding; they simply show no detail.
_V6_VERDICT_DETAIL = """
ALTER TABLE verdicts ADD COLUMN detail TEXT;        -- JSON, oriented from side a to side b; NULL: not known
"""

# Picture pixels counted as the frame less added bars and filled corners (`content.picture_pixels`) instead of
# the content box, which also trims a plain background; files hashed before are hashed again by the next scan.
_V7_PICTURE_PIXELS = """
UPDATE files SET mtime_ns = -1 WHERE error IS NULL;
"""

# The last grouping answer per scope (roots and model), under a digest of everything it was computed from
# (`client.groupcache`): an unchanged library is not grouped again.
_V8_GROUPS = """
CREATE TABLE groups_cache (
    scope TEXT PRIMARY KEY,     -- JSON [roots, model id]
    digest TEXT NOT NULL,       -- of the records, settings, decisions and grouping code it came from
    groups BLOB NOT NULL,       -- zlib-compressed JSON
    created REAL NOT NULL
);
"""

# Which of two JPEG copies was made from the other (`client.lineage`), keyed by both MD5s (a < b) and the
# test's version: source 1 when b was made from a, -1 when a from b, 0 when the test could not say.
_V9_LINEAGE = """
CREATE TABLE lineage (
    a TEXT NOT NULL,
    b TEXT NOT NULL,
    version TEXT NOT NULL,
    source INTEGER NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (a, b, version)
) WITHOUT ROWID;
"""

# A counter that every change to a file row or an embedding moves on (triggers, so no writer can forget
# it), and the counter value each kept grouping answer was computed at: an unchanged rescan finds its groups
# by comparing two numbers instead of reading and digesting every record (`client.groupcache`).
_V10_GENERATION = """
CREATE TABLE generation (n INTEGER NOT NULL);
INSERT INTO generation VALUES (0);
CREATE TRIGGER files_inserted AFTER INSERT ON files BEGIN UPDATE generation SET n = n + 1; END;
CREATE TRIGGER files_updated AFTER UPDATE ON files BEGIN UPDATE generation SET n = n + 1; END;
CREATE TRIGGER files_deleted AFTER DELETE ON files BEGIN UPDATE generation SET n = n + 1; END;
CREATE TRIGGER embeddings_inserted AFTER INSERT ON embeddings BEGIN UPDATE generation SET n = n + 1; END;
CREATE TRIGGER embeddings_updated AFTER UPDATE ON embeddings BEGIN UPDATE generation SET n = n + 1; END;
CREATE TRIGGER embeddings_deleted AFTER DELETE ON embeddings BEGIN UPDATE generation SET n = n + 1; END;
ALTER TABLE groups_cache ADD COLUMN quick TEXT;     -- digest of the settings, decisions, code and generation
"""

# Share of the frame that is see-through (`client.content.transparent_share`): a cut-out is a drawn graphic,
# whose pairs only the strict check confirms. A JPEG has no alpha channel, so its rows get 0 here; other files
# are hashed again by the next scan (as for v5) and until then read as unknown, which counts as not drawn.
_V11_TRANSPARENT = """
ALTER TABLE files ADD COLUMN transparent REAL;      -- share of pixels at most half opaque; 0 without alpha
UPDATE files SET transparent = 0 WHERE error IS NULL AND format IN ('JPEG', 'MPO');
UPDATE files SET mtime_ns = -1 WHERE error IS NULL AND transparent IS NULL;
"""

# What a rescan's plan reads of every file under its roots (`Index.known_under`), in one index: the range
# scan then reads no table rows, which carry ~1.5 KB of hashes each (an unchanged 12,000-file rescan's plan
# read: ~50 -> ~30 ms).
_V12_WALK_INDEX = """
CREATE INDEX IF NOT EXISTS files_walk ON files(path, size, mtime_ns, md5, error);
"""

# Verdicts of one verifier version at a time (`Index.put_verdicts` drops the others): the version is kept once,
# in `meta`, instead of on every row. Among 200,000 generated photos the first scan stored ~707,000 verdicts, each
# with the ~135-character version string: ~95 MB of an 810 MB index. Only the newest version's rows are kept.
_V13_VERDICT_VERSION = """
INSERT OR REPLACE INTO meta SELECT 'verdicts_version', version FROM verdicts ORDER BY created DESC LIMIT 1;
CREATE TABLE verdicts_one_version (
    a TEXT NOT NULL,
    b TEXT NOT NULL,
    same INTEGER NOT NULL,      -- 1: the same picture, as the verifier named by meta's verdicts_version decided
    created REAL NOT NULL,
    detail TEXT,                -- JSON, oriented from side a to side b; NULL: not known
    PRIMARY KEY (a, b)
) WITHOUT ROWID;
INSERT INTO verdicts_one_version SELECT a, b, same, created, detail FROM verdicts
    WHERE version = (SELECT value FROM meta WHERE key = 'verdicts_version');
DROP TABLE verdicts;
ALTER TABLE verdicts_one_version RENAME TO verdicts;
"""

MIGRATIONS: tuple[str, ...] = (
    _V1_RELEASE,
    _V2_REVIEW,
    _V3_CONTENT,
    _V4_VERDICTS,
    _V5_CONTRAST,
    _V6_VERDICT_DETAIL,
    _V7_PICTURE_PIXELS,
    _V8_GROUPS,
    _V9_LINEAGE,
    _V10_GENERATION,
    _V11_TRANSPARENT,
    _V12_WALK_INDEX,
    _V13_VERDICT_VERSION,
)
SCHEMA_VERSION = len(MIGRATIONS)
