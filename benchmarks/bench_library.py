"""What a scan costs on a library of many small photos, beside czkawka and imagededup in the same run.

Builds a synthetic library (`--files` photos of the 320 px class, made with photodedup.testing's
generator, one folder per thousand files, every fifth one also present as an exact copy or a q70
re-encode) and measures, each as its own process with wall time and the peak memory of its whole
process tree (scan plus hashing workers):

- first scan: `photodedup scan DIR` with default flags (offline here: no model weights, so the similar
  tier is settled as skipped before hashing), `--no-similar`, czkawka's Python bindings (image
  similarity, default settings, a fresh cache) and imagededup's PHash;
- unchanged rescan of the same index: default flags, and with the tiny model's embeddings already
  stored (the model must not be loaded);
- scanning against a server running the tiny model (`--server`) beside the hash-only scan, each on a
  fresh index, in interleaved pairs (at least three): the whole command, and the scan's own timings of its
  hashing(+embedding) phase (with its CPU, the server's included) and of its grouping, since the overlap
  target is about the phase and the grouping can differ (`--overlap` runs only these pairs; `--pin` puts the
  server on core 1 and each scan on core 0 with one hashing worker, a server of its own as a GPU server is);
- `--scale N,N,...`: first scan and rescan at growing sizes, to show time per file stays flat and
  memory stays bounded (the issue's target is 200,000 files under 1 GB).

Usage: bench_library.py [--files 10000] [--repeat 1] [--scale 20000,50000,200000] [--no-write]
       bench_library.py --overlap --files 300 [--library DIR] [--repeat 3] [--pin]
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import re
import shutil
import sqlite3
import statistics
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from proctree import Measured, run_measured  # noqa: E402
from record import machine_line, write_section  # noqa: E402
from serverproc import ServerProcess, photodedup_exe  # noqa: E402

log = logging.getLogger(__name__)

SIZES = ((320, 240), (240, 320), (400, 300), (300, 225))
CZKAWKA = """
import sys
from czkawka import ImageSimilarity
finder = ImageSimilarity()
finder.set_directories([sys.argv[1]])
finder.find_similar()
"""
IMAGEDEDUP = """
import sys
from imagededup.methods import PHash
m = PHash(verbose=False)
m.find_duplicates(encoding_map=m.encode_images(image_dir=sys.argv[1], recursive=True))
"""


def _make_one(args: tuple[Path, int]) -> int:
    from PIL import Image

    from photodedup.testing import synthetic_photo

    root, i = args
    folder = root / f"{i // 1000:04d}"
    img = Image.fromarray(synthetic_photo(i, SIZES[i % len(SIZES)]))
    path = folder / f"IMG_{i:06d}.jpg"
    img.save(path, quality=85)
    if i % 10 == 3:
        shutil.copyfile(path, folder / f"IMG_{i:06d}_copy.jpg")
        return 2
    if i % 10 == 7:
        img.save(folder / f"IMG_{i:06d}_q70.jpg", quality=70)
        return 2
    return 1


def build_library(root: Path, originals: int) -> int:
    """`originals` small photos plus a copy or re-encode of every fifth; returns the number of files."""
    for k in range(originals // 1000 + 1):
        (root / f"{k:04d}").mkdir(parents=True, exist_ok=True)
    with multiprocessing.get_context("spawn").Pool() as pool:
        return sum(pool.imap_unordered(_make_one, [(root, i) for i in range(originals)], chunksize=64))


def scan_cmd(lib: Path, db: Path, *flags: str, log_level: str = "WARNING") -> list[str]:
    return [
        *photodedup_exe(),
        "--log-level",
        log_level,
        "scan",
        str(lib),
        "--db",
        str(db),
        "--no-progress",
        "--format",
        "json",
        "-o",
        str(db.with_suffix(".json")),
        *flags,
    ]


def runs(
    repeat: int, make: Callable[[int], list[str]], env: Callable[[int], dict[str, str]] | None = None
) -> list[Measured]:
    return [run_measured(make(r), env(r) if env else None) for r in range(repeat)]


def czkawka_runs(lib: Path, repeat: int, cache: Path) -> list[Measured]:
    """czkawka over `lib`, each run with a fresh cache folder (`cache` plus the run's number)."""
    return runs(
        repeat,
        lambda r: [sys.executable, "-c", CZKAWKA, str(lib)],
        lambda r: {"XDG_CACHE_HOME": f"{cache}{r}"},
    )


def row(tool: str, what: str, files: int, ms: list[Measured]) -> str:
    secs = statistics.median(m.seconds for m in ms)
    rss = max(m.peak_tree_mb for m in ms)
    rate = files / secs
    shown = f"{rate:,.0f}" if rate >= 10 else f"{rate:.2f}"
    return f"| {tool} | {what} | {secs:.2f} | {shown} | {rss:,.0f} | {', '.join(f'{m.seconds:.2f}' for m in ms)} |"


HEAD = ["| tool | what | wall s (median) | files/s | peak RSS MB (tree) | runs (s) |", "|---|---|---|---|---|---|"]


def core_section(lib: Path, originals: int, repeat: int, tmp: Path) -> str:
    """The issue's three numbers only: default first scan, czkawka beside it, and unchanged rescans
    (`--core`: no imagededup, tiny-model or server runs)."""
    files = sum(1 for p in lib.rglob("*") if p.is_file())
    # Bytecode cached as an installed package has it (this machine's environment turns the cache off).
    offline = {"HF_HUB_OFFLINE": "1", "PYTHONDONTWRITEBYTECODE": ""}
    first = runs(repeat, lambda r: scan_cmd(lib, tmp / f"core{r}.sqlite3"), lambda r: offline)
    czkawka = czkawka_runs(lib, repeat, tmp / "czcore")
    rescans = runs(max(3, repeat), lambda r: scan_cmd(lib, tmp / "core0.sqlite3"), lambda r: offline)
    cz = statistics.median(m.seconds for m in czkawka) / statistics.median(m.seconds for m in first)
    return "\n".join(
        [
            "## Scan costs, many small photos: first scan and rescans (`benchmarks/bench_library.py --core`)",
            "",
            f"{machine_line(('Pillow', 'simplejpeg', 'ImageHash', 'czkawka'))}; load average {load_line()}. "
            f"{files} JPEGs: {originals} generated photos of the 320 px class (q85) plus an exact copy or a q70 "
            "re-encode of every fifth. Each command is its own process (wall time includes interpreter start-up; "
            "peak RSS sums the process and its workers; Python's bytecode cache on); the rescans run on the first "
            "scan's index, default flags.",
            "",
            *HEAD,
            row("photodedup scan", "first scan, default flags (offline: no weights)", files, first),
            row("czkawka (Python bindings)", "image similarity, default settings, fresh cache", files, czkawka),
            row("photodedup scan", "unchanged rescan, default flags", files, rescans),
            "",
            f"Default first scan vs czkawka: {cz:.2f}x its speed.",
        ]
    )


def load_line() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.1f} / {five:.1f} (1 / 5 min) on {os.cpu_count()} cores"


