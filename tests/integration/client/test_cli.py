"""The client CLI run as a subprocess, the way a user runs it: local mode, against a real server, with
no model at all, reports, ignore decisions, and a scan killed mid-way that the next run resumes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from client_files import BROKEN, save_broken, save_exif_rotated, save_formats
from PIL import Image, ImageEnhance

from helpers import ServerThread, encode, photo

TINY = ["--model", "photodedup-tiny", "--weights", "random"]


def _env(tmp_path: Path, model_cache: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        HOME=str(tmp_path / "home"),
        XDG_DATA_HOME=str(tmp_path / "data"),
        PHOTODEDUP_CACHE_DIR=str(model_cache),
        PHOTODEDUP_LOG_LEVEL="WARNING",
        HF_HUB_OFFLINE="1",
    )
    env.pop("PHOTODEDUP_SERVERS", None)
    return env


def _cli(env: dict[str, str], *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "photodedup", *args], env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture
def lib(tmp_path: Path) -> dict[str, object]:
    root = tmp_path / "photos"
    img = photo(21, (400, 300))
    copies = [str(p) for p in save_formats(root / "formats", img).values()]
    (root / "dup").mkdir()
    copies.append(shutil.copy(copies[0], root / "dup" / "same.jpg"))
    copies.append(str(save_exif_rotated(root / "rotated.jpg", img)))
    photo(22, (400, 300)).save(root / "unrelated.jpg")
    save_broken(root / "broken", encode(img, "JPEG"))
    return {"root": root, "copies": sorted(str(c) for c in copies)}


def _grouped(report: dict) -> list[list[str]]:
    return sorted(sorted(f["path"] for f in g["files"]) for g in report["groups"])


def test_scan_local_mode_json(lib: dict, tmp_path: Path, model_cache: Path) -> None:
    env = _env(tmp_path, model_cache)
    db = tmp_path / "index.sqlite3"
    run = _cli(env, "scan", str(lib["root"]), "--local", *TINY, "--db", str(db), "--format", "json")
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert _grouped(report) == [lib["copies"]]
    group = report["groups"][0]
    assert group["keep"] in group["files"][0]["path"] and os.path.isabs(group["keep"])
    assert set(group["files"][0]) == {"path", "bytes", "width", "height", "distance", "match"}
    stats = report["stats"]
    assert stats["embedded"] == len(lib["copies"]) + 1
    assert sorted(Path(e["path"]).name for e in stats["errors"]) == sorted(BROKEN)
    assert stats["bytes_freeable"] == sum(f["bytes"] for f in group["files"][1:])
    # The model loaded and embedded every good file; random weights have no calibrated similar threshold, so
    # the similar tier is skipped for that reason, said in one line.
    skipped = [line for line in run.stderr.splitlines() if "similar tier skipped" in line]
    assert len(skipped) == 1 and "has no calibrated similar threshold (random weights)" in skipped[0], run.stderr
    assert stats["similar_skipped"] == skipped[0] and "Traceback" not in run.stderr


def test_scan_against_a_real_server(lib: dict, tmp_path: Path, model_cache: Path) -> None:
    from helpers import tiny_settings

    server = ServerThread(tiny_settings(model_cache)).start()
    try:
        env = _env(tmp_path, model_cache)
        db = tmp_path / "index.sqlite3"
        run = _cli(env, "scan", str(lib["root"]), "--server", server.address, "--db", str(db), "--format", "json")
    finally:
        server.stop()
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert f"via server {server.address}" in run.stderr
    assert report["stats"]["embedded"] == len(lib["copies"]) + 1
    assert report["stats"]["model_id"].startswith("photodedup-tiny@")
    assert _grouped(report) == [lib["copies"]]


def test_default_model_unavailable_finishes_with_one_line(lib: dict, tmp_path: Path, model_cache: Path) -> None:
    env = _env(tmp_path, model_cache)
    env["PHOTODEDUP_LOG_LEVEL"] = "INFO"
    run = _cli(env, "scan", str(lib["root"]))  # the default ViT-B-32 weights cannot be had offline
    assert run.returncode == 0, run.stderr
    lines = run.stderr.splitlines()
    skipped = [line for line in lines if "similar tier skipped" in line]
    assert len(skipped) == 1 and skipped[0].startswith("similar tier skipped: ")
    assert not [line for line in lines if " ERROR " in line or "Traceback" in line]
    assert (tmp_path / "data" / "photodedup" / "index.sqlite3").exists()
    assert "Groups: 1 exact, 0 near" in run.stderr or "Groups: 0 exact, 1 near" in run.stderr


def test_report_formats_and_ignore(lib: dict, tmp_path: Path, model_cache: Path) -> None:
    env = _env(tmp_path, model_cache)
    db = ["--db", str(tmp_path / "index.sqlite3")]
    assert _cli(env, "scan", str(lib["root"]), "--no-similar", *db, "--format", "csv").returncode == 0
    html_file = tmp_path / "report.html"
    run = _cli(env, "report", *db, "--format", "html", "--output", str(html_file))
    assert run.returncode == 0, run.stderr
    page = html_file.read_text()
    # thumbnails are files beside the page, linked, never inlined
    assert page.count("<img src='report_files/") == len(lib["copies"]) and "base64," not in page
    assert len(list((tmp_path / "report_files").glob("*.jpg"))) == len({Path(c).read_bytes() for c in lib["copies"]})
    assert "<script" not in page and "http://" not in page and "https://" not in page
    rows = _cli(env, "report", *db, "--format", "csv").stdout.splitlines()
    assert rows[0] == "group,kind,keep,path,bytes,width,height,distance,match" and len(rows) == 1 + len(lib["copies"])

    table = _cli(env, "report", *db).stdout
    assert "keep" in table and Path(lib["copies"][0]).name in table

    keep = json.loads(_cli(env, "report", *db, "--format", "json").stdout)["groups"][0]["keep"]
    others = [c for c in lib["copies"] if c != keep]
    run = _cli(env, "ignore", keep, others[0], *db)
    assert run.returncode == 0 and "1 new pairs" in run.stdout
    assert _cli(env, "ignore", "--list", *db).stdout.strip() == "\t".join(sorted([keep, others[0]]))
    rescan = _cli(env, "scan", str(lib["root"]), "--no-similar", *db, "--format", "json")
    for files in _grouped(json.loads(rescan.stdout)):
        assert not {keep, others[0]} <= set(files)

    first = {f["path"] for f in json.loads(_cli(env, "report", *db, "--format", "json").stdout)["groups"][0]["files"]}
    run = _cli(env, "ignore", "--group", "1", *db)
    assert run.returncode == 0 and "group 1:" in run.stdout, run.stderr
    for files in _grouped(json.loads(_cli(env, "report", *db, "--format", "json").stdout)):
        assert len(first & set(files)) <= 1


def _count(db: Path) -> int:
    try:
        # A short busy timeout: waiting seconds on the scan's own write would let it finish before the kill.
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=0.05) as conn:
            return conn.execute("SELECT COUNT(*) FROM files").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "SIGINT"])
def test_a_killed_scan_resumes(sig: signal.Signals, tmp_path: Path, model_cache: Path) -> None:
    root = tmp_path / "many"
    root.mkdir()
    base = photo(31, (800, 600)).resize((1600, 1200))
    for i in range(240):
        base.save(root / f"{i:04d}.jpg", quality=85, comment=f"{i}".encode())  # distinct bytes, same look
    # Last in walk order, a 24 MP noise PNG that takes a second or more to hash: the first write lands after
    # 200 files (FLUSH_EVERY), so the kill comes while work is left whatever the machine's speed.
    noise = np.random.default_rng(31).integers(0, 256, (4000, 6000, 3), dtype=np.uint8)
    Image.fromarray(noise).save(root / "zzzz-noise.png", compress_level=1)
    n = 241
    env = _env(tmp_path, model_cache)
    db = tmp_path / "index.sqlite3"
    args = [
        sys.executable,
        "-m",
        "photodedup",
        "scan",
        str(root),
        "--no-similar",
        "--workers",
        "1",
        "--db",
        str(db),
        "--format",
        "json",
    ]
    # Ctrl-C's default action in the child, whatever this process inherited (a test runner or an earlier test
    # may ignore SIGINT, and an ignored SIGINT is inherited: the scan would then run to the end).
    proc = subprocess.Popen(
        args,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        while _count(db) == 0 and proc.poll() is None:
            time.sleep(0.02)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    done = _count(db)
    if sig == signal.SIGINT:
        # Ctrl-C keeps finished work, and the hashing worker's running batch finishes first: on a fast
        # machine that can be the rest of the folder, so only the exit and the resume accounting are fixed.
        assert 0 < done <= n
        assert proc.returncode == 130 and "interrupted" in err
    else:
        assert 0 < done < n, "the scan finished before it could be killed; make the folder bigger"
        assert proc.returncode == -signal.SIGKILL
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("SELECT COUNT(*) FROM files WHERE md5 IS NULL AND error IS NULL").fetchone()[0] == 0

    run = _cli(env, "scan", str(root), "--no-similar", "--db", str(db), "--format", "json")
    assert run.returncode == 0, run.stderr
    stats = json.loads(run.stdout)["stats"]
    assert stats["unchanged"] == done and stats["hashed"] == n - done and stats["files"] == n
    assert _count(db) == n


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_apply_move_then_undo_with_a_reference_folder(lib: dict, tmp_path: Path, model_cache: Path) -> None:
    env = _env(tmp_path, model_cache)
    db = ["--db", str(tmp_path / "index.sqlite3")]
    root: Path = lib["root"]
    ref = tmp_path / "archive"
    ref.mkdir()
    shutil.copy(root / "formats" / "img.jpg", ref / "archived.jpg")
    before, ref_before = _tree(root), _tree(ref)
    run = _cli(env, "scan", str(root), "--reference", str(ref), "--no-similar", *db, "--format", "json")
    assert run.returncode == 0, run.stderr
    (group,) = json.loads(run.stdout)["groups"]
    assert group["keep"] == str(ref / "archived.jpg")  # a reference file is always the keeper

    dest = tmp_path / "dupes"
    dry = _cli(env, "apply", "--move-to", str(dest), *db)
    assert dry.returncode == 0 and "Dry run" in dry.stdout
    assert _tree(root) == before and not dest.exists()
    assert "Dry run" in _cli(env, "apply", "--delete", *db).stdout and _tree(root) == before

    journal = tmp_path / "apply.jsonl"
    run = _cli(env, "apply", "--move-to", str(dest), "--yes", "--journal", str(journal), *db)
    assert run.returncode == 0, run.stderr + run.stdout
    moved = len(lib["copies"])  # every copy in the library goes; the archive keeps its one
    assert f"Done: {moved} files" in run.stdout
    assert len(_tree(dest)) == moved and "formats/img.png" in _tree(dest)  # paths relative to the scanned root
    assert _tree(ref) == ref_before
    assert json.loads(_cli(env, "report", *db, "--format", "json").stdout)["groups"] == []

    run = _cli(env, "undo", str(journal), *db)
    assert run.returncode == 0 and f"Restored {moved} files" in run.stdout, run.stderr
    assert _tree(root) == before and _tree(ref) == ref_before
    # The index knows the files are back: the report shows the group again without a rescan.
    assert _grouped(json.loads(_cli(env, "report", *db, "--format", "json").stdout)) == _grouped({"groups": [group]})


def test_apply_acts_on_the_groups_the_scan_showed(tmp_path: Path, model_cache: Path) -> None:
    """apply regroups with the scan's thresholds and keeps its reference folders even when given others;
    --kinds picks files by how they match their keeper; hardlinks never point into a reference folder."""
    env = _env(tmp_path, model_cache)
    db = ["--db", str(tmp_path / "idx.sqlite3")]
    lib, ref = tmp_path / "lib", tmp_path / "reference"
    original = ref / "camera-originals" / "2024" / "original-photo.jpg"  # the longer path: kept only as a reference
    img = photo(31, (640, 480))
    original.parent.mkdir(parents=True)
    (lib / "a").mkdir(parents=True)
    img.save(original, quality=92)
    shutil.copy(original, lib / "a" / "copy.jpg")  # exact copy of a reference file
    ImageEnhance.Brightness(img).enhance(1.3).save(lib / "a" / "small.jpg", quality=80)  # near copy (3 bits)
    scan = _cli(
        env, "scan", str(lib), "--reference", str(ref), "--no-similar", "--near-threshold", "0", *db, "--format", "json"
    )
    assert scan.returncode == 0, scan.stderr
    assert all(f["match"] in ("keep", "exact") for g in json.loads(scan.stdout)["groups"] for f in g["files"])
    plan = _cli(env, "apply", "--move-to", str(tmp_path / "out"), "--reference", str(tmp_path / "elsewhere"), *db)
    assert plan.returncode == 0, plan.stderr
    assert f"move {original}" not in plan.stdout and f"(keep {original})" in plan.stdout
    assert "small.jpg" not in plan.stdout  # threshold 0 from the scan: not a near copy
    assert "copy.jpg" in plan.stdout
    exact_only = _cli(env, "apply", "--move-to", str(tmp_path / "out"), "--kinds", "near", *db)
    assert "copy.jpg" not in exact_only.stdout
    link = _cli(env, "apply", "--hardlink", "--yes", *db)
    assert link.returncode == 0, link.stderr
    assert original.stat().st_nlink == 1
