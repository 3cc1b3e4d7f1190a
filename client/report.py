"""Write duplicate groups as a table, JSON, CSV or an HTML page.

The HTML page links its thumbnails from a folder beside it (`report.html` -> `report_files/<md5>.jpg`,
one per distinct content) instead of inlining them, so a 10k-photo report stays a few MB and opens
quickly; written to stdout it has no thumbnails.

JSON: {"groups": [{"kind", "keep", "files": [{"path", "bytes", "width", "height", "distance", "match"}]}],
"stats": {...}} with absolute paths; the keeper is listed first in `files`.
"""

from __future__ import annotations

import csv
import html
import io
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from photodedup.client.grouping.records import Tier

if TYPE_CHECKING:
    from rich.console import Console

    from photodedup.client.grouping import Group, Member

log = logging.getLogger(__name__)

TIERS: tuple[str, ...] = tuple(Tier)  # series: same scene, different shot; never acted on
HTML_THUMB = 200


def _members(group: Group) -> list[Any]:
    """Keeper first, then the others by distance, then path: the order every format shows."""
    keep = group.keep.path
    return sorted(group.members, key=lambda m: (m.record.path != keep, m.distance, m.record.path))


def freeable(groups: Sequence[Group]) -> tuple[int, int]:
    """(files, bytes) that removing every non-kept, unprotected copy would free; a file counts once."""
    extra: dict[str, int] = {}
    for g in groups:
        for m in g.targets:
            extra[m.record.path] = m.record.size
    return len(extra), sum(extra.values())


def build_stats(groups: Sequence[Group], base: dict[str, Any]) -> dict[str, Any]:
    files, size = freeable(groups)
    stats = dict(base)
    stats["groups"] = {t: sum(1 for g in groups if g.kind == t) for t in TIERS}
    stats["duplicate_files"] = files
    stats["bytes_freeable"] = size
    return stats


def _match(group: Group, member: Member) -> str:
    """How a file relates to its group's keeper: keep, exact (same bytes), near or similar."""
    return "keep" if member.record.path == group.keep.path else member.tier


def _evidence(member: Member) -> dict[str, Any]:
    assert member.evidence is not None
    return {**member.evidence.as_dict(), "summary": member.evidence.describe()}


def to_dict(groups: Sequence[Group], stats: dict[str, Any]) -> dict[str, Any]:
    return {
        "groups": [
            {
                "kind": g.kind,
                "keep": os.path.abspath(g.keep.path),
                "files": [
                    {
                        "path": os.path.abspath(m.record.path),
                        "bytes": m.record.size,
                        "width": m.record.width,
                        "height": m.record.height,
                        "distance": round(float(m.distance), 6),
                        # how this file matches the keeper: keep, exact (same bytes), near or similar
                        "match": _match(g, m),
                        # what was found against the keeper (hash distance and turn, crop box, tilt, ...)
                        **({"evidence": _evidence(m)} if m.evidence is not None and m.record is not g.keep else {}),
                    }
                    for m in _members(g)
                ],
            }
            for g in groups
        ],
        "stats": stats,
    }


def printable(text: str) -> str:
    """A file name as one line of plain text: control characters (a newline in a name could fake a
    line of a plan) and undecodable bytes are shown as backslash escapes."""
    if text.isprintable():
        return text
    return "".join(
        ch if ch.isprintable() else ch.encode("unicode_escape", "backslashreplace").decode("ascii") for ch in text
    )


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"  # pragma: no cover


def render(groups: Sequence[Group], stats: dict[str, Any], fmt: str, output: Path | None, console: Console) -> None:
    """Write the report to `output`, or to the console (stdout) when None."""
    if fmt == "table":
        if output is None:
            _table(groups, console)
        else:
            from photodedup.client.console import PlainConsole

            with open(output, "w", encoding="utf-8") as fh:
                _table(groups, PlainConsole(fh))
        return
    if fmt == "html":
        text = _html(groups, stats, None if output is None else Path(output))
    else:
        text = {"json": _json, "csv": _csv}[fmt](groups, stats)
    if output is None:
        console.file.write(text)
        console.file.flush()
    else:
        Path(output).write_text(text, encoding="utf-8")


def _json(groups: Sequence[Group], stats: dict[str, Any]) -> str:
    """One group per line: the C encoder writes it (an indented report went through the pure-Python
    encoder, most of an unchanged rescan's time), and a line per group still reads and greps well."""
    report = to_dict(groups, stats)
    body = ",\n".join("    " + json.dumps(g) for g in report["groups"])
    groups_text = f"[\n{body}\n  ]" if body else "[]"
    return f'{{\n  "groups": {groups_text},\n  "stats": {json.dumps(report["stats"])}\n}}\n'


def _csv(groups: Sequence[Group], stats: dict[str, Any]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["group", "kind", "keep", "path", "bytes", "width", "height", "distance", "match"])
    for i, g in enumerate(groups, 1):
        for m in _members(g):
            r = m.record
            writer.writerow(
                [
                    i,
                    g.kind,
                    int(r.path == g.keep.path),
                    os.path.abspath(r.path),
                    r.size,
                    r.width,
                    r.height,
                    round(float(m.distance), 6),
                    _match(g, m),
                ]
            )
    return buf.getvalue()


_TABLE_HEADER = ("#", "kind", "", "size", "pixels", "distance", "path")
_TABLE_RIGHT = (True, False, False, True, True, True, False)


