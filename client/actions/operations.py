"""One class per operation: each knows how to check, perform, undo and purge one file.

- move: to `dest` (a rename where possible, else copy + fsync + replace, then unlink).
- trash: Send2Trash; undo finds the file through the freedesktop `.trashinfo` and moves it back.
- hardlink: same filesystem only. The original is first hard-linked to a hidden backup name in its own
  folder (no data copied), then a link to the keeper is made under a temp name there and `os.replace`d
  over the file, so the path is never missing. Undo `os.replace`s the backup back; `purge` removes the
  backup, which frees the space and cannot be undone.
- delete: permanent `unlink`, only when asked for by name; undo cannot bring these back.

Undo never overwrites: if another file has taken an original path since, that file is reported and the
moved, trashed or backed-up copy is left where it is. Every undo looks at the disk, not only at the
journal, so it also works after a crash between the intent and done lines.
"""

from __future__ import annotations

import os
import shutil
from typing import ClassVar

from photodedup.client.actions.fsutil import TEMP_PREFIX, durable_move, file_md5, fsync_dir, move_temp
from photodedup.client.actions.journal import Done, Intent
from photodedup.client.actions.plan import Action, ActionError
from photodedup.client.actions.trash import find_in_trash

BACKUP_PREFIX = ".photodedup-backup-"


class Operation:
    """What one mode does to one file. Subclasses add their own checks and the disk steps."""

    name: ClassVar[str]
    frees_space: ClassVar[bool] = True  # a hardlink's space comes back only when its backup goes

    def check(self, action: Action, verify_md5: bool, keeper_md5: dict[str, str]) -> str | None:
        """Why this file must not be touched now, or None. `keeper_md5` caches keeper digests."""
        try:
            st = os.stat(action.path, follow_symlinks=False)
        except OSError:
            return "file is gone"
        if not os.path.isfile(action.path) or os.path.islink(action.path):
            return "not a regular file any more"
        if st.st_size != action.size:
            return "size changed since the scan"
        if os.path.islink(action.keep):
            return "the kept file was replaced by a symbolic link since the scan"
        if not os.path.isfile(action.keep):
            return "the kept file is gone"
        if os.path.samefile(action.path, action.keep):
            return "already the same file as the keeper"
        reason = self._check(action, st)
        if reason or not verify_md5:
            return reason
        if file_md5(action.path) != action.md5:
            return "content changed since the scan"
        if action.keep not in keeper_md5:
            keeper_md5[action.keep] = file_md5(action.keep)
        if keeper_md5[action.keep] != action.keep_md5:
            return "the kept file changed since the scan"
        if action.kind == "exact" and action.md5 != action.keep_md5:
            return "no longer identical to the kept file"
        return None

    def _check(self, action: Action, st: os.stat_result) -> str | None:
        return None

    def intent(self, seq: int, now: float, action: Action) -> Intent:
        """The journal line written before `perform`, with any undo data this operation needs."""
        return Intent(seq, now, action)

    def perform(self, intent: Intent) -> Done:
        raise NotImplementedError

    def undo(self, intent: Intent, done: Done | None) -> bool:
        """Restore one file; False when it turns out it was never changed. Raises ActionError or
        OSError when it cannot be restored without overwriting something."""
        raise NotImplementedError

    def purge(self, intent: Intent, dry_run: bool) -> str | None:
        """Drop what undo would need once the user no longer wants undo; the path removed, or None."""
        return None


class Move(Operation):
    name = "move"

    def _check(self, action: Action, st: os.stat_result) -> str | None:
        if action.dest and os.path.lexists(action.dest):
            return f"destination exists: {action.dest}"
        return None

    def perform(self, intent: Intent) -> Done:
        assert intent.action.dest is not None
        durable_move(intent.action.path, intent.action.dest)
        return Done(intent.seq)

    def undo(self, intent: Intent, done: Done | None) -> bool:
        path, dest = intent.action.path, intent.action.dest
        if dest is None:
            raise ActionError("the journal names no destination for this move")
        temp = move_temp(dest)
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
        durable_move(dest, path)
        return True


