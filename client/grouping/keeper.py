"""Keeper policy: which file of a group is kept, the one most likely to be the original.

Rules, in the configured order (default `config.KEEP_POLICY`): resolution (picture pixels: the frame
less added bars and a tilted copy's filled corners; a plain background counts), camera (EXIF make/model
present), quality (estimated JPEG quality; a lossless file carrying JPEG block traces is a converted copy
and ranks last), colour (a grey copy loses), borders (a copy with bars added loses to the same picture
without), oldest (capture time, else modification time), size, format, shortest_path. Reference folders
come first of all.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from photodedup.client.grouping.config import GroupingConfig
from photodedup.client.grouping.records import FileRecord

_FORMAT_ALIASES = {"JPG": "JPEG", "TIF": "TIFF", "MPO": "JPEG"}
UNKNOWN_QUALITY = 50  # files indexed before quality was estimated


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
            # Eighth-octave steps: a trim a pixel off between two copies of one picture is no difference.
            parts.append(-round(math.log2(max(1, record.content_pixels)) * 8))
        elif rule == "camera":
            parts.append(0 if record.camera else 1)
        elif rule == "quality":
            # Steps of 10 (88 and 92 tie): the estimate is good to a few points, and re-encoding a photo a
            # few points higher makes a bigger file, not a better one.
            parts.append(-round((record.quality if record.quality is not None else UNKNOWN_QUALITY) / 10))
        elif rule == "colour":
            parts.append(1 if record.grey else 0)
        elif rule == "borders":
            # Share of the frame that is not picture, in percent: added bars or filled corners lose.
            frame = max(1, record.width * record.height)
            parts.append(round(100 * max(0, frame - record.content_pixels) / frame))
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
