"""The client's commands: scan, report, apply, undo, ignore. Heavy imports stay inside the commands."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from photodedup.cliutils import (
    build_settings,
    client_transport_options,
    handle_errors,
    model_options,
    setting_option,
    stack,
)

log = logging.getLogger(__name__)

FORMAT_CHOICE = click.Choice(["table", "json", "csv", "html"])
MAX_ERRORS_SHOWN = 20


_db_option = setting_option("db", type=click.Path(dir_okay=False))

_grouping_options = stack(
    click.option(
        "--reference",
        "reference",
        multiple=True,
        type=click.Path(file_okay=False),
        help="Folder whose files are always kept and never touched (repeatable).",
    ),
    setting_option("near_threshold", type=int),
    setting_option("similar_threshold", type=float),
    setting_option("min_pixels", type=int),
)

# Thresholds a command takes from the scan it regroups when not given now.
_UNSET_THRESHOLDS: dict[str, Any] = {"near_threshold": None, "similar_threshold": None, "min_pixels": None}

_output_options = stack(
    click.option("--format", "fmt", type=FORMAT_CHOICE, default="table", show_default=True),
    click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), help="Write the report to FILE."),
)


def _consoles() -> tuple[Any, Any]:
    from photodedup.client.console import consoles

    return consoles()


def _abs(paths: Any) -> list[str]:
    return [os.path.abspath(os.path.expanduser(str(p))) for p in paths]


def _scan_stats(summary: Any, counts: dict[str, int]) -> dict[str, Any]:
    return {
        "roots": summary.roots,
        "files": summary.files,
        "hashed": summary.hashed,
        "unchanged": summary.unchanged,
        "removed": summary.removed,
        "unreadable": len(summary.errors),
        "skipped": {
            "hidden_or_system_folders": summary.walk.skipped_folders,
            "links": summary.walk.skipped_links,
            "hardlink_repeats": summary.walk.hardlink_repeats,
            "not_photos": summary.walk.not_photos,
            "unreadable_folders": [p for p, _ in summary.walk.unreadable],
        },
        "errors": [{"path": p, "error": e} for p, e in summary.errors],
        "embedded": counts.get("embedded", 0),
        "model_id": summary.model_id,
        "similar_skipped": summary.skipped_reason,
        "bytes_total": counts.get("bytes", 0),
        "seconds": round(summary.seconds, 3),
        "hash_seconds": round(summary.hash_seconds, 3),
        "hash_cpu_seconds": round(summary.hash_cpu_seconds, 3),
    }


def register(group: click.Group) -> None:
    """Add the client commands to the `photodedup` group."""
    group.add_command(scan)
    group.add_command(report)
    group.add_command(apply)
    group.add_command(undo_cmd)
    group.add_command(ignore)
    group.add_command(purge)
    from photodedup.client.review.command import review

    group.add_command(review)


@click.command()
@click.argument("roots", nargs=-1, required=True, type=click.Path(exists=True))
@_db_option
@click.option("--local", "mode", flag_value="local", help="Embed with the in-process engine only.")
@click.option(
    "--remote", "mode", flag_value="remote", help="Embed on the servers only; skip the similar tier if none answers."
)
@click.option("--no-similar", "mode", flag_value="none", help="Skip embeddings: exact and near tiers only.")
@setting_option("servers", "--server", multiple=True, extra="Repeatable. Default mode: these if reachable, else local.")
@setting_option("include_hidden", flag_value=True)
@setting_option("scan_workers", "--workers", type=int)
@setting_option("max_image_pixels", type=int)
@click.option("--progress/--no-progress", default=None, help="Progress bars [default: when stderr is a terminal].")
@_grouping_options
@_output_options
@model_options
@client_transport_options
@handle_errors
def scan(
    roots: tuple[str, ...],
    mode: str | None,
    reference: tuple[str, ...],
    fmt: str,
    output: Path | None,
    progress: bool | None,
    **flags: Any,
) -> None:
    """Scan ROOTS for duplicate photos: exact, near (perceptual hash) and similar (embeddings).

    Files already in the index with the same size and mtime are not read again.
    """
    from photodedup.client.index import Index
    from photodedup.client.report import build_stats, human_bytes, printable, render
    from photodedup.client.scan import grouping_config, load_groups, run_scan

    settings = build_settings(**flags)
    out, err = _consoles()
    refs = _abs(reference)
    all_roots = list(dict.fromkeys([*_abs(roots), *refs]))
    show_progress = err.is_terminal if progress is None else progress
    with Index(settings.scan.db) as index:
        summary = run_scan(
            all_roots,
            settings,
            index,
            mode=mode or "auto",
            console=err,
            progress=show_progress,
            options={
                "reference": refs,
                "near_threshold": settings.grouping.near_threshold,
                "similar_threshold": settings.grouping.similar_threshold,
                "min_pixels": settings.grouping.min_pixels,
            },
        )
        config = grouping_config(settings, summary.model_id)
        similar_off = None  # embeddings made, but the model has no calibrated threshold to group them by
        if config.similar_threshold is None and summary.model_id and not summary.skipped_reason:
            from photodedup.client.grouping.config import similar_off_reason

            similar_off = similar_off_reason(summary.model_id)
        grouping_started = time.monotonic()
        groups = load_groups(index, all_roots, summary.model_id, config, refs, err, show_progress)
        group_seconds = time.monotonic() - grouping_started
        counts = index.counts(all_roots, summary.model_id)
    stats = build_stats(groups, {**_scan_stats(summary, counts), "group_seconds": round(group_seconds, 3)})
    if similar_off:
        stats["similar_skipped"] = similar_off
    index_info = f"{summary.hashed} hashed, {summary.unchanged} unchanged"
    if summary.removed:
        index_info += f", {summary.removed} removed"
    err.print(f"Scanned {summary.files} files ({index_info}) in {summary.seconds:.1f} s", highlight=False)
    if summary.errors:
        err.print(f"{len(summary.errors)} files could not be read as photos:", highlight=False)
        for path, why in summary.errors[:MAX_ERRORS_SHOWN]:
            err.print(f"  {printable(path)}: {why}", highlight=False, markup=False)
        if len(summary.errors) > MAX_ERRORS_SHOWN:
            err.print(f"  ... and {len(summary.errors) - MAX_ERRORS_SHOWN} more (all are listed in --format json)")
    if summary.skipped_reason:
        click.echo(summary.skipped_reason, err=True)
    elif summary.embedder:
        err.print(f"Embeddings: {summary.model_id} via {summary.embedder}", highlight=False)
        if summary.embed_failed:
            err.print(
                f"{summary.embed_failed} images got no embedding (first: {summary.embed_error}); "
                "the next scan retries those that failed for want of a server",
                highlight=False,
                markup=False,
            )
    elif summary.model_id:
        err.print(f"Embeddings: {summary.model_id}, all up to date", highlight=False)
    if similar_off:
        click.echo(similar_off, err=True)
    g = stats["groups"]
    err.print(
        f"Groups: {g['exact']} exact, {g['near']} near, {g['similar']} similar; "
        f"{stats['duplicate_files']} extra copies, {human_bytes(stats['bytes_freeable'])} freeable",
        highlight=False,
    )
    render(groups, stats, fmt, output, out)


def _last_scan(index: Any) -> Any:
    last = index.last_scan()
    if last is None:
        raise click.UsageError("the index has no scan yet: run `photodedup scan DIR` first")
    if last.finished is None:
        click.echo("photodedup: the last scan did not finish; results cover what it reached", err=True)
    return last


def _as_scanned(
    index: Any, db: str | None, reference: Sequence[str], thresholds: dict[str, Any]
) -> tuple[Any, Any, list[str]]:
    """The last scan, the settings to regroup it with and its reference folders, so report, apply and
    ignore --group see the very groups the scan showed: thresholds given now override the scan's, and
    reference folders given now add to the scan's (a reference folder never stops being one)."""
    last = _last_scan(index)
    merged = {k: (v if v is not None else last.options.get(k)) for k, v in thresholds.items()}
    settings = build_settings(db=db, **merged)
    refs = list(dict.fromkeys([*last.options.get("reference", []), *_abs(reference)]))
    return last, settings, refs


