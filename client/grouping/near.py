"""The near tier (`near_tier`): units whose hashes, turned hashes or window hashes meet, joined by centre
linkage, with loose candidates and weak (tiny, flat or drawn) or icon-sized pictures confirmed by a verifier.
The rule is stated in `find`'s module docstring (tier 2); this module is how it is searched and decided."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from photodedup.client.grouping.cluster import Cluster, IgnoredPairs, centre_cluster
from photodedup.client.grouping.config import GroupingConfig
from photodedup.client.grouping.hamming import (
    hamming_bits,
    hamming_neighbours,
    turned_neighbours,
    window_key,
    window_pairs,
)
from photodedup.client.grouping.records import FileRecord, Tier
from photodedup.heap import trim_heap

log = logging.getLogger(__name__)

# Centres past the current one whose loose checks are handed to the verifier ahead (`near_tier`'s `ahead`).
LOOKAHEAD = 16
# verifier(a, b, strict): are these the same picture? `strict` asks for the check for weak pictures. It
# returns a bool, or a verdict with `.same` whose detail becomes the members' evidence (`evidence.VerdictLog`).
Verifier = Callable[..., Any]


def same_picture_units(
    records: Sequence[FileRecord], units: list[Cluster], config: GroupingConfig, ignore: IgnoredPairs
) -> list[Cluster]:
    """Units whose pictures carry identical hashes (dHash, pHash, turned and window hashes) merged into the
    best of them, the rest as near copies at distance 0: what the near tier would make of them anyway, done
    up front, because a folder of many re-saves of one picture made its neighbour lists (and the second
    hop through them) grow with the square and the cube of their number. Weak and icon-sized pictures stay
    apart: identical hashes say little about them, and each pair is still checked strictly."""
    same: dict[tuple, list[int]] = {}
    for k, unit in enumerate(units):
        r = records[unit.members[0]]
        if (
            r.dhash is None
            or r.phash is None
            or r.content_pixels < config.min_pixels
            or is_weak(r, config)
            or is_icon_sized(r, config)
        ):
            continue
        key = (r.dhash, r.phash, tuple(r.rotated_hashes), window_key(r.windows))
        same.setdefault(key, []).append(k)
    into: dict[int, int] = {}  # unit -> the unit it joins
    for ks in same.values():
        heads: dict[int, list[int]] = {}  # head unit -> every member gathered under it so far
        for k in ks:  # best first: units are sorted by the keeper policy
            head = next((h for h, gathered in heads.items() if not ignore.conflicts(units[k].members, gathered)), None)
            if head is None:
                heads[k] = list(units[k].members)
            else:
                into[k] = head
                heads[head].extend(units[k].members)
    if not into:
        return units
    merged: dict[int, Cluster] = {}
    heads = set(into.values())
    for k, unit in enumerate(units):
        head = into.get(k)
        if head is None:
            # Only a unit others join is copied (and grown); the rest stand as they are, not as a copy each.
            merged[k] = Cluster(list(unit.members), dict(unit.tier), dict(unit.distance)) if k in heads else unit
            continue
        target = merged[head]
        for m in unit.members:
            target.members.append(m)
            target.tier[m] = Tier.NEAR
            target.distance[m] = 0.0
    return list(merged.values())


def is_tiny(record: FileRecord, config: GroupingConfig) -> bool:
    """Content under `weak_side` px on its long side: an icon or glyph, never cropped into a copy."""
    return 0 < _side(record) < config.weak_side


def _side(record: FileRecord) -> int:
    """Long side of the content (the whole frame when hashing found no borders)."""
    if record.content is not None:
        left, top, right, bottom = record.content
        return max(right - left, bottom - top)
    return max(record.width, record.height)


def is_icon_sized(record: FileRecord, config: GroupingConfig) -> bool:
    """Content under `icon_side` px on its long side: a theme's glyph, or a photo's small thumbnail."""
    return 0 < _side(record) < config.icon_side


def both_icons(a: FileRecord, b: FileRecord, config: GroupingConfig) -> bool:
    """Both pictures are under `icon_side` px: a theme's glyphs at 64 and 96 px, whose hashes meet."""
    return is_icon_sized(a, config) and is_icon_sized(b, config)


