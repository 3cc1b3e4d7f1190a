"""Group scanned files into exact, near and similar duplicates and pick the file to keep in each.

One job per module: `records` (what goes in and out, `Tier`), `config` (thresholds, policy), `keeper`
(which file is kept), `hamming` (near-tier search, windows included), `cosine` (similar-tier search,
exact and ANN), `cluster` (centre linkage), `find` (`find_groups`, the tiers as steps). Geometric
verification reads files, so it lives outside, in `client.verify`, and is passed in.
"""

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
