"""Where a command's messages and report go: a rich console on a terminal, plain lines elsewhere.

Importing rich costs a tenth of a second, about a tenth of an unchanged rescan, and when the output is a
file or a pipe it adds nothing: no colour, no progress bar, and (at its default 80 columns) folded paths.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO


class PlainConsole:
    """The part of rich's Console the commands use, writing plain lines (markup is not interpreted: a
    file name with brackets in it is shown as it is)."""

    is_terminal = False

    def __init__(self, file: TextIO) -> None:
        self.file = file

    def print(self, *objects: Any, sep: str = " ", end: str = "\n", **_style: Any) -> None:
        self.file.write(sep.join(str(o) for o in objects) + end)
        self.file.flush()


def console_for(stream: TextIO, **rich_options: Any) -> Any:
    """A rich Console for a terminal, else a PlainConsole."""
    isatty = getattr(stream, "isatty", None)
    if isatty is not None and isatty():
        from rich.console import Console

        return Console(file=stream, **rich_options)
    return PlainConsole(stream)


def consoles() -> tuple[Any, Any]:
    """(stdout, stderr) consoles for a command."""
    return console_for(sys.stdout), console_for(sys.stderr)


class NoProgress:
    """Rich's Progress interface, doing nothing: progress hidden costs no rich import."""

    def __enter__(self) -> NoProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def add_task(self, *args: Any, **kwargs: Any) -> int:
        return 0

    def update(self, *args: Any, **kwargs: Any) -> None:
        return None