def is_drawn(record: FileRecord, config: GroupingConfig) -> bool:
    """A cut-out graphic (`weak_transparent` of its frame see-through): a theme's icons are one frame with
    different emblems, whose hashes meet; unknown counts as not drawn."""
    return record.transparent is not None and record.transparent >= config.weak_transparent


def is_weak(record: FileRecord, config: GroupingConfig) -> bool:
    """A picture whose hashes say little: tiny content, too little contrast at the hashes' scale, or drawn."""
    if is_tiny(record, config) or is_drawn(record, config):
        return True
    return record.contrast is not None and record.contrast < config.weak_contrast


def _turn_counts(a: FileRecord, b: FileRecord, turned: float, config: GroupingConfig) -> bool:
    """Whether a match through a pixel turn is evidence (see the module docstring)."""
    if is_weak(a, config) or is_weak(b, config):
        return False
    plain = hamming_bits((a.dhash, a.phash), (b.dhash, b.phash))  # type: ignore[arg-type]
    if turned + config.turn_margin > plain:
        return False
    for r in (a, b):
        own = (r.dhash, r.phash)
        if any(hamming_bits(own, t) < config.turn_asymmetry for t in r.rotated_hashes):  # type: ignore[arg-type]
            return False
    return True


def _closest_candidates(
    pairs: tuple[np.ndarray, np.ndarray, np.ndarray],
    owners: Sequence[FileRecord],
    hashed: np.ndarray,
    config: GroupingConfig,
) -> np.ndarray:
    """Which loose pairs (`window_pairs`' arrays over `owners`, both ways round) are kept for verification:
    each picture's closest few, so verification grows with the library, not with its pairs. `hashed` marks
    the pairs that are hash neighbours already (they join anyway).

    A weak picture's window hashes meet those of every picture of one style (a theme's icons, an app's
    screens): a pair with a weak picture is kept only if it is among each weak side's `weak_candidates`
    closest. Between photos, a pair is kept if it is among either side's `loose_candidates` closest loose
    candidates (its hash neighbours aside): unrelated photos meet the loose net at a rate that grows with the
    library (0.26 pairs a photo among 12,000 generated photos, 0.52 among 24,000, each a verification), while
    a crop's original is one of its closest. Closest is by distance, ties by index (`cluster.closest`);
    computed on the arrays, since among 200,000 generated photos the loose pairs passed a million."""
    a, b, d = pairs
    if not len(a):
        return np.zeros(0, dtype=bool)
    n = np.int64(len(owners))
    weak = np.fromiter((is_weak(r, config) for r in owners), dtype=bool, count=len(owners))
    ranked = weak[a] | ~hashed  # a photo ranks its candidates without its hash neighbours
    order = np.lexsort((b, d, ~ranked, a))  # per picture: ranked ones first, closest first, ties by index
    start = np.searchsorted(a[order], a[order], side="left")
    rank = np.empty(len(a), dtype=np.int64)
    rank[order] = np.arange(len(a)) - start
    limit = np.where(weak[a], config.weak_candidates, config.loose_candidates)
    top = ranked & (rank < limit)
    # The same pair the other way round: (b, a) sits where searching the sorted (a, b) keys finds it.
    keys = a * n + b  # int64
    back = top[np.searchsorted(keys, b * n + a)]
    either_weak = weak[a] | weak[b]
    return np.where(either_weak, (~weak[a] | top) & (~weak[b] | back), top | back)


