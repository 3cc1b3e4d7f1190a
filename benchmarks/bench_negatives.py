"""Different pictures are never duplicates: how many pictures that are not copies end up grouped.

Two measurements, each with the default offline scan (`run_scan`, no model) grouped by `find_groups`,
beside the same grouping without the weak-picture rule (every picture trusted as a photo, any pixel turn
counted: the previous behaviour) and, on the negative set, czkawka and imagededup in the same run:

1. The negative dev set from `../shared/neardup/get_negatives.sh OUT`: pixel-distinct 48 px icons and
   phone-sized screenshots of different documentation pages. Every file is a singleton: any grouped file is
   a false group member.
2. Every picture under a system folder (default /usr/share): the groups whose members do not all share one
   file name (stem), before and after, with the ten largest listed. Same-named files there are mostly one
   icon at several sizes (real copies); different names are mostly different pictures.

Not part of CI (the negative set needs apt and chromium).
Usage: bench_negatives.py NEG_DIR [--system DIR | --no-system] [--no-before] [--no-write] [--no-comparators]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

from photodedup.client.grouping import Group, GroupingConfig, find_groups
from photodedup.client.grouping.records import FileRecord
from photodedup.client.index import Index
from photodedup.client.scan import run_scan
from photodedup.client.verify import GeometricVerifier
from photodedup.settings import Settings

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_quality import czkawka_groups, imagededup_groups, no_weak_rule  # noqa: E402
from record import machine_line, write_section  # noqa: E402

log = logging.getLogger(__name__)


def scan(root: Path) -> tuple[list[FileRecord], float]:
    """The default offline scan of `root` into a fresh index: its records and how long it took."""
    with tempfile.TemporaryDirectory() as tmp, Index(Path(tmp) / "index.sqlite3") as index:
        started = time.perf_counter()
        run_scan([str(root)], Settings(), index, mode="none", progress=False)
        seconds = time.perf_counter() - started
        return list(index.records([str(root)], None)), seconds


def ours(records: list[FileRecord], config: GroupingConfig) -> tuple[list[Group], float, int]:
    """Grouped as a scan groups them: the groups, the seconds it took and the pairs verified."""
    verifier = GeometricVerifier()
    started = time.perf_counter()
    groups = find_groups(records, config, verifier=verifier)
    return groups, time.perf_counter() - started, verifier.pairs


def grouped_files(groups: list[list[str]] | None) -> int | None:
    return None if groups is None else len({p for g in groups for p in g})


def negative_rows(root: Path, config: GroupingConfig, comparators: bool) -> list[str]:
    rows = []
    for part, label in (("icons", "48 px icons"), ("shots", "screenshots")):
        folder = root / part
        records, scan_s = scan(folder)
        after, after_s, _ = ours(records, config)
        before, _, _ = ours(records, no_weak_rule(config))
        cells = {
            "photodedup, default": grouped_files([[m.record.path for m in g.members] for g in after]),
            "photodedup, without the weak-picture rule": grouped_files(
                [[m.record.path for m in g.members] for g in before]
            ),
        }
        if comparators:
            cells["czkawka (default similarity)"] = grouped_files(czkawka_groups(folder)[0])
            cells["imagededup PHash (threshold 10)"] = grouped_files(imagededup_groups(folder, "PHash")[0])
        n = len(records)
        for name, count in cells.items():
            value = "not installed" if count is None else f"{count} of {n} ({count / max(n, 1):.1%})"
            rows.append(f"| {label} | {name} | {value} |")
        log.info("%s: scan %.1f s, grouping %.1f s", part, scan_s, after_s)
    return rows


def mixed_name_groups(groups: list[Group]) -> list[Group]:
    """Groups whose members do not all have one file name (stem): mostly different pictures."""
    return [g for g in groups if len({Path(m.record.path).stem for m in g.members}) > 1]


# Two renders of one size "differ" where more than this share of their pixels (on white, grey) are more
# than DIFFERENT_LEVELS apart: a theme ships one glyph under several names pixel for pixel, which the
# file-name count above calls wrong.
DIFFERENT_LEVELS = 10
DIFFERENT_SHARE = 0.005


def _grey_on_white(path: str) -> object:
    import numpy as np
    from PIL import Image

    with Image.open(path) as im:
        rgba = im.convert("RGBA")
    canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    canvas.alpha_composite(rgba)
    return np.asarray(canvas.convert("L"), dtype=np.int16)


def widest_difference(group: Group) -> float | None:
    """The largest share of pixels more than DIFFERENT_LEVELS apart between two members with different file
    names and the same pixel size; None when the group has no such pair to compare."""
    import numpy as np

    by_size: dict[tuple[int, int], list[tuple[str, object]]] = {}
    for m in group.members:
        try:
            grey = _grey_on_white(m.record.path)
        except OSError:
            continue
        by_size.setdefault(grey.shape, []).append((Path(m.record.path).stem, grey))  # type: ignore[attr-defined]
    worst = None
    for same in by_size.values():
        for i, (name_a, a) in enumerate(same):
            for name_b, b in same[i + 1 :]:
                if name_a != name_b:
                    share = float((np.abs(a - b) > DIFFERENT_LEVELS).mean())  # type: ignore[operator]
                    worst = share if worst is None else max(worst, share)
    return worst


def files(groups: list[Group]) -> int:
    return sum(len(g.members) for g in groups)


def system_section(root: Path, config: GroupingConfig, before_too: bool = True) -> str:
    load_start = os.getloadavg()[0]
    records, scan_s = scan(root)
    after, after_s, after_pairs = ours(records, config)
    if before_too:
        before, before_s, before_pairs = ours(records, no_weak_rule(config))
        mixed_before = mixed_name_groups(before)
        before_row = f"| {len(before)} | {len(mixed_before)} | {files(mixed_before)} |"
        timing = (
            f"grouping\n{before_s:.0f} s before ({before_pairs} pairs verified) and {after_s:.0f} s after "
            f"({after_pairs} pairs)"
        )
    else:
        before_row = "| not run | not run | not run |"
        timing = f"grouping\n{after_s:.0f} s ({after_pairs} pairs verified)"
    timing += f"; load average {load_start:.1f} at the start, {os.getloadavg()[0]:.1f} at the end"
    mixed_after = mixed_name_groups(after)
    largest = sorted(mixed_after, key=lambda g: (-len(g.members), g.keep.path))[:10]
    listed = "\n".join(f"| {len(g.members)} | {g.kind} | {_names(g)} |" for g in largest)
    widest = [(widest_difference(g), g) for g in mixed_after]
    different = sorted(((w, g) for w, g in widest if w is not None and w > DIFFERENT_SHARE), key=lambda x: -x[0])
    unknown = sum(1 for w, _ in widest if w is None)
    one_picture = len(mixed_after) - len(different) - unknown
    shown = "\n".join(f"| {w:.1%} | {len(g.members)} | {_names(g)} |" for w, g in different)
    return f"""Every picture under `{root}` ({len(records)} decodable pictures; scan {scan_s:.0f} s, {timing}):

