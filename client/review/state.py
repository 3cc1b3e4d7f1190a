"""What the review app knows between requests: the groups of the last scan with the user's decisions,
and the bridge to the index (decisions are written at once) and to the apply engine.

Groups are computed once at start (the same `load_groups` as `photodedup report`). A decision re-groups
only the group it touches, with the same grouping code and the ignore list, so the page answers at once;
the next start or rescan regroups everything and gives the same result.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import secrets
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from photodedup.client.actions import (
    Action,
    ApplyResult,
    UndoResult,
    apply_actions,
    move_root,
    outside_roots,
    plan_actions,
    undo,
)
from photodedup.client.decisions import apply_keeper_choices, members_key
from photodedup.client.grouping import FileRecord, Group, find_groups
from photodedup.client.index import Index, ScanInfo
from photodedup.errors import PhotodedupError

log = logging.getLogger(__name__)

SORTS = ("order", "bytes", "files")
KINDS = ("exact", "near", "similar")
PLAN_TTL_S = 3600.0


class ReviewError(PhotodedupError):
    """A request names something that is not there (group, file, plan, journal)."""


@dataclass
class GroupView:
    """A group as the pages show it: its stable key, position and whether it was marked done."""

    key: str
    group: Group
    done: bool

    @property
    def folder(self) -> str:
        return os.path.dirname(self.group.keep.path)

    @property
    def reclaimable(self) -> int:
        return self.group.reclaimable_bytes


@dataclass
class Plan:
    """A previewed apply: confirming it carries out exactly these actions."""

    id: str
    mode: str
    dest: str | None
    actions: list[Action]
    created: float = field(default_factory=time.time)

    @property
    def bytes(self) -> int:
        return sum(a.size for a in self.actions)


class ReviewState:
    """Groups, decisions and plans for one `photodedup review` run. Methods block (SQLite, files):
    the web layer calls them from worker threads."""

    def __init__(
        self,
        db: Path,
        scan: ScanInfo,
        groups: list[Group],
        config: Any,
        reference_dirs: Sequence[str],
        journal_dir: Path,
        max_pixels: int = 80_000_000,
    ) -> None:
        self.db = db
        self.max_pixels = max_pixels
        self.scan = scan
        self.config = config
        self.reference_dirs = list(reference_dirs)
        self.journal_dir = journal_dir
        self._lock = threading.RLock()
        self._plans: dict[str, Plan] = {}
        with Index(db) as index:
            done = index.done_groups()
        self._views: list[GroupView] = []
        self._by_key: dict[str, GroupView] = {}
        self._files: dict[str, FileRecord] = {}
        for g in groups:
            self._add(g, done)

    # -- lookups ----------------------------------------------------------------------------------

    def _add(self, group: Group, done: set[str], at: int | None = None) -> GroupView:
        view = GroupView(members_key(group), group, False)
        view.done = view.key in done
        if at is None:
            self._views.append(view)
        else:
            self._views.insert(at, view)
        self._by_key[view.key] = view
        for m in group.members:
            self._files[m.record.md5] = m.record
        return view

    def __len__(self) -> int:
        return len(self._views)

    def view(self, key: str) -> GroupView:
        try:
            return self._by_key[key]
        except KeyError:
            raise ReviewError("no such group (it may have changed: go back to the list)") from None

    def file(self, md5: str) -> FileRecord:
        """The indexed file with this content hash: the only way a browser request reaches a file."""
        try:
            return self._files[md5]
        except KeyError:
            raise ReviewError("no such file in the index") from None

    def member(self, key: str, number: int) -> FileRecord:
        members = self.view(key).group.members
        if not 1 <= number <= len(members):
            raise ReviewError(f"the group has no file {number}")
        return members[number - 1].record

    def listing(
        self, kind: str = "", folder: str = "", sort: str = "order", unresolved_first: bool = True
    ) -> list[GroupView]:
        """The groups the list page shows, filtered and ordered; done groups last unless asked otherwise."""
        with self._lock:
            views = list(self._views)
        if kind in KINDS:
            views = [v for v in views if v.group.kind == kind]
        if folder:
            needle = folder.casefold()
            views = [
                v for v in views if any(needle in os.path.dirname(m.record.path).casefold() for m in v.group.members)
            ]
        if sort == "bytes":
            views.sort(key=lambda v: -v.reclaimable)
        elif sort == "files":
            views.sort(key=lambda v: -len(v.group.members))
        if unresolved_first:
            views.sort(key=lambda v: v.done)  # stable: keeps the chosen order within each part
        return views

    def neighbours(self, key: str, **filters: Any) -> tuple[str | None, str | None]:
        """Previous and next group keys in the list order the user is walking."""
        keys = [v.key for v in self.listing(**filters)]
        if key not in keys:
            return None, keys[0] if keys else None
        i = keys.index(key)
        return keys[i - 1] if i else None, keys[i + 1] if i + 1 < len(keys) else None

    # -- decisions (written to the index at once) --------------------------------------------------

    def choose_keeper(self, key: str, number: int) -> str:
        """Keep file `number` of the group; returns the group's key afterwards."""
        with self._lock:
            view = self.view(key)
            chosen = self.member(key, number)
            with Index(self.db) as index:
                index.choose_keeper(chosen.path, [m.record.path for m in view.group.members])
                choices = index.keeper_choices()
            (group,) = apply_keeper_choices([view.group], choices)
            return self._replace(view, [group])[0]

    def not_duplicates(self, key: str, numbers: Sequence[int] = ()) -> list[str]:
        """Declare files of the group not duplicates: the whole group (no numbers), one file against all
        others (one number: drop it from the group) or a pair. Returns the keys of what remains."""
        with self._lock:
            view = self.view(key)
            paths = [m.record.path for m in view.group.members]
            picked = [self.member(key, n).path for n in numbers]
            with Index(self.db) as index:
                if len(picked) == 1:
                    for other in paths:
                        if other != picked[0]:
                            index.add_ignore([picked[0], other])
                else:
                    index.add_ignore(picked or paths)
            return self._regroup(view)

    def set_done(self, key: str, done: bool) -> None:
        with self._lock:
            view = self.view(key)
            with Index(self.db) as index:
                index.set_done(view.key, done)
            view.done = done

    def _regroup(self, view: GroupView) -> list[str]:
        """Group the view's files again with the current ignore list and keeper choices."""
        with Index(self.db) as index:
            ignored, choices = index.ignored(), index.keeper_choices()
        records = [m.record for m in view.group.members]
        groups = self._group(records, ignored)
        return self._replace(view, apply_keeper_choices(groups, choices))

    def _group(self, records: list[FileRecord], ignored: Sequence[frozenset[str]] = ()) -> list[Group]:
        """`find_groups` (and the keeper's lineage) as the scan ran it: with the stored verdicts (members that
        joined through verification stay, with what it found), verifying only pairs never asked about before."""
        from photodedup.client.sources import StoredLineage, prefer_sources
        from photodedup.client.verdicts import StoredVerifier

        with Index(self.db) as index:
            # Groups kept from the last scan carry records without the hashes grouping needs (turned and
            # window hashes); read them in full for the regroup.
            full = index.records_of([r.path for r in records], self.scan.model_id)
            records = [full.get(r.path, r) for r in records]
            verifier = StoredVerifier(index) if getattr(self.config, "verify", False) else None
            lineage = StoredLineage(index)
            try:
                found = find_groups(
                    records, self.config, ignored=ignored, reference_dirs=self.reference_dirs, verifier=verifier
                )
                return prefer_sources(found, self.config, lineage)
            finally:
                lineage.flush()
                lineage.close()
                if verifier is not None:
                    verifier.flush()
                    verifier.close()

    def _replace(self, view: GroupView, groups: list[Group]) -> list[str]:
        at = self._views.index(view)
        self._views.pop(at)
        self._by_key.pop(view.key, None)
        with Index(self.db) as index:
            done = index.done_groups()
        return [self._add(g, done, at + i).key for i, g in enumerate(groups)]

    # -- acting -----------------------------------------------------------------------------------

    def plan(self, mode: str, dest: str | None, kinds: Sequence[str], scope: str) -> Plan:
        """Preview: the actions `photodedup apply` would take for these groups (all, or those marked done)."""
        if mode not in ("move", "trash", "hardlink"):
            raise ReviewError("the review app moves, trashes or hardlinks; permanent deletion is CLI-only")
        with self._lock:
            views = [v for v in self._views if scope == "all" or v.done]
        dest_path = Path(os.path.expanduser(dest)).resolve() if dest else None
        if mode == "move" and dest_path is None:
            raise ReviewError("moving needs a destination folder")
        actions = plan_actions(
            [v.group for v in views],
            mode,
            dest_path,
            self.reference_dirs,  # type: ignore[arg-type]
            root=move_root(self.scan.roots, self.reference_dirs),
            kinds=set(kinds) or set(KINDS),
            roots=self.scan.roots,
        )
        # the app never acts through a symlinked folder that leads out of the scanned folders
        actions = [
            a for a in actions if not (outside_roots(a.path, self.scan.roots) or outside_roots(a.keep, self.scan.roots))
        ]
        plan = Plan(secrets.token_urlsafe(12), mode, str(dest_path) if dest_path else None, actions)
        with self._lock:
            now = time.time()
            self._plans = {k: p for k, p in self._plans.items() if now - p.created < PLAN_TTL_S}
            self._plans[plan.id] = plan
        return plan

    def confirm(self, plan_id: str) -> ApplyResult:
        """Carry out a previewed plan with the apply engine, journal first; acted files leave the groups."""
        with self._lock:
            plan = self._plans.pop(plan_id, None)
            if plan is None:
                raise ReviewError("this preview has expired or was already applied: preview again")
            self.journal_dir.mkdir(parents=True, exist_ok=True)
            journal = self.journal_dir / time.strftime("apply-%Y%m%d-%H%M%S.jsonl")
            n = 1
            while journal.exists():
                journal = self.journal_dir / time.strftime(f"apply-%Y%m%d-%H%M%S-{n}.jsonl")
                n += 1
            result = apply_actions(plan.actions, journal, verify_md5=True, roots=self.scan.roots)
            if plan.mode != "hardlink" and result.done:
                with Index(self.db) as index:
                    index.forget(result.done)
                self._drop_files(set(result.done))
            return result

    def _drop_files(self, gone: set[str]) -> None:
        for view in [v for v in self._views if any(m.record.path in gone for m in v.group.members)]:
            records = [m.record for m in view.group.members if m.record.path not in gone]
            kept = [m for m in view.group.members if m.record.path not in gone]
            if view.group.keep.path in gone or len(kept) < 2:
                groups = self._group(records) if len(kept) >= 2 else []
            else:
                groups = [dataclasses.replace(view.group, members=kept)]
            self._replace(view, groups)

    def journals(self, limit: int = 10) -> list[Path]:
        """The newest apply journals beside the index (the CLI writes its own there too)."""
        if not self.journal_dir.is_dir():
            return []
        found = sorted(self.journal_dir.glob("apply-*.jsonl"), key=lambda p: p.stat().st_mtime, reverse=True)
        return found[:limit]

    def undo(self, name: str) -> UndoResult:
        """Undo one of `journals()` by file name (never a path from the browser); restored files are
        hashed again into the index so they show up in the groups."""
        with self._lock:
            journal = next((p for p in self.journals(limit=1000) if p.name == name), None)
            if journal is None:
                raise ReviewError("no such journal")
            result = undo(journal)
            self._reindex(journal, result.restored)
            return result

    def _reindex(self, journal: Path, restored: Sequence[str]) -> None:
        """The index as the disk is after an undo (`refresh_after_undo`), then every group again from it."""
        from photodedup.client.scan import load_groups, refresh_after_undo

        with Index(self.db) as index:
            refresh_after_undo(index, journal, restored, self.max_pixels)
            groups = load_groups(index, self.scan.roots, self.scan.model_id, self.config, self.reference_dirs)
            done = index.done_groups()
        self._views, self._by_key = [], {}
        for g in groups:
            self._add(g, done)
