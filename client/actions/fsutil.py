"""Small filesystem steps every operation needs: content hashes, durable renames, directory fsync."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil

TEMP_PREFIX = ".photodedup-tmp-"


def file_md5(path: str) -> str:
    """MD5 of a file's bytes, read in 1 MiB chunks (the same digest the scan stored)."""
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fsync_dir(path: str) -> None:
    """Make a rename or link inside `path` durable; filesystems that cannot fsync folders are let be."""
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


def move_temp(dst: str) -> str:
    """Where a cross-filesystem move copies to before it replaces `dst` (undo cleans it up)."""
    return os.path.join(os.path.dirname(dst), TEMP_PREFIX + os.path.basename(dst))


def durable_move(src: str, dst: str) -> None:
    """Rename, or across filesystems copy to a temp name, fsync, replace, then unlink the source."""
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    try:
        os.rename(src, dst)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        temp = move_temp(dst)
        shutil.copy2(src, temp)
        with open(temp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(temp, dst)
        fsync_dir(os.path.dirname(dst))
        os.unlink(src)
    fsync_dir(os.path.dirname(src))
    fsync_dir(os.path.dirname(dst))
