"""The keeper's last look: a group keeps the copy the others were made from, as the re-compression test
(`client.lineage`) shows it, among the copies that tie with the keeper on the content rules; the test's answers
are kept in the index (`StoredLineage`), so a pair of photos is decoded and re-encoded once."""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from photodedup.client.grouping import FileRecord, Group, GroupingConfig, Tier, keeper_key
from photodedup.client.lineage import LINEAGE_VERSION, lineage

if TYPE_CHECKING:
    from concurrent.futures import ProcessPoolExecutor

    from photodedup.client.index import Index

log = logging.getLogger(__name__)

# Members tested per group: a folder of many same-looking copies (a burst re-saved, an export run twice)
# costs a few tests, not one per file.
MAX_TESTS_PER_GROUP = 8
# Tests not stored yet, at least this many, start the worker processes (`StoredLineage.prefetch`): fewer do not
# pay for their start (~0.3 s here, about a second on a slower machine, against 30-130 ms a test).
PARALLEL_TESTS = 16
# glibc malloc in a lineage worker: blocks up to 32 MB (glibc's largest threshold) come from the heap, and up
# to 256 MB of freed heap is kept. By default each full-size decode's blocks and arrays were handed back and
# faulted in again for the next pair: a third of a camera pair's time went to the kernel (265 -> 204 ms).
MALLOC_MMAP_THRESHOLD = 32 << 20
MALLOC_TRIM_THRESHOLD = 256 << 20

# Keeper rules that say which file is the better picture; lineage refines them, the rules after them
# (dates, size, format, path) only break ties it leaves. The estimated quality is not among them: it is
# the setting a file was last saved at, and a copy re-saved at a higher setting from a file holds no more
# of the picture than that file; where the test shows which was made from which, that answer stands.
_CONTENT_RULES = ("resolution", "camera", "quality", "colour", "borders")
_OVERRULED = ("quality",)


def _content_key(record: FileRecord, config: GroupingConfig) -> tuple:
    rules = []
    for rule in config.keep_policy:
        if rule not in _CONTENT_RULES:
            break
        if rule not in _OVERRULED:
            rules.append(rule)
    return keeper_key(record, dataclasses.replace(config, keep_policy=tuple(rules)))[:-1]


def lineage_of(a: FileRecord, b: FileRecord) -> int:
    """`lineage(a.path, b.path).source`: the test on two records, without a store."""
    return _source(a.path, b.path)


def _init_worker() -> None:
    """A lineage worker keeps its freed heap for the next pair (`MALLOC_MMAP_THRESHOLD`)."""
    from photodedup.heap import set_thresholds

    set_thresholds(MALLOC_MMAP_THRESHOLD, MALLOC_TRIM_THRESHOLD)


def _source(path_a: str, path_b: str) -> int:
    """`lineage(...).source` of two paths: what a worker process is handed (records are not sent to it)."""
    return lineage(path_a, path_b).source


