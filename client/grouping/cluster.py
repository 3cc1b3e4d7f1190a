"""Centre-linkage clustering: no chaining, and pairs declared "not duplicates" never share a cluster."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

from photodedup.client.grouping.records import Tier


@dataclass(slots=True)
class Cluster:
    """Record indices, best first; members[0] is the centre. `tier[i]` is how i relates to the centre.
    Slotted: a large library has one per picture (204,000 at the scale benchmark)."""

    members: list[int]
    tier: dict[int, Tier]
    distance: dict[int, float]


class IgnoredPairs:
    """Pairs of paths declared "not duplicates", as record indices."""

    def __init__(self, ignored: Collection[frozenset[str]], paths: Sequence[str]) -> None:
        index = {p: i for i, p in enumerate(paths)}
        self.pairs: dict[int, set[int]] = {}
        for pair in ignored:
            items = [index[p] for p in pair if p in index]
            for a in items:
                for b in items:
                    if a != b:
                        self.pairs.setdefault(a, set()).add(b)

    def conflicts(self, a: Sequence[int], b: Sequence[int]) -> bool:
        """True when some record of `a` was declared "not a duplicate" of some record of `b`."""
        if not self.pairs:
            return False
        bset = set(b)
        return any(self.pairs.get(x, set()) & bset for x in a)


def closest(row: dict[int, float], k: int) -> set[int]:
    """The `k` closest of a neighbour row {item: distance}, ties by index: what a picture keeps of its
    candidates when their number must not grow with the library."""
    return {b for _, b in sorted((d, b) for b, d in row.items())[:k]}


def centre_cluster(
    items: list[Cluster],
    neighbours: dict[int, dict[int, float]],
    tier: Tier,
    ignore: IgnoredPairs,
    fits: Callable[[int, int], bool] | None = None,
    ahead: Callable[[int, list[int], Sequence[bool]], None] | None = None,
    hop: Callable[[int, list[int]], dict[int, float]] | None = None,
) -> list[Cluster]:
    """Merge items (sorted best-first) by centre linkage: each free item takes free neighbours of itself.

    `neighbours` maps item index to {item index: distance}; `fits(i, j)` may veto a join, e.g. when a
    member of j is itself too far from i's centre; `ahead(i, js, taken)` hears which free neighbours `fits`
    is about to be asked about for centre i (to answer them together; `taken` says which items are in a
    cluster already). `hop(i, joined)` names further
    candidates of centre i once the items in `joined` have joined it ({item: distance}, asked of `fits`
    like the rest): a copy of a copy is looked for only through what is a copy. Returns the merged
    clusters, best centre first.
    """
    taken = [False] * len(items)
    out: list[Cluster] = []
    for i, centre in enumerate(items):
        if taken[i]:
            continue
        taken[i] = True
        merged = Cluster(list(centre.members), dict(centre.tier), dict(centre.distance))
        joined = _take(i, neighbours.get(i, {}), items, taken, merged, tier, ignore, fits, ahead)
        if hop is not None and joined:
            _take(i, hop(i, joined), items, taken, merged, tier, ignore, fits, ahead)
        # Nothing joined: the item stands as it was (most pictures of a library), not as a second copy of it.
        out.append(merged if joined else centre)
    return out


def _take(
    i: int,
    near: dict[int, float],
    items: list[Cluster],
    taken: list[bool],
    merged: Cluster,
    tier: Tier,
    ignore: IgnoredPairs,
    fits: Callable[[int, int], bool] | None,
    ahead: Callable[[int, list[int], Sequence[bool]], None] | None,
) -> list[int]:
    """Centre i takes the free items of `near` that fit, closest first; returns those it took."""
    candidates = sorted(near.items(), key=lambda kv: (kv[1], kv[0]))
    if ahead is not None and fits is not None:
        ahead(i, [j for j, _ in candidates if not taken[j]], taken)
    joined = []
    for j, dist in candidates:
        if taken[j] or ignore.conflicts(items[j].members, merged.members) or (fits and not fits(i, j)):
            continue
        taken[j] = True
        joined.append(j)
        for m in items[j].members:
            merged.members.append(m)
            # Members of j are copies of j's centre: they relate to this centre through j's link.
            merged.tier[m] = tier
            merged.distance[m] = dist
    return joined
