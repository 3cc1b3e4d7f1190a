"""The review app over HTTP (Starlette's test client): token, CSRF, only indexed files, escaping,
decisions persisted in the index, apply and undo through the apply engine, and 10k-group pagination."""

from __future__ import annotations

import html
import re
import sqlite3
from pathlib import Path

import pytest
from review_library import index_files, make_library, synthetic_index
from starlette.testclient import TestClient

from photodedup.client.index import Index
from photodedup.client.review.app import create_app
from photodedup.client.review.command import bind, open_review
from photodedup.client.review.security import Secrets
from photodedup.client.verify import VERIFIER_VERSION
from photodedup.errors import PhotodedupError

from scenes import crop, letterbox, scene

TOKEN, CSRF = "t0ken-for-tests", "csrf-for-tests"


def _client(db: Path) -> TestClient:
    state, thumbs = open_review(str(db))
    app = create_app(state, thumbs, Secrets(TOKEN, CSRF, 1), ["testserver"])
    return TestClient(app, follow_redirects=False)


def _login(client: TestClient) -> TestClient:
    r = client.get(f"/?token={TOKEN}")
    assert r.status_code == 303 and r.headers["location"] == "/"
    return client


@pytest.fixture
def lib(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, dict[str, list[Path]]]:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    db = tmp_path / "state" / "index.sqlite3"
    return db, make_library(tmp_path / "photos", db, names=("a", "<script>", "c"))


def _group_keys(html: str) -> list[str]:
    return list(dict.fromkeys(re.findall(r'href="/group/([0-9a-f]{40})', html)))


def test_every_request_needs_the_token(lib: tuple[Path, dict]) -> None:
    db, files = lib
    client = _client(db)
    assert client.get("/").status_code == 403
    assert client.get("/?token=wrong").status_code == 403
    assert client.get("/static/review.js").status_code == 403
    r = client.get(f"/?token={TOKEN}")
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    page = client.get("/")
    assert page.status_code == 200 and "3 groups" in page.text
    assert page.headers["Content-Security-Policy"].startswith("default-src 'none'")
    assert page.headers["Referrer-Policy"] == "no-referrer"


def test_a_foreign_host_header_is_refused(lib: tuple[Path, dict]) -> None:
    db, _ = lib
    client = _login(_client(db))
    assert client.get("/", headers={"host": "attacker.example"}).status_code == 400


def test_posts_without_csrf_or_from_another_origin_are_refused(lib: tuple[Path, dict]) -> None:
    db, _ = lib
    client = _login(_client(db))
    key = _group_keys(client.get("/").text)[0]
    for url, data in (
        (f"/group/{key}/keep", {"number": "2"}),
        (f"/group/{key}/not-duplicates", {}),
        (f"/group/{key}/done", {"done": "1"}),
        ("/apply/preview", {"mode": "trash", "scope": "all"}),
        ("/apply/confirm", {"plan": "x"}),
        ("/journals/undo", {"journal": "x"}),
    ):
        assert client.post(url, data=data).status_code == 403, url
        assert client.post(url, data={**data, "csrf": "wrong"}).status_code == 403, url
        assert (
            client.post(url, data={**data, "csrf": CSRF}, headers={"origin": "http://evil.example"}).status_code == 403
        )
    with Index(db) as index:
        assert index.keeper_choices() == {} and index.ignored() == [] and index.done_groups() == set()
    assert client.get(f"/group/{key}/keep").status_code == 405  # state changes only by POST