class StoredLineage:
    """`lineage_of` that keeps its answers in the index, keyed by both files' MD5s and `LINEAGE_VERSION`:
    a pair of photos is decoded and re-encoded once, not on every regrouping."""

    def __init__(self, index: Index, workers: int = 0) -> None:
        self.index = index
        self.workers = workers or os.cpu_count() or 1  # processes for `prefetch`
        self.known = index.lineages(LINEAGE_VERSION)
        self.new: dict[tuple[str, str], int] = {}
        self._pool: ProcessPoolExecutor | None = None  # `_workers`
        self.on_tested: Callable[[], None] | None = None  # called as each test not stored yet is answered

    @staticmethod
    def _key(a: FileRecord, b: FileRecord) -> tuple[tuple[str, str], tuple[str, str], bool]:
        """(stored key, the paths in the key's order, whether a and b come the other way round)."""
        flip = a.md5 > b.md5
        return ((b.md5, a.md5), (b.path, a.path), True) if flip else ((a.md5, b.md5), (a.path, b.path), False)

    def __call__(self, a: FileRecord, b: FileRecord) -> int:
        key, paths, flip = self._key(a, b)
        source = self.known.get(key)
        if source is None:
            source = _source(*paths)
            self.known[key] = self.new[key] = source
            if self.on_tested is not None:
                self.on_tested()
        return -source if flip else source

    def prefetch(self, pairs: Sequence[tuple[FileRecord, FileRecord]]) -> None:
        """Test the pairs `prefer_sources` is about to ask about that are not stored yet, in `workers`
        processes: the test is numpy and Pillow work that holds the GIL (threads do not help), and a first
        scan of a library of re-encodes asks for a thousand of them. Answers are kept as they come, so an
        interruption loses only the tests in flight; fewer than `PARALLEL_TESTS` run here, one by one, unless
        an earlier round started the workers."""
        todo = {}
        for a, b in pairs:
            key, paths, _ = self._key(a, b)
            if key not in self.known:
                todo[key] = paths
        # Fewer than PARALLEL_TESTS do not pay for starting the workers, but do use them once started.
        if self.workers < 2 or len(todo) < (2 if self._pool is not None else PARALLEL_TESTS):
            return
        from concurrent.futures import as_completed
        from concurrent.futures.process import BrokenProcessPool

        try:
            pool = self._workers(len(todo))
            futures = {pool.submit(_source, *paths): key for key, paths in todo.items()}
            for future in as_completed(futures):
                key = futures[future]
                self.known[key] = self.new[key] = future.result()
                if self.on_tested is not None:
                    self.on_tested()
        except (BrokenProcessPool, OSError) as exc:  # no workers here: the rest are tested one by one
            log.warning("lineage: worker processes failed (%s); testing in this process", exc)
            self.close()

    def _workers(self, tests: int) -> ProcessPoolExecutor:
        """The worker processes, started on the first round that needs them and kept for the next rounds
        (`close`): each start cost ~0.3 s, and `prefer_sources` asks in up to `MAX_TESTS_PER_GROUP` rounds
        (the dev set's scan started them five times: its lineage 5.2 -> 4.0 s)."""
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                min(self.workers, tests), mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker
            )
        return self._pool

    def close(self) -> None:
        """Stop the worker processes (tests in flight are dropped: their answers were never kept)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def flush(self) -> None:
        if self.new:
            self.index.put_lineages(LINEAGE_VERSION, [(a, b, s) for (a, b), s in self.new.items()])
            self.new.clear()


def prefer_sources(
    groups: Sequence[Group], config: GroupingConfig, test: Callable[[FileRecord, FileRecord], int] = lineage_of
) -> list[Group]:
    """Groups whose keeper the re-compression test shows to be made from a near copy that ties with it on
    the content rules get that copy as keeper (the original, not its re-encode, turn or brightened copy),
    whatever quality each was saved at (an edit re-saved at a higher quality than its original's).

    Only near copies of the keeper's own size (any turn) are tested, JPEGs against each other and a HEIC
    against a JPEG (`lineage`), at most `MAX_TESTS_PER_GROUP` per
    group, best-ranked first; a keeper under a reference folder stays; what the test cannot tell leaves the
    policy's choice. The groups advance one test at a time together, so a `test` with a `prefetch` method
    (`StoredLineage`) is handed each round's pairs at once."""
    from photodedup.client.decisions import with_keeper

    out = list(groups)
    chains: dict[int, tuple[list[FileRecord], FileRecord]] = {}  # position -> (copies to test, current)
    for i, group in enumerate(groups):
        keep = group.keep
        if group.kind is Tier.EXACT or keep.path in group.protected:
            continue
        want = _content_key(keep, config)
        tied = sorted(
            (
                m.record
                for m in group.members
                if m.tier is Tier.NEAR
                and m.record.md5 != keep.md5
                and m.record.path not in group.protected
                and _content_key(m.record, config) == want
            ),
            key=lambda r: keeper_key(r, config),
        )
        if tied:
            chains[i] = (tied[:MAX_TESTS_PER_GROUP], keep)
    prefetch = getattr(test, "prefetch", None)
    for step in range(MAX_TESTS_PER_GROUP):
        asked = {i: (current, copies[step]) for i, (copies, current) in chains.items() if step < len(copies)}
        asked = {i: (cur, rec) for i, (cur, rec) in asked.items() if rec.md5 != cur.md5}
        if prefetch is not None:
            prefetch(list(asked.values()))
        for i, (current, rec) in asked.items():
            if test(current, rec) == -1:
                chains[i] = (chains[i][0], rec)  # the current choice was made from this copy
    changed = 0
    for i, (_, current) in chains.items():
        if current is not groups[i].keep:
            changed += 1
            out[i] = with_keeper(groups[i], current)
    if changed:
        log.info("keeper: %d groups keep the copy the others were made from", changed)
    return out
