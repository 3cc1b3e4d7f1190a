"""Group scanned files into exact, near and similar duplicates and pick the file to keep in each.

Tiers, in order, each working on the result of the one before:

1. exact: the same MD5. One MD5 class is one *unit* (split only where the user said "not duplicates").
2. near: the 128-bit key dHash||pHash (both 64-bit), Hamming distance <= `near_threshold`. Summing the
   two distances separated edited copies from unrelated photos better than either hash alone on the dev
   set (docs/BENCHMARKS.md). Optional hashes of the 90/180/270-rotated image catch pixel-rotated copies.
3. similar: embedding cosine distance <= `similar_threshold`, between the keepers of the groups so far.

No chaining (centre linkage): units are visited best-first by the keeper policy; each unit not yet in a
group becomes a centre and takes every free unit within the threshold *of the centre itself*. So every
member is within its tier's threshold of its group's keeper, and A~B, B~C puts C with A only if C~A.
Across tiers too: a near cluster joins a similar group only if each of its members that has an
embedding is within the similar threshold of the keeper. The centre is always the group's best file by
the policy, so the keeper is the centre. Pairs the user
declared "not duplicates" are never put in one group: a unit that conflicts with a member is skipped
(it may start or join another group).

Hamming neighbours come from multi-index hashing (exact, never all pairs); embedding neighbours from an
exact blocked matrix product below `ann_threshold` files and an inverted-file self-join (faiss k-means
cells, see `cosine_pairs_ann`) above it.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np

if TYPE_CHECKING:
    from photodedup.settings import Settings

log = logging.getLogger(__name__)

Kind = Literal["exact", "near", "similar"]
MASK64 = (1 << 64) - 1
KEEP_POLICY: tuple[str, ...] = ("resolution", "size", "format", "oldest", "shortest_path")
# Lower index is preferred: camera RAW and HEIC keep more of the original than a JPEG export.
FORMAT_PREFERENCE: tuple[str, ...] = (
    "DNG", "CR2", "CR3", "NEF", "ARW", "ORF", "RW2", "RAF", "RAW",
    "HEIC", "HEIF", "AVIF", "TIFF", "PNG", "WEBP", "JPEG", "BMP", "GIF",
)
_FORMAT_ALIASES = {"JPG": "JPEG", "TIF": "TIFF", "MPO": "JPEG"}


@dataclass
class FileRecord:
    """What grouping needs to know about one scanned file."""

    path: str
    size: int
    width: int
    height: int
    md5: str
    dhash: int | None
    phash: int | None
    embedding: np.ndarray | None
    exif_time: float | None
    mtime: float
    format: str
    # (dhash, phash) of the decoded image rotated by 90, 180 and 270 degrees (any subset, any order):
    # lets the near tier find pixel-rotated copies. Empty when the scanner did not compute them.
    rotated_hashes: tuple[tuple[int, int], ...] = ()


@dataclass
class GroupingConfig:
    """Thresholds and keeper policy; build it from Settings with `from_settings`."""

    near_threshold: int = 20
    similar_threshold: float = 0.01
    keep_policy: tuple[str, ...] = KEEP_POLICY
    ann_threshold: int = 20_000
    format_preference: tuple[str, ...] = FORMAT_PREFERENCE
    ann_probes: int | None = None  # cells per vector in the ANN join; None: by threshold
    hamming_brute_force_max: int = 2048

    def __post_init__(self) -> None:
        unknown = [k for k in self.keep_policy if k not in KEEP_POLICY]
        if unknown:
            raise ValueError(f"unknown keep policy {unknown}: use {', '.join(KEEP_POLICY)}")
        if not 0 <= self.near_threshold <= 128:
            raise ValueError("near_threshold is in bits of the 128-bit dHash||pHash key: 0..128")

    @classmethod
    def from_settings(cls, settings: Settings) -> GroupingConfig:
        return cls(
            near_threshold=settings.grouping.near_threshold,
            similar_threshold=settings.grouping.similar_threshold,
            keep_policy=tuple(settings.grouping.keep_policy),
            ann_threshold=settings.grouping.ann_threshold,
        )


@dataclass
class Member:
    """A file in a group; `distance` is to the group's keeper (0 exact, Hamming bits, cosine distance)."""

    record: FileRecord
    distance: float
    tier: Literal["keep", "exact", "near", "similar"] = "exact"


