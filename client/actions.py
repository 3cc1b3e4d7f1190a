"""Act on duplicate groups safely: plan, verify, journal, act, and undo.

Every non-kept, non-reference member of a group becomes one `Action`. `apply_actions` re-checks each
file's MD5 right before touching it (it must be unchanged since the scan, and for exact copies still
equal to the keeper's; the keeper itself must still be there, unchanged), then writes the intent to a
JSON-lines journal and fsyncs it *before* the operation, and a `done` line after. `undo(journal)` reads
the journal, looks at the disk to see how far each operation got (so it also works after a crash
between the two lines) and puts every file back.

- move: to `dest`, keeping each file's path relative to a common root (`root`, else the deepest folder
  holding every target); a rename where possible, else copy + fsync + replace, then unlink.
- trash: Send2Trash; undo finds the file through the freedesktop `.trashinfo` (Linux home trash under
  $XDG_DATA_HOME/Trash, or a volume's .Trash-$UID) and moves it back.
- hardlink: same filesystem only. The original is first hard-linked to a hidden backup name in its own
  folder (`.photodedup-backup-<seq>-<name>`, no data copied), then a link to the keeper is made under a
  temp name there and `os.replace`d over the file, so the path is never missing. Undo `os.replace`s the
  backup back. The space is freed only once the backups are removed (`purge_backups`), which undo
  cannot reverse.
- delete: permanent `unlink`, only when asked for by name; undo cannot bring these back.

Undo never overwrites: if another file has taken an original path since, that file is reported and
the moved, trashed or backed-up copy is left where it is. Restoring from the trash needs a freedesktop
trash (Linux and BSD desktops); elsewhere undo reports trashed files as not found.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote

from photodedup.client.grouping import Group
from photodedup.client.paths import under_any
from photodedup.errors import PhotodedupError

log = logging.getLogger(__name__)

Mode = Literal["move", "trash", "hardlink", "delete"]
MODES: tuple[str, ...] = ("move", "trash", "hardlink", "delete")
JOURNAL_VERSION = 1
BACKUP_PREFIX = ".photodedup-backup-"
TEMP_PREFIX = ".photodedup-tmp-"


class ActionError(PhotodedupError):
    """A plan cannot be carried out as asked (no destination, different filesystems, bad journal)."""


@dataclass
class Action:
    """One file to move, trash, replace by a hardlink or delete; `md5` and `mtime` are from the scan."""

    op: Mode
    path: str
    keep: str
    md5: str
    keep_md5: str
    size: int
    mtime: float
    kind: str
    dest: str | None = None


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
    restored: list[str] = field(default_factory=list)
    untouched: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------- plan


def common_root(paths: Sequence[str]) -> str:
    """Deepest folder holding every path: moved files keep their paths relative to it."""
    return os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in paths])


def plan_actions(
    groups: Iterable[Group],
    mode: Mode,
    dest: Path | None,
    reference_dirs: Sequence[str] = (),
    root: Path | None = None,
) -> list[Action]:
    """One action per file that is neither a keeper nor under a reference dir.

    For "move", each file goes to `dest / relpath(file, root)`; `root` defaults to the deepest folder
    holding all targets (pass the scanned folder to mirror the library's layout). Names that would
    collide get a ` (n)` suffix.
    """
    if mode not in MODES:
        raise ActionError(f"unknown mode {mode!r}: use one of {', '.join(MODES)}")
    if mode == "move" and dest is None:
        raise ActionError("move needs a destination folder")
    actions: list[Action] = []
    for group in groups:
        for member in group.targets:
            rec = member.record
            if under_any(rec.path, reference_dirs):
                continue
            # kind is how this file matches its keeper (exact copies inside a near group are "exact")
            kind = member.tier.value
            actions.append(Action(mode, os.path.abspath(rec.path), os.path.abspath(group.keep.path), rec.md5,
                                  group.keep.md5, rec.size, rec.mtime, kind))
    if mode == "move" and actions:
        assert dest is not None
        base = os.path.abspath(root) if root is not None else common_root([a.path for a in actions])
        dest_abs = os.path.abspath(dest)
        taken: set[str] = set()
        for action in actions:
            rel = os.path.relpath(action.path, base)
            if rel.startswith(".."):
                raise ActionError(f"{action.path} is not under the move root {base}")
            action.dest = _free_name(os.path.join(dest_abs, rel), taken)
            taken.add(action.dest)
    return actions


def _free_name(path: str, taken: set[str]) -> str:
    stem, ext = os.path.splitext(path)
    candidate, n = path, 1
    while candidate in taken or os.path.lexists(candidate):
        candidate = f"{stem} ({n}){ext}"
        n += 1
    return candidate


# ------------------------------------------------------------------------------------------- journal


class Journal:
    """Append-only JSON lines; every line is flushed and fsynced before the caller goes on."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(path, "a", encoding="utf-8")

    def write(self, entry: dict[str, Any]) -> None:
        self._fh.write(json.dumps(entry, sort_keys=True) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()


def read_journal(path: Path) -> Iterator[dict[str, Any]]:
    """Entries in order; a torn last line (a crash mid-write) is ignored."""
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                log.warning("journal %s: ignoring a torn line", path)


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def file_md5(path: str) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------- apply


def apply_actions(actions: Sequence[Action], journal_path: Path, verify_md5: bool = True) -> ApplyResult:
    """Carry out `actions`, each verified and journalled first; problems skip a file, never the run."""
    if journal_path.exists() and journal_path.stat().st_size:
        raise ActionError(f"journal {journal_path} already exists: one journal per run, so undo is exact")
    result = ApplyResult(journal=journal_path)
    journal = Journal(journal_path)
    keeper_md5: dict[str, str | None] = {}
    try:
        journal.write({"type": "begin", "version": JOURNAL_VERSION, "time": time.time(), "count": len(actions)})
        for seq, action in enumerate(actions):
            reason = _check(action, verify_md5, keeper_md5)
            if reason:
                journal.write({"type": "skip", "seq": seq, "path": action.path, "reason": reason})
                result.skipped.append((action.path, reason))
                log.warning("skipping %s: %s", action.path, reason)
                continue
            entry: dict[str, Any] = {"type": "intent", "seq": seq, "time": time.time(), **asdict(action)}
            if action.op == "hardlink":
                folder, name = os.path.split(action.path)
                entry["backup"] = os.path.join(folder, f"{BACKUP_PREFIX}{seq}-{name}")
                entry["temp"] = os.path.join(folder, f"{TEMP_PREFIX}{seq}-{name}")
            journal.write(entry)
            try:
                extra = _perform(entry)
            except (OSError, ActionError) as exc:
                journal.write({"type": "failed", "seq": seq, "error": str(exc)})
                result.failed.append((action.path, str(exc)))
                log.error("%s %s failed: %s", action.op, action.path, exc)
                continue
            journal.write({"type": "done", "seq": seq, **extra})
            result.done.append(action.path)
            if action.op != "hardlink":  # a hardlink's space comes back only when its backup goes
                result.bytes_freed += action.size
    finally:
        journal.close()
    return result


def _check(action: Action, verify_md5: bool, keeper_md5: dict[str, str | None]) -> str | None:
    """Why this file must not be touched now, or None."""
    try:
        st = os.stat(action.path, follow_symlinks=False)
    except OSError:
        return "file is gone"
    if not os.path.isfile(action.path) or os.path.islink(action.path):
        return "not a regular file any more"
    if st.st_size != action.size:
        return "size changed since the scan"
    if not os.path.isfile(action.keep):
        return "the kept file is gone"
    if os.path.samefile(action.path, action.keep):
        return "already the same file as the keeper"
    if action.op == "hardlink" and os.stat(action.keep).st_dev != st.st_dev:
        return "hardlink needs the file and its keeper on one filesystem"
    if action.op == "move" and action.dest and os.path.lexists(action.dest):
        return f"destination exists: {action.dest}"
    if not verify_md5:
        return None
    if file_md5(action.path) != action.md5:
        return "content changed since the scan"
    if action.keep not in keeper_md5:
        keeper_md5[action.keep] = file_md5(action.keep)
    if keeper_md5[action.keep] != action.keep_md5:
        return "the kept file changed since the scan"
    if action.kind == "exact" and action.md5 != action.keep_md5:
        return "no longer identical to the kept file"
    return None


def _perform(entry: dict[str, Any]) -> dict[str, Any]:
    op, path = entry["op"], entry["path"]
    if op == "move":
        _move(path, entry["dest"])
        return {}
    if op == "trash":
        from send2trash import send2trash

        send2trash(path)
        found = _find_in_trash(path, entry["time"])
        return {"trashed": found} if found else {}
    if op == "hardlink":
        backup, temp = entry["backup"], entry["temp"]
        os.link(path, backup)  # the original's inode stays reachable for undo
        os.link(entry["keep"], temp)
        os.replace(temp, path)  # atomic: the path always names a complete file
        _fsync_dir(os.path.dirname(path))
        return {}
    if op == "delete":
        os.unlink(path)
        return {}
    raise ActionError(f"unknown operation {op!r}")


def _move(src: str, dst: str) -> None:
    """Rename, or across filesystems copy to a temp name, fsync, replace, then unlink the source."""
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    try:
        os.rename(src, dst)
    except OSError as exc:
        if exc.errno != 18:  # EXDEV: different filesystems
            raise
        temp = os.path.join(os.path.dirname(dst), TEMP_PREFIX + os.path.basename(dst))
        shutil.copy2(src, temp)
        with open(temp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(temp, dst)
        _fsync_dir(os.path.dirname(dst))
        os.unlink(src)
    _fsync_dir(os.path.dirname(src))
    _fsync_dir(os.path.dirname(dst))


# ---------------------------------------------------------------------------------------------- trash


def _trash_dirs(path: str) -> list[str]:
    """Freedesktop trash folders a file may have gone to: the home trash, then its volume's."""
    home = os.path.join(os.path.expanduser(os.environ.get("XDG_DATA_HOME") or "~/.local/share"), "Trash")
    dirs = [home]
    mount = os.path.realpath(path)
    mount = os.path.dirname(mount)
    while not os.path.ismount(mount) and mount != os.path.dirname(mount):
        mount = os.path.dirname(mount)
    uid = str(os.getuid()) if hasattr(os, "getuid") else ""
    dirs += [os.path.join(mount, ".Trash", uid), os.path.join(mount, f".Trash-{uid}")]
    return dirs


def _find_in_trash(path: str, since: float) -> dict[str, str] | None:
    """The newest trash entry whose .trashinfo names `path` and was written at or after `since`."""
    best: tuple[float, dict[str, str]] | None = None
    for trash in _trash_dirs(path):
        info_dir = os.path.join(trash, "info")
        if not os.path.isdir(info_dir):
            continue
        topdir = os.path.dirname(os.path.dirname(trash)) if os.path.basename(trash).isdigit() else os.path.dirname(trash)
        # Trash implementations name the entry after the file (send2trash adds " N" before the
        # extension on clashes): only those entries can be ours, so only they are read.
        stem = os.path.splitext(os.path.basename(path))[0]
        for name in os.listdir(info_dir):
            if not (name.endswith(".trashinfo") and name.startswith(stem)):
                continue
            info = os.path.join(info_dir, name)
            try:
                text = Path(info).read_text(encoding="utf-8", errors="replace")
                stamp = os.stat(info).st_mtime
            except OSError:
                continue
            original = next((unquote(line[5:].strip()) for line in text.splitlines() if line.startswith("Path=")), None)
            if original is None:
                continue
            if not os.path.isabs(original):
                original = os.path.join(topdir, original)
            if os.path.abspath(original) != os.path.abspath(path) or stamp < since - 2:
                continue
            stored = os.path.join(trash, "files", name[: -len(".trashinfo")])
            if os.path.lexists(stored) and (best is None or stamp > best[0]):
                best = (stamp, {"file": stored, "info": info})
    return best[1] if best else None


# ----------------------------------------------------------------------------------------------- undo


def undo(journal_path: Path) -> UndoResult:
    """Put back every file the journal says was (or may have been) acted on, newest first.

    Safe to run twice and after a crash: each step looks at the disk, not only at the journal.
    """
    intents: dict[int, dict[str, Any]] = {}
    done: dict[int, dict[str, Any]] = {}
    undone: set[int] = set()
    for entry in read_journal(journal_path):
        kind = entry.get("type")
        if kind == "intent":
            intents[entry["seq"]] = entry
        elif kind == "done":
            done[entry["seq"]] = entry
        elif kind == "undone":
            undone.add(entry["seq"])
    result = UndoResult()
    journal = Journal(journal_path)
    try:
        for seq in sorted(intents, reverse=True):
            if seq in undone:
                continue
            entry = intents[seq]
            try:
                restored = _undo_one(entry, done.get(seq, {}))
            except (OSError, ActionError) as exc:
                result.failed.append((entry["path"], str(exc)))
                log.error("cannot restore %s: %s", entry["path"], exc)
                continue
            (result.restored if restored else result.untouched).append(entry["path"])
            journal.write({"type": "undone", "seq": seq, "restored": restored})
    finally:
        journal.close()
    return result


def _undo_one(entry: dict[str, Any], done: dict[str, Any]) -> bool:
    """Restore one file; False when it turns out it was never changed."""
    op, path = entry["op"], entry["path"]
    if op == "move":
        dest = entry["dest"]
        temp = os.path.join(os.path.dirname(dest), TEMP_PREFIX + os.path.basename(dest))
        if os.path.lexists(temp):
            os.unlink(temp)  # a partial cross-filesystem copy; the source was not yet removed
        if os.path.lexists(path):
            if not os.path.lexists(dest):
                return False
            if os.path.isfile(dest) and file_md5(dest) == file_md5(path):
                os.unlink(dest)  # the copy finished but the source was not unlinked: drop the copy
                return False
            raise ActionError(f"another file now has this path; the moved file is still at {dest}")
        if not os.path.lexists(dest):
            raise ActionError(f"neither {path} nor its moved copy {dest} exists")
        _move(dest, path)
        return True
    if op == "trash":
        found = done.get("trashed") or _find_in_trash(path, entry["time"])
        if os.path.lexists(path):
            if found and os.path.lexists(found["file"]):
                raise ActionError(f"another file now has this path; the trashed file is still at {found['file']}")
            return False
        if not found or not os.path.lexists(found["file"]):
            raise ActionError("not found in the trash")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        shutil.move(found["file"], path)
        if os.path.exists(found["info"]):
            os.unlink(found["info"])
        return True
    if op == "hardlink":
        backup, temp = entry["backup"], entry["temp"]
        if os.path.lexists(temp):
            os.unlink(temp)  # a link to the keeper that never replaced the file
        if not os.path.lexists(backup):
            if not os.path.lexists(path):
                raise ActionError("file and backup are both gone")
            return False  # crashed before the backup link: nothing changed
        if os.path.lexists(path) and os.path.samefile(backup, path):
            os.unlink(backup)  # the replace never happened; the path still holds the original
            return False
        if os.path.lexists(path) and not _is_our_link(path, entry):
            raise ActionError(f"another file now has this path; the original is kept at {backup}")
        os.replace(backup, path)
        _fsync_dir(os.path.dirname(path))
        return True
    if op == "delete":
        if os.path.lexists(path):
            return False
        raise ActionError("permanently deleted; cannot be restored")
    raise ActionError(f"unknown operation {op!r}")


def _is_our_link(path: str, entry: dict[str, Any]) -> bool:
    """Whether `path` still holds what apply put there: the keeper's file (same inode, or same bytes
    when the keeper has since gone), so restoring the original over it loses nothing."""
    keep = entry["keep"]
    try:
        if os.path.lexists(keep) and os.path.samefile(keep, path):
            return True
        return os.path.isfile(path) and file_md5(path) == entry["keep_md5"]
    except OSError:
        return False


def purge_backups(journal_path: Path, dry_run: bool = False) -> list[str]:
    """Remove the backups of completed hardlink replacements (frees their space; undo can't follow).
    Returns the backups removed, or with `dry_run` the ones that would be."""
    removed: list[str] = []
    entries = list(read_journal(journal_path))
    done = {e["seq"] for e in entries if e.get("type") == "done"}
    undone = {e["seq"] for e in entries if e.get("type") == "undone"}
    for entry in entries:
        if entry.get("type") == "intent" and entry["op"] == "hardlink" and entry["seq"] in done - undone:
            if os.path.lexists(entry["backup"]):
                if not dry_run:
                    os.unlink(entry["backup"])
                removed.append(entry["backup"])
    return removed
