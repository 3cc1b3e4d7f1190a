"""Verification verdicts kept in the index: geometric verification costs tens of milliseconds a pair and
grouping runs on every scan, report and apply, so a pair of unchanged files is verified once.

A verdict depends only on the two files' bytes (their MD5s), the content boxes hashing found in them and
the verifier's decision rule (`VERIFIER_VERSION`), so that is its key, with the two sides in a canonical
order: a pair is verified once whichever file grouping asks about first. A strict verdict (the check for
weak pictures, `strict.compare_strict`) is a different question about the same pair: its key's first side
carries a `strict:` prefix.

Beside the yes or no, what verification found is stored (`detail`, JSON: the transform between the two,
inliers, coverage, disagreeing cells, which check), oriented from the key's first side to its second, so
review can say where a crop lies in its original without verifying again. It decides nothing.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING

from photodedup.client.grouping.evidence import invert_affine
from photodedup.client.verify import CANNOT_DECODE, VERIFIER_VERSION, GeometricVerifier, Verdict

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

    `prefetch` starts verifying pairs on a pool of threads and returns at once; `__call__` waits for a pair
    in flight. Call `flush()` when grouping is done (it collects what is still in flight and writes it) and
    `close()` to stop the threads; new verdicts are also written every `FLUSH_EVERY`.
    """

    def __init__(
        self, index: Index, verifier: GeometricVerifier | None = None, version: str | None = None, workers: int = 0
    ) -> None:
        self.index = index
        self.verifier = verifier or GeometricVerifier(spill_dir=index.path.parent)
        self.version = version or VERIFIER_VERSION
        self.workers = workers or os.cpu_count() or 1  # threads for `prefetch`; 1: none, verified when asked
        self.known = index.verdicts(self.version)
        # What was found is kept in memory for accepted pairs only: grouping shows it as a member's evidence,
        # and a rejected pair is no member (all of it is still written to the index). Among 200,000 generated
        # photos the first scan verified ~800,000 pairs, nearly all rejected, ~250 bytes of JSON each.
        self.details = index.verdict_details(self.version, accepted_only=True)
        self.pending: list[tuple[str, str, bool, str | None]] = []
        self.hits = 0  # answered from the index
        self.misses = 0  # verified in this run
        self.fetched: set[tuple[str, str]] = set()  # verified ahead (`prefetch`) in this run
        self.inflight: dict[tuple[str, str], tuple[Future[Verdict], bool]] = {}
        self._pool: ThreadPoolExecutor | None = None
        self.on_verified: Callable[[], None] | None = None  # called (grouping's thread) as each pair is verified

    def _key(self, a: FileRecord, b: FileRecord, strict: bool) -> tuple[tuple[str, str], bool]:
        ka, kb = sys.intern(side_key(a)), sys.intern(side_key(b))  # one string a picture, however many pairs
        flipped = ka > kb  # the stored detail runs from the key's first side to its second
        key = (kb, ka) if flipped else (ka, kb)
        return ((sys.intern("strict:" + key[0]), key[1]) if strict else key), flipped

    def prefetch(self, pairs: Sequence[tuple[FileRecord, FileRecord, bool]]) -> None:
        """Start verifying the pairs (a, b, strict) grouping is about to ask about, or may ask about soon,
        that are neither stored nor in flight, on `workers` threads (OpenCV's feature search and the
        decoders release the GIL, so verification runs on every core). Returns at once: nothing is decided
        here, the answers wait for `__call__`.

        The pairs of one first side (a centre and its candidates) are one task, verified in turn on one
        thread, while the other threads take the next centres: when each pair was a task, a centre's
        candidates started on every thread at once and all but one waited for the centre's decode."""
        if self.workers < 2:
            return
        batches: dict[str, list[tuple[Future[Verdict], FileRecord, FileRecord, bool]]] = {}
        for a, b, strict in pairs:
            key, flipped = self._key(a, b, strict)
            if key in self.known or key in self.inflight:
                continue
            future: Future[Verdict] = Future()
            self.inflight[key] = (future, flipped)
            batches.setdefault(a.path, []).append((future, a, b, strict))
        if batches and self._pool is None:
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="verify")
        for batch in batches.values():
            self._pool.submit(self._verify, batch)  # type: ignore[union-attr]

    def _verify(self, batch: list[tuple[Future[Verdict], FileRecord, FileRecord, bool]]) -> None:
        """Verify a batch of pairs in turn, each answer (or error) on its own future."""
        for future, a, b, strict in batch:
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(self.verifier.verdict(a.path, a.content, b.path, b.content, strict))
            except BaseException as exc:  # noqa: BLE001 - handed to whoever asks for this pair
                future.set_exception(exc)

    def _collect(self, key: tuple[str, str]) -> Verdict:
        """Wait for a pair in flight and keep its verdict."""
        future, flipped = self.inflight.pop(key)
        verdict = future.result()
        self.misses += 1
        if self.on_verified is not None:
            self.on_verified()
        self.fetched.add(key)
        self._keep(key, verdict, flipped)
        return verdict

    def _keep(self, key: tuple[str, str], verdict: Verdict, flipped: bool) -> None:
        if verdict.reason == CANNOT_DECODE:
            return  # a file gone or unreadable since the scan: ask again next time
        detail = _to_detail(_oriented(verdict, flipped))
        self.known[key] = verdict.same
        if verdict.same:
            self.details[key] = detail
        self.pending.append((*key, verdict.same, detail))
        if len(self.pending) >= FLUSH_EVERY:
            self._write()

    def __call__(self, a: FileRecord, b: FileRecord, strict: bool = False) -> Verdict:
        """Are these two indexed files the same picture (`.same`), and what was found (a to b)? Stored
        verdict first, else the one in flight, else verified and stored. A verdict stored without detail
        comes back without it."""
        key, flipped = self._key(a, b, strict)
        if key in self.inflight and self._collect(key).reason == CANNOT_DECODE:
            return Verdict(False, reason=CANNOT_DECODE)
        same = self.known.get(key)
        if same is not None:
            if key not in self.fetched:  # verified ahead in this run: counted as verified there
                self.hits += 1
            return _oriented(_from_detail(same, self.details.get(key), strict), flipped)
        self.misses += 1
        verdict = self.verifier.verdict(a.path, a.content, b.path, b.content, strict)
        if self.on_verified is not None:
            self.on_verified()
        self._keep(key, verdict, flipped)
        return verdict

    def flush(self) -> None:
        """Collect the verdicts still in flight (asked ahead, never asked: still true, so kept) and write
        those found since the last write, in one transaction. A check that failed is left out (and logged):
        this runs when grouping ends, also when it ends with an error, which it must not hide."""
        for key in list(self.inflight):
            try:
                self._collect(key)
            except Exception as exc:  # noqa: BLE001 - never asked for: nothing waits on its answer
                log.warning("verification of a pair checked ahead failed: %s", exc)
        self._write()

    def _write(self) -> None:
        if self.pending:
            self.index.put_verdicts(self.version, self.pending)
            self.pending = []

    def close(self) -> None:
        """Stop the verifying threads (after `flush`; what is still in flight is dropped) and drop the
        pictures and features kept for this run."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self.inflight.clear()
        self.verifier.close()  # its features' temporary file


def _oriented(verdict: Verdict, flipped: bool) -> Verdict:
    """The verdict with its transform running the other way when `flipped`."""
    if not flipped or verdict.transform is None:
        return verdict
    return dataclasses.replace(verdict, transform=invert_affine(verdict.transform))


def _to_detail(verdict: Verdict) -> str:
    return json.dumps(
        {
            "transform": verdict.transform,
            "inliers": verdict.inliers,
            "coverage": verdict.coverage,
            "bad_cells": verdict.bad_cells,
            "strict": verdict.strict,
            "aligned_by": verdict.aligned_by,
            "reason": verdict.reason,
        }
    )


def _from_detail(same: bool, detail: str | None, strict: bool) -> Verdict:
    """A stored verdict; without a stored detail (an older row) just its decision."""
    if detail is None:
        return Verdict(same, strict=strict)
    try:
        d = json.loads(detail)
        transform = d.get("transform")
        return Verdict(
            same,
            int(d.get("inliers", 0)),
            float(d.get("coverage", 0.0)),
            float(d.get("bad_cells", 1.0)),
            str(d.get("reason", "")),
            None if transform is None else tuple(float(v) for v in transform),
            bool(d.get("strict", strict)),
            str(d.get("aligned_by", "")),
        )
    except (ValueError, TypeError, AttributeError) as exc:
        log.debug("unreadable verdict detail %r: %s", detail, exc)
        return Verdict(same, strict=strict)