class NeighbourRows:
    """{i: {j: distance}} held as sorted arrays (a row's dict is made when asked for): a large library's rows
    of loose candidates held as dicts cost ~100 bytes a pair (over 800,000 pairs among 200,000 generated
    photos). Read-only; `get` is all the centre linkage asks of it."""

    def __init__(self, i: np.ndarray, j: np.ndarray, d: np.ndarray) -> None:
        order = np.lexsort((j, i))
        i, self.j, self.d = i[order], j[order], d[order].astype(np.float64)
        size = int(i[-1]) + 2 if len(i) else 1
        self.starts: list[int] = np.searchsorted(i, np.arange(size)).tolist()  # row k: starts[k]:starts[k + 1]

    @classmethod
    def of(cls, rows: dict[int, dict[int, float]], i: np.ndarray, j: np.ndarray, d: np.ndarray) -> NeighbourRows:
        """`rows` and the pairs (i, j, d) together (no pair in both)."""
        ri = np.fromiter((a for a, row in rows.items() for _ in row), dtype=np.int64)
        rj = np.fromiter((b for row in rows.values() for b in row), dtype=np.int64)
        rd = np.fromiter((dist for row in rows.values() for dist in row.values()), dtype=np.float64)
        return cls(np.concatenate((ri, i)), np.concatenate((rj, j)), np.concatenate((rd, d.astype(np.float64))))

    def get(self, i: int, default: object = None) -> dict[int, float]:
        if not 0 <= i < len(self.starts) - 1 or (lo := self.starts[i]) == (hi := self.starts[i + 1]):
            return default  # type: ignore[return-value]
        return dict(zip(self.j[lo:hi].tolist(), self.d[lo:hi].tolist(), strict=True))


