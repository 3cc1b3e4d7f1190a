"""Planning: which file gets which operation, before anything on disk is touched.

Every rule about *what* may be acted on lives here, so the CLI and the review app plan alike:
keepers and files under reference folders are never targets; `kinds` picks files by how they match
their keeper (an exact copy inside a near group counts as exact); a hardlink only joins byte-identical
copies and never links to a reference file; moved files keep their paths relative to a root.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from photodedup.client.grouping import Group
from photodedup.client.paths import under_any
from photodedup.errors import PhotodedupError

Mode = Literal["move", "trash", "hardlink", "delete"]
MODES: tuple[str, ...] = ("move", "trash", "hardlink", "delete")
KINDS: tuple[str, ...] = ("exact", "near", "similar")


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


def common_root(paths: Sequence[str]) -> str:
    """Deepest folder holding every path: moved files keep their paths relative to it."""
    return os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in paths])


def move_root(roots: Sequence[str], reference_dirs: Sequence[str]) -> Path | None:
    """The scanned folder that moved files keep their layout under, when the scan had exactly one
    (reference folders are never moved from); None lets `plan_actions` use the deepest common folder."""
    scanned = [r for r in roots if r not in reference_dirs and os.path.isdir(r)]
    return Path(scanned[0]) if len(scanned) == 1 else None


def outside_roots(path: str, roots: Sequence[str]) -> bool:
    """Whether a file really lives outside every scanned root: its path is under a root, but a
    symlinked folder on the way leads elsewhere (or the path was never under one)."""
    real = os.path.realpath(path)
    for root in roots:
        base = os.path.realpath(root)
        if real == base or real.startswith(base.rstrip("/") + "/"):
            return False
    return True


def check_move_dest(dest: Path, roots: Sequence[str]) -> None:
    """A move-to folder inside a scanned root is refused: the next scan would find the copies again."""
    real = os.path.realpath(dest)
    for root in roots:
        base = os.path.realpath(root)
        if os.path.isdir(base) and (real == base or real.startswith(base.rstrip("/") + "/")):
            raise ActionError(
                f"the move-to folder {dest} is inside the scanned folder {root}: the next scan "
                "would find the moved copies again; choose a folder outside the scanned folders"
            )


def plan_actions(
    groups: Iterable[Group],
    mode: Mode,
    dest: Path | None,
    reference_dirs: Sequence[str] = (),
    root: Path | None = None,
    kinds: Collection[str] = KINDS,
    roots: Sequence[str] = (),
) -> list[Action]:
    """One action per file that may be acted on: not a keeper, not under a reference folder, of a
    wanted kind, and for hardlinks byte-identical to a keeper outside every reference folder.

    Args:
        groups: duplicate groups, each with its keeper chosen.
        mode: "move", "trash", "hardlink" or "delete".
        dest: the folder "move" puts files under; required for "move", ignored otherwise.
        reference_dirs: folders whose files are never targets (and never hardlink sources).
        root: for "move", each file goes to `dest / relpath(file, root)`; defaults to the deepest
            folder holding all targets (pass the scanned folder to mirror the library's layout).
        kinds: how a file must match its keeper to be a target ("exact", "near", "similar").
        roots: the scanned folders; a "move" destination inside one is refused (see `outside_roots`
            for files that lead out of them).
    Returns:
        The actions in group order. Move destinations that would collide get a ` (n)` suffix.
    Raises:
        ActionError: unknown mode or kind, "move" without `dest` or into a scanned root, or a file
            outside `root`.
    """
    if mode not in MODES:
        raise ActionError(f"unknown mode {mode!r}: use one of {', '.join(MODES)}")
    unknown = set(kinds) - set(KINDS)
    if unknown:
        raise ActionError(f"unknown kinds {', '.join(sorted(unknown))}: use {', '.join(KINDS)}")
    if mode == "move" and dest is None:
        raise ActionError("move needs a destination folder")
    if mode == "move" and dest is not None:
        check_move_dest(dest, roots)
    actions: list[Action] = []
    for group in groups:
        keep = group.keep
        # A link makes two paths one file: editing the copy would edit a reference file.
        if mode == "hardlink" and under_any(keep.path, reference_dirs):
            continue
        for member in group.targets:
            rec = member.record
            if under_any(rec.path, reference_dirs):
                continue
            # kind is how this file matches its keeper (exact copies inside a near group are "exact")
            kind = str(member.tier)  # a Tier; series members are never targets
            if kind not in kinds:
                continue
            if mode == "hardlink" and rec.md5 != keep.md5:
                continue  # only byte-identical copies may become one file
            actions.append(
                Action(
                    mode,
                    os.path.abspath(rec.path),
                    os.path.abspath(keep.path),
                    rec.md5,
                    keep.md5,
                    rec.size,
                    rec.mtime,
                    kind,
                )
            )
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
