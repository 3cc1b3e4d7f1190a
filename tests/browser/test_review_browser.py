"""End to end in a real browser: headless Debian Chromium driven by Playwright (never a downloaded
browser) against `photodedup review` run as a subprocess, the way a user runs it.

Skips with the reason when Playwright or /usr/bin/chromium is missing (`make test-browser` installs
Chromium and runs this). With PHOTODEDUP_SCREENSHOTS=DIR it saves the list and group views there.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from review_library import make_library

from photodedup.client.index import Index

CHROMIUM = os.environ.get("PHOTODEDUP_CHROMIUM", "/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

sync_api = pytest.importorskip(
    "playwright.sync_api", reason="Playwright for Python is not installed (pip install playwright)"
)
if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
    pytest.skip(
        f"no Chromium at {CHROMIUM}: `apt-get install chromium` (make test-browser does)", allow_module_level=True
    )


@pytest.fixture
def review(tmp_path: Path) -> Iterator[tuple[str, Path, dict[str, list[Path]]]]:
    db = tmp_path / "state" / "index.sqlite3"
    files = make_library(tmp_path / "photos", db)
    env = {
        **os.environ,
        "HOME": str(tmp_path / "home"),
        "XDG_DATA_HOME": str(tmp_path / "data"),
        "PHOTODEDUP_LOG_LEVEL": "WARNING",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "photodedup", "review", "--db", str(db), "--no-browser"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.search(r"(http://127\.0\.0\.1:\d+/\?token=\S+)", line)
        assert match, line + (proc.stderr.read() if proc.poll() is not None else "")  # type: ignore[union-attr]
        yield match.group(1), db, files
    finally:
        proc.terminate()
        proc.wait(30)


def _shot(page: object, name: str) -> None:
    folder = os.environ.get("PHOTODEDUP_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / name), full_page=False)  # type: ignore[attr-defined]


def _images_loaded(page: object, timeout: float = 30.0) -> None:
    """Wait until every image on the page has loaded. Polled from here: `wait_for_function` polls by
    evaluating a string in the page, which the app's Content-Security-Policy (no 'unsafe-eval') refuses
    whenever the images are not ready at the first look (a loaded machine)."""
    import time

    deadline = time.monotonic() + timeout
    check = "Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)"
    while not page.evaluate(check):  # type: ignore[attr-defined]
        assert time.monotonic() < deadline, "images did not load"
        time.sleep(0.05)


def test_walk_decide_apply_and_undo_in_a_browser(
    review: tuple[str, Path, dict[str, list[Path]]], tmp_path: Path
) -> None:
    url, db, files = review
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
            page.on("response", lambda r: errors.append(f"{r.status} {r.url}") if r.status >= 400 else None)
            page.goto(url)
            assert "token" not in page.url  # swapped for a cookie
            page.wait_for_selector("table.groups")
            assert page.locator("table.groups tbody tr").count() == 3
            _images_loaded(page)
            _shot(page, "review-list.png")

            page.locator("table.groups tbody tr").first.locator("a.path").click()
            page.wait_for_selector("figure.keep")
            first = page.url
            page.keyboard.press("j")
            page.wait_for_url(lambda u: u != first)
            second = page.url
            page.keyboard.press("k")
            page.wait_for_url(first)
            _images_loaded(page)
            _shot(page, "review-group.png")

            # keep file 3 of the first group (keyboard "3"); the page shows it as the keeper
            third = Path(
                page.locator("figure[data-number='3'] dd.path").inner_text(),
                page.locator("figure[data-number='3'] div.path").inner_text(),
            )
            assert page.locator("figure.keep dd.path").inner_text() != str(third.parent)
            with page.expect_response(lambda r: r.url.split("?")[0].endswith("/keep")):
                page.keyboard.press("3")
            page.wait_for_selector(f"figure.keep dd.path >> text='{third.parent}'")
            with Index(db) as index:
                assert list(index.keeper_choices()) == [str(third)]

            # the second group is "not duplicates" (keyboard "x"): it leaves the list
            page.goto(second)
            page.wait_for_selector("figure.keep")
            second_paths = sorted(page.locator("figure .path").all_inner_texts())
            with page.expect_response(lambda r: r.url.split("?")[0].endswith("/not-duplicates")):
                page.keyboard.press("x")
            with Index(db) as index:
                assert len(index.ignored()) == 3
            page.goto(url.split("?")[0])
            assert page.locator("table.groups tbody tr").count() == 2

            # preview, then apply a move of every non-kept exact and near file
            page.click("text=Apply")
            page.wait_for_selector("#preview")
            page.check("input[name=scope][value=all]")
            page.fill("#dest", str(tmp_path / "moved"))
            page.click("#preview")
            page.wait_for_selector("#confirm")
            heading = page.locator("h1").inner_text()
            assert heading.startswith("Preview: 4 files")
            assert all(p.exists() for ps in files.values() for p in ps)  # a preview changes nothing
            page.click("#confirm")
            page.wait_for_selector("#applied")
            assert page.locator("#applied").inner_text().startswith("Done: 4 files, 0 skipped, 0 failed")
            moved = sorted(tmp_path.joinpath("moved").rglob("*.jpg"))
            assert len(moved) == 4
            gone = [p for ps in files.values() for p in ps if not p.exists()]
            assert len(gone) == 4 and not any(p.name in second_paths and "keep" in str(p) for p in gone)
            with Index(db) as index:
                assert all(index.file_md5(str(p)) is None for p in gone)

            # undo the apply from the page
            page.click("text=Undo")
            page.wait_for_selector("button.undo")
            page.locator("button.undo").first.click()
            page.wait_for_selector("#undone")
            assert page.locator("#undone").inner_text().startswith("Restored 4 files")
            assert all(p.exists() for ps in files.values() for p in ps)
            assert not list(tmp_path.joinpath("moved").rglob("*.jpg"))
            with Index(db) as index:
                assert all(index.file_md5(str(p)) for p in gone)
            assert errors == []
        finally:
            browser.close()
    shutil.rmtree(tmp_path / "moved", ignore_errors=True)
