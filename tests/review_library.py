"""A small photo library indexed as a scan leaves it, for the review app's tests (in-process, no pool)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from photodedup.client.hashing import HashResult, hash_file
from photodedup.client.index import Index

from helpers import photo


def make_library(root: Path, db: Path, names: tuple[str, ...] = ("a", "b", "c")) -> dict[str, list[Path]]:
    """Three photos under root/keep, each with an exact copy under root/copies and one brightness-shifted
    near copy under root/edits; indexed in `db` by one finished scan of `root`. Returns the files by role."""
    from PIL import ImageEnhance

    files: dict[str, list[Path]] = {"keep": [], "copies": [], "edits": []}
    for k, name in enumerate(names):
        img = photo(40 + k, (480, 360))
        keep = root / "keep" / f"{name}.jpg"
        keep.parent.mkdir(parents=True, exist_ok=True)
        img.save(keep, quality=95)  # the largest file of its group: the policy keeps it
        copy = root / "copies" / f"{name}.jpg"
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(keep, copy)
        edit = root / "edits" / f"{name}.jpg"
        edit.parent.mkdir(parents=True, exist_ok=True)
        ImageEnhance.Brightness(img).enhance(1.04).save(edit, quality=70)
        files["keep"].append(keep)
        files["copies"].append(copy)
        files["edits"].append(edit)
    index_files(db, [root], [p for ps in files.values() for p in ps])
    return files


def index_files(db: Path, roots: list[Path], paths: list[Path]) -> None:
    results: list[HashResult] = []
    for p in paths:
        st = os.stat(p)
        results.append(hash_file(str(p), st.st_size, st.st_mtime_ns, 80_000_000))
    with Index(db) as index:
        scan = index.start_scan([str(r) for r in roots], None, {"reference": []})
        index.put_hashes(results, scan)
        index.finish_scan(scan)


def synthetic_index(db: Path, groups: int) -> None:
    """`groups` exact pairs of made-up files under /lib (nothing on disk): for listing at scale."""
    results = [
        HashResult(f"/lib/{side}/{i:06d}.jpg", 1000 + i, 1, md5=f"{i:032x}", width=10, height=10, format="JPEG")
        for i in range(groups)
        for side in ("a", "b")
    ]
    with Index(db) as index:
        scan = index.start_scan(["/lib"], None, {"reference": []})
        index.put_hashes(results, scan)
        index.finish_scan(scan)
