"""Hash-tier scan speed on camera-sized JPEGs: photodedup beside imagededup (and czkawka if installed).

Builds a folder of 12-16 MP JPEGs from the large photos a Debian machine has (lxqt wallpapers; any
folder with --photos), each a different crop/shift with its own sensor noise, plus a few exact copies
and re-encodes so there is something to find. Then runs, as separate processes, each tool's
hash-based duplicate search over the folder and reports files/s: `photodedup scan --no-similar` on a
fresh index (first scan) and again on the same index (unchanged rescan), imagededup's PHash and DHash
(`encode_images` + `find_duplicates`), and `czkawka_cli image` when it is on PATH. Wall time includes
interpreter start-up for every tool; median of `--repeat` runs.

Usage: bench_scan.py [--files 48] [--repeat 3] [--photos DIR] [--no-write]
"""

from __future__ import annotations

import argparse
import logging
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from record import machine_line, write_section  # noqa: E402

log = logging.getLogger(__name__)

DEFAULT_PHOTOS = Path("/usr/share/lxqt/wallpapers")
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


def build_library(root: Path, photos: list[Image.Image], n: int, seed: int = 0) -> int:
    """n camera-sized JPEGs (distinct crops + noise), plus exact copies and re-encodes of a few; returns files."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    count = 0
    for i in range(n):
        src = photos[i % len(photos)]
        w, h = SIZES[i % len(SIZES)]
        crop = 0.75 + 0.2 * rng.random()
        cw, ch = int(src.width * crop), int(src.height * crop)
        x0, y0 = rng.integers(0, src.width - cw + 1), rng.integers(0, src.height - ch + 1)
        img = src.crop((x0, y0, x0 + cw, y0 + ch)).resize((w, h), Image.Resampling.BICUBIC)
        arr = np.asarray(img, dtype=np.int16) + rng.normal(0, 3, (h, w, 1)).astype(np.int16)
        img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
        folder = root / f"DCIM/{100 + i // 20}CANON"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"IMG_{i:04d}.JPG"
        img.save(path, quality=92)
        count += 1
        if i % 8 == 0:
            shutil.copyfile(path, root / f"copy_IMG_{i:04d}.JPG")
            img.save(root / f"reencoded_IMG_{i:04d}.jpg", quality=75)
            count += 2
    return count


def timed(cmd: list[str]) -> float:
    start = time.monotonic()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.monotonic() - start


IMAGEDEDUP = """
import sys
from imagededup.methods import {method}
m = {method}(verbose=False)
enc = m.encode_images(image_dir=sys.argv[1], recursive=True)
m.find_duplicates(encoding_map=enc)
"""


CZKAWKA = """
import sys
from czkawka import ImageSimilarity
finder = ImageSimilarity()
finder.set_directories([sys.argv[1]])
finder.find_similar()
"""


def run(files: int, repeat: int, photos: Path, write: bool) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        lib = Path(tmp) / "library"
        log.info("building %d camera-sized JPEGs from %s", files, photos)
        total = build_library(lib, source_photos(photos), files)
        megabytes = sum(p.stat().st_size for p in lib.rglob("*") if p.is_file()) / 1e6
        photodedup = [sys.executable, "-m", "photodedup", "--log-level", "WARNING", "scan", str(lib), "--no-similar",
                      "--no-progress", "--format", "json", "-o", str(Path(tmp) / "report.json")]
        rows: list[tuple[str, str, list[float]]] = []
        first, rescan = [], []
        for r in range(repeat):
            db = Path(tmp) / f"index{r}.sqlite3"
            first.append(timed([*photodedup, "--db", str(db)]))
            rescan.append(timed([*photodedup, "--db", str(db)]))
        rows.append(("photodedup scan --no-similar", "first scan (MD5, content box, hashes, windows, keeper signals, "
                     "verified grouping)", first))
        rows.append(("photodedup scan --no-similar", "unchanged rescan (same index)", rescan))
        notes = []
        try:
            import imagededup  # noqa: F401

            for method in ("PHash", "DHash"):
                code = IMAGEDEDUP.format(method=method)
                rows.append((f"imagededup {method}", "encode_images + find_duplicates",
                             [timed([sys.executable, "-c", code, str(lib)]) for _ in range(repeat)]))
        except ImportError:
            notes.append("imagededup: not installed (`pip install imagededup`).")
        czkawka = shutil.which("czkawka_cli")
        if czkawka:
            rows.append(("czkawka_cli image", "default settings",
                         [timed([czkawka, "image", "-d", str(lib), "-f", str(Path(tmp) / "cz.txt")]) for _ in range(repeat)]))
        else:
            try:
                import czkawka as _czkawka  # noqa: F401

                rows.append(("czkawka (Python bindings)", "ImageSimilarity.find_similar, default similarity",
                             [timed([sys.executable, "-c", CZKAWKA, str(lib)]) for _ in range(repeat)]))
            except ImportError:
                notes.append("czkawka: not measured: neither czkawka_cli nor the czkawka Python bindings are installed "
                             "(`pip install czkawka`).")
    lines = ["| tool | what | wall s (median) | files/s | runs (s) |", "|---|---|---|---|---|"]
    for tool, what, times in rows:
        med = statistics.median(times)
        lines.append(f"| {tool} | {what} | {med:.2f} | {total / med:,.0f} | {', '.join(f'{t:.2f}' for t in times)} |")
    text = "\n".join(
        [
            "## Scan speed, hash tier, camera-sized JPEGs (`benchmarks/bench_scan.py`)",
            "",
            f"{machine_line(('Pillow', 'simplejpeg', 'ImageHash', 'imagededup'))}. {total} JPEGs ({megabytes:,.0f} MB): "
            f"{files} distinct 12 MP / 16 MP photos made from {photos} (crops, sensor noise, q92) plus exact copies "
            "and q75 re-encodes of every eighth. Each tool runs as its own process over the folder; wall time "
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
    ap.add_argument("--files", type=int, default=48)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    print(run(args.files, args.repeat, args.photos, not args.no_write))


if __name__ == "__main__":
    main()