@dataclass
class Group:
    """Files that are copies of `keep`; `members` include it. `protected` are reference-dir paths."""

    kind: Kind
    keep: FileRecord
    members: list[Member]
    protected: frozenset[str] = field(default_factory=frozenset)

    @property
    def targets(self) -> list[Member]:
        """Members an action may touch: neither the keeper nor under a reference dir."""
        return [m for m in self.members if m.record is not self.keep and m.record.path not in self.protected]

    @property
    def reclaimable_bytes(self) -> int:
        return sum(m.record.size for m in self.targets)


# ---------------------------------------------------------------------------------------------- keeper


def _format_rank(fmt: str, preference: Sequence[str]) -> int:
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
            parts.append(_format_rank(record.format, config.format_preference))
        elif rule == "oldest":
            parts.append(record.exif_time if record.exif_time is not None else record.mtime)
        elif rule == "shortest_path":
            parts.append(len(record.path))
    parts.append(record.path)
    return tuple(parts)


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


# --------------------------------------------------------------------------------------- Hamming search


def popcount64(values: np.ndarray) -> np.ndarray:
    """Bits set per uint64 element."""
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(values).astype(np.int64)
    table = np.array([bin(i).count("1") for i in range(256)], dtype=np.int64)
    return table[values.view(np.uint8).reshape(*values.shape, 8)].sum(axis=-1)


def _as_keys(pairs: Sequence[tuple[int, int]]) -> np.ndarray:
    """(dhash, phash) ints, signed or unsigned -> uint64 array (n, 2)."""
    out = np.zeros((len(pairs), 2), dtype=np.uint64)
    for i, (a, b) in enumerate(pairs):
        out[i, 0] = a & MASK64
        out[i, 1] = b & MASK64
    return out


def _distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return popcount64(a[:, 0] ^ b[:, 0]) + popcount64(a[:, 1] ^ b[:, 1])


def hamming_join_brute(queries: np.ndarray, table: np.ndarray, threshold: int) -> tuple[np.ndarray, ...]:
    """All (query, table, distance) within `threshold`, comparing every pair: for small sets and tests."""
    qs, ts, ds = [], [], []
    for qi in range(len(queries)):
        d = popcount64(table[:, 0] ^ queries[qi, 0]) + popcount64(table[:, 1] ^ queries[qi, 1])
        hit = np.nonzero(d <= threshold)[0]
        qs.append(np.full(len(hit), qi, dtype=np.int64))
        ts.append(hit.astype(np.int64))
        ds.append(d[hit])
    if not qs:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    return np.concatenate(qs), np.concatenate(ts), np.concatenate(ds)


_CHUNKS = 8  # 128 bits as eight 16-bit substrings
_masks_cache: dict[int, np.ndarray] = {}


def _chunk_masks(radius: int) -> np.ndarray:
    if radius not in _masks_cache:
        values = np.arange(1 << 16, dtype=np.uint64)
        _masks_cache[radius] = values[popcount64(values) <= radius]
    return _masks_cache[radius]


def hamming_join_mih(queries: np.ndarray, table: np.ndarray, threshold: int) -> tuple[np.ndarray, ...]:
    """Multi-index hashing: exact results without comparing all pairs.

    By pigeonhole, two keys within `threshold` bits agree within `threshold // 8` bits on at least one of
    the eight 16-bit substrings; candidates are looked up per substring in sorted buckets (vectorised
    over all queries) and then checked on the full 128 bits.
    """
    radius = threshold // _CHUNKS
    masks = _chunk_masks(radius)
    found_q, found_t, found_d = [], [], []
    for chunk in range(_CHUNKS):
        col, shift = chunk // 4, np.uint64((chunk % 4) * 16)
        tv = ((table[:, col] >> shift) & np.uint64(0xFFFF)).astype(np.int64)
        qv = ((queries[:, col] >> shift) & np.uint64(0xFFFF)).astype(np.int64)
        order = np.argsort(tv, kind="stable")
        starts = np.searchsorted(tv[order], np.arange((1 << 16) + 1))
        for mask in masks.astype(np.int64):
            probe = qv ^ mask
            lo, hi = starts[probe], starts[probe + 1]
            count = hi - lo
            total = int(count.sum())
            if total == 0:
                continue
            qi = np.repeat(np.arange(len(queries)), count)
            offset = np.arange(total) - np.repeat(np.cumsum(count) - count, count)
            ti = order[np.repeat(lo, count) + offset]
            d = _distances(queries[qi], table[ti])
            ok = d <= threshold
            found_q.append(qi[ok])
            found_t.append(ti[ok])
            found_d.append(d[ok])
    if not found_q:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    q, t, d = np.concatenate(found_q), np.concatenate(found_t), np.concatenate(found_d)
    # A pair close on several substrings is found several times.
    _, first = np.unique(q * len(table) + t, return_index=True)
    return q[first], t[first], d[first]


