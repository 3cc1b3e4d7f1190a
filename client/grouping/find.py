"""`find_groups`: exact units, then the near tier, then the similar tier, then groups with their keepers.

Tiers, in order, each working on the result of the one before:

1. exact: the same MD5. One MD5 class is one *unit* (split only where the user said "not duplicates").
2. near: the 128-bit key dHash||pHash (both 64-bit) of the picture inside its borders, Hamming distance
   <= `near_threshold`. Summing the two distances separated edited copies from unrelated photos better
   than either hash alone on the dev set (docs/BENCHMARKS.md). Optional hashes of the 90/180/270-rotated
   image catch pixel-rotated copies, but only between pictures that are not weak and not turn-symmetric,
   when the turned match is clearly closer than the unturned one (an arrow and its turn are two icons).
   With a verifier, a deliberately loose second net catches crops, small rotations and overlays: a
   picture whose full frame is within `candidate_threshold` of any sub-window of another is a candidate,
   and joins only if geometric verification confirms it. So does a neighbour of a copy that has joined the
   centre (a crop of a turned copy meets the turned copy, not the original), verified against the centre
   itself; a neighbour that failed verification is no way to a copy.
   Evidence scales with information: when either picture is weak (tiny content, too little contrast
   for its hash bits to mean much: icons, text pages, sky, or a drawn cut-out: a theme's large icons, one
   frame with different emblems), no hash distance suffices; the pair joins only
   if the verifier's strict check confirms it (every aligned cell agrees in lightness and colour), and
   without a verifier not at all. So does a pair of pictures both under `icon_side` px (a theme's glyphs),
   which are never loose candidates of each other nor a hop to a copy of a copy.
   Pictures under `min_pixels` join exact groups only.
3. similar: embedding cosine distance <= `similar_threshold`, between the keepers of the groups so far;
   no tier when the threshold is None (the model has no calibrated one: `config.calibrated_similar_threshold`).
   With a verifier, a neighbour that fails verification is not a duplicate: it is offered as `series`
   (same scene, different shot), a group kind that actions never touch, between single pictures only (a
   group of copies stays one). Each picture verifies only its closest few neighbours (`loose_candidates`).

No chaining (centre linkage): units are visited best-first by the keeper policy; each unit not yet in a
group becomes a centre and takes every free unit within the threshold *of the centre itself*. So every
member is within its tier's threshold of its group's keeper, and A~B, B~C puts C with A only if C~A.
Across tiers too: a near cluster joins a similar group only if each of its members that has an
embedding is within the similar threshold of the keeper. The centre is always the group's best file by
the policy, so the keeper is the centre. Pairs the user declared "not duplicates" are never put in one
group: a unit that conflicts with a member is skipped (it may start or join another group).
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence

import numpy as np

from photodedup.client.grouping.cluster import Cluster, IgnoredPairs, centre_cluster, closest
from photodedup.client.grouping.config import GroupingConfig
from photodedup.client.grouping.cosine import cosine_neighbours
from photodedup.client.grouping.evidence import VerdictLog, evidence_for
from photodedup.client.grouping.hamming import hamming_bits
from photodedup.client.grouping.keeper import keeper_key
from photodedup.client.grouping.near import Verifier, is_weak, near_tier, same_picture_units
from photodedup.client.grouping.records import FileRecord, Group, Member, Tier
from photodedup.client.paths import under_any
from photodedup.imaging import l2_normalize

log = logging.getLogger(__name__)

_TIER_ORDER = {Tier.EXACT: 0, Tier.NEAR: 1, Tier.SIMILAR: 2, Tier.SERIES: 3}
__all__ = ["Verifier", "find_groups", "is_weak"]


def find_groups(
    records: Sequence[FileRecord],
    config: GroupingConfig,
    ignored: Collection[frozenset[str]] = (),
    reference_dirs: Sequence[str] = (),
    verifier: Verifier | None = None,
) -> list[Group]:
    """Group copies of one photo; each file is in at most one group, never chained (see module docstring).

    Args:
        records: every file to consider, each path once.
        config: thresholds and keeper policy.
        ignored: pairs of paths the user declared "not duplicates"; they never share a group.
        reference_dirs: files under these folders are kept in preference to any other and never targets.
        verifier: decides whether two files are geometrically the same picture (`client.verify`); with
            one, loose candidates (crops, borders, small rotations) are verified and joined, and similar
            neighbours that fail are grouped as `series`. Without one, exact, near and similar as hashes
            and embeddings alone say.

    Returns:
        Groups of two or more files, exact first, then near, similar and series, each ordered by keeper path;
        the keeper is the group's best file by the policy and its first member.
    """
    if not records:
        return []
    protected = [under_any(r.path, reference_dirs) for r in records]
    keys = [keeper_key(r, config, protected[i]) for i, r in enumerate(records)]
    ignore = IgnoredPairs(ignored, [r.path for r in records])
    units = same_picture_units(records, _exact_units(records, keys, ignore), config, ignore)
    found = VerdictLog(verifier) if verifier is not None else None  # keeps what verification found
    clusters = near_tier(records, units, config, ignore, found)
    clusters = _similar_tier(records, clusters, config, ignore, found)
    groups = _assemble(records, clusters, protected, found)
    log.debug("grouping: %d files -> %d groups", len(records), len(groups))
    return groups


def _exact_units(records: Sequence[FileRecord], keys: Sequence[tuple], ignore: IgnoredPairs) -> list[Cluster]:
    """MD5 classes, best member first, split where the user said "not duplicates"; best unit first."""
    by_md5: dict[str, list[int]] = {}
    for i in sorted(range(len(records)), key=keys.__getitem__):
        by_md5.setdefault(records[i].md5, []).append(i)
    units: list[Cluster] = []
    for members in by_md5.values():
        parts: list[list[int]] = []
        for i in members:
            for part in parts:
                if not ignore.conflicts([i], part):
                    part.append(i)
                    break
            else:
                parts.append([i])
        units += [Cluster(part, dict.fromkeys(part, Tier.EXACT), dict.fromkeys(part, 0.0)) for part in parts]
    units.sort(key=lambda u: keys[u.members[0]])
    return units


def _similar_tier(
    records: Sequence[FileRecord],
    clusters: list[Cluster],
    config: GroupingConfig,
    ignore: IgnoredPairs,
    verifier: Verifier | None,
) -> list[Cluster]:
    """Join clusters by the embedding of each one's best member that has one, within `similar_threshold`.

    With a verifier, only neighbours it confirms join as similar (each picture's `loose_candidates` closest,
    a pair kept if either side keeps it); the rest are joined afterwards as series (same scene, different
    shot), between pictures that are in no group of copies."""
    if config.similar_threshold is None:  # no calibrated threshold for the model: its embeddings say nothing
        return clusters
    owner = [
        next(
            (
                m
                for m in c.members
                if records[m].embedding is not None and records[m].content_pixels >= config.min_pixels
            ),
            None,
        )
        for c in clusters
    ]
    ids = [k for k, m in enumerate(owner) if m is not None]
    if len(ids) < 2:
        return clusters
    vectors = np.stack([np.asarray(records[owner[k]].embedding, dtype=np.float32) for k in ids])  # type: ignore[index]
    local = cosine_neighbours(vectors, config.similar_threshold, config.ann_threshold, config.ann_probes)
    if verifier is not None:
        # Each picture's closest few, a pair kept if either side keeps it: every neighbour is verified, and a
        # model whose embeddings say little (random weights, a folder of one scene) would make that quadratic.
        top = {a: closest(row, config.loose_candidates) for a, row in local.items()}
        local = {a: {b: d for b, d in row.items() if b in top[a] or a in top.get(b, ())} for a, row in local.items()}
    neighbours = {ids[a]: {ids[b]: d for b, d in row.items()} for a, row in local.items()}
    rejected: set[tuple[str, str]] = set()

    def every_member_near_centre(i: int, j: int) -> bool:
        """No chaining across tiers: a near cluster joins only if each of its members that has an
        embedding is itself within the threshold of the centre's embedding."""
        centre = records[owner[i]]  # type: ignore[index]
        return all(
            _cosine_distance(centre, records[m]) <= config.similar_threshold
            for m in clusters[j].members
            if records[m].embedding is not None
        )

    def same_picture(i: int, j: int) -> bool:
        if not every_member_near_centre(i, j):
            return False
        a, b = records[clusters[i].members[0]], records[clusters[j].members[0]]
        if verifier is None or verifier(a, b):
            return True
        rejected.add((a.path, b.path))
        return False

    merged = centre_cluster(clusters, neighbours, Tier.SIMILAR, ignore, same_picture)
    if not rejected:
        return merged
    # Series: the pairs verification rejected, between what is left after the similar joins, and only between
    # single pictures: a series is never acted on, so a group of copies joined to one would no longer be.
    at = {records[c.members[0]].path: k for k, c in enumerate(merged) if len(c.members) == 1}
    series: dict[int, dict[int, float]] = {}
    for a, b in rejected:
        if a in at and b in at:
            d = _cosine_distance(records[merged[at[a]].members[0]], records[merged[at[b]].members[0]])
            series.setdefault(at[a], {})[at[b]] = d
            series.setdefault(at[b], {})[at[a]] = d
    return centre_cluster(merged, series, Tier.SERIES, ignore)


