"""One scan: settle what the embedder will be (without loading a model), walk the roots, hash new or
changed files on all cores, embed the thumbnails of files that lack an embedding for the planned model,
record everything in the index as it finishes, forget deleted files, then group what the index holds.
The model (or the server streams) is opened only when some file needs an embedding, so an unchanged
rescan never imports torch.

Writes go to the index in small transactions while the work runs, so an interrupted scan loses at most
the last second of work and the next scan carries on from there.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from photodedup.client.embedplan import EmbedPlan, plan_embedder
from photodedup.client.index import Index
from photodedup.client.walk import FoundFile, Walker, WalkStats
from photodedup.errors import PhotodedupError

if TYPE_CHECKING:
    from photodedup.client.embedders import EmbedOutcome, Mode
    from photodedup.client.grouping import FileRecord, Group, GroupingConfig
    from photodedup.client.hashing import HashJob, HashResult
    from photodedup.settings import Settings

log = logging.getLogger(__name__)

FLUSH_EVERY = 200
FLUSH_SECONDS = 1.0


@dataclass
class ScanSummary:
    """What one scan did; the CLI prints it and the reports carry it as `stats`."""

    roots: list[str]
    scan_id: int = 0
    files: int = 0
    hashed: int = 0
    unchanged: int = 0
    removed: int = 0
    embedded: int = 0
    embed_failed: int = 0
    embed_error: str | None = None  # the first reason an image got no embedding
    errors: list[tuple[str, str]] = field(default_factory=list)
    model_id: str | None = None
    embedder: str | None = None
    skipped_reason: str | None = None
    walk: WalkStats = field(default_factory=WalkStats)
    seconds: float = 0.0
    hash_seconds: float = 0.0  # the hashing (and embedding) phase alone: opening the embedder to the last answer
    hash_cpu_seconds: float = 0.0  # CPU time of that phase: this process (all threads) and its hashing workers


def _progress(console: Any, enabled: bool) -> Any:
    if not enabled:
        from photodedup.client.console import NoProgress

        return NoProgress()
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    if console is not None and not isinstance(console, Console):  # a plain console: bars asked for anyway
        console = Console(file=console.file)
    return Progress(
        TextColumn("{task.description:<10}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


def _plan(index: Index, roots: Sequence[str], found: list[FoundFile]) -> tuple[list[HashJob], int]:
    """Split the walk into files to (re)hash and unchanged ones (which are not written to)."""
    known = index.known_under(roots)
    changed = [f for f in found if (k := known.get(f.path)) is None or k[0] != f.size or k[1] != f.mtime_ns or not k[2]]
    if not changed:
        return [], len(found)  # nothing to hash: the hashing code (numpy, Pillow) is not even imported
    from photodedup.client.hashing import HashJob

    return [HashJob(f.path, f.size, f.mtime_ns) for f in changed], len(found) - len(changed)


def run_scan(
    roots: Sequence[str],
    settings: Settings,
    index: Index,
    mode: Mode = "auto",
    console: Any = None,
    progress: bool = True,
    options: dict[str, Any] | None = None,
) -> ScanSummary:
    """Bring the index up to date for `roots`. Raises KeyboardInterrupt after saving finished work."""
    start = time.monotonic()
    walker = Walker(roots, include_hidden=settings.scan.include_hidden)
    summary = ScanSummary(roots=walker.roots)
    plan = plan_embedder(settings, mode)
    summary.model_id, summary.skipped_reason = plan.model_id, plan.skipped_reason
    embedder = None
    try:
        scan_id = index.start_scan(walker.roots, summary.model_id, {"mode": mode, **(options or {})})
        summary.scan_id = scan_id
        found = list(walker.walk())
        summary.walk = walker.stats
        summary.files = len(found)
        jobs, summary.unchanged = _plan(index, walker.roots, found)
        lacking = _lacking_embeddings(index, walker.roots, plan, found, jobs)
        phase, phase_cpu = time.monotonic(), _cpu_seconds()  # opening the embedder is part of the phase
        if jobs or lacking:
            embedder = _open(plan, summary) if plan.available else None
            if embedder is not None and embedder.model_id != plan.model_id:
                # The engine serves a quantised model (its own id): what lacks is judged by that id.
                plan.model_id = summary.model_id = embedder.model_id
                index.set_scan_model_id(scan_id, summary.model_id)
                lacking = _lacking_embeddings(index, walker.roots, plan, found, jobs)
            if embedder is not None:
                jobs.extend(lacking)  # hashed again for their thumbnails only
                summary.unchanged -= len(lacking)  # counted once, as hashed
        summary.hashed = 0
        _run_jobs(jobs, settings, index, embedder, summary, console, progress)
        summary.hash_seconds = time.monotonic() - phase
        summary.hash_cpu_seconds = _cpu_seconds() - phase_cpu  # the workers are reaped when their pool closes
        if jobs:
            log.info(
                "%s: %d files in %.2f s (CPU %.2f s)",
                "hashing and embedding" if embedder is not None else "hashing",
                len(jobs),
                summary.hash_seconds,
                summary.hash_cpu_seconds,
            )
        if embedder is not None and embedder.model_id != summary.model_id:
            summary.model_id = embedder.model_id
            index.set_scan_model_id(scan_id, summary.model_id)
        summary.removed = index.forget_missing(
            walker.roots, {f.path for f in found}, [p for p, _ in walker.stats.unreadable]
        )
        index.finish_scan(scan_id)
        summary.errors = index.errors(walker.roots)
    finally:
        if embedder is not None:
            embedder.close()
    summary.seconds = time.monotonic() - start
    return summary


def _cpu_seconds() -> float:
    """CPU time of this process and of its children that have ended (where the platform tells)."""
    try:
        import resource
    except ImportError:  # Windows: this process only
        return time.process_time()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def _lacking_embeddings(
    index: Index, roots: Sequence[str], plan: EmbedPlan, found: list[FoundFile], jobs: list[HashJob]
) -> list[HashJob]:
    """Unchanged files that have no embedding for the planned model yet."""
    if not plan.available or plan.model_id is None:
        return []
    queued = {j.path for j in jobs}
    seen = {f.path for f in found}
    from photodedup.client.hashing import HashJob

    return [
        HashJob(path, size, mtime_ns)
        for path, size, mtime_ns in index.needing_embedding(roots, plan.model_id)
        if path not in queued and path in seen
    ]


def _open(plan: EmbedPlan, summary: ScanSummary) -> Any:
    """The planned embedder, or None with the reason in `summary` when it cannot be opened after all."""
    try:
        embedder = plan.open()
    except PhotodedupError as exc:
        summary.skipped_reason = f"similar tier skipped: {exc}"
        return None
    summary.embedder = embedder.description
    return embedder


def _run_jobs(
    jobs: list[HashJob],
    settings: Settings,
    index: Index,
    embedder: Any,
    summary: ScanSummary,
    console: Any,
    show: bool,
) -> None:
    hash_buf: list[HashResult] = []
    emb_buf: list[EmbedOutcome] = []
    model_id = summary.model_id or ""
    last = time.monotonic()

    def flush() -> None:
        nonlocal last
        # Hash rows first: an embedding is stored only for a file the index already has.
        index.put_hashes(hash_buf, summary.scan_id)
        hash_buf.clear()
        keep = [(o.key, o.vector, o.error) for o in emb_buf if o.vector is not None or o.permanent]
        # The embedder's id can change once, before its first vector, when a quantised engine fails its
        # self-check on the first real thumbnails and falls back to fp32.
        index.put_embeddings(embedder.model_id if embedder is not None else model_id, keep)
        emb_buf.clear()
        last = time.monotonic()

    def take(outcomes: list[EmbedOutcome]) -> None:
        for o in outcomes:
            if o.vector is not None:
                summary.embedded += 1
            else:
                summary.embed_failed += 1
                summary.embed_error = summary.embed_error or o.error
                log.debug("no embedding for %s: %s", o.key, o.error)
        emb_buf.extend(outcomes)
        if outcomes:
            bar.update(embed_task, advance=len(outcomes), rate=_rate(summary.embedded + summary.embed_failed, t0))

    if not jobs:
        return
    thumb_size = embedder.input_size if embedder is not None else None
    thumb_kind = embedder.thumb_kind if embedder is not None else "none"
    from photodedup.client.hashing import HashPool

    pool = HashPool(
        settings.scan.scan_workers,
        settings.imaging.max_image_pixels,
        thumb_size,
        thumb_kind,
        settings.scan.thumbnail_quality,
    )
    bar = _progress(console, show)
    t0 = time.monotonic()
    interrupted = True
    with bar:
        hash_task = bar.add_task("hashing", total=len(jobs), rate="")
        embed_task = bar.add_task("embedding", total=None, rate="", visible=embedder is not None)
        sent = 0
        try:
            for res in pool.map_unordered(jobs):
                thumb, res.thumb = res.thumb, None
                hash_buf.append(res)
                summary.hashed += 1
                bar.update(hash_task, advance=1, rate=_rate(summary.hashed, t0))
                if embedder is not None and thumb is not None:
                    embedder.submit(res.path, thumb)
                    sent += 1
                    bar.update(embed_task, total=sent)
                    take(embedder.poll())
                if len(hash_buf) + len(emb_buf) >= FLUSH_EVERY or time.monotonic() - last > FLUSH_SECONDS:
                    flush()
            if embedder is not None:
                bar.update(embed_task, total=sent)
                for o in embedder.drain():
                    take([o])
                    if len(emb_buf) >= FLUSH_EVERY or time.monotonic() - last > FLUSH_SECONDS:
                        flush()
            interrupted = False
        finally:
            # Everything in the buffers is finished work: keep it even when interrupted.
            if embedder is not None:
                emb_buf.extend(embedder.poll())
            flush()
            pool.close(cancel=interrupted)


def _counter(bar: Any, description: str, unit: str) -> Callable[[], None]:
    """A callback that counts one more on a task of `bar` (shown from the first count on), with its rate since
    then: for work whose total is not known ahead (pairs verified, keeper tests)."""
    task = bar.add_task(description, total=None, rate="", visible=False)
    count, first = 0, 0.0

    def tick() -> None:
        nonlocal count, first
        if not count:
            first = time.monotonic()
        count += 1
        bar.update(task, advance=1, visible=True, rate=f"{_rate(count, first)} {unit}")

    return tick


def _rate(n: int, t0: float) -> str:
    dt = time.monotonic() - t0
    return f"{n / dt:6.1f}/s" if dt > 0 else ""


def refresh_after_undo(index: Index, journal: Path, restored: Sequence[str], max_pixels: int) -> int:
    """Bring the index back in line with the disk after an undo of `journal`: the files put back are
    hashed again under the last scan (in-process: an undo restores few files; the next scan embeds
    them), and the places `apply` had moved them to are forgotten where they were indexed. Returns how
    many files were hashed again."""
    import os
    import stat

    from photodedup.client.actions import read_journal
    from photodedup.client.actions.journal import Intent
    from photodedup.client.hashing import hash_file

    last = index.last_scan()
    if last is None:
        return 0
    results = []
    for path in dict.fromkeys(restored):
        try:
            st = os.stat(path)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode):
            results.append(hash_file(path, st.st_size, st.st_mtime_ns, max_pixels))
    index.put_hashes(results, last.id)
    moved_to = {e.action.dest for e in read_journal(journal) if isinstance(e, Intent) and e.action.dest}
    index.forget(sorted(d for d in moved_to if d is not None and not os.path.lexists(d)))
    return len(results)


def grouping_config(settings: Settings, model_id: str | None = None) -> GroupingConfig:
    """Thresholds and keeper policy from the one Settings object (flags > env > defaults); the similar
    threshold, when not set, is the one calibrated for `model_id`'s model (none: no similar tier)."""
    from photodedup.client.grouping import GroupingConfig

    return GroupingConfig.from_settings(settings, model_id)