def library_section(originals: int, repeat: int, tmp: Path) -> str:
    lib = tmp / "library"
    log.info("building %d small photos", originals)
    files = build_library(lib, originals)
    megabytes = sum(p.stat().st_size for p in lib.rglob("*") if p.is_file()) / 1e6
    tiny = ["--model", "photodedup-tiny", "--weights", "random", "--cache-dir", str(tmp / "cache")]
    offline = {"HF_HUB_OFFLINE": "1"}
    rows = []
    default_first = runs(repeat, lambda r: scan_cmd(lib, tmp / f"default{r}.sqlite3"), lambda r: offline)
    hash_only = runs(repeat, lambda r: scan_cmd(lib, tmp / f"hash{r}.sqlite3", "--no-similar"))
    czkawka = czkawka_runs(lib, repeat, tmp / "czcache")
    rows += [
        row("photodedup scan", "first scan, default flags (offline: no weights)", files, default_first),
        row("photodedup scan --no-similar", "first scan, hash tiers only", files, hash_only),
        row("czkawka (Python bindings)", "image similarity, default settings, fresh cache", files, czkawka),
    ]
    try:
        import imagededup  # noqa: F401

        rows.append(
            row(
                "imagededup PHash",
                "encode_images + find_duplicates",
                files,
                runs(repeat, lambda r: [sys.executable, "-c", IMAGEDEDUP, str(lib)]),
            )
        )
    except ImportError:
        rows.append("| imagededup | not installed (`pip install -e '.[bench]'`) | | | | |")
    rows.append(
        row(
            "photodedup scan",
            "unchanged rescan, default flags",
            files,
            runs(repeat, lambda r: scan_cmd(lib, tmp / "default0.sqlite3"), lambda r: offline),
        )
    )
    run_measured(scan_cmd(lib, tmp / "tiny.sqlite3", *tiny))  # stores the tiny model's embeddings
    rows.append(
        row(
            "photodedup scan",
            "unchanged rescan, tiny model's embeddings stored (no model load)",
            files,
            runs(repeat, lambda r: scan_cmd(lib, tmp / "tiny.sqlite3", *tiny)),
        )
    )
    load_before = load_line()
    served, hashed = overlap_runs(lib, tmp, tiny, max(3, repeat))
    rows += [
        row("photodedup scan --server", "first scan, tiny model on a local server", files, [m for m, _ in served]),
        row(
            "photodedup scan --no-similar",
            "first scan, same moment (anchor for the line above)",
            files,
            [m for m, _ in hashed],
        ),
    ]
    cz = statistics.median(m.seconds for m in czkawka) / statistics.median(m.seconds for m in default_first)
    return "\n".join(
        [
            "## Scan costs, many small photos (`benchmarks/bench_library.py`)",
            "",
            f"{machine_line(('Pillow', 'simplejpeg', 'ImageHash', 'czkawka', 'imagededup'))}. {files} JPEGs "
            f"({megabytes:,.0f} MB): {originals} generated photos of the 320 px class (q85) plus an exact copy or "
            "a q70 re-encode of every fifth. Each command is its own process; wall time includes interpreter "
            f"start-up; peak RSS sums the process and its workers; median of {repeat} run(s), all in one run of "
            f"the script on a shared machine (load average {load_before} before the `--server` pairs).",
            "",
            *HEAD,
            *rows,
            "",
            f"Default first scan vs czkawka: {cz:.2f}x its speed.",
            "",
            *overlap_table(served, hashed),
        ]
    )