class Trash(Operation):
    name = "trash"

    def perform(self, intent: Intent) -> Done:
        from send2trash import send2trash

        send2trash(intent.action.path)
        return Done(intent.seq, find_in_trash(intent.action.path, intent.time))

    def undo(self, intent: Intent, done: Done | None) -> bool:
        path = intent.action.path
        found = (done.trashed if done else None) or find_in_trash(path, intent.time)
        if os.path.lexists(path):
            if found and os.path.lexists(found.file):
                raise ActionError(f"another file now has this path; the trashed file is still at {found.file}")
            return False
        if not found or not os.path.lexists(found.file):
            raise ActionError("not found in the trash")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        shutil.move(found.file, path)
        if os.path.exists(found.info):
            os.unlink(found.info)
        return True


class Hardlink(Operation):
    name = "hardlink"
    frees_space = False

    def _check(self, action: Action, st: os.stat_result) -> str | None:
        if os.stat(action.keep).st_dev != st.st_dev:
            return "hardlink needs the file and its keeper on one filesystem"
        return None

    def intent(self, seq: int, now: float, action: Action) -> Intent:
        folder, name = os.path.split(action.path)
        return Intent(
            seq,
            now,
            action,
            backup=os.path.join(folder, f"{BACKUP_PREFIX}{seq}-{name}"),
            temp=os.path.join(folder, f"{TEMP_PREFIX}{seq}-{name}"),
        )

    def perform(self, intent: Intent) -> Done:
        path = intent.action.path
        backup, temp = self._names(intent)
        os.link(path, backup)  # the original's inode stays reachable for undo
        os.link(intent.action.keep, temp)
        os.replace(temp, path)  # atomic: the path always names a complete file
        fsync_dir(os.path.dirname(path))
        return Done(intent.seq)

    def undo(self, intent: Intent, done: Done | None) -> bool:
        path = intent.action.path
        backup, temp = self._names(intent)
        if os.path.lexists(temp):
            os.unlink(temp)  # a link to the keeper that never replaced the file
        if not os.path.lexists(backup):
            if not os.path.lexists(path):
                raise ActionError("file and backup are both gone")
            return False  # crashed before the backup link: nothing changed
        if os.path.lexists(path) and os.path.samefile(backup, path):
            os.unlink(backup)  # the replace never happened; the path still holds the original
            return False
        if os.path.lexists(path) and not self._is_our_link(intent):
            raise ActionError(f"another file now has this path; the original is kept at {backup}")
        os.replace(backup, path)
        fsync_dir(os.path.dirname(path))
        return True

    def purge(self, intent: Intent, dry_run: bool) -> str | None:
        backup, _ = self._names(intent)
        if not os.path.lexists(backup):
            return None
        if not dry_run:
            os.unlink(backup)
        return backup

    @staticmethod
    def _names(intent: Intent) -> tuple[str, str]:
        if intent.backup is None or intent.temp is None:
            raise ActionError("the journal names no backup for this hardlink")
        return intent.backup, intent.temp

    @staticmethod
    def _is_our_link(intent: Intent) -> bool:
        """Whether the path still holds what apply put there: the keeper's file (same inode, or same
        bytes when the keeper has since gone), so restoring the original over it loses nothing."""
        path, keep = intent.action.path, intent.action.keep
        try:
            if os.path.lexists(keep) and os.path.samefile(keep, path):
                return True
            return os.path.isfile(path) and file_md5(path) == intent.action.keep_md5
        except OSError:
            return False


class Delete(Operation):
    name = "delete"

    def perform(self, intent: Intent) -> Done:
        os.unlink(intent.action.path)
        return Done(intent.seq)

    def undo(self, intent: Intent, done: Done | None) -> bool:
        if os.path.lexists(intent.action.path):
            return False
        raise ActionError("permanently deleted; cannot be restored")


OPERATIONS: dict[str, Operation] = {op.name: op for op in (Move(), Trash(), Hardlink(), Delete())}


def operation(name: str) -> Operation:
    """The operation for a mode name, as planned or as read from a journal."""
    try:
        return OPERATIONS[name]
    except KeyError:
        raise ActionError(f"unknown operation {name!r}") from None