def _table(groups: Sequence[Group], console: Console) -> None:
    """Plain aligned columns, path last (never folded), a blank line between groups. Written directly:
    laying out a rich Table took seconds for a few thousand rows, longer than the rescan it reports."""
    if not groups:
        console.print("No duplicate groups.")
        return
    rows = [_TABLE_HEADER]
    ends = set()
    for i, g in enumerate(groups, 1):
        for j, m in enumerate(_members(g)):
            r = m.record
            keep = r.path == g.keep.path
            rows.append(
                (
                    str(i) if j == 0 else "",
                    str(g.kind) if j == 0 else "",
                    "keep" if keep else str(m.tier),
                    human_bytes(r.size),
                    f"{r.width}x{r.height}",
                    "" if keep else f"{m.distance:.3g}",
                    printable(r.path),
                )
            )
        ends.add(len(rows) - 1)
    widths = [max(len(row[c]) for row in rows) for c in range(len(_TABLE_HEADER) - 1)]
    lines = []
    for n, row in enumerate(rows):
        cells = [
            cell.rjust(w) if right else cell.ljust(w) for cell, w, right in zip(row, widths, _TABLE_RIGHT, strict=False)
        ]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
        if n in ends and n != len(rows) - 1:
            lines.append("")
    console.file.write("\n".join(lines) + "\n")
    console.file.flush()


def thumbnail_jpeg(path: str, side: int = HTML_THUMB, max_pixels: int = 80_000_000) -> bytes | None:
    """A small upright JPEG of the photo, or None when it cannot be read any more."""
    from photodedup.errors import InvalidImageError
    from photodedup.imaging import encode_jpeg, load_rgb, open_image

    try:
        with open(path, "rb") as fh:
            img = load_rgb(open_image(fh.read(), max_pixels), min_side=side)
        img.thumbnail((side, side))
        return encode_jpeg(img, 80)
    except (OSError, InvalidImageError) as exc:
        log.debug("no thumbnail for %s: %s", path, exc)
        return None


def write_thumbnails(groups: Sequence[Group], folder: Path) -> set[str]:
    """One thumbnail per distinct content (by MD5) under `folder`; returns the MD5s that have one."""
    from concurrent.futures import ThreadPoolExecutor

    folder.mkdir(parents=True, exist_ok=True)
    by_md5 = {m.record.md5: m.record.path for g in groups for m in g.members}

    def one(item: tuple[str, str]) -> str | None:
        md5, path = item
        target = folder / f"{md5}.jpg"
        if not target.exists():
            data = thumbnail_jpeg(path)
            if data is None:
                return None
            target.write_bytes(data)
        return md5

    # Pillow decodes without the GIL, so a few threads use the cores
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        return {md5 for md5 in pool.map(one, by_md5.items()) if md5}


_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5rem;background:#fafafa;color:#222}
h1{font-size:1.3rem} .stats{color:#555;margin-bottom:1rem}
.group{background:#fff;border:1px solid #ddd;border-radius:6px;margin:0 0 1rem;padding:.6rem}
.group h2{font-size:1rem;margin:.1rem 0 .5rem} .files{display:flex;flex-wrap:wrap;gap:.6rem}
figure{margin:0;width:210px;font-size:.75rem;word-break:break-all}
figure img{width:200px;height:200px;object-fit:contain;background:#eee;display:block}
figure.keep{outline:3px solid #2a8f3a} .missing{width:200px;height:200px;background:#eee;display:flex;
align-items:center;justify-content:center;color:#999}
.tag{font-weight:600;color:#2a8f3a}
"""


def _html(groups: Sequence[Group], stats: dict[str, Any], output: Path | None) -> str:
    """The page; with an output file its thumbnails go to `<stem>_files/` beside it and are linked."""
    from urllib.parse import quote

    esc = html.escape
    thumbs: set[str] = set()
    folder_url = ""
    if output is not None:
        folder = output.with_name(output.stem + "_files")
        thumbs = write_thumbnails(groups, folder)
        folder_url = quote(folder.name)
    g_counts = stats.get("groups", {})
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>photodedup report</title>",
        f"<style>{_CSS}</style></head><body><h1>photodedup: {len(groups)} duplicate groups</h1>",
        "<div class='stats'>"
        + esc(", ".join(f"{t}: {g_counts.get(t, 0)}" for t in TIERS))
        + f" &middot; {esc(human_bytes(stats.get('bytes_freeable', 0)))} freeable"
        + ("" if output is not None else " &middot; written to stdout: no thumbnails (use -o FILE)")
        + "</div>",
    ]
    for i, g in enumerate(groups, 1):
        parts.append(f"<section class='group'><h2>#{i} {esc(g.kind)} ({len(g.members)} files)</h2><div class='files'>")
        for m in _members(g):
            r = m.record
            keep = r.path == g.keep.path
            img = (
                f"<img src='{folder_url}/{esc(r.md5)}.jpg' alt='' loading='lazy'>"
                if r.md5 in thumbs
                else "<div class='missing'>no preview</div>"
            )
            label = (
                "<span class='tag'>keep</span> " if keep else f"{esc(str(m.tier))}, distance {m.distance:.3g} &middot; "
            )
            parts.append(
                f"<figure class='{'keep' if keep else ''}'>{img}<figcaption>{label}"
                f"{r.width}&times;{r.height}, {esc(human_bytes(r.size))}<br>{esc(os.path.abspath(r.path))}"
                "</figcaption></figure>"
            )
        parts.append("</div></section>")
    parts.append("</body></html>\n")
    return "".join(parts)
