"""Cosine search over embeddings: an exact blocked matrix product for small sets, an inverted-file
self-join (faiss k-means cells) for large ones. Both return only true pairs within the threshold."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from photodedup.imaging import l2_normalize

log = logging.getLogger(__name__)


def cosine_pairs_exact(vectors: np.ndarray, max_distance: float) -> tuple[np.ndarray, ...]:
    """(i, j, cosine distance) for i < j within `max_distance`: blocked matrix product, exact."""
    x = l2_normalize(vectors)
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
    x = vectors if normalised else l2_normalize(vectors)
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
    l2_normalize(coarse, inplace=True)
    l2_normalize(low, inplace=True)

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
    vectors = l2_normalize(vectors, inplace=True)
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
