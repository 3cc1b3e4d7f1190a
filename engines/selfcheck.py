"""Parity self-check: may a cheaper model's vectors stand in for the reference model's?

Accepted only if every image's cosine to its reference vector is at least `min_cosine` and each image's
nearest neighbour among the checked images is the same as with the reference. A reference neighbour that
the reference itself cannot tell apart from the runner-up (gap below `tie_gap`) is a tie, and either
answer is accepted for it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MIN_COSINE = 0.995
TIE_GAP = 1e-3
CHECK_IMAGES = 16


@dataclass(frozen=True)
class ParityResult:
    passed: bool
    min_cosine: float
    neighbours_changed: int
    images: int
    reason: str

    def summary(self) -> str:
        return (
            f"{self.images} images, min cosine {self.min_cosine:.5f}, "
            f"nearest neighbours changed {self.neighbours_changed}"
        )


def _unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, np.float64)
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)


def check_parity(
    reference: np.ndarray, candidate: np.ndarray, min_cosine: float = MIN_COSINE, tie_gap: float = TIE_GAP
) -> ParityResult:
    """Compare [N, D] vectors of the same N images from the reference and the candidate model."""
    if reference.shape != candidate.shape or reference.ndim != 2 or len(reference) < 2:
        raise ValueError(f"need two [N>=2, D] arrays of one shape, got {reference.shape} and {candidate.shape}")
    ref, cand = _unit(reference), _unit(candidate)
    n = len(ref)
    cos = (ref * cand).sum(axis=1)
    if not np.all(np.isfinite(cand)):
        cos = np.full(n, -1.0)
    ref_sim, cand_sim = ref @ ref.T, cand @ cand.T
    np.fill_diagonal(ref_sim, -np.inf)
    np.fill_diagonal(cand_sim, -np.inf)
    ref_nn, cand_nn = ref_sim.argmax(axis=1), cand_sim.argmax(axis=1)
    changed = 0
    for i in range(n):
        if ref_nn[i] == cand_nn[i]:
            continue
        if ref_sim[i, ref_nn[i]] - ref_sim[i, cand_nn[i]] >= tie_gap:
            changed += 1
    min_cos = float(cos.min())
    reasons = []
    if min_cos < min_cosine:
        reasons.append(f"min cosine {min_cos:.5f} < {min_cosine}")
    if changed:
        reasons.append(f"nearest neighbour changed for {changed} of {n} images")
    return ParityResult(not reasons, min_cos, changed, n, "; ".join(reasons) or "ok")


def check_images(n: int = CHECK_IMAGES, size: int = 224) -> list[np.ndarray]:
    """Fixed photo-like images (smooth gradients, discs, sensor noise), model-sized.

    Half are independent photos; half are edits of those (crop-shift, brightness), so neighbour order
    among them means something."""
    from photodedup.testing import synthetic_photo

    base = [synthetic_photo(1000 + i, (size + 32, size + 32)) for i in range((n + 1) // 2)]
    out: list[np.ndarray] = []
    for i, img in enumerate(base):
        out.append(np.ascontiguousarray(img[:size, :size]))
        if len(out) < n:
            edit = img[16 + i % 8 : 16 + i % 8 + size, 8 : 8 + size].astype(np.int16) + 12
            out.append(np.clip(edit, 0, 255).astype(np.uint8))
    return out