def test_only_indexed_files_are_served(lib: tuple[Path, dict], tmp_path: Path) -> None:
    db, files = lib
    client = _login(_client(db))
    secret = tmp_path / "secret.jpg"
    secret.write_bytes(files["keep"][0].read_bytes())
    for url in (
        "/image/../../etc/passwd/thumb",
        f"/image/{'0' * 32}/thumb",
        "/view/..%2F..%2Fetc%2Fpasswd",
        f"/image/{secret}/thumb",
        "/static/../state.py",
        "/image/%2Fetc%2Fpasswd/full",
    ):
        r = client.get(url)
        assert r.status_code == 404, url
        assert b"root:" not in r.content
    import hashlib

    md5 = hashlib.md5(files["keep"][0].read_bytes()).hexdigest()
    r = client.get(f"/image/{md5}/thumb")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg" and r.content[:2] == b"\xff\xd8"
    assert "immutable" in r.headers["cache-control"] and r.headers["etag"]
    assert client.get(f"/image/{md5}/thumb", headers={"if-none-match": r.headers["etag"]}).status_code == 304
    assert list((db.parent / "thumbs").rglob("*.jpg"))  # cached on disk


def test_file_names_are_escaped(lib: tuple[Path, dict]) -> None:
    db, _ = lib
    client = _login(_client(db))
    listing = client.get("/").text
    assert "<script>.jpg" not in listing and "&lt;script&gt;.jpg" in listing
    for key in _group_keys(listing):
        page = client.get(f"/group/{key}").text
        assert "<script>.jpg" not in page
        assert re.findall(r"<script[^>]*>", page) == [
            '<script src="/static/htmx.min.js" defer>',
            '<script src="/static/review.js" defer>',
        ]


def test_decisions_are_stored_and_survive_a_restart(lib: tuple[Path, dict]) -> None:
    db, files = lib
    client = _login(_client(db))
    keys = _group_keys(client.get("/").text)
    page = client.get(f"/group/{keys[0]}").text
    paths = re.findall(r'<div class="path">([^<]+)</div>', page)
    r = client.post(f"/group/{keys[0]}/keep", data={"number": "3", "csrf": CSRF})
    assert r.status_code == 303
    chosen_page = client.get(r.headers["location"]).text
    assert 'class="keep"' in chosen_page
    with Index(db) as index:
        (chosen,) = index.keeper_choices()
    assert html.escape(chosen, quote=False).endswith(paths[2])
    client.post(f"/group/{keys[1]}/not-duplicates", data={"csrf": CSRF})
    r = client.post(f"/group/{keys[2]}/done", data={"done": "1", "csrf": CSRF})
    assert r.status_code == 303
    client = _login(_client(db))  # a new run reads the same decisions
    listing = client.get("/").text
    assert "2 groups" in listing and "1 done" in listing
    later = client.get(f"/group/{_group_keys(listing)[0]}").text
    assert re.search(r'<figure class="keep"[^>]*>\s*<a href="/view/[0-9a-f]+"><img[^>]*alt="([^"]+)"', later)
    with Index(db) as index:
        assert len(index.ignored()) == 3  # every pair of the 3-file group


def test_apply_previews_then_moves_and_undo_puts_back(lib: tuple[Path, dict], tmp_path: Path) -> None:
    db, files = lib
    client = _login(_client(db))
    preview = client.post(
        "/apply/preview",
        data={"csrf": CSRF, "scope": "all", "mode": "move", "dest": str(tmp_path / "moved"), "kinds": ["exact"]},
    )
    assert preview.status_code == 200 and "Preview: 3 files" in preview.text
    for copy in files["copies"]:
        assert html.escape(str(copy), quote=False) in preview.text and copy.exists()  # listed, not yet touched
    plan = re.search(r'name="plan" value="([^"]+)"', preview.text).group(1)
    done = client.post("/apply/confirm", data={"csrf": CSRF, "plan": plan})
    assert "Done: 3 files, 0 skipped, 0 failed" in done.text
    assert not any(c.exists() for c in files["copies"]) and len(list((tmp_path / "moved").rglob("*.jpg"))) == 3
    assert client.post("/apply/confirm", data={"csrf": CSRF, "plan": plan}).status_code == 404  # once only
    assert client.post("/apply/preview", data={"csrf": CSRF, "scope": "all", "mode": "delete"}).status_code == 404
    journals = client.get("/journals").text
    (name,) = re.findall(r'name="journal" value="([^"]+)"', journals)
    undone = client.post("/journals/undo", data={"csrf": CSRF, "journal": name})
    assert "Restored 3 files" in undone.text
    assert all(c.exists() for c in files["copies"])
    with Index(db) as index:
        assert all(index.file_md5(str(c)) for c in files["copies"])  # back in the index
    assert client.post("/journals/undo", data={"csrf": CSRF, "journal": "../index.sqlite3"}).status_code == 404