def hamming_neighbours(
    keys: Sequence[tuple[int, int]],
    threshold: int,
    rotated: Sequence[Sequence[tuple[int, int]]] = (),
    brute_force_max: int = 2048,
) -> dict[int, dict[int, float]]:
    """Symmetric neighbour map {i: {j: bits}} of keys within `threshold`, rotated copies included."""
    table = _as_keys(keys)
    owners = list(range(len(keys)))
    query_pairs = list(keys)
    for i, extra in enumerate(rotated):
        for pair in extra:
            owners.append(i)
            query_pairs.append(pair)
    queries = _as_keys(query_pairs)
    join = hamming_join_brute if len(keys) <= brute_force_max else hamming_join_mih
    q, t, d = join(queries, table, threshold)
    out: dict[int, dict[int, float]] = {}
    owner = np.asarray(owners, dtype=np.int64)[q] if len(q) else q
    for a, b, dist in zip(owner.tolist(), t.tolist(), d.tolist(), strict=True):
        if a == b:
            continue
        for x, y in ((a, b), (b, a)):
            row = out.setdefault(x, {})
            if dist < row.get(y, math.inf):
                row[y] = float(dist)
    return out


# ------------------------------------------------------------------------------------- embedding search


def _normalise(vectors: np.ndarray, inplace: bool = False) -> np.ndarray:
    """Unit rows in float32; `inplace` spares a copy of a large matrix the caller owns."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if not inplace:
        return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    for start in range(0, len(vectors), 65_536):
        block = vectors[start : start + 65_536]
        block /= np.maximum(np.linalg.norm(block, axis=1, keepdims=True), 1e-12)
    return vectors


def cosine_pairs_exact(vectors: np.ndarray, max_distance: float) -> tuple[np.ndarray, ...]:
    """(i, j, cosine distance) for i < j within `max_distance`: blocked matrix product, exact."""
    x = _normalise(vectors)
    n = len(x)
    block = max(1, min(n, (1 << 24) // max(1, n)))
    min_sim = 1.0 - max_distance
    iss, jss, dss = [], [], []
    for start in range(0, n, block):
        sims = x[start : start + block] @ x.T
        i, j = np.nonzero(sims >= min_sim)
        keep = j > i + start
        iss.append(i[keep] + start)
        jss.append(j[keep])
        dss.append(1.0 - sims[i[keep], j[keep]])
    if not iss:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0, dtype=np.float32)
    return np.concatenate(iss), np.concatenate(jss), np.concatenate(dss)


def _single_threaded_blas() -> contextlib.AbstractContextManager[object]:
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional: only speed depends on it
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def _top_cells(points: np.ndarray, centroids: np.ndarray, probes: int) -> np.ndarray:
    """Indices of each point's `probes` most similar centroids, block by block on every core."""
    out = np.empty((len(points), probes), dtype=np.int64)
    block = 8_192
    rows = np.arange(block)

    def one(start: int) -> None:
        sims = points[start : start + block] @ centroids.T
        for p in range(probes):  # p argmax passes beat a full argpartition for small p
            best = sims.argmax(axis=1)
            out[start : start + len(sims), p] = best
            sims[rows[: len(sims)], best] = -np.inf

    # One block per thread, each with single-threaded BLAS: the argmax passes run in parallel too.
    with _single_threaded_blas(), ThreadPoolExecutor(_workers()) as pool:
        list(pool.map(one, range(0, len(points), block)))
    return out


def default_probes(max_distance: float) -> int:
    """Cells per vector: closer pairs share a cell more often, so a tight threshold needs fewer."""
    return 3 if max_distance <= 0.02 else 4 if max_distance <= 0.05 else 7