@click.command()
@_db_option
@_grouping_options
@_output_options
@handle_errors
def report(db: str | None, reference: tuple[str, ...], fmt: str, output: Path | None, **thresholds: Any) -> None:
    """Show the duplicate groups of the last scan again, without rescanning."""
    from photodedup.client.index import Index
    from photodedup.client.report import build_stats, render
    from photodedup.client.scan import grouping_config, load_groups

    out, _ = _consoles()
    with Index(build_settings(db=db).scan.db) as index:
        last, settings, refs = _as_scanned(index, db, reference, thresholds)
        groups = load_groups(index, last.roots, last.model_id, grouping_config(settings, last.model_id), refs)
        counts = index.counts(last.roots, last.model_id)
    stats = build_stats(
        groups,
        {
            "roots": last.roots,
            "files": counts["files"],
            "unreadable": counts["errors"],
            "embedded": counts["embedded"],
            "model_id": last.model_id,
            "bytes_total": counts["bytes"],
        },
    )
    render(groups, stats, fmt, output, out)


@click.command()
@_db_option
@click.option(
    "--move-to",
    type=click.Path(file_okay=False, path_type=Path),
    help="Move the extra copies under DIR, keeping their paths relative to the scanned root.",
)
@click.option("--trash", is_flag=True, help="Move the extra copies to the system trash.")
@click.option(
    "--hardlink", is_flag=True, help="Replace each extra copy with a hard link to the kept file (exact tier only)."
)
@click.option("--delete", is_flag=True, help="Delete the extra copies permanently (needs --yes).")
@click.option(
    "--kinds",
    default="exact,near",
    show_default=True,
    help="Tiers to act on; 'similar' must be asked for: it also matches different shots of one scene.",
)
@click.option("--yes", is_flag=True, help="Act. Without it, only print what would be done.")
@click.option(
    "--journal",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Journal file [default: next to the index, under journals/].",
)
@click.option(
    "--allow-outside-roots",
    is_flag=True,
    help="Also act on files that a symlinked folder leads out of the scanned folders (refused otherwise).",
)
@_grouping_options
@handle_errors
def apply(
    db: str | None,
    move_to: Path | None,
    trash: bool,
    hardlink: bool,
    delete: bool,
    kinds: str,
    yes: bool,
    journal: Path | None,
    allow_outside_roots: bool,
    reference: tuple[str, ...],
    **thresholds: Any,
) -> None:
    """Act on the groups of the last scan: move, trash, hardlink or delete every non-kept file.

    Each file's content hash is checked again right before it is touched, and a journal is written
    first so `photodedup undo JOURNAL` can put everything back.
    """
    from photodedup.client.actions import apply_actions, move_root, outside_roots, plan_actions
    from photodedup.client.index import Index
    from photodedup.client.report import human_bytes, printable
    from photodedup.client.scan import grouping_config, load_groups

    chosen = [
        name
        for name, on in (("move", move_to is not None), ("trash", trash), ("hardlink", hardlink), ("delete", delete))
        if on
    ]
    if len(chosen) != 1:
        raise click.UsageError("choose exactly one of --move-to DIR, --trash, --hardlink, --delete")
    mode = chosen[0]
    wanted = {k.strip() for k in kinds.split(",") if k.strip()}
    if not wanted <= {"exact", "near", "similar"}:
        raise click.UsageError("--kinds takes exact, near and similar")
    with Index(build_settings(db=db).scan.db) as index:
        last, settings, refs = _as_scanned(index, db, reference, thresholds)
        groups = load_groups(index, last.roots, last.model_id, grouping_config(settings, last.model_id), refs)
    actions = plan_actions(
        groups,
        mode,
        move_to.resolve() if move_to else None,
        refs,  # type: ignore[arg-type]
        root=move_root(last.roots, refs),
        kinds=wanted,
        roots=last.roots,
    )
    outside = {a.path for a in actions if outside_roots(a.path, last.roots) or outside_roots(a.keep, last.roots)}
    for a in actions:
        if a.path in outside:
            state = "acting on it (--allow-outside-roots)" if allow_outside_roots else "refused"
            click.echo(
                f"  outside the scanned folders, {state}: {printable(a.path)} -> "
                f"{printable(os.path.realpath(a.path))}  (keep {printable(os.path.realpath(a.keep))})"
            )
    if not allow_outside_roots:
        actions = [a for a in actions if a.path not in outside]
    groups = [g for g in groups if any(a.keep == os.path.abspath(g.keep.path) for a in actions)]
    total = sum(a.size for a in actions)
    verb = {
        "move": f"move to {printable(str(move_to))}",
        "trash": "move to the trash",
        "hardlink": "replace with hard links",
        "delete": "DELETE PERMANENTLY",
    }[mode]
    for a in actions:
        click.echo(
            f"  {a.op} {printable(a.path)}"
            + (f" -> {printable(a.dest)}" if a.dest else "")
            + f"  (keep {printable(a.keep)})"
        )
    click.echo(f"{len(actions)} files from {len(groups)} groups: {verb} ({human_bytes(total)})")
    if not yes:
        click.echo("Dry run: nothing was changed. Add --yes to act.")
        return
    if not actions:
        return
    if journal is None:
        journal = Path(settings.scan.db).expanduser().parent / "journals" / time.strftime("apply-%Y%m%d-%H%M%S.jsonl")
    journal.parent.mkdir(parents=True, exist_ok=True)
    result = apply_actions(actions, journal, verify_md5=True, roots=None if allow_outside_roots else last.roots)
    if mode != "hardlink":  # those paths are gone; a later scan would drop them too
        with Index(settings.scan.db) as index:
            index.forget(result.done)
    for path, why in result.skipped:
        click.echo(f"  skipped {printable(path)}: {why}")
    for path, why in result.failed:
        click.echo(f"  FAILED {printable(path)}: {printable(why)}", err=True)
    click.echo(
        f"Done: {len(result.done)} files, {len(result.skipped)} skipped, {len(result.failed)} failed; "
        f"{human_bytes(result.bytes_freed)} freed."
    )
    if mode == "hardlink" and result.done:
        click.echo(f"The replaced files are kept as hidden backups until `photodedup purge {journal}`.")
    if mode != "delete":
        click.echo(f"Journal: {journal}  (undo with: photodedup undo {journal})")
    if result.failed:
        sys.exit(1)