def _group(
    index: Index,
    records: list[FileRecord],
    config: GroupingConfig,
    ignored: list[frozenset[str]],
    refs: list[str],
    console: Any = None,
    progress: bool = False,
) -> list[Group]:
    """Group afresh, verifying with the verdicts stored in the index (and storing new ones)."""
    from photodedup.client.grouping import find_groups
    from photodedup.client.sources import StoredLineage, prefer_sources
    from photodedup.client.verdicts import StoredVerifier

    verifier = StoredVerifier(index) if config.verify else None
    lineage = StoredLineage(index)
    # Verifying a large library's candidates and testing its copies' lineage can take minutes: counted as they go.
    bar = _progress(console, progress)
    with bar:
        if verifier is not None:
            verifier.on_verified = _counter(bar, "verifying", "pairs")
        lineage.on_tested = _counter(bar, "keeper", "tests")
        try:
            groups = find_groups(records, config, ignored=ignored, reference_dirs=refs, verifier=verifier)
            groups = prefer_sources(groups, config, lineage)
        finally:
            lineage.flush()
            lineage.close()
            if verifier is not None:
                verifier.flush()  # verdicts found before an interruption are kept too
                verifier.close()
    if verifier is not None:
        log.info(
            "verification: %d pairs stored, %d verified, %d pictures decoded, %.1f MB of features kept for the run",
            verifier.hits,
            verifier.misses,
            verifier.verifier.decodes,
            verifier.verifier.store.written / 1e6,
        )
    return groups


