"""Write one section of docs/BENCHMARKS.md, leaving the others alone.

Each benchmark script owns the text between `<!-- BEGIN name -->` and `<!-- END name -->`; a missing
section is appended. Every section states machine, versions and date so a table can be traced.
"""

from __future__ import annotations

import re
from pathlib import Path

from photodedup.loadgen.stats import machine_line

__all__ = ["machine_line", "write_section"]

DOC = Path(__file__).resolve().parent.parent / "docs" / "BENCHMARKS.md"


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
