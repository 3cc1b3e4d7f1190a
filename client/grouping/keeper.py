"""Keeper policy: which file of a group is kept (the best by the configured rules)."""

from __future__ import annotations

from collections.abc import Sequence

from photodedup.client.grouping.config import GroupingConfig
from photodedup.client.grouping.records import FileRecord

_FORMAT_ALIASES = {"JPG": "JPEG", "TIF": "TIFF", "MPO": "JPEG"}


def format_rank(fmt: str, preference: Sequence[str]) -> int:
    """Position of `fmt` in `preference` (aliases folded); unknown formats come last."""
    name = _FORMAT_ALIASES.get(fmt.upper(), fmt.upper())
    try:
        return preference.index(name)
    except ValueError:
        return len(preference)


def keeper_key(record: FileRecord, config: GroupingConfig, protected: bool = False) -> tuple:
    """Sort key: smaller is better. Reference files first, then the policy, then the path for determinism."""
    parts: list[object] = [0 if protected else 1]
    for rule in config.keep_policy:
        if rule == "resolution":
            parts.append(-(record.width * record.height))
        elif rule == "size":
            parts.append(-record.size)
        elif rule == "format":
            parts.append(format_rank(record.format, config.format_preference))
        elif rule == "oldest":
            parts.append(record.exif_time if record.exif_time is not None else record.mtime)
        elif rule == "shortest_path":
            parts.append(len(record.path))
    parts.append(record.path)
    return tuple(parts)