@dataclass
class Phases:
    hashing: float  # opening the embedder (server streams) and hashing, to the last embedding answered
    hashing_cpu: float  # CPU of that phase: the scan (all threads), its hashing workers and the server
    grouping: float  # load_groups: tiers, verification, keepers
    groups: dict[str, int]


def scan_phases(db: Path, server_cpu: float) -> Phases:
    """The scan's own timings from its JSON report: the hashing (and embedding) phase and the grouping."""
    stats = json.loads(db.with_suffix(".json").read_text())["stats"]
    return Phases(
        stats["hash_seconds"], stats["hash_cpu_seconds"] + server_cpu, stats["group_seconds"], stats["groups"]
    )


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system, all threads) a running process has used, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def overlap_runs(
    lib: Path, tmp: Path, tiny: list[str], repeat: int, pin: bool = False
) -> tuple[list[tuple[Measured, Phases]], list[tuple[Measured, Phases]]]:
    """`--server` (tiny model on a local server process) and hash-only first scans, interleaved run by
    run on fresh indexes, so both see the same moment of a shared machine.

    `pin`: the server on a core of its own (`taskset -c 1`), both scans on the other with one hashing
    worker (`taskset -c 0`, `--workers 1`): a server elsewhere, as a GPU server is, so what is measured is
    whether hashing and embedding overlap, not how two programs share two cores."""
    served: list[tuple[Measured, Phases]] = []
    hashed: list[tuple[Measured, Phases]] = []
    server_prefix, scan_prefix, scan_flags = (
        (["taskset", "-c", "1"], ["taskset", "-c", "0"], ["--workers", "1"]) if pin else ([], [], [])
    )
    with ServerProcess([*tiny, "--max-batch-size", "64"], prefix=server_prefix) as srv:

        def one(db: Path, *flags: str) -> tuple[Measured, Phases]:
            cpu = process_cpu(srv.pid)  # the server works only while the scan embeds
            measured = run_measured([*scan_prefix, *scan_cmd(lib, db, *scan_flags, *flags)])
            return measured, scan_phases(db, process_cpu(srv.pid) - cpu)

        for r in range(repeat):
            served.append(one(tmp / f"served{r}.sqlite3", "--server", srv.address))
            hashed.append(one(tmp / f"hash-b{r}.sqlite3", "--no-similar"))
    return served, hashed


