"""Reports: the JSON schema of the issue, CSV rows, a self-contained HTML page, bytes freeable."""

from __future__ import annotations

import io
import json
from pathlib import Path

from fakes import record
from rich.console import Console

from photodedup.client.grouping import FileRecord, Group, Member, Tier
from photodedup.client.report import build_stats, freeable, render, to_dict

from helpers import photo


def _rec(path: Path, size: int, w: int = 40, h: int = 30) -> FileRecord:
    return record(path, size=size, width=w, height=h, md5="0" * 32, dhash=1, phash=2)


def _groups(tmp_path: Path) -> list[Group]:
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        photo(1, (80, 60)).save(tmp_path / name)
    a, b, c = (_rec(tmp_path / n, s) for n, s in (("a.jpg", 300), ("b.jpg", 200), ("c.jpg", 100)))
    return [
        Group(Tier.NEAR, a, [Member(b, 3.0, Tier.NEAR), Member(a, 0.0, Tier.EXACT), Member(c, 0.0, Tier.EXACT)]),
        Group(
            Tier.EXACT, b, [Member(b, 0.0, Tier.EXACT), Member(c, 0.0, Tier.EXACT)], protected=frozenset({str(c.path)})
        ),
    ]


def test_json_schema(tmp_path: Path) -> None:
    groups = _groups(tmp_path)
    doc = to_dict(groups, build_stats(groups, {"files": 3}))
    assert set(doc) == {"groups", "stats"}
    first = doc["groups"][0]
    assert set(first) == {"kind", "keep", "files"} and first["kind"] == "near"
    assert first["keep"] == str(tmp_path / "a.jpg")
    assert [f["path"] for f in first["files"]] == [str(tmp_path / n) for n in ("a.jpg", "c.jpg", "b.jpg")]
    assert first["files"][2] == {
        "path": str(tmp_path / "b.jpg"),
        "bytes": 200,
        "width": 40,
        "height": 30,
        "distance": 3.0,
        "match": "near",
    }
    assert [f["match"] for f in first["files"]] == ["keep", "exact", "near"]
    assert doc["stats"]["groups"] == {"exact": 1, "near": 1, "similar": 0, "series": 0}
    assert doc["stats"]["files"] == 3


def test_freeable_counts_each_file_once_and_skips_protected(tmp_path: Path) -> None:
    # b and c are extra copies in the first group; c is protected in the second and b keeps there.
    assert freeable(_groups(tmp_path)) == (2, 300)


def test_render_csv_json_html(tmp_path: Path) -> None:
    groups = _groups(tmp_path)
    stats = build_stats(groups, {})
    buf = io.StringIO()
    render(groups, stats, "json", None, Console(file=buf))
    assert json.loads(buf.getvalue())["stats"]["bytes_freeable"] == 300
    render(groups, stats, "csv", tmp_path / "r.csv", Console(file=io.StringIO()))
    lines = (tmp_path / "r.csv").read_text().splitlines()
    assert lines[1].startswith("1,near,1,") and len(lines) == 6
    render(groups, stats, "html", tmp_path / "r.html", Console(file=io.StringIO()))
    page = (tmp_path / "r.html").read_text()
    # thumbnails are files beside the page, one per distinct content, linked and never inlined
    assert page.count("<img src='r_files/" + "0" * 32 + ".jpg'") == 5 and "base64" not in page
    assert (tmp_path / "r_files" / ("0" * 32 + ".jpg")).read_bytes()[:2] == b"\xff\xd8"
    (tmp_path / "b.jpg").unlink()  # a file gone since the scan still gets a placeholder, not a crash
    for p in (tmp_path / "r_files").iterdir():
        p.unlink()
    groups[0].members[0].record.md5 = groups[1].keep.md5 = "1" * 32
    render(groups, stats, "html", tmp_path / "r2.html", Console(file=io.StringIO()))
    assert "no preview" in (tmp_path / "r2.html").read_text()
    buf = io.StringIO()
    render(groups, stats, "html", None, Console(file=buf))
    assert "<img" not in buf.getvalue() and "no thumbnails" in buf.getvalue()
    render(groups, stats, "table", tmp_path / "r.txt", Console(file=io.StringIO()))
    assert "keep" in (tmp_path / "r.txt").read_text()


def test_the_table_is_aligned_columns_with_the_path_last(tmp_path: Path) -> None:
    groups = _groups(tmp_path)
    buf = io.StringIO()
    render(groups, build_stats(groups, {}), "table", None, Console(file=buf, width=40))
    lines = buf.getvalue().splitlines()
    assert lines[0].split() == ["#", "kind", "size", "pixels", "distance", "path"]
    body = [line for line in lines[1:] if line]
    assert len(body) == 5 and lines.count("") == 1  # five files, a blank line between the two groups
    assert all(line.endswith(".jpg") for line in body)  # never folded, whatever the console's width
    starts = {line.index(str(tmp_path)) for line in body}
    assert len(starts) == 1  # the paths start in one column
    assert body[0].split()[:3] == ["1", "near", "keep"] and body[3].split()[:3] == ["2", "exact", "keep"]
    empty = io.StringIO()
    render([], build_stats([], {}), "table", None, Console(file=empty))
    assert empty.getvalue().strip() == "No duplicate groups."


def test_the_json_report_is_one_group_per_line(tmp_path: Path) -> None:
    groups = _groups(tmp_path)
    buf = io.StringIO()
    render(groups, build_stats(groups, {}), "json", None, Console(file=buf))
    text = buf.getvalue()
    assert json.loads(text) == json.loads(json.dumps(to_dict(groups, build_stats(groups, {}))))
    assert sum(line.lstrip().startswith('{"kind"') for line in text.splitlines()) == 2
    buf = io.StringIO()
    render([], build_stats([], {}), "json", None, Console(file=buf))
    assert json.loads(buf.getvalue())["groups"] == []