def test_ten_thousand_groups_paginate(tmp_path: Path) -> None:
    db = tmp_path / "index.sqlite3"
    synthetic_index(db, 10_000)
    client = _login(_client(db))
    first = client.get("/")
    assert "10000 groups" in first.text and "page 1 of 200" in first.text
    assert len(_group_keys(first.text)) == 50
    last = client.get("/?page=200")
    assert "page 200 of 200" in last.text and len(_group_keys(last.text)) == 50
    assert set(_group_keys(last.text)).isdisjoint(_group_keys(first.text))
    assert "page 200 of 200" in client.get("/?page=999999").text and client.get("/?page=x").status_code == 200
    biggest = client.get("/?sort=bytes").text
    assert "/lib/a/009999.jpg" in biggest.split("</tr>")[1]
    filtered = client.get("/?folder=lib/b&kind=near").text
    assert "0 groups" in filtered


def test_a_port_in_use_is_one_clear_error() -> None:
    sock = bind("127.0.0.1", 0)
    try:
        with pytest.raises(PhotodedupError, match="already in use"):
            bind("127.0.0.1", sock.getsockname()[1])
    finally:
        sock.close()


def test_the_index_gets_the_review_tables_by_migration(lib: tuple[Path, dict]) -> None:
    db, _ = lib
    tables = {r[0] for r in sqlite3.connect(db).execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"keeper_choices", "done_groups"} <= tables


def test_a_cropped_copy_shows_where_it_lies_in_its_original(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The group page says what verification found (the crop box) and what hashing trimmed (borders);
    the finding is stored, so a restart and a regroup after a decision show it without verifying again."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    root, db = tmp_path / "photos", tmp_path / "state" / "index.sqlite3"
    root.mkdir()
    img = scene(40, (720, 540))
    img.save(root / "original.jpg", quality=92)
    crop(img, (0.12, 0.08, 0.9, 0.86)).save(root / "crop.jpg", quality=88)
    letterbox(img, 0.12, (255, 255, 255)).save(root / "boxed.jpg", quality=88)
    index_files(db, [root], [root / "original.jpg", root / "crop.jpg", root / "boxed.jpg"])

    def group_page(client: TestClient) -> tuple[str, str]:
        (key,) = _group_keys(client.get("/").text)
        return key, html.unescape(client.get(f"/group/{key}").text)

    client = _login(_client(db))
    key, page = group_page(client)
    assert "crop.jpg" in page and "crop of the keeper: x 12–90 %, y 8–86 %" in page and "inliers" in page
    assert re.search(r"borders trimmed: 7\d\d×5\d\d inside \d+×\d+", page), page
    with Index(db) as index:
        assert index.verdict_details(VERIFIER_VERSION)  # stored beside the verdicts

    again = _login(_client(db))  # a restart reads the stored finding
    _, page = group_page(again)
    assert "crop of the keeper: x 12–90 %, y 8–86 %" in page
    # Dropping the letterboxed copy regroups the rest, with the crop still verified and described.
    boxed = next(n for n in re.findall(r'data-number="(\d+)"', page) if _member_name(page, n) == "boxed.jpg")
    r = again.post(f"/group/{key}/not-duplicates", data={"number": boxed, "csrf": CSRF})
    assert r.status_code == 303
    _, page = group_page(again)
    assert "boxed.jpg" not in page and "crop of the keeper: x 12–90 %, y 8–86 %" in page


def _member_name(page: str, number: str) -> str:
    """The file name shown in the group page's figure `number`."""
    figure = page.split(f'data-number="{number}"', 1)[1].split("</figure>", 1)[0]
    return re.search(r'<div class="path">([^<]*)</div>', figure).group(1)  # type: ignore[union-attr]