def _assemble(
    records: Sequence[FileRecord], clusters: list[Cluster], protected: Sequence[bool], found: VerdictLog | None = None
) -> list[Group]:
    """Clusters of two or more become groups; each member's tier, distance and evidence are to the keeper."""
    groups: list[Group] = []
    for c in clusters:
        if len(c.members) < 2:
            continue
        keep = records[c.members[0]]
        kind = max((c.tier[m] for m in c.members[1:]), key=_TIER_ORDER.__getitem__)
        members = [Member(keep, 0.0, Tier.EXACT)]
        for m in c.members[1:]:
            rec = records[m]
            tier = Tier.EXACT if rec.md5 == keep.md5 and c.tier[m] is not Tier.SERIES else c.tier[m]
            distance = 0.0 if tier is Tier.EXACT else _distance(keep, rec, tier, c.distance[m])
            evidence = None if tier is Tier.EXACT else evidence_for(keep, rec, tier is Tier.NEAR, c.distance[m], found)
            members.append(Member(rec, distance, tier, evidence))
        members[1:] = sorted(members[1:], key=lambda mb: (mb.distance, mb.record.path))
        groups.append(Group(kind, keep, members, frozenset(records[m].path for m in c.members if protected[m])))
    groups.sort(key=lambda g: (_TIER_ORDER[g.kind], g.keep.path))
    return groups


def _cosine_distance(a: FileRecord, b: FileRecord) -> float:
    u, v = l2_normalize(np.stack([a.embedding, b.embedding]))  # type: ignore[list-item]
    return max(0.0, float(1.0 - u @ v))


def _distance(keep: FileRecord, rec: FileRecord, tier: Tier, link: float) -> float:
    """A member's own distance to the keeper where both sides allow it, else the distance of its link."""
    if tier is Tier.NEAR and None not in (keep.dhash, keep.phash, rec.dhash, rec.phash):
        return float(min(hamming_bits((keep.dhash, keep.phash), (rec.dhash, rec.phash)), link))  # type: ignore[arg-type]
    if tier is Tier.SIMILAR and keep.embedding is not None and rec.embedding is not None:
        return _cosine_distance(keep, rec)
    return float(link)