@click.command("undo")
@click.argument("journal", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_db_option
@handle_errors
def undo_cmd(journal: Path, db: str | None) -> None:
    """Put back every file an `apply` moved, trashed or linked, from its JOURNAL (also after a crash);
    the index learns that they are back, so report, apply and review see them at once."""
    from photodedup.client.actions import undo
    from photodedup.client.index import Index
    from photodedup.client.report import printable
    from photodedup.client.scan import refresh_after_undo

    result = undo(journal)
    for path, why in result.failed:
        click.echo(f"  FAILED {printable(path)}: {printable(why)}", err=True)
    click.echo(
        f"Restored {len(result.restored)} files; {len(result.untouched)} needed nothing; {len(result.failed)} failed."
    )
    settings = build_settings(db=db)
    if Path(settings.scan.db).expanduser().is_file():
        with Index(settings.scan.db) as index:
            refresh_after_undo(index, journal, result.restored, settings.imaging.max_image_pixels)
    else:
        click.echo(f"photodedup: no index at {settings.scan.db}: the next scan finds the restored files", err=True)
    if result.failed:
        sys.exit(1)


@click.command()
@click.argument("journal", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--yes", is_flag=True, help="Remove them. Without it, only list them.")
@handle_errors
def purge(journal: Path, yes: bool) -> None:
    """Remove the hidden backups an `apply --hardlink` kept; frees their space, and undo can no longer restore them."""
    from photodedup.client.actions import purge_backups
    from photodedup.client.report import printable

    backups = purge_backups(journal, dry_run=not yes)
    for path in backups:
        click.echo(f"  {'removed' if yes else 'would remove'} {printable(path)}")
    if yes:
        click.echo(f"Removed {len(backups)} backups.")
    else:
        click.echo(f"{len(backups)} backups. Dry run: nothing was removed. Add --yes to remove them.")


@click.command()
@click.argument("paths", nargs=-1, type=click.Path())
@_db_option
@click.option("--remove", is_flag=True, help="Forget the decision instead: group these files again.")
@click.option(
    "--group",
    "group_numbers",
    type=int,
    multiple=True,
    help="Every file of group N as numbered by `photodedup report` (repeatable).",
)
@click.option("--list", "list_", is_flag=True, help="List the decisions.")
@handle_errors
def ignore(paths: tuple[str, ...], db: str | None, remove: bool, group_numbers: tuple[int, ...], list_: bool) -> None:
    """Declare PATHS not duplicates of each other; every later scan and report honours it."""
    from photodedup.client.index import Index
    from photodedup.client.report import printable

    settings = build_settings(db=db)
    with Index(settings.scan.db) as index:
        if list_:
            for pair in index.ignored():
                a, b = sorted(pair)
                click.echo(f"{printable(a)}\t{printable(b)}")
            return
        if group_numbers:
            from photodedup.client.scan import grouping_config, load_groups

            last, group_settings, refs = _as_scanned(index, db, (), _UNSET_THRESHOLDS)
            groups = load_groups(index, last.roots, last.model_id, grouping_config(group_settings, last.model_id), refs)
            for number in group_numbers:
                if not 1 <= number <= len(groups):
                    raise click.UsageError(f"there is no group {number}; the last scan has {len(groups)}")
                members = [m.record.path for m in groups[number - 1].members]
                click.echo(f"group {number}: {index.add_ignore(members)} new pairs marked as not duplicates")
            return
        files = _abs(paths)
        if len(files) < 2:
            raise click.UsageError("give at least two files")
        if remove:
            n = index.remove_ignore(files)
            click.echo(f"{n} pairs may be grouped again")
        else:
            n = index.add_ignore(files)
            click.echo(f"{n} new pairs marked as not duplicates")


if __name__ == "__main__":  # pragma: no cover
    sys.exit("run `photodedup` instead")
