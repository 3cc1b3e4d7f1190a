"""Find a file that Send2Trash put into a freedesktop trash, so undo can move it back.

The freedesktop spec keeps each trashed file under `files/` and a `.trashinfo` beside it under `info/`
whose `Path=` line names where it came from: the home trash ($XDG_DATA_HOME/Trash) or a volume's
`.Trash/$UID` or `.Trash-$UID`. Other platforms' trashes are not searched.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

INFO_SUFFIX = ".trashinfo"


@dataclass(frozen=True)
class TrashEntry:
    """A trashed file and its .trashinfo record; undo moves `file` back and removes `info`."""

    file: str
    info: str


def trash_dirs(path: str) -> list[str]:
    """Freedesktop trash folders a file may have gone to: the home trash, then its volume's."""
    home = os.path.join(os.path.expanduser(os.environ.get("XDG_DATA_HOME") or "~/.local/share"), "Trash")
    mount = os.path.dirname(os.path.realpath(path))
    while not os.path.ismount(mount) and mount != os.path.dirname(mount):
        mount = os.path.dirname(mount)
    uid = str(os.getuid()) if hasattr(os, "getuid") else ""
    return [home, os.path.join(mount, ".Trash", uid), os.path.join(mount, f".Trash-{uid}")]


def _original_path(info: str, topdir: str) -> str | None:
    text = Path(info).read_text(encoding="utf-8", errors="replace")
    original = next((unquote(line[5:].strip()) for line in text.splitlines() if line.startswith("Path=")), None)
    if original is None:
        return None
    return os.path.abspath(original if os.path.isabs(original) else os.path.join(topdir, original))


def find_in_trash(path: str, since: float) -> TrashEntry | None:
    """The newest trash entry whose .trashinfo names `path` and was written at or after `since`.

    Args:
        path: the absolute path the file had before it was trashed.
        since: when the trash operation started (seconds since the epoch); older entries of the same
            path are someone else's.
    Returns:
        The entry, or None when no trash holds it.
    """
    best: tuple[float, TrashEntry] | None = None
    target = os.path.abspath(path)
    # Implementations name the entry after the file (send2trash adds " N" before the extension on
    # clashes): only those entries can be ours, so only they are read.
    stem = os.path.splitext(os.path.basename(path))[0]
    for trash in trash_dirs(path):
        info_dir = os.path.join(trash, "info")
        if not os.path.isdir(info_dir):
            continue
        # relative Path= lines are relative to the volume holding a per-volume trash
        topdir = (
            os.path.dirname(os.path.dirname(trash)) if os.path.basename(trash).isdigit() else os.path.dirname(trash)
        )
        for name in os.listdir(info_dir):
            if not (name.endswith(INFO_SUFFIX) and name.startswith(stem)):
                continue
            info = os.path.join(info_dir, name)
            try:
                original = _original_path(info, topdir)
                stamp = os.stat(info).st_mtime
            except OSError:
                continue
            if original != target or stamp < since - 2:
                continue
            stored = os.path.join(trash, "files", name[: -len(INFO_SUFFIX)])
            if os.path.lexists(stored) and (best is None or stamp > best[0]):
                best = (stamp, TrashEntry(stored, info))
    return best[1] if best else None
