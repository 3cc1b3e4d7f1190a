"""Plain consoles for output that is not a terminal; rich only on one."""

from __future__ import annotations

import io

from photodedup.client.console import NoProgress, PlainConsole, console_for


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_plain_console_writes_lines_as_given() -> None:
    buf = io.StringIO()
    con = PlainConsole(buf)
    long_name = "/photos/" + "x" * 300 + "[bold]not markup[/bold].jpg"
    con.print("Scanned", 3, "files", highlight=False, markup=False)
    con.print(long_name)
    assert buf.getvalue() == f"Scanned 3 files\n{long_name}\n"  # never folded, brackets kept
    assert con.is_terminal is False and con.file is buf


def test_rich_only_for_a_terminal() -> None:
    from rich.console import Console

    assert isinstance(console_for(io.StringIO()), PlainConsole)
    tty = _Tty()
    con = console_for(tty)
    assert isinstance(con, Console) and con.file is tty


def test_no_progress_takes_what_a_progress_bar_takes() -> None:
    with NoProgress() as bar:
        task = bar.add_task("hashing", total=3, rate="")
        bar.update(task, advance=1, rate="1/s")
