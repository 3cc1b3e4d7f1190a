"""Write one section of docs/BENCHMARKS.md, leaving the others alone.

Each benchmark script owns the text between `<!-- BEGIN name -->` and `<!-- END name -->`; a missing
section is appended. Every section states machine, versions and date so a table can be traced.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import re
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "BENCHMARKS.md"


def machine_line(packages: tuple[str, ...] = ("torch", "onnxruntime", "grpcio", "open_clip_torch")) -> str:
    """'2026-11-27, 2 cores, x86_64, Python 3.11.7, torch 2.14.1, ...' for the table's caption."""
    parts = [
        _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d"),
        f"{os.cpu_count()} cores",
        platform.machine(),
        f"Python {platform.python_version()}",
    ]
    for pkg in packages:
        try:
            parts.append(f"{pkg} {version(pkg)}")
        except PackageNotFoundError:
            pass
    return ", ".join(parts)


def write_section(name: str, markdown: str, doc: Path = DOC) -> None:
    begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
    text = doc.read_text() if doc.exists() else "# Benchmarks\n"
    block = f"{begin}\n{markdown.strip()}\n{end}"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _m: block, text)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(text)
