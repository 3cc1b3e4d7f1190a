"""Scan speed on camera-sized JPEGs: photodedup beside czkawka and imagededup, in the same run.

Builds a folder of 12-16 MP JPEGs, each a different photo: generated scenes (`photodedup.testing`)
with sensor noise, saved at q92, so they decode like camera files (~4 MB each) and, like a camera
folder, hold no crops of each other; plus exact copies and re-encodes of every eighth so there is
something to find. `--photos DIR` builds it from crops of the large photos in DIR instead (e.g. the
lxqt wallpapers): every file is then a crop of a few sources, the worst case for the loose stage and
its verification, since crops of one picture are copies. Then runs, as separate processes, each tool's
duplicate search over the folder and reports files/s and peak memory (process tree): `photodedup scan`
with default flags (offline: the similar tier is settled as skipped before hashing) and with
`--no-similar` on a fresh index (first scan) and again on the same index (unchanged rescan), czkawka's
Python bindings (image similarity, default settings, fresh cache), imagededup's PHash and DHash
(`encode_images` + `find_duplicates`), and `czkawka_cli image` when it is on PATH. Wall time includes
interpreter start-up for every tool; median of `--repeat` runs.

Usage: bench_scan.py [--files 600] [--repeat 3] [--photos DIR] [--no-write]
"""

from __future__ import annotations

import argparse
import logging
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from proctree import Measured, run_measured  # noqa: E402
from record import machine_line, write_section  # noqa: E402

log = logging.getLogger(__name__)

SIZES = ((4000, 3000), (4608, 3456))  # 12 MP and 16 MP


def source_photos(folder: Path) -> list[Image.Image]:
    out = []
    for path in sorted(folder.iterdir()):
        try:
            with Image.open(path) as img:
                if min(img.size) >= 1000:
                    out.append(img.convert("RGB"))
        except OSError:
            continue
    if not out:
        raise SystemExit(f"no photos of at least 1000 px in {folder}; pass --photos DIR")
    return out


def _camera_photo(args: tuple[Path, int, int]) -> Path:
    """One distinct camera-sized JPEG: a generated scene with its own sensor noise (a worker's job)."""
    from photodedup.testing import synthetic_photo

    root, i, seed = args
    w, h = SIZES[i % len(SIZES)]
    rng = np.random.default_rng(seed * 100_003 + i)
    arr = synthetic_photo(seed * 100_003 + i, (w, h)).astype(np.int16) + rng.normal(0, 3, (h, w, 1)).astype(np.int16)
    folder = root / f"DCIM/{100 + i // 20}CANON"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"IMG_{i:04d}.JPG"
    Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(path, quality=92)
    return path


def _cropped_photo(src: Image.Image, rng: np.random.Generator, i: int) -> Image.Image:
    w, h = SIZES[i % len(SIZES)]
    crop = 0.75 + 0.2 * rng.random()
    cw, ch = int(src.width * crop), int(src.height * crop)
    x0, y0 = rng.integers(0, src.width - cw + 1), rng.integers(0, src.height - ch + 1)
    img = src.crop((x0, y0, x0 + cw, y0 + ch)).resize((w, h), Image.Resampling.BICUBIC)
    arr = np.asarray(img, dtype=np.int16) + rng.normal(0, 3, (h, w, 1)).astype(np.int16)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def build_library(root: Path, photos: list[Image.Image] | None, n: int, seed: int = 0) -> int:
    """n camera-sized JPEGs plus exact copies and re-encodes of every eighth; returns the number of files.

    Distinct generated photos without `photos`; crops of `photos` (copies of each other) with them."""
    import multiprocessing

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    if photos is None:
        with multiprocessing.get_context("spawn").Pool() as pool:
            paths = pool.map(_camera_photo, [(root, i, seed) for i in range(n)], chunksize=4)
    else:
        paths = []
        for i in range(n):
            folder = root / f"DCIM/{100 + i // 20}CANON"
            folder.mkdir(parents=True, exist_ok=True)
            paths.append(folder / f"IMG_{i:04d}.JPG")
            _cropped_photo(photos[i % len(photos)], rng, i).save(paths[-1], quality=92)
    count = len(paths)
    for i, path in enumerate(paths):
        if i % 8 == 0:
            shutil.copyfile(path, root / f"copy_IMG_{i:04d}.JPG")
            with Image.open(path) as img:
                img.save(root / f"reencoded_IMG_{i:04d}.jpg", quality=75)
            count += 2
    return count


def _rate(files_per_s: float) -> str:
    return f"{files_per_s:,.0f}" if files_per_s >= 10 else f"{files_per_s:.2f}"


def timed(cmd: list[str], env: dict[str, str] | None = None) -> Measured:
    return run_measured(cmd, env)


CZKAWKA = """
import sys
from czkawka import ImageSimilarity
finder = ImageSimilarity()
finder.set_directories([sys.argv[1]])
finder.find_similar()
"""


IMAGEDEDUP = """
import sys
from imagededup.methods import {method}
m = {method}(verbose=False)
enc = m.encode_images(image_dir=sys.argv[1], recursive=True)
m.find_duplicates(encoding_map=enc)
"""


