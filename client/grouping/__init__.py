"""Group scanned files into exact, near and similar duplicates and pick the file to keep in each.

One job per module: `records` (what goes in and out, `Tier`), `config` (thresholds, policy), `keeper`
(which file is kept), `hamming` (near-tier search, windows included), `cosine` (similar-tier search,
exact and ANN), `cluster` (centre linkage), `find` (`find_groups`, the tiers as steps). Geometric
verification reads files, so it lives outside, in `client.verify`, and is passed in.

Names are imported from their modules on first use (PEP 562): reading a kept grouping back (an unchanged
rescan) needs `records` and `evidence` only, not the searches and their numpy.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_WHERE = {
    "Cluster": "cluster",
    "IgnoredPairs": "cluster",
    "centre_cluster": "cluster",
    "FORMAT_PREFERENCE": "config",
    "KEEP_POLICY": "config",
    "GroupingConfig": "config",
    "cosine_neighbours": "cosine",
    "cosine_pairs_ann": "cosine",
    "cosine_pairs_exact": "cosine",
    "default_probes": "cosine",
    "Verifier": "find",
    "find_groups": "find",
    "is_weak": "find",
    "MASK64": "hamming",
    "hamming_bits": "hamming",
    "hamming_join_brute": "hamming",
    "hamming_join_mih": "hamming",
    "hamming_neighbours": "hamming",
    "popcount64": "hamming",
    "window_neighbours": "hamming",
    "keeper_key": "keeper",
    "FileRecord": "records",
    "Group": "records",
    "Member": "records",
    "Tier": "records",
}

__all__ = [
    "FORMAT_PREFERENCE",
    "KEEP_POLICY",
    "MASK64",
    "Cluster",
    "FileRecord",
    "Group",
    "GroupingConfig",
    "IgnoredPairs",
    "Member",
    "Tier",
    "Verifier",
    "is_weak",
    "centre_cluster",
    "cosine_neighbours",
    "cosine_pairs_ann",
    "cosine_pairs_exact",
    "default_probes",
    "find_groups",
    "hamming_bits",
    "hamming_join_brute",
    "hamming_join_mih",
    "hamming_neighbours",
    "keeper_key",
    "popcount64",
    "window_neighbours",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


if TYPE_CHECKING:
    from photodedup.client.grouping.cluster import Cluster, IgnoredPairs, centre_cluster
    from photodedup.client.grouping.config import FORMAT_PREFERENCE, KEEP_POLICY, GroupingConfig
    from photodedup.client.grouping.cosine import (
        cosine_neighbours,
        cosine_pairs_ann,
        cosine_pairs_exact,
        default_probes,
    )
    from photodedup.client.grouping.find import Verifier, find_groups, is_weak
    from photodedup.client.grouping.hamming import (
        MASK64,
        hamming_bits,
        hamming_join_brute,
        hamming_join_mih,
        hamming_neighbours,
        popcount64,
        window_neighbours,
    )
    from photodedup.client.grouping.keeper import keeper_key
    from photodedup.client.grouping.records import FileRecord, Group, Member, Tier