def load_groups(
    index: Index,
    roots: Sequence[str],
    model_id: str | None,
    config: GroupingConfig,
    reference_dirs: Sequence[str] = (),
    console: Any = None,
    progress: bool = False,
) -> list[Group]:
    """Group every indexed image under `roots` (and the reference folders), honouring ignore decisions;
    `progress` counts the pairs verified and the keeper tests on `console` as they go.

    With `config.verify`, loose candidates and similar neighbours are confirmed geometrically
    (`client.verify`), reusing the verdicts stored in the index (`client.verdicts`); an unchanged library
    gets the groups computed last time (`client.groupcache`)."""
    import os

    from photodedup.client import groupcache

    refs = [os.path.abspath(os.path.expanduser(r)) for r in reference_dirs]
    all_roots = list(dict.fromkeys([*roots, *refs]))
    ignored = index.ignored()
    scope = groupcache.scope_key(all_roots, model_id)
    quick = groupcache.quick_digest(index.generation(), config, ignored, refs)
    groups = groupcache.load_quick(index, scope, quick, model_id)
    if groups is not None:
        log.info("nothing changed since the last grouping: %d groups kept", len(groups))
    else:
        # Roots may nest; window hashes stay in the index until the loose search reads them (memory).
        records = list({r.path: r for r in index.records(all_roots, model_id, leave_windows=True)}.values())
        digest = groupcache.grouping_digest(records, config, ignored, refs)
        groups = groupcache.load(index, scope, digest, records, quick)
        if groups is None:
            groups = _group(index, records, config, ignored, refs, console, progress)
            groups_stored = True
            try:
                groupcache.store(index, scope, digest, quick, groups)
            except sqlite3.OperationalError as exc:  # a read-only or busy index: the answer stands, unkept
                groups_stored = False
                log.warning("groups not kept in the index: %s", exc)
            log.debug("groups computed (%s)", "kept" if groups_stored else "not kept")
        else:
            log.info("groups unchanged since the last grouping: %d files, %d groups", len(records), len(groups))
    from photodedup.client.decisions import apply_keeper_choices

    return apply_keeper_choices(groups, index.keeper_choices())  # keepers chosen in `photodedup review`
