"""Find candidate photo files under one or more roots.

The walk follows symlinked folders but visits each real folder once (keyed by device and inode), so a
link back up the tree cannot loop. Symlinked files are skipped and hard links are reported once: a link
is the same bytes, and calling it a duplicate would invite deleting the only copy. Files are chosen by
content, not name: a known photo extension is taken as a candidate (the hasher then checks its bytes),
and any other file is kept only when its first bytes carry an image signature.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

log = logging.getLogger(__name__)

PHOTO_EXTENSIONS = frozenset(
    {
        ".jpg",
        ".jpeg",
        ".jpe",
        ".jfif",
        ".png",
        ".webp",
        ".gif",
        ".tif",
        ".tiff",
        ".bmp",
        ".dib",
        ".heic",
        ".heif",
        ".hif",
        ".avif",
    }
)
# Never images; skipping them saves opening every video and document in a home folder.
NOT_PHOTO_EXTENSIONS = frozenset(
    {
        ".mp4",
        ".mov",
        ".avi",
        ".mkv",
        ".m4v",
        ".3gp",
        ".mts",
        ".wmv",
        ".mp3",
        ".m4a",
        ".wav",
        ".aac",
        ".flac",
        ".txt",
        ".md",
        ".pdf",
        ".doc",
        ".docx",
        ".xls",
        ".xlsx",
        ".zip",
        ".gz",
        ".7z",
        ".rar",
        ".json",
        ".xml",
        ".xmp",
        ".aae",
        ".thm",
        ".db",
        ".ini",
        ".html",
        ".htm",
        ".css",
        ".js",
        ".py",
        ".sqlite3",
        ".lrcat",
    }
)
# Folders that photo tools, NAS boxes and operating systems fill with their own copies and thumbnails.
SYSTEM_DIRS = frozenset(
    {
        "@eaDir",
        "#recycle",
        "$RECYCLE.BIN",
        "System Volume Information",
        "lost+found",
        "__MACOSX",
        ".Trashes",
        ".Spotlight-V100",
        ".fseventsd",
        "node_modules",
        "Thumbs",
    }
)
SNIFF_BYTES = 32

_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs", b"mif1", b"msf1", b"avif"}


def sniff_format(head: bytes) -> str | None:
    """Name the image format from a file's first bytes, or None when no supported signature matches."""
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF"
    if head[:2] == b"BM" and len(head) >= 14:
        return "BMP"
    if head[4:8] == b"ftyp" and head[8:12] in _HEIF_BRANDS:
        return "HEIF"
    return None


class FoundFile(NamedTuple):
    """One candidate: an absolute path and the stat fields the index keys on (a tuple: a walk makes one
    per file, and a frozen dataclass cost five times as much to build)."""

    path: str
    size: int
    mtime_ns: int


@dataclass
class WalkStats:
    """What the walk passed over, for the summary."""

    folders: int = 0
    skipped_folders: int = 0
    skipped_links: int = 0
    hardlink_repeats: int = 0
    not_photos: int = 0
    unreadable: list[tuple[str, str]] = field(default_factory=list)


def _is_hidden(name: str) -> bool:
    return name.startswith(".") or name in SYSTEM_DIRS or name.startswith(".Trash-")


def _sniff(path: str) -> str | None:
    try:
        with open(path, "rb") as fh:
            return sniff_format(fh.read(SNIFF_BYTES))
    except OSError:
        return None


def _extension(name: str) -> str:
    """`os.path.splitext(name)[1].lower()` (leading dots start no extension), at a third of its cost: a
    walk asks it of every file."""
    dot = name.rfind(".")
    if dot <= 0 or not name[:dot].lstrip("."):
        return ""
    return name[dot:].lower()


class Walker:
    """Walks roots once; iterate `walk()` and read `stats` afterwards."""

    def __init__(self, roots: Iterable[str | Path], include_hidden: bool = False) -> None:
        self.roots = [os.path.abspath(os.path.expanduser(str(r))) for r in roots]
        self.include_hidden = include_hidden
        self.stats = WalkStats()
        self._seen_dirs: set[tuple[int, int]] = set()
        self._seen_files: set[tuple[int, int]] = set()

    def walk(self) -> Iterator[FoundFile]:
        files: list[tuple[str, os.stat_result]] = []
        for root in self.roots:
            try:
                st = os.stat(root)
            except OSError as exc:
                self.stats.unreadable.append((root, exc.strerror or str(exc)))
                continue
            if stat.S_ISDIR(st.st_mode):
                yield from self._walk_dir(root)
            elif stat.S_ISREG(st.st_mode):
                files.append((root, st))
        for path, st in files:  # after the folders, so a file inside a walked folder is not found twice
            if self._inside_walked(path):
                continue
            found = self._consider(path, path, st)
            if found is not None:
                yield found

    def _inside_walked(self, path: str) -> bool:
        parent = os.path.dirname(path)
        while True:
            try:
                st = os.stat(parent)
            except OSError:
                return False
            if (st.st_dev, st.st_ino) in self._seen_dirs:
                return True
            up = os.path.dirname(parent)
            if up == parent:
                return False
            parent = up

    def _walk_dir(self, top: str) -> Iterator[FoundFile]:
        stack = [top]
        while stack:
            folder = stack.pop()
            try:
                st = os.stat(folder)
            except OSError as exc:
                self.stats.unreadable.append((folder, exc.strerror or str(exc)))
                continue
            key = (st.st_dev, st.st_ino)
            if key in self._seen_dirs:
                self.stats.skipped_links += 1
                continue
            self._seen_dirs.add(key)
            self.stats.folders += 1
            try:
                with os.scandir(folder) as it:
                    entries = sorted(it, key=lambda e: e.name)
            except OSError as exc:
                self.stats.unreadable.append((folder, exc.strerror or str(exc)))
                continue
            subdirs: list[str] = []
            for entry in entries:
                try:
                    is_link = entry.is_symlink()
                    if entry.is_dir(follow_symlinks=True):
                        if not self.include_hidden and _is_hidden(entry.name):
                            self.stats.skipped_folders += 1
                        else:
                            subdirs.append(entry.path)
                        continue
                    if is_link:
                        self.stats.skipped_links += 1
                        continue
                    if not entry.is_file(follow_symlinks=False):
                        continue
                    if not self.include_hidden and entry.name.startswith("."):
                        continue
                    found = self._consider(entry.path, entry.name, entry.stat(follow_symlinks=False))
                except OSError as exc:
                    self.stats.unreadable.append((entry.path, exc.strerror or str(exc)))
                    continue
                if found is not None:
                    yield found
            stack.extend(reversed(subdirs))  # depth first, in name order

    def _consider(self, path: str, name: str, st: os.stat_result) -> FoundFile | None:
        ext = _extension(name)
        if ext not in PHOTO_EXTENSIONS:
            if ext in NOT_PHOTO_EXTENSIONS or st.st_size == 0 or _sniff(path) is None:
                self.stats.not_photos += 1
                return None
        if st.st_nlink > 1:
            key = (st.st_dev, st.st_ino)
            if key in self._seen_files:
                self.stats.hardlink_repeats += 1
                return None
            self._seen_files.add(key)
        return FoundFile(path, st.st_size, st.st_mtime_ns)  # absolute already: the roots are made so


def walk(roots: Iterable[str | Path], include_hidden: bool = False) -> Iterator[FoundFile]:
    """Shorthand when the caller does not need the walk statistics."""
    yield from Walker(roots, include_hidden).walk()
