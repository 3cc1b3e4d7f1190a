"""Similar-tier neighbour search at library scale: N random unit vectors with planted near-duplicates.

Measures the wall time of `cosine_pairs_ann` (the index the similar tier uses above `ann_threshold`),
the process's peak RSS (the vectors themselves included), and recall against exact search. Exact search
over all N x N pairs is out of reach on 2 cores, so recall is taken two ways: over the planted pairs
(each within the threshold by construction), and over every exact neighbour of a random sample of
queries, which also proves there are no unplanted pairs the planted set misses.

Usage: bench_ann.py [--n 1000000] [--dim 512] [--threshold 0.1] [--no-write]
"""

from __future__ import annotations

import argparse
import logging
import resource
import sys
import time

import numpy as np

from photodedup.client.grouping import GroupingConfig, cosine_pairs_ann, default_probes

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
from record import machine_line, write_section  # noqa: E402

log = logging.getLogger(__name__)


def planted_vectors(n: int, dim: int, n_dups: int, threshold: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors whose last `n_dups` rows are copies of distinct earlier rows rotated by a random angle
    with cosine distance uniform in [0, threshold]; returns (vectors, planted pairs (i, j) with i < j)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dim), dtype=np.float32)
    for start in range(0, n, 65_536):
        block = x[start : start + 65_536]
        block /= np.linalg.norm(block, axis=1, keepdims=True)
    src = rng.choice(n - n_dups, size=n_dups, replace=False)
    dst = np.arange(n - n_dups, n)
    base = x[src]
    noise = x[dst]  # random unit vectors, almost orthogonal to base in high dimension
    noise -= (noise * base).sum(axis=1, keepdims=True) * base
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    cos = 1.0 - rng.uniform(0.0, threshold * 0.98, size=(n_dups, 1)).astype(np.float32)
    x[dst] = cos * base + np.sqrt(1.0 - cos * cos) * noise
    return x, np.stack([src, dst], axis=1)


def exact_sample_pairs(x: np.ndarray, queries: np.ndarray, threshold: float) -> set[tuple[int, int]]:
    """Every pair (min, max) within `threshold` that involves one of `queries`, by brute force."""
    out: set[tuple[int, int]] = set()
    for start in range(0, len(queries), 256):
        q = queries[start : start + 256]
        sims = x[q] @ x.T
        rows, cols = np.nonzero(sims >= 1.0 - threshold)
        for r, c in zip(q[rows].tolist(), cols.tolist(), strict=True):
            if r != c:
                out.add((min(r, c), max(r, c)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--dup-fraction", type=float, default=0.01, help="share of rows that are planted copies")
    ap.add_argument("--threshold", type=float, default=0.1, help="max cosine distance")
    ap.add_argument("--probes", type=int, default=None, help="cells per vector (default: by threshold)")
    ap.add_argument("--sample", type=int, default=1000, help="queries checked against exact search")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    n_dups = max(1, int(args.n * args.dup_fraction))
    probes = args.probes or default_probes(args.threshold)
    t0 = time.perf_counter()
    x, planted = planted_vectors(args.n, args.dim, n_dups, args.threshold, seed=0)
    t_gen = time.perf_counter() - t0
    log.info("generated %d x %d in %.1f s", args.n, args.dim, t_gen)

    t0 = time.perf_counter()
    i, j, _ = cosine_pairs_ann(x, args.threshold, probes=probes, normalised=True)
    t_ann = time.perf_counter() - t0
    rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    found = set(zip(i.tolist(), j.tolist(), strict=True))
    planted_set = {(int(a), int(b)) for a, b in planted}
    recall_planted = len(found & planted_set) / len(planted_set)
    log.info("ANN %.1f s, peak RSS %.2f GB, recall on planted pairs %.4f", t_ann, rss_gb, recall_planted)

    rng = np.random.default_rng(1)
    # Half the sample from planted rows, so the check sees many true pairs, half uniformly at random.
    queries = np.unique(np.concatenate([
        rng.choice(planted[:, 1], size=args.sample // 2, replace=False),
        rng.choice(args.n, size=args.sample - args.sample // 2, replace=False),
    ]))
    t0 = time.perf_counter()
    exact = exact_sample_pairs(x, queries, args.threshold)
    t_exact = time.perf_counter() - t0
    recall_sample = len(exact & found) / len(exact) if exact else 1.0
    unplanted = len(exact - planted_set)
    log.info("exact on %d queries: %d pairs (%d unplanted) in %.1f s; ANN recall %.4f",
             len(queries), len(exact), unplanted, t_exact, recall_sample)

    section = f"""## Similar-tier ANN search (`benchmarks/bench_ann.py`)

{machine_line(("numpy", "faiss-cpu"))}. {args.n:,} random unit vectors of {args.dim} float32 dims with
{n_dups:,} planted near-duplicates at cosine distance uniform in [0, {args.threshold}] (threshold
{args.threshold}, {args.threshold / GroupingConfig().similar_threshold:.0f}x the similar tier's default). Index: random orthogonal projection to 64 dims, faiss
spherical k-means into cells of about sqrt(N) vectors, each vector listed in its {probes} nearest cells,
all pairs inside a cell compared, candidates re-checked on the full vectors (so precision is 1 by
construction). One run.

| N | ANN wall time | peak RSS (vectors included) | recall, planted pairs | recall vs exact, {len(queries)} queries | goal |
|---|---|---|---|---|---|
| {args.n:,} | {t_ann:.1f} s | {rss_gb:.2f} GB | {recall_planted:.4f} | {recall_sample:.4f} ({len(exact)} pairs, {unplanted} unplanted) | ≤ 60 s, ≤ 4 GB, ≥ 0.99 |

Generating the vectors took {t_gen:.1f} s and the exact check {t_exact:.1f} s (neither counted above).
Below `ann_threshold` (20,000 by default) the similar tier uses exact blocked search instead.
"""
    if not args.no_write:
        write_section("bench_ann", section)
    print(section)


if __name__ == "__main__":
    main()
