"""Path questions several rooms ask: is this file inside one of these folders?"""

from __future__ import annotations

import os
from collections.abc import Sequence


def under_any(path: str, dirs: Sequence[str]) -> bool:
    """True when `path` is inside one of `dirs` (symlinks resolved on both sides)."""
    if not dirs:
        return False
    real = os.path.realpath(path)
    for d in dirs:
        root = os.path.realpath(d)
        if real == root or real.startswith(root.rstrip(os.sep) + os.sep):
            return True
    return False