def cosine_pairs_ann(
    vectors: np.ndarray,
    max_distance: float,
    probes: int | None = None,
    low_dim: int = 64,
    seed: int = 0,
    normalised: bool = False,
) -> tuple[np.ndarray, ...]:
    """(i, j, cosine distance) for i < j within `max_distance`, approximately, for large sets.

    An inverted-file self-join: vectors are projected to `low_dim` dimensions by a random orthogonal
    map (angles are roughly kept, work drops 8x), clustered with faiss k-means into about sqrt(N)-sized
    cells, and each vector is listed in its `probes` nearest cells. All pairs inside a cell are compared
    with one matrix product in the projection, and the survivors of a loose cut are checked on the full
    vectors, so no false pair is returned: misses (a pair sharing no cell) are the only error. Unlike a
    k-nearest-neighbour search there is no cap on how many copies one photo may have. Pass
    `normalised=True` for unit rows to avoid a copy (1M x 512 float32 is 2 GB).
    """
    import faiss

    started = time.perf_counter()
    x = vectors if normalised else _normalise(vectors)
    n, dim = x.shape
    probes = probes or default_probes(max_distance)
    rng = np.random.default_rng(seed)
    proj_dim = min(low_dim, dim)
    basis, _ = np.linalg.qr(rng.standard_normal((dim, proj_dim)))
    basis = basis.astype(np.float32)
    low = np.empty((n, proj_dim), dtype=np.float32)
    for start in range(0, n, 65_536):
        low[start : start + 65_536] = x[start : start + 65_536] @ basis
    # Cells come from the first half of the projection (itself a random projection): assigning N
    # vectors to N/sqrt(N) centroids is the dominant cost, and it halves with the dimension.
    coarse_dim = max(1, proj_dim // 2)
    coarse = np.ascontiguousarray(low[:, :coarse_dim])
    faiss.normalize_L2(coarse)
    faiss.normalize_L2(low)

    cell_size = max(64, int(math.sqrt(n)))  # balances assignment (N x cells) against in-cell work
    nlist = max(1, n * probes // cell_size)
    # Cells only need to be compact, not optimal: a small sample and few iterations keep training cheap.
    sample = coarse[rng.choice(n, size=min(n, nlist * 5), replace=False)]
    kmeans = faiss.Kmeans(coarse_dim, nlist, niter=4, spherical=True, seed=seed, min_points_per_centroid=1)
    log.debug("ann: projected at %.1f s", time.perf_counter() - started)
    kmeans.train(sample)
    log.debug("ann: trained at %.1f s", time.perf_counter() - started)
    cells = _top_cells(coarse, kmeans.centroids, min(probes, nlist))
    del coarse
    flat = cells.reshape(-1)
    owner = np.repeat(np.arange(n), cells.shape[1])
    order = np.argsort(flat, kind="stable")
    bounds = np.searchsorted(flat[order], np.arange(nlist + 1))
    # Projected cosine of a true pair rarely falls more than ~0.15 below its full cosine; random pairs
    # in 64 dims sit near 0 +- 0.125, so this cut keeps true pairs and drops nearly all others.
    loose = 1.0 - 2.0 * max_distance - 0.15
    log.debug("ann: %d cells of ~%d, assigned in %.1f s", nlist, cell_size, time.perf_counter() - started)

    def join_cells(low: np.ndarray, first: int, stop: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
        found_a, found_b = [], []
        for c in range(first, stop):
            members = owner[order[bounds[c] : bounds[c + 1]]]
            if len(members) < 2:
                continue
            block = low[members]
            ii, jj = np.nonzero(block @ block.T >= loose)
            upper = ii < jj
            found_a.append(members[ii[upper]])
            found_b.append(members[jj[upper]])
        return found_a, found_b

    # Thousands of small products: one thread per core, each with single-threaded BLAS (numpy drops
    # the GIL inside them), beats BLAS's own threads, which only add overhead at this size.
    edges = np.linspace(0, nlist, _workers() * 4 + 1).astype(int)
    cand_a, cand_b = [], []
    with _single_threaded_blas(), ThreadPoolExecutor(_workers()) as pool:
        for found_a, found_b in pool.map(join_cells, [low] * (len(edges) - 1), edges[:-1], edges[1:]):
            cand_a += found_a
            cand_b += found_b
    del low
    log.debug("ann: in-cell join done at %.1f s", time.perf_counter() - started)
    if not cand_a:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0, dtype=np.float32)
    a, b = np.concatenate(cand_a), np.concatenate(cand_b)
    a, b = np.minimum(a, b), np.maximum(a, b)
    _, first = np.unique(a * n + b, return_index=True)
    a, b = a[first], b[first]
    iss, jss, dss = [], [], []
    for start in range(0, len(a), 131_072):
        pa, pb = a[start : start + 131_072], b[start : start + 131_072]
        sims = np.einsum("ij,ij->i", x[pa], x[pb])
        hit = sims >= 1.0 - max_distance
        iss.append(pa[hit])
        jss.append(pb[hit])
        dss.append(1.0 - sims[hit])
    return np.concatenate(iss), np.concatenate(jss), np.concatenate(dss)


def cosine_neighbours(
    vectors: np.ndarray, max_distance: float, ann_threshold: int, probes: int | None = None
) -> dict[int, dict[int, float]]:
    """Symmetric neighbour map of embedding rows within `max_distance`: exact when small, ANN when large.

    `vectors` is normalised in place.
    """
    if len(vectors) < 2:
        return {}
    vectors = _normalise(vectors, inplace=True)
    if len(vectors) < ann_threshold:
        i, j, d = cosine_pairs_exact(vectors, max_distance)
    else:
        log.info("similar tier: ANN search over %d embeddings", len(vectors))
        i, j, d = cosine_pairs_ann(vectors, max_distance, probes=probes, normalised=True)
    out: dict[int, dict[int, float]] = {}
    for a, b, dist in zip(i.tolist(), j.tolist(), d.tolist(), strict=True):
        out.setdefault(a, {})[b] = max(0.0, float(dist))
        out.setdefault(b, {})[a] = max(0.0, float(dist))
    return out


# -------------------------------------------------------------------------------------------- grouping


@dataclass
class _Cluster:
    """Record indices, best first; members[0] is the centre. `tier[i]` is how i relates to the centre."""

    members: list[int]
    tier: dict[int, str]
    distance: dict[int, float]


class _Ignore:
    """Pairs of paths declared "not duplicates"."""

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
        if not self.pairs:
            return False
        bset = set(b)
        return any(self.pairs.get(x, set()) & bset for x in a)


def _centre_cluster(
    items: list[_Cluster],
    neighbours: dict[int, dict[int, float]],
    tier: str,
    ignore: _Ignore,
    fits: Callable[[int, int], bool] | None = None,
) -> list[_Cluster]:
    """Merge items (sorted best-first) by centre linkage: each free item takes free neighbours of itself.
    `fits(i, j)` may veto a join, e.g. when a member of j is itself too far from i's centre."""
    taken = [False] * len(items)
    out: list[_Cluster] = []
    for i, centre in enumerate(items):
        if taken[i]:
            continue
        taken[i] = True
        merged = _Cluster(list(centre.members), dict(centre.tier), dict(centre.distance))
        for j, dist in sorted(neighbours.get(i, {}).items(), key=lambda kv: (kv[1], kv[0])):
            if taken[j] or ignore.conflicts(items[j].members, merged.members) or (fits and not fits(i, j)):
                continue
            taken[j] = True
            for m in items[j].members:
                merged.members.append(m)
                # Members of j are copies of j's centre: they relate to this centre through j's link.
                merged.tier[m] = tier
                merged.distance[m] = dist
        out.append(merged)
    return out


def find_groups(
    records: Sequence[FileRecord],
    config: GroupingConfig,
    ignored: Collection[frozenset[str]] = (),
    reference_dirs: Sequence[str] = (),
) -> list[Group]:
    """Exact, near and similar groups; each file is in at most one group. See the module docstring."""
    n = len(records)
    if n == 0:
        return []
    protected = [under_any(r.path, reference_dirs) for r in records]
    keys = [keeper_key(r, config, protected[i]) for i, r in enumerate(records)]
    ignore = _Ignore(ignored, [r.path for r in records])

    # Exact tier: MD5 classes, split where the user said "not duplicates".
    by_md5: dict[str, list[int]] = {}
    for i in sorted(range(n), key=keys.__getitem__):
        by_md5.setdefault(records[i].md5, []).append(i)
    units: list[_Cluster] = []
    for members in by_md5.values():
        parts: list[list[int]] = []
        for i in members:
            for part in parts:
                if not ignore.conflicts([i], part):
                    part.append(i)
                    break
            else:
                parts.append([i])
        for part in parts:
            units.append(_Cluster(part, {m: ("keep" if k == 0 else "exact") for k, m in enumerate(part)},
                                  {m: 0.0 for m in part}))
    units.sort(key=lambda u: keys[u.members[0]])

    # Near tier over units, keyed by any member with both hashes (members share bytes, so hashes).
    hashed = [next((m for m in u.members if records[m].dhash is not None and records[m].phash is not None), None)
              for u in units]
    near_ids = [k for k, m in enumerate(hashed) if m is not None]
    near_keys = [(records[hashed[k]].dhash, records[hashed[k]].phash) for k in near_ids]  # type: ignore[index]
    rotated = [records[hashed[k]].rotated_hashes for k in near_ids]  # type: ignore[index]
    local = hamming_neighbours(near_keys, config.near_threshold, rotated, config.hamming_brute_force_max)
    near_nbrs = {near_ids[a]: {near_ids[b]: d for b, d in row.items()} for a, row in local.items()}
    clusters = _centre_cluster(units, near_nbrs, "near", ignore)

    # Similar tier over the near clusters, by the embedding of each cluster's best member that has one.
    emb_owner = [next((m for m in c.members if records[m].embedding is not None), None) for c in clusters]
    sim_ids = [k for k, m in enumerate(emb_owner) if m is not None]
    if len(sim_ids) >= 2:
        vectors = np.stack([np.asarray(records[emb_owner[k]].embedding, dtype=np.float32) for k in sim_ids])  # type: ignore[index]
        local = cosine_neighbours(vectors, config.similar_threshold, config.ann_threshold, config.ann_probes)
        sim_nbrs = {sim_ids[a]: {sim_ids[b]: d for b, d in row.items()} for a, row in local.items()}

        def every_member_near_centre(i: int, j: int) -> bool:
            """No chaining across tiers: a near cluster joins only if each of its members that has an
            embedding is itself within the threshold of the centre's embedding."""
            centre = _unit(records[emb_owner[i]].embedding)  # type: ignore[index]
            return all(
                1.0 - float(centre @ _unit(records[m].embedding)) <= config.similar_threshold
                for m in clusters[j].members
                if records[m].embedding is not None
            )

        clusters = _centre_cluster(clusters, sim_nbrs, "similar", ignore, every_member_near_centre)

    groups: list[Group] = []
    for c in clusters:
        if len(c.members) < 2:
            continue
        keep = records[c.members[0]]
        tiers = {c.tier[m] for m in c.members[1:]}
        kind: Kind = "similar" if "similar" in tiers else "near" if "near" in tiers else "exact"
        members = [Member(keep, 0.0, "keep")]
        for m in c.members[1:]:
            rec = records[m]
            tier = "exact" if rec.md5 == keep.md5 else c.tier[m]
            members.append(Member(rec, 0.0 if tier == "exact" else _distance(keep, rec, tier, c.distance[m]), tier))  # type: ignore[arg-type]
        members[1:] = sorted(members[1:], key=lambda mb: (mb.distance, mb.record.path))
        groups.append(Group(kind, keep, members, frozenset(records[m].path for m in c.members if protected[m])))
    order = {"exact": 0, "near": 1, "similar": 2}
    groups.sort(key=lambda g: (order[g.kind], g.keep.path))
    log.debug("grouping: %d files -> %d groups", n, len(groups))
    return groups


def _unit(vector: np.ndarray | None) -> np.ndarray:
    v = np.asarray(vector, dtype=np.float32)
    return v / max(float(np.linalg.norm(v)), 1e-12)


def _distance(keep: FileRecord, rec: FileRecord, tier: str, link: float) -> float:
    """A member's own distance to the keeper where both sides allow it, else the distance of its link."""
    if tier == "near" and None not in (keep.dhash, keep.phash, rec.dhash, rec.phash):
        direct = bin((keep.dhash ^ rec.dhash) & MASK64).count("1") + bin((keep.phash ^ rec.phash) & MASK64).count("1")  # type: ignore[operator]
        return float(min(direct, link))
    if tier == "similar" and keep.embedding is not None and rec.embedding is not None:
        a, b = _normalise(np.stack([keep.embedding, rec.embedding]))
        return max(0.0, float(1.0 - a @ b))
    return float(link)