def run(files: int, repeat: int, photos: Path | None, write: bool) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        lib = Path(tmp) / "library"
        log.info("building %d camera-sized JPEGs from %s", files, photos or "generated scenes")
        total = build_library(lib, source_photos(photos) if photos else None, files)
        megabytes = sum(p.stat().st_size for p in lib.rglob("*") if p.is_file()) / 1e6
        base = [
            sys.executable,
            "-m",
            "photodedup",
            "--log-level",
            "WARNING",
            "scan",
            str(lib),
            "--no-progress",
            "--format",
            "json",
            "-o",
            str(Path(tmp) / "report.json"),
        ]
        photodedup = [*base, "--no-similar"]
        offline = {"HF_HUB_OFFLINE": "1"}
        rows: list[tuple[str, str, list[Measured]]] = []
        default, first, rescan = [], [], []
        for r in range(repeat):
            default.append(timed([*base, "--db", str(Path(tmp) / f"default{r}.sqlite3")], offline))
            db = Path(tmp) / f"index{r}.sqlite3"
            first.append(timed([*photodedup, "--db", str(db)]))
            rescan.append(timed([*photodedup, "--db", str(db)]))
        rows.append(("photodedup scan", "first scan, default flags (offline: no weights)", default))
        rows.append(("photodedup scan --no-similar", "first scan (MD5 + dHash + pHash + rotations)", first))
        rows.append(("photodedup scan --no-similar", "unchanged rescan (same index)", rescan))
        notes = []
        try:
            import czkawka  # noqa: F401

            rows.append(
                (
                    "czkawka (Python bindings)",
                    "image similarity, default settings, fresh cache",
                    [
                        timed([sys.executable, "-c", CZKAWKA, str(lib)], {"XDG_CACHE_HOME": str(Path(tmp) / f"cz{r}")})
                        for r in range(repeat)
                    ],
                )
            )
        except ImportError:
            notes.append("czkawka: not installed (`pip install -e '.[bench]'`).")
        try:
            import imagededup  # noqa: F401

            for method in ("PHash", "DHash"):
                code = IMAGEDEDUP.format(method=method)
                rows.append(
                    (
                        f"imagededup {method}",
                        "encode_images + find_duplicates",
                        [timed([sys.executable, "-c", code, str(lib)]) for _ in range(repeat)],
                    )
                )
        except ImportError:
            notes.append("imagededup: not installed (`pip install imagededup`).")
        czkawka = shutil.which("czkawka_cli")
        if czkawka:
            rows.append(
                (
                    "czkawka_cli image",
                    "default settings",
                    [timed([czkawka, "image", "-d", str(lib), "-f", str(Path(tmp) / "cz.txt")]) for _ in range(repeat)],
                )
            )
        else:
            notes.append(
                "czkawka_cli is not installed here; the czkawka row is the same Rust library through its "
                "PyPI Python bindings."
            )
    lines = ["| tool | what | wall s (median) | files/s | peak RSS MB (tree) | runs (s) |", "|---|---|---|---|---|---|"]
    for tool, what, ms in rows:
        med = statistics.median(m.seconds for m in ms)
        lines.append(
            f"| {tool} | {what} | {med:.2f} | {_rate(total / med)} | {max(m.peak_tree_mb for m in ms):,.0f} | "
            f"{', '.join(f'{m.seconds:.2f}' for m in ms)} |"
        )
    speed = {what: statistics.median(m.seconds for m in ms) for _, what, ms in rows}
    cz = next((v for k, v in speed.items() if "fresh cache" in k), None)
    if cz is not None:
        notes.append(
            f"Default first scan vs czkawka: {cz / speed['first scan, default flags (offline: no weights)']:.2f}x "
            f"its speed; hash tier: {_rate(total / speed['first scan (MD5 + dHash + pHash + rotations)'])} files/s."
        )
    text = "\n".join(
        [
            "## Scan speed, camera-sized JPEGs (`benchmarks/bench_scan.py`)",
            "",
            f"{machine_line(('Pillow', 'simplejpeg', 'ImageHash', 'imagededup'))}. {total} JPEGs "
            f"({megabytes:,.0f} MB): "
            + (
                f"{files} 12 MP / 16 MP crops of the photos in {photos} (sensor noise, q92: copies of each other) "
                if photos
                else f"{files} distinct 12 MP / 16 MP generated photos (sensor noise, q92) "
            )
            + "plus exact copies and q75 re-encodes of every eighth. Each tool runs as its own process over "
            "the folder; wall time "
            f"includes interpreter start-up; median of {repeat} runs. photodedup decodes each JPEG once at reduced "
            "size (DCT scaling) on every core; imagededup decodes every file in full.",
            "",
            *lines,
            "",
            *(f"- {n}" for n in notes),
        ]
    )
    if write:
        write_section("bench_scan", text)
    return text


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=600)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--photos", type=Path, default=None, help="crop these photos instead of generating scenes")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    print(run(args.files, args.repeat, args.photos, not args.no_write))


if __name__ == "__main__":
    main()
