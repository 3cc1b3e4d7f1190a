"""The base install is the CLI and remote scanning; a command that needs a missing extra says which one
in one line, never with a traceback."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from importlib.metadata import requires
from pathlib import Path

import click
from click.testing import CliRunner

from photodedup.cliutils import handle_errors

from helpers import photo


def _without(modules: tuple[str, ...], argv: list[str]) -> subprocess.CompletedProcess[str]:
    """Run the CLI in a fresh interpreter where `modules` cannot be imported (as if not installed)."""
    code = textwrap.dedent(
        f"""
        import sys
        for name in {modules!r}:
            sys.modules[name] = None
        from photodedup.cli import main
        main({argv!r})
        """
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


def test_the_base_requirements_hold_no_model_runtime() -> None:
    base = [r for r in requires("photodedup") or [] if "extra ==" not in r]
    names = {r.split(";")[0].split(">")[0].split("=")[0].split("[")[0].strip().lower() for r in base}
    assert "grpcio" in names and "click" in names
    assert not names & {"torch", "torchvision", "open_clip_torch", "faiss-cpu", "onnxruntime"}, names


def test_serve_without_the_server_extra_is_one_line() -> None:
    out = _without(("torch", "open_clip"), ["serve", "--weights", "random", "--port", "0"])
    assert out.returncode == 2
    assert out.stderr.strip() == (
        "photodedup: error: photodedup serve needs torch, which is not installed: pip install 'photodedup[server]'"
    )


def test_a_local_scan_without_the_local_extra_names_it_and_keeps_the_hash_tiers(tmp_path: Path) -> None:
    photo(1).save(tmp_path / "a.jpg")
    photo(1).save(tmp_path / "b.jpg")
    out = _without(
        ("torch", "open_clip"),
        [
            "scan",
            str(tmp_path),
            "--local",
            "--db",
            str(tmp_path / "i.sqlite3"),
            "--format",
            "json",
            "-o",
            str(tmp_path / "r.json"),
        ],
    )
    assert out.returncode == 0, out.stderr
    assert "the in-process engine needs torch, which is not installed: pip install 'photodedup[local]'" in out.stderr
    assert "Traceback" not in out.stderr and "Groups: 1 exact" in out.stderr


def test_a_module_missing_deep_inside_a_command_names_its_extra() -> None:
    @click.command()
    @handle_errors
    def grouping() -> None:
        raise ModuleNotFoundError("No module named 'faiss'", name="faiss")

    result = CliRunner().invoke(grouping, [])
    assert result.exit_code == 2
    assert result.output.strip() == (
        "photodedup: error: this needs faiss, which is not installed: pip install 'photodedup[ann]'"
    )