def near_tier(
    records: Sequence[FileRecord],
    units: list[Cluster],
    config: GroupingConfig,
    ignore: IgnoredPairs,
    verifier: Verifier | None,
) -> list[Cluster]:
    """Join units whose hashes are within `near_threshold` of a centre's (members share bytes, so hashes),
    and, with a verifier, units within `candidate_threshold` window bits that it confirms; pairs with a
    weak picture only when its strict check confirms them."""
    hashed = [
        next(
            (
                m
                for m in u.members
                if records[m].dhash is not None
                and records[m].phash is not None
                and records[m].content_pixels >= config.min_pixels
            ),
            None,
        )
        for u in units
    ]
    ids = [k for k, m in enumerate(hashed) if m is not None]
    owners = [records[hashed[k]] for k in ids]  # type: ignore[index]
    keys = [(r.dhash, r.phash) for r in owners]
    local = hamming_neighbours(keys, config.near_threshold, (), config.hamming_brute_force_max)  # type: ignore[arg-type]
    turned = turned_neighbours(
        keys,  # type: ignore[arg-type]
        [r.rotated_hashes for r in owners],
        config.near_threshold,
        config.hamming_brute_force_max,
    )
    for a, row in turned.items():
        for b, d in row.items():
            if d < local.get(a, {}).get(b, math.inf) and _turn_counts(owners[a], owners[b], d, config):
                local.setdefault(a, {})[b] = d
    neighbours = {ids[a]: {ids[b]: d for b, d in row.items()} for a, row in local.items()}
    # Hash neighbours join on their hashes; every other pair the centres meet (a loose candidate, a second
    # hop) is verified first. Held apart, they are few; the pairs to verify can pass a million.
    hash_rows = {i: frozenset(row) for i, row in neighbours.items()}

    def unverified(i: int, j: int) -> bool:
        return j not in hash_rows.get(i, ())

    loose_pairs = 0
    # A near threshold of 0 asks for identical hashes only: no loose net then either.
    if verifier is not None and config.candidate_threshold > config.near_threshold > 0:
        # Tiny pictures cast no loose net: a glyph's crop is not a copy people make, and the window hashes
        # of a theme's glyphs meet one another everywhere.
        a, b, d = window_pairs(
            [() if is_tiny(r, config) else r.windows for r in owners],
            config.candidate_threshold,
            config.hamming_brute_force_max,
            config.candidate_radius,
        )
        n = np.int64(len(owners))
        local_keys = np.fromiter((x * int(n) + y for x, row in local.items() for y in row), dtype=np.int64)
        hashed = np.isin(a * n + b, local_keys)
        # Two icon-sized pictures are no loose candidates of each other: a window match between a theme's
        # glyphs is another glyph (under /usr/share the strict check accepted 0 of 400 such pairs sampled).
        icon = np.fromiter((is_icon_sized(r, config) for r in owners), dtype=bool, count=len(owners))
        keep = _closest_candidates((a, b, d), owners, hashed, config) & ~hashed & ~(icon[a] & icon[b])
        unit = np.asarray(ids, dtype=np.int64)
        neighbours = NeighbourRows.of(neighbours, unit[a[keep]], unit[b[keep]], d[keep])  # type: ignore[assignment]
        loose_pairs = int(keep.sum()) // 2
        del a, b, d, hashed, keep
        trim_heap()
        log.debug("near tier: %d loose candidate pairs to verify", loose_pairs)
    weak = {ids[k] for k, r in enumerate(owners) if is_weak(r, config)}

    def confirmed(i: int, j: int) -> bool:
        """Strict hash neighbours join as before; loose candidates only when verified against the centre;
        a pair with a weak picture only when the strict check confirms it."""
        a, b = records[units[i].members[0]], records[units[j].members[0]]
        if i in weak or j in weak or both_icons(a, b, config):
            return verifier is not None and verifier(a, b, strict=True)
        if not unverified(i, j):
            return True
        return verifier(a, b)  # type: ignore[misc]

    def checks(i: int, js: list[int]) -> list[tuple[FileRecord, FileRecord, bool]]:
        """What `confirmed` verifies of centre i's candidates js: (a, b, strict)."""
        a, pairs = records[units[i].members[0]], []
        for j in js:
            b = records[units[j].members[0]]
            if i in weak or j in weak or both_icons(a, b, config):
                pairs.append((a, b, True))
            elif unverified(i, j):
                pairs.append((a, b, False))
        return pairs

    def ahead(i: int, js: list[int], taken: Sequence[bool]) -> None:
        """Hand the verifier centre i's checks, and those of the free items among the next `LOOKAHEAD` that
        no free item before them can take, which it verifies on every core while this one is decided (a
        library's centres mostly have one candidate or none). One of those may still be taken before its
        turn (through a second hop): its verdicts are kept for the next grouping anyway."""
        pairs = checks(i, js)
        for c in range(i + 1, min(len(units), i + 1 + LOOKAHEAD)):
            row = neighbours.get(c, {})
            if taken[c] or c in js or any(j < c and not taken[j] for j in row):
                continue
            pairs += checks(c, [j for j in row if not taken[j]])
        verifier.prefetch(pairs)  # type: ignore[union-attr]

    # Second hop: a copy of a copy (a crop of a turned copy, say) is a candidate of the centre too, through a
    # neighbour that has joined the centre, so is a copy itself (a neighbour that failed verification is no
    # way to a copy: on a 12,000-photo library such hops were half of all pairs verified, none accepted). Not
    # through a weak or icon-sized picture either (among a theme's glyphs and an app's pages links are too many
    # to walk: under /usr/share, hops through icon-sized pictures gave 54,542 icon pairs to verify, and the
    # strict check accepted 0 of 400 sampled). It still joins only if verified against the centre itself, so
    # membership never chains.
    hops = verifier is not None and config.candidate_threshold > config.near_threshold > 0
    key_of = {ids[k]: keys[k] for k in range(len(ids))}
    unwalked = {ids[k] for k, r in enumerate(owners) if is_weak(r, config) or is_icon_sized(r, config)}

    def hop(i: int, joined: list[int]) -> dict[int, float]:
        """Neighbours of what joined centre i, not its own: candidates to verify against i."""
        found: dict[int, float] = {}
        if i in unwalked:
            return found
        own = neighbours.get(i, {})
        for k in joined:
            if k in unwalked:
                continue
            for j in neighbours.get(k, ()):
                if j != i and j not in own and j not in found:
                    found[j] = float(hamming_bits(key_of[i], key_of[j]))  # type: ignore[arg-type]
        return found

    icons = any(is_icon_sized(r, config) for r in owners)
    fits = confirmed if loose_pairs or weak or icons or hops else None
    parallel = ahead if hasattr(verifier, "prefetch") else None
    return centre_cluster(units, neighbours, Tier.NEAR, ignore, fits, parallel, hop if hops else None)
