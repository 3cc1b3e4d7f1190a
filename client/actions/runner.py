"""Carry out a plan and take it back: verify, journal, act; undo and purge from the journal.

`apply_actions` re-checks each file right before touching it (unchanged since the scan; for exact
copies still equal to the keeper; the keeper itself still there and unchanged), writes the intent to the
journal and fsyncs it *before* the operation, and a done line after. `undo` reads the journal and asks
each operation to look at the disk, so it works after a crash between the two lines too.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from photodedup.client.actions.journal import Begin, Done, Failed, Intent, Journal, Skip, Undone, read_journal
from photodedup.client.actions.operations import operation
from photodedup.client.actions.plan import Action, ActionError, outside_roots

log = logging.getLogger(__name__)


@dataclass
class ApplyResult:
    """What happened to each planned file; `skipped` holds (path, reason), nothing was done to those."""

    journal: Path
    done: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    bytes_freed: int = 0  # bytes moved out of the library (move, trash, delete); not hardlinks


@dataclass
class UndoResult:
    """Per original path: put back, found needing nothing, or (path, why) not restorable."""

    restored: list[str] = field(default_factory=list)
    untouched: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)


def apply_actions(
    actions: Sequence[Action], journal_path: Path, verify_md5: bool = True, roots: Sequence[str] | None = None
) -> ApplyResult:
    """Carry out `actions`, each verified and journalled first; a problem skips a file, never the run.

    Args:
        actions: the plan from `plan_actions`.
        journal_path: a new (or empty) file; one journal per run, so undo is exact.
        verify_md5: re-hash each file and its keeper before acting (off only in tests of the machinery).
        roots: the scanned folders; when given, a file or keeper that leads out of them (a folder on
            the way swapped for a symlink) is skipped. None acts wherever the paths lead.
    Returns:
        What was done, skipped (with why) and failed, and the bytes freed.
    Raises:
        ActionError: the journal already holds another run.
    """
    if journal_path.exists() and journal_path.stat().st_size:
        raise ActionError(f"journal {journal_path} already exists: one journal per run, so undo is exact")
    result = ApplyResult(journal=journal_path)
    keeper_md5: dict[str, str] = {}
    with Journal(journal_path) as journal:
        journal.write(Begin(time.time(), len(actions)))
        for seq, action in enumerate(actions):
            op = operation(action.op)
            reason = op.check(action, verify_md5, keeper_md5)
            if (
                reason is None
                and roots is not None
                and (outside_roots(action.path, roots) or outside_roots(action.keep, roots))
            ):
                reason = "outside the scanned folders (a symlinked folder leads elsewhere)"
            if reason:
                journal.write(Skip(seq, action.path, reason))
                result.skipped.append((action.path, reason))
                log.warning("skipping %s: %s", action.path, reason)
                continue
            intent = op.intent(seq, time.time(), action)
            journal.write(intent)
            try:
                done = op.perform(intent)
            except (OSError, ActionError) as exc:
                journal.write(Failed(seq, str(exc)))
                result.failed.append((action.path, str(exc)))
                log.error("%s %s failed: %s", action.op, action.path, exc)
                continue
            journal.write(done)
            result.done.append(action.path)
            if op.frees_space:
                result.bytes_freed += action.size
    return result


def undo(journal_path: Path) -> UndoResult:
    """Put back every file the journal says was (or may have been) acted on, newest first.

    Args:
        journal_path: a journal written by `apply_actions` (any release).
    Returns:
        Which paths were restored, needed nothing, or could not be restored and why.
    Safe to run twice and after a crash: each step looks at the disk, not only at the journal.
    """
    intents: dict[int, Intent] = {}
    done: dict[int, Done] = {}
    undone: set[int] = set()
    for entry in read_journal(journal_path):
        if isinstance(entry, Intent):
            intents[entry.seq] = entry
        elif isinstance(entry, Done):
            done[entry.seq] = entry
        elif isinstance(entry, Undone):
            undone.add(entry.seq)
    result = UndoResult()
    with Journal(journal_path) as journal:
        for seq in sorted(intents, reverse=True):
            if seq in undone:
                continue
            intent = intents[seq]
            path = intent.action.path
            try:
                restored = operation(intent.action.op).undo(intent, done.get(seq))
            except (OSError, ActionError) as exc:
                result.failed.append((path, str(exc)))
                log.error("cannot restore %s: %s", path, exc)
                continue
            (result.restored if restored else result.untouched).append(path)
            journal.write(Undone(seq, restored))
    return result


def purge_backups(journal_path: Path, dry_run: bool = False) -> list[str]:
    """Remove what undo would need for completed, not undone operations (today: the hardlink backups,
    which frees their space; undo can't follow). Returns the paths removed, or with `dry_run` the
    ones that would be."""
    entries = list(read_journal(journal_path))
    done = {e.seq for e in entries if isinstance(e, Done)}
    undone = {e.seq for e in entries if isinstance(e, Undone)}
    removed: list[str] = []
    for entry in entries:
        if isinstance(entry, Intent) and entry.seq in done - undone:
            path = operation(entry.action.op).purge(entry, dry_run)
            if path:
                removed.append(path)
    return removed
