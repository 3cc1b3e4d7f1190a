"""The user's review decisions applied to computed groups: chosen keepers and groups marked done.

"Not duplicates" decisions are honoured by grouping itself (the ignore list); a chosen keeper is applied
after grouping, so a choice made once holds in every later report, apply and review of that group,
including after rescans, as long as the file is in the group.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Iterable, Mapping
from typing import Any

from photodedup.client.grouping import FileRecord, Group
from photodedup.client.grouping.evidence import Evidence, hash_evidence

_LOOSENESS = {"exact": 0, "near": 1, "similar": 2}


def members_key(group: Group) -> str:
    """A stable name for a group: the digest of its sorted member paths."""
    paths = sorted(m.record.path for m in group.members)
    return hashlib.sha1("\n".join(paths).encode("utf-8", "surrogateescape")).hexdigest()


def apply_keeper_choices(groups: Iterable[Group], choices: Mapping[str, float]) -> list[Group]:
    """Each group with a chosen member (the latest choice when several) gets that member as its keeper."""
    out = []
    for group in groups:
        chosen = [m.record for m in group.members if m.record.path in choices]
        if chosen:
            best = max(chosen, key=lambda r: choices[r.path])
            if best is not group.keep:
                group = with_keeper(group, best)
        out.append(group)
    return out


def _hamming(a: FileRecord, b: FileRecord) -> float | None:
    if None in (a.dhash, a.phash, b.dhash, b.phash):
        return None
    return float(((a.dhash ^ b.dhash) & (2**64 - 1)).bit_count() + ((a.phash ^ b.phash) & (2**64 - 1)).bit_count())  # type: ignore[operator]


def _cosine(a: FileRecord, b: FileRecord) -> float | None:
    if a.embedding is None or b.embedding is None:
        return None
    import numpy as np  # only for a chosen keeper's similar members

    x, y = np.asarray(a.embedding, np.float32), np.asarray(b.embedding, np.float32)
    denom = max(float(np.linalg.norm(x) * np.linalg.norm(y)), 1e-12)
    return max(0.0, 1.0 - float(x @ y) / denom)


def _evidence(group: Group, keep: FileRecord, rec: FileRecord, tier: str) -> Evidence | None:
    """What is known of `rec` against the new keeper `keep`: the old keeper has the new one's finding,
    seen the other way round; others keep only how their hashes compare (nothing was verified between them)."""
    if rec is group.keep:
        found = next((m.evidence for m in group.members if m.record is keep), None)
        return None if found is None else found.against_other(rec, keep)
    return hash_evidence(keep, rec, math.inf) if tier == "near" else None


def with_keeper(group: Group, keep: FileRecord) -> Group:
    """The same group with `keep` as its keeper; tiers and distances are measured to the new keeper.

    A member's tier becomes exact when its bytes equal the keeper's, else the looser of its own tier and
    the new keeper's (both were within that tier of the old keeper); its evidence is against the new keeper."""
    old = {m.record.path: m for m in group.members}
    keeper_member = old[group.keep.path]
    new_keeper_tier = str(old[keep.path].tier)
    tier_type: Any = type(old[keep.path].tier)
    members = [dataclasses.replace(keeper_member, record=keep, distance=0.0, evidence=None)]
    for m in group.members:
        if m.record is keep:
            continue
        own = new_keeper_tier if m.record is group.keep else str(m.tier)
        evidence = None
        if m.record.md5 == keep.md5:
            tier, distance = "exact", 0.0
        else:
            tier = max(own, new_keeper_tier, key=lambda t: _LOOSENESS.get(t, 0))
            if tier == "exact":
                tier = "near"  # different bytes are never exact
            measured = _hamming(keep, m.record) if tier == "near" else _cosine(keep, m.record)
            distance = measured if measured is not None else float(m.distance)
            evidence = _evidence(group, keep, m.record, tier)
        members.append(dataclasses.replace(m, distance=distance, tier=tier_type(tier), evidence=evidence))
    members[1:] = sorted(members[1:], key=lambda mb: (mb.distance, mb.record.path))
    return dataclasses.replace(group, keep=keep, members=members)