def overlap_table(
    served: list[tuple[Measured, Phases]], hashed: list[tuple[Measured, Phases]], pin: bool = False
) -> list[str]:
    """The overlap target (`--server` >= 0.9 of the hash-only rate) read two ways: the whole command, and
    the hashing phase alone, where hashing and embedding overlap. The grouping after it is shown, not
    hidden: with embeddings it can do more work (the similar tier) than without."""

    def med(xs: list[float]) -> float:
        return statistics.median(xs)

    def line(name: str, runs_: list[tuple[Measured, Phases]]) -> str:
        wall = med([m.seconds for m, _ in runs_])
        phase = med([p.hashing for _, p in runs_])
        cpu = med([p.hashing_cpu for _, p in runs_])
        group = med([p.grouping for _, p in runs_])
        each = ", ".join(f"{m.seconds:.2f}/{p.hashing:.2f}/{p.grouping:.2f}" for m, p in runs_)
        kinds = runs_[-1][1].groups
        found = ", ".join(f"{v} {k}" for k, v in kinds.items() if v)
        return f"| {name} | {wall:.2f} | {phase:.2f} | {cpu:.2f} | {group:.2f} | {found} | {each} |"

    command = med([m.seconds for m, _ in hashed]) / med([m.seconds for m, _ in served])
    phase = med([p.hashing for _, p in hashed]) / med([p.hashing for _, p in served])
    cpu = med([p.hashing_cpu for _, p in hashed]) / med([p.hashing_cpu for _, p in served])
    return [
        f"`--server` against hash-only, {len(served)} interleaved pairs of runs (load average {load_line()} "
        + (
            "after them; the server on core 1, each scan on core 0 with one hashing worker). "
            if pin
            else "after them; the server and the scans share the cores). "
        )
        + "The hashing phase runs from opening the embedder (the server's streams) through hashing to "
        "the last embedding answered (the scan's `hash_seconds`); its CPU is the scan's (all threads), its hashing "
        "workers' and the server's over the run; grouping is `load_groups` (tiers, verification, keepers; "
        "`group_seconds`); the command adds start-up, walk and the report.",
        "",
        "| scan | command s (median) | hashing phase s | phase CPU s (scan + server) | grouping s | groups "
        "| runs (command/phase/grouping s) |",
        "|---|---|---|---|---|---|---|",
        line("`--server`, tiny model", served),
        line("`--no-similar`", hashed),
        "",
        f"`--server` vs hash-only: **{phase:.2f}** of the hash-only rate in the hashing phase, {command:.2f} for "
        f"the whole command (target 0.9); the phase's CPU per file is {1 / cpu:.2f}x the hash-only one's.",
    ]


