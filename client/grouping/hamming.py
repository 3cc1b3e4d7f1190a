"""Hamming search over 128-bit dHash||pHash keys: exact, by brute force when small, multi-index when large.

The one popcount of the codebase lives here (`popcount64`); every Hamming distance goes through it.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from photodedup.client.grouping.records import StoredWindows, window_digest
from photodedup.errors import PhotodedupError
from photodedup.heap import trim_heap

MASK64 = (1 << 64) - 1
_CHUNKS = 8  # multi-index hashing splits the 128 bits into eight 16-bit substrings


def popcount64(values: np.ndarray) -> np.ndarray:
    """Bits set per uint64 element."""
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(values).astype(np.int64)
    table = np.array([bin(i).count("1") for i in range(256)], dtype=np.int64)
    return table[values.view(np.uint8).reshape(*values.shape, 8)].sum(axis=-1)


def _bits8(values: np.ndarray) -> np.ndarray:
    """Bits set per uint64 element as uint8 (numpy 2's popcount as is; the table lookup before it)."""
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(values)
    return popcount64(values).astype(np.uint8)


def as_keys(pairs: Sequence[tuple[int, int]]) -> np.ndarray:
    """(dhash, phash) ints, signed or unsigned -> uint64 array (n, 2)."""
    out = np.zeros((len(pairs), 2), dtype=np.uint64)
    for i, (a, b) in enumerate(pairs):
        out[i, 0] = a & MASK64
        out[i, 1] = b & MASK64
    return out


def key_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise Hamming distance between two (n, 2) uint64 key arrays."""
    return popcount64(a[:, 0] ^ b[:, 0]) + popcount64(a[:, 1] ^ b[:, 1])


def hamming_bits(a: tuple[int, int], b: tuple[int, int]) -> int:
    """Hamming distance between two (dhash, phash) keys, signed or unsigned."""
    return int(key_distances(as_keys([a]), as_keys([b]))[0])


def _substring_bits(diff: np.ndarray) -> np.ndarray:
    """Bits set in each of the eight 16-bit substrings of (n, 2) uint64 XORs: (n, 8)."""
    return popcount64(np.ascontiguousarray(diff).view(np.uint16).astype(np.uint64)).reshape(len(diff), _CHUNKS)


def hamming_join_brute(
    queries: np.ndarray, table: np.ndarray, threshold: int, radius: int | None = None
) -> tuple[np.ndarray, ...]:
    """All (query, table, distance) within `threshold`, comparing every pair: for small sets and tests.

    With `radius`, a pair must also agree within `radius` bits on one of its eight 16-bit substrings:
    the rule `hamming_join_mih` answers exactly, so both give the same pairs."""
    qs, ts, ds = [], [], []
    for qi in range(len(queries)):
        d = key_distances(table, queries[qi : qi + 1])
        hit = np.nonzero(d <= threshold)[0]
        if radius is not None and len(hit):
            close = _substring_bits(table[hit] ^ queries[qi : qi + 1]).min(axis=1) <= radius
            hit = hit[close]
        qs.append(np.full(len(hit), qi, dtype=np.int64))
        ts.append(hit.astype(np.int64))
        ds.append(d[hit])
    if not qs:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    return np.concatenate(qs), np.concatenate(ts), np.concatenate(ds)


_masks_cache: dict[int, np.ndarray] = {}
# Candidates compared at once in `hamming_join_mih` (about 10 bytes each in its temporary arrays).
_BLOCK_ENTRIES = 1 << 20


def _blocks(count: np.ndarray, limit: int) -> list[tuple[int, int]]:
    """Consecutive ranges of queries whose candidate counts sum to about `limit` (a query with more is a
    range of its own)."""
    ends = np.cumsum(count)
    if ends[-1] <= limit:
        return [(0, len(count))]
    cuts = np.searchsorted(ends, np.arange(limit, ends[-1], limit), side="left") + 1
    edges = np.unique(np.concatenate(([0], np.minimum(cuts, len(count)), [len(count)])))
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:], strict=True)]


def _chunk_masks(radius: int) -> np.ndarray:
    if radius not in _masks_cache:
        values = np.arange(1 << 16, dtype=np.uint64)
        _masks_cache[radius] = values[popcount64(values) <= radius]
    return _masks_cache[radius]


def hamming_join_mih(
    queries: np.ndarray, table: np.ndarray, threshold: int, radius: int | None = None
) -> tuple[np.ndarray, ...]:
    """Multi-index hashing: exact results without comparing all pairs.

    By pigeonhole, two keys within `threshold` bits agree within `threshold // 8` bits on at least one of
    the eight 16-bit substrings; candidates are looked up per substring in sorted buckets (vectorised
    over all queries) and then checked on the full 128 bits. A smaller `radius` answers the narrower rule
    of `hamming_join_brute(..., radius)` exactly: every pair within 8 * (radius + 1) - 1 bits, and pairs
    up to `threshold` that agree that closely on some substring. The work grows with the probes per
    substring (697 at radius 3, 17 at radius 1), times the table's bucket size.
    """
    radius = threshold // _CHUNKS if radius is None else min(radius, threshold // _CHUNKS)
    masks = _chunk_masks(radius)
    found_q, found_t, found_d = [], [], []
    q0, q1 = np.ascontiguousarray(queries[:, 0]), np.ascontiguousarray(queries[:, 1])
    for chunk in range(_CHUNKS):
        col, shift = chunk // 4, np.uint64((chunk % 4) * 16)
        tv = ((table[:, col] >> shift) & np.uint64(0xFFFF)).astype(np.uint16)
        qv = ((queries[:, col] >> shift) & np.uint64(0xFFFF)).astype(np.int64)
        order = np.argsort(tv, kind="stable")  # a radix sort on 16-bit values
        # The table in bucket order, so a probe's candidates are one contiguous run of it.
        t0, t1 = table[order, 0], table[order, 1]
        starts = np.zeros((1 << 16) + 1, dtype=np.int64)
        np.cumsum(np.bincount(tv, minlength=1 << 16), out=starts[1:])
        for mask in masks.astype(np.int64):
            probe = qv ^ mask
            lo, hi = starts[probe], starts[probe + 1]
            count = hi - lo
            if not count.any():
                continue
            # Queries in blocks of about `_BLOCK_ENTRIES` candidates: the candidate arrays grow with the
            # square of the library (each query's bucket grows with the table), the blocks do not.
            for b0, b1 in _blocks(count, _BLOCK_ENTRIES):
                n, start = count[b0:b1], lo[b0:b1]
                total = int(n.sum())
                if total == 0:
                    continue
                qi = np.repeat(np.arange(b0, b1), n)
                si = np.arange(total) + np.repeat(start - (np.cumsum(n) - n), n)
                # uint8 popcounts: at most 128 bits, so their sum cannot overflow
                d = _bits8(q0[qi] ^ t0[si]) + _bits8(q1[qi] ^ t1[si])
                ok = np.flatnonzero(d <= threshold)
                found_q.append(qi[ok])
                found_t.append(order[si[ok]])
                found_d.append(d[ok].astype(np.int64))
    if not found_q:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    q, t, d = np.concatenate(found_q), np.concatenate(found_t), np.concatenate(found_d)
    # A pair close on several substrings is found several times.
    _, first = np.unique(q * len(table) + t, return_index=True)
    return q[first], t[first], d[first]


def _symmetric(a: np.ndarray, b: np.ndarray, d: np.ndarray) -> dict[int, dict[int, float]]:
    """{i: {j: bits}} from found (a, b, distance) rows, both ways, the smallest distance per pair, no self-pairs
    (`symmetric_pairs`, as dicts)."""
    return _rows(*symmetric_pairs(a, b, d))


def _rows(i: np.ndarray, j: np.ndarray, bits: np.ndarray) -> dict[int, dict[int, float]]:
    """Pairs as neighbour rows {i: {j: bits}}."""
    out: dict[int, dict[int, float]] = {}
    for x, y, dist in zip(i.tolist(), j.tolist(), bits.tolist(), strict=True):
        out.setdefault(x, {})[y] = float(dist)
    return out


def hamming_neighbours(
    keys: Sequence[tuple[int, int]],
    threshold: int,
    rotated: Sequence[Sequence[tuple[int, int]]] = (),
    brute_force_max: int = 2048,
) -> dict[int, dict[int, float]]:
    """Symmetric neighbour map {i: {j: bits}} of keys within `threshold`, rotated copies included."""
    table = as_keys(keys)
    owners = list(range(len(keys)))
    query_pairs = list(keys)
    for i, extra in enumerate(rotated):
        for pair in extra:
            owners.append(i)
            query_pairs.append(pair)
    queries = as_keys(query_pairs)
    join = hamming_join_brute if len(keys) <= brute_force_max else hamming_join_mih
    q, t, d = join(queries, table, threshold)
    owner = np.asarray(owners, dtype=np.int64)[q] if len(q) else q
    return _symmetric(owner, t, d)


def turned_neighbours(
    keys: Sequence[tuple[int, int]],
    rotated: Sequence[Sequence[tuple[int, int]]],
    threshold: int,
    brute_force_max: int = 2048,
) -> dict[int, dict[int, float]]:
    """Symmetric map {i: {j: bits}}: some turn of i (its `rotated` hashes) within `threshold` of j's key."""
    owners = [i for i, extra in enumerate(rotated) for _ in extra]
    if not owners:
        return {}
    queries = as_keys([pair for extra in rotated for pair in extra])
    join = hamming_join_brute if len(keys) <= brute_force_max else hamming_join_mih
    q, t, d = join(queries, as_keys(keys), threshold)
    return _symmetric(np.asarray(owners, dtype=np.int64)[q], t, d)


Windows = Sequence[tuple[int, int]] | np.ndarray | bytes | StoredWindows


def window_array(windows: Windows) -> np.ndarray:
    """A record's window hashes as an (n, 2) uint64 array, whether stored as bytes (the index's uint64
    little-endian pairs, viewed without a copy), left in the index, as an array or as int pairs."""
    if isinstance(windows, StoredWindows):
        return _read_stored([windows])[0]
    if isinstance(windows, (bytes, bytearray, memoryview)):
        return np.frombuffer(windows, dtype="<u8").reshape(-1, 2)
    if isinstance(windows, np.ndarray):
        return windows.reshape(-1, 2).astype(np.uint64, copy=False)
    return as_keys(windows)


def _read_stored(items: Sequence[StoredWindows]) -> list[np.ndarray]:
    """Window hashes left in the index, read back in one query per source, each checked against its digest:
    grouping must see the hashes it was digested (and its same-picture units keyed) with."""
    by_source: dict[int, list[int]] = {}
    for k, w in enumerate(items):
        by_source.setdefault(id(w.source), []).append(k)
    data: dict[int, bytes | None] = {}
    for ks in by_source.values():
        data.update(zip(ks, items[ks[0]].source.read_windows([items[k].path for k in ks]), strict=True))
    out = []
    for k, w in enumerate(items):
        blob = data[k]
        if blob is None or window_digest(blob) != w.digest:
            raise PhotodedupError(f"the index changed while grouping ({w.path}): run the command again")
        out.append(np.frombuffer(blob, dtype="<u8").reshape(-1, 2))
    return out


def _window_arrays(items: Sequence[Windows]) -> list[np.ndarray]:
    """`window_array` of each, those left in the index read together."""
    stored = [k for k, w in enumerate(items) if isinstance(w, StoredWindows)]
    read = dict(zip(stored, _read_stored([items[k] for k in stored]), strict=True))  # type: ignore[misc]
    return [read[k] if k in read else window_array(w) for k, w in enumerate(items)]


def window_key(windows: Windows) -> bytes:
    """16 bytes equal for equal window hashes whatever form they come in (a digest of the stored bytes):
    what same-picture units compare, without holding the hashes."""
    if isinstance(windows, StoredWindows):
        return windows.digest
    if isinstance(windows, bytes):
        return window_digest(windows)
    return window_digest(window_array(windows).astype("<u8").tobytes())


def _frame(windows: Windows) -> np.ndarray:
    """The full-frame pair (the first window) as uint64 (2,), without reading hashes left in the index."""
    if isinstance(windows, StoredWindows):
        return np.frombuffer(windows.frame, dtype="<u8")
    return window_array(windows)[0]


# Window hashes joined at once in `window_pairs` (16 bytes each, and about as much again in the search's
# bucket-ordered copy and indices): the table is searched in parts of about this many, so the join's working
# memory stays bounded (~20 MB a part, one part a core in flight, the heap trimmed as they finish) while the
# window hashes grow with the library (~94 a picture).
_PART_WINDOWS = 1 << 18
# Parts of the window table searched at once (one a core, at most this many).
JOIN_THREADS = 4


def window_neighbours(
    windows: Sequence[Windows],
    threshold: int,
    brute_force_max: int = 2048,
    radius: int | None = None,
) -> dict[int, dict[int, float]]:
    """Symmetric neighbour map {i: {j: bits}}: i's full-frame window within `threshold` of any window of j.

    `windows[i]` are record i's window hashes with the full frame first (`client.content.WINDOWS`), so a
    crop's full frame meets the window of its original that it is. Records without windows are skipped.
    `radius` narrows the rule as in `hamming_join_mih`: the search is exact for it whichever way it runs.
    `window_pairs` gives the same as arrays."""
    return _rows(*window_pairs(windows, threshold, brute_force_max, radius))


def window_pairs(
    windows: Sequence[Windows],
    threshold: int,
    brute_force_max: int = 2048,
    radius: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`window_neighbours` as arrays (i, j, bits), both ways round, each ordered pair once with its smallest
    distance, sorted by i then j: a large library's loose pairs (over a million among 200,000 generated
    photos) held as Python dicts took ~190 bytes each.

    Every full frame is searched against the windows of one part of the records at a time (`_PART_WINDOWS`),
    never a copy of all of them: the union of the parts' pairs is the whole join's, and memory stays bounded.
    """
    query_owner = np.asarray([i for i, w in enumerate(windows) if len(w)], dtype=np.int64)
    if len(query_owner) < 2:
        empty = np.zeros(0, dtype=np.int32)
        return empty, empty, empty.astype(np.int16)
    queries = np.empty((len(query_owner), 2), dtype=np.uint64)
    counts = np.empty(len(query_owner), dtype=np.int64)
    for k, i in enumerate(query_owner.tolist()):
        w = windows[i]
        queries[k] = _frame(w)
        counts[k] = len(w) if isinstance(w, StoredWindows) else len(window_array(w))
    join = hamming_join_brute if int(counts.sum()) <= brute_force_max else hamming_join_mih
    found_q, found_t, found_d = [], [], []

    def keep(a: int, b: int, future: Future[tuple[np.ndarray, ...]]) -> None:
        q, t, d = future.result()
        found_q.append(q)
        found_t.append(np.repeat(np.arange(a, b), counts[a:b])[t])  # each window's owner, as a query number
        found_d.append(d)
        trim_heap()  # each thread's malloc arena keeps what its part freed, unless told

    # The parts are searched on every core (numpy's array work releases the GIL), while this thread reads the
    # next part's hashes (the index's connection is this thread's); at most one part a core is in flight.
    threads = max(1, min(os.cpu_count() or 1, JOIN_THREADS))
    in_flight: deque[tuple[int, int, Future[tuple[np.ndarray, ...]]]] = deque()
    with ThreadPoolExecutor(threads, thread_name_prefix="window-join") as pool:
        for a, b in _blocks(counts, _PART_WINDOWS):  # owners, never split
            table = np.concatenate(_window_arrays([windows[i] for i in query_owner[a:b].tolist()]))
            in_flight.append((a, b, pool.submit(join, queries, table, threshold, radius)))
            del table
            while len(in_flight) > threads:
                keep(*in_flight.popleft())
        while in_flight:
            keep(*in_flight.popleft())
    q, t, d = np.concatenate(found_q), np.concatenate(found_t), np.concatenate(found_d)
    for found in (found_q, found_t, found_d):
        found.clear()
    pairs = symmetric_pairs(query_owner[q], query_owner[t], d)
    del q, t, d
    trim_heap()  # the join's working arrays, freed, would otherwise stay with the process
    return pairs


def symmetric_pairs(a: np.ndarray, b: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`_symmetric` as arrays: (i, j, bits) both ways round, no self-pairs, the smallest distance of each
    ordered pair, sorted by i then j (int32, int32, int16)."""
    own = a != b
    # Pictures as int32 and bits (at most 128) as int16: among 200,000 photos these arrays held 2.2 million pairs.
    a, b, d = a[own].astype(np.int32), b[own].astype(np.int32), d[own].astype(np.int16)
    i, j, bits = np.concatenate((a, b)), np.concatenate((b, a)), np.concatenate((d, d))
    del a, b, d
    order = np.lexsort((bits, j, i))  # by i, then j, the smallest distance first
    i, j, bits = i[order], j[order], bits[order]
    del order
    first = np.ones(len(i), dtype=bool)
    first[1:] = (i[1:] != i[:-1]) | (j[1:] != j[:-1])
    return i[first], j[first], bits[first]
