"""The review app at scale, and the size of the static HTML report.

1. An index with --groups exact pairs (2 x groups files, random perceptual hashes so the near tier's
   search runs too) is opened as `photodedup review` opens it (grouping once), then a real uvicorn server
   on 127.0.0.1:0 is asked over HTTP for the first list page (cold, then the median of --repeat warm
   requests), the last page, the list sorted by reclaimable bytes, a folder filter and a group page.
2. A --report-files-file library of small real JPEGs (names as long as a camera library's) is grouped and
   written as `--format html -o report.html`: page bytes and the thumbnail folder beside it.

Usage: bench_review.py [--groups 10000] [--repeat 20] [--report-files 9700] [--no-write]
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import random
import secrets
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from record import machine_line, write_section  # noqa: E402

log = logging.getLogger(__name__)


def synthetic_index(db: Path, groups: int) -> None:
    from photodedup.client.hashing import HashResult, to_signed64
    from photodedup.client.index import Index

    rng = random.Random(7)
    results = []
    for i in range(groups):
        dh, ph = to_signed64(rng.getrandbits(64)), to_signed64(rng.getrandbits(64))
        for side in ("2019/holiday", "backup/phone"):
            results.append(
                HashResult(
                    f"/photos/{side}/IMG_{i:06d}.jpg",
                    2_000_000 + i,
                    1,
                    md5=f"{i:032x}",
                    dhash=dh,
                    phash=ph,
                    width=4000,
                    height=3000,
                    format="JPEG",
                )
            )
    with Index(db) as index:
        scan = index.start_scan(["/photos"], None, {"reference": []})
        index.put_hashes(results, scan)
        index.finish_scan(scan)


def serve(app: object) -> tuple[object, int]:
    import uvicorn

    from photodedup.client.review.command import bind

    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))  # type: ignore[arg-type]
    threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True).start()
    while not server.started:
        time.sleep(0.01)
    return server, sock.getsockname()[1]


def bench_app(groups: int, repeat: int) -> tuple[dict[str, float], float]:
    import httpx

    from photodedup.client.review.app import create_app
    from photodedup.client.review.command import open_review
    from photodedup.client.review.security import Secrets

    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "index.sqlite3"
        synthetic_index(db, groups)
        start = time.perf_counter()
        state, thumbs = open_review(str(db))
        startup = time.perf_counter() - start
        assert len(state) == groups, len(state)
        token = secrets.token_urlsafe(16)
        server, port = serve(create_app(state, thumbs, Secrets(token, "c", 0), ["127.0.0.1"]))
        times: dict[str, float] = {}
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            client.get(f"/?token={token}")  # sets the cookie
            key = state.listing()[0].key
            urls = {
                "first page (cold)": "/",
                "first page": "/",
                "last page": f"/?page={groups // 50}",
                "sorted by reclaimable bytes": "/?sort=bytes",
                "folder filter": "/?folder=holiday",
                "group page": f"/group/{key}",
            }
            for name, url in urls.items():
                runs = []
                for _ in range(1 if "cold" in name else repeat):
                    t = time.perf_counter()
                    r = client.get(url)
                    runs.append(time.perf_counter() - t)
                    assert r.status_code == 200, (url, r.status_code)
                times[name] = statistics.median(runs)
        server.should_exit = True  # type: ignore[attr-defined]
    return times, startup


def bench_report(files: int) -> dict[str, float]:
    from PIL import Image
    from rich.console import Console

    from photodedup.client.grouping import FileRecord, GroupingConfig, find_groups
    from photodedup.client.report import build_stats, render

    rng = random.Random(3)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "Pictures"
        records = []
        distinct = files * 45 // 100  # about 2.2 files per group, as in a real library's duplicates
        for i in range(files):
            k = i % distinct
            path = (
                root
                / f"{2010 + k % 12}"
                / f"{2010 + k % 12}-{1 + k % 12:02d}-{1 + k % 28:02d} Family trip {k % 50}"
                / (f"IMG_{k:05d}.jpg" if i < distinct else f"IMG_{k:05d} (copy {i // distinct}).jpg")
            )
            path.parent.mkdir(parents=True, exist_ok=True)
            if i < distinct:
                Image.new("RGB", (96, 72), (rng.randrange(256), rng.randrange(256), rng.randrange(256))).save(
                    path, quality=80
                )
            else:
                os.link(root / path.parent.relative_to(root) / f"IMG_{k:05d}.jpg", path)
            data = path.read_bytes()
            records.append(
                FileRecord(
                    str(path), len(data), 96, 72, hashlib.md5(data).hexdigest(), None, None, None, None, 0.0, "JPEG"
                )
            )
        groups = find_groups(records, GroupingConfig())
        out = Path(tmp) / "report.html"
        start = time.perf_counter()
        render(groups, build_stats(groups, {}), "html", out, Console(file=open(os.devnull, "w")))
        seconds = time.perf_counter() - start
        folder = out.with_name("report_files")
        thumbs = list(folder.iterdir())
        return {
            "files": files,
            "groups": len(groups),
            "page_bytes": out.stat().st_size,
            "thumbs": len(thumbs),
            "thumb_bytes": sum(p.stat().st_size for p in thumbs),
            "seconds": seconds,
        }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--groups", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--report-files", type=int, default=9_700)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    times, startup = bench_app(args.groups, args.repeat)
    report = bench_report(args.report_files)
    rows = "\n".join(f"| {name} | {ms * 1000:.0f} |" for name, ms in times.items())
    md = f"""## Review app with {args.groups:,} groups; static HTML report size (`benchmarks/bench_review.py`)

{machine_line(["starlette", "uvicorn", "jinja2"])}. An index of {args.groups:,} exact pairs
({2 * args.groups:,} files, random perceptual hashes so the near search runs) opened as `photodedup review`
opens it; requests over HTTP to a real uvicorn server on loopback; warm figures are the median of
{args.repeat} requests (the machine was shared with other work: load average {os.getloadavg()[0]:.0f}
during the run). Start-up (read the index and group, once per run): {startup:.2f} s.

| request | ms |
|---|---|
{rows}

Static report (`--format html -o report.html`) of {report["files"]:,} files in {report["groups"]:,} groups
(small real JPEGs under camera-library-length paths): the page is {report["page_bytes"] / 1e6:.1f} MB and links
{report["thumbs"]:,} thumbnails ({report["thumb_bytes"] / 1e6:.1f} MB, one per distinct content) in
`report_files/` beside it instead of inlining them; written in {report["seconds"]:.1f} s.
"""
    print(md)
    if not args.no_write:
        write_section("bench_review", md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