def scale_section(sizes: list[int], tmp: Path) -> str:
    rows = []
    for n in sizes:
        lib = tmp / f"scale{n}"
        log.info("building %d small photos", n)
        files = build_library(lib, n)
        # At INFO: the verifier's count of pictures decoded is in its log.
        first = run_measured(scan_cmd(lib, tmp / f"scale{n}.sqlite3", log_level="INFO"), {"HF_HUB_OFFLINE": "1"})
        with sqlite3.connect(tmp / f"scale{n}.sqlite3") as con:  # what the first scan verified
            verified = con.execute("SELECT count(*) FROM verdicts").fetchone()[0]
            pictures = con.execute(
                "SELECT count(*) FROM (SELECT replace(a, 'strict:', '') FROM verdicts UNION SELECT b FROM verdicts)"
            ).fetchone()[0]
        decoded = re.search(r"verification: .* (\d+) pictures decoded", first.stderr)
        again = run_measured(scan_cmd(lib, tmp / f"scale{n}.sqlite3"), {"HF_HUB_OFFLINE": "1"})
        rows.append(
            f"| {files:,} | {first.seconds:.1f} | {1e3 * first.seconds / files:.2f} | {verified:,} | {pictures:,} | "
            f"{int(decoded.group(1)) if decoded else float('nan'):,} | "
            f"{first.peak_tree_mb:,.0f} | {again.seconds:.1f} | {1e3 * again.seconds / files:.3f} | "
            f"{again.peak_tree_mb:,.0f} |"
        )
        shutil.rmtree(lib)
    return "\n".join(
        [
            "## Scan at scale (`benchmarks/bench_library.py --scale`)",
            "",
            f"{machine_line(('Pillow', 'simplejpeg', 'ImageHash'))}. Libraries of generated 320 px class photos "
            "(as above), default flags, offline; first scan on a fresh index, then an unchanged rescan. "
            "Peak RSS sums the scan and its hashing workers; pairs verified are the verdicts the first scan "
            "stored (loose candidates and strict checks), pictures in them the distinct files those pairs hold, "
            "and pictures decoded what the scan's verifier decoded for them (its log): verification costs one "
            "decode a candidate picture and one descriptor match a pair.",
            "",
            "| files | first scan s | ms/file | pairs verified | pictures in them | pictures decoded | peak RSS MB "
            "| rescan s | rescan ms/file | rescan peak RSS MB |",
            "|---|---|---|---|---|---|---|---|---|---|",
            *rows,
        ]
    )


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=10000, help="Generated originals (copies come on top).")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--scale", default="", help="Comma-separated library sizes for the scale table.")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--core", action="store_true", help="Only the first scan, czkawka and rescans (its own section).")
    ap.add_argument("--library", type=Path, help="With --core: scan this library (built by an earlier run).")
    ap.add_argument(
        "--overlap", action="store_true", help="Only the --server vs hash-only pairs of runs (printed, not written)."
    )
    ap.add_argument(
        "--pin",
        action="store_true",
        help="With --overlap: the server on core 1, the scans on core 0 with one hashing worker (needs taskset).",
    )
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.overlap:
            lib = args.library or Path(tmp) / "library"
            if args.library is None:
                build_library(lib, args.files)
            tiny = ["--model", "photodedup-tiny", "--weights", "random", "--cache-dir", str(Path(tmp) / "cache")]
            served, hashed = overlap_runs(lib, Path(tmp), tiny, max(3, args.repeat), args.pin)
            print("\n".join(overlap_table(served, hashed, args.pin)))
        elif args.core:
            lib = args.library or Path(tmp) / "library"
            if args.library is None:
                build_library(lib, args.files)
            text = core_section(lib, args.files, args.repeat, Path(tmp))
            print(text)
            if not args.no_write:
                write_section("bench_library_core", text)
        elif args.files > 0:
            text = library_section(args.files, args.repeat, Path(tmp))
            print(text)
            if not args.no_write:
                write_section("bench_library", text)
        if args.scale:
            text = scale_section([int(s) for s in args.scale.split(",")], Path(tmp))
            print(text)
            if not args.no_write:
                write_section("bench_scale", text)


if __name__ == "__main__":
    main()