| grouping | groups | groups mixing file names | files in them |
|---|---|---|---|
| photodedup, without the weak-picture rule {before_row}
| photodedup, default | {len(after)} | {len(mixed_after)} | {files(mixed_after)} |

The ten largest groups that still mix file names (after):

| files | kind | names |
|---|---|---|
{listed or "| - | - | none |"}

Which of the {len(mixed_after)} groups mixing names join two different pictures: two members with different names
and the same pixel size whose renders (on white, grey) differ in more than {DIFFERENT_SHARE:.1%} of pixels by more
than {DIFFERENT_LEVELS} levels. {len(different)} do; {one_picture} hold one picture under several names (renders of one
size at most that far apart); {unknown} have no two names at one size to compare.

| pixels apart | files | names |
|---|---|---|
{shown or "| - | - | none |"}
"""


def _names(group: Group) -> str:
    return ", ".join(sorted({Path(m.record.path).name for m in group.members}))[:160]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("negatives", type=Path)
    ap.add_argument("--system", type=Path, default=Path("/usr/share"))
    ap.add_argument("--no-system", action="store_true", help="only the negative set (the system folder is slow)")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--no-comparators", action="store_true", help="skip imagededup and czkawka")
    ap.add_argument(
        "--no-before",
        action="store_true",
        help="on the system folder, skip the grouping without the weak-picture rule (under /usr/share it verifies "
        "310,000 pairs, the default about 12,000)",
    )
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    config = GroupingConfig.from_settings(Settings())
    rows = negative_rows(args.negatives.resolve(), config, not args.no_comparators)
    section = f"""## Different pictures (`benchmarks/bench_negatives.py`)

{machine_line(("Pillow", "opencv-python-headless", "imagededup", "czkawka"))}. One run. The negative set from
`../shared/neardup/get_negatives.sh` (every file a singleton): files that ended up in any group. "Without the
weak-picture rule" is the same scan grouped as before this rule (every picture trusted as a photo, every
pixel-turned match counted). Targets: at most 2 % of icons and 2 of 80 screenshots.

| set | grouping | files grouped |
|---|---|---|
{chr(10).join(rows)}
"""
    if not args.no_write:
        write_section("bench_negatives", section)
    print(section)
    if args.no_system:
        return
    system = f"""## Different pictures in a system folder (`benchmarks/bench_negatives.py`)

{machine_line(("Pillow", "opencv-python-headless"))}. One run.

{system_section(args.system, config, not args.no_before)}"""
    if not args.no_write:
        write_section("bench_negatives_system", system)
    print(system)


if __name__ == "__main__":
    main()
