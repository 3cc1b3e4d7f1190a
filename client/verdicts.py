"""Verification verdicts kept in the index: geometric verification costs tens of milliseconds a pair and
grouping runs on every scan, report and apply, so a pair of unchanged files is verified once.

A verdict depends only on the two files' bytes (their MD5s), the content boxes hashing found in them and
the verifier's decision rule (`VERIFIER_VERSION`), so that is its key, with the two sides in a canonical
order: a pair is verified once whichever file grouping asks about first. A strict verdict (the check for
weak pictures, `verify.compare_strict`) is a different question about the same pair: its key's first side
carries a `strict:` prefix.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from photodedup.client.verify import CANNOT_DECODE, VERIFIER_VERSION, GeometricVerifier

if TYPE_CHECKING:
    from photodedup.client.grouping import FileRecord
    from photodedup.client.index import Index

log = logging.getLogger(__name__)

FLUSH_EVERY = 500  # new verdicts written per transaction: an interrupted grouping keeps most of its work


def side_key(record: FileRecord) -> str:
    """What a verdict depends on for one side: the file's bytes and the content box verified."""
    if record.content is None:
        return record.md5
    return record.md5 + "@" + ",".join(str(v) for v in record.content)


class StoredVerifier:
    """The grouping verifier with verdicts read from and written back to the index.

    Call `flush()` when grouping is done; new verdicts are also written every `FLUSH_EVERY`.
    """

    def __init__(self, index: Index, verifier: GeometricVerifier | None = None, version: str | None = None) -> None:
        self.index = index
        self.verifier = verifier or GeometricVerifier()
        self.version = version or VERIFIER_VERSION
        self.known = index.verdicts(self.version)
        self.pending: list[tuple[str, str, bool]] = []
        self.hits = 0
        self.misses = 0

    def __call__(self, a: FileRecord, b: FileRecord, strict: bool = False) -> bool:
        """Are these two indexed files the same picture? Stored verdict first, else verified and stored."""
        ka, kb = side_key(a), side_key(b)
        key = (ka, kb) if ka <= kb else (kb, ka)
        if strict:
            key = ("strict:" + key[0], key[1])
        same = self.known.get(key)
        if same is not None:
            self.hits += 1
            return same
        self.misses += 1
        verdict = self.verifier.verdict(a.path, a.content, b.path, b.content, strict)
        if verdict.reason == CANNOT_DECODE:
            return False  # a file gone or unreadable since the scan: ask again next time
        self.known[key] = verdict.same
        self.pending.append((*key, verdict.same))
        if len(self.pending) >= FLUSH_EVERY:
            self.flush()
        return verdict.same

    def flush(self) -> None:
        """Write the verdicts found since the last flush, in one transaction."""
        if self.pending:
            self.index.put_verdicts(self.version, self.pending)
            self.pending = []
