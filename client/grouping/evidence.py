"""What joined a member to its keeper, for people to judge (the review page, the JSON report).

Grouping decides on hashes, embeddings and the verifier's yes or no; this module only keeps what was
found along the way and says it in a person's terms: the Hamming distance and the pixel turn of a hash
match, and for a geometrically verified pair where the member lies in the keeper (the crop box in the
keeper's upright pixels), its tilt and scale, RANSAC inliers, coverage and the share of cells that
disagreed. Nothing here changes a decision.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from photodedup.client.grouping.records import FileRecord

# A box edge within this share of the keeper's side counts as the keeper's own edge ("whole keeper").
_EDGE = 0.01


def invert_affine(t: tuple[float, ...]) -> tuple[float, ...]:
    """The inverse of a 2x3 affine map given row-major as (a, b, c, d, e, f)."""
    a, b, c, d, e, f = t
    det = a * e - b * d
    if abs(det) < 1e-12:
        raise ValueError("the transform is not invertible")
    ia, ib, id_, ie = e / det, -b / det, -d / det, a / det
    return (ia, ib, -(ia * c + ib * f), id_, ie, -(id_ * c + ie * f))


@dataclass(frozen=True)
class Evidence:
    """Why a member is in its group, measured against `against` (the keeper when grouping made it).

    `transform` maps the member's upright full-size pixels onto the keeper's; `box` is the region of the
    keeper the member covers (left, top, right, bottom in the keeper's upright pixels), `keeper_box` the
    keeper's own picture (its content box, or its whole frame) that the box is a part of.
    """

    against: str
    hash_bits: int | None = None  # Hamming distance of dHash||pHash to the keeper's (after `turned`)
    turned: int = 0  # degrees the member's pixels are turned counter-clockwise from the keeper's (by hashes)
    verified: bool = False  # geometric verification said "same picture"
    strict: bool = False  # ... through the strict check for weak pictures
    aligned_by: str = ""  # "features" or "content boxes"
    transform: tuple[float, ...] | None = None
    box: tuple[int, int, int, int] | None = None
    keeper_box: tuple[int, int, int, int] | None = None
    inliers: int = 0
    coverage: float = 0.0
    bad_cells: float = 0.0

    @property
    def angle(self) -> float | None:
        """Degrees the member is tilted counter-clockwise against the keeper (the fitted transform's rotation)."""
        if self.transform is None:
            return None
        return math.degrees(math.atan2(self.transform[3], self.transform[0]))

    @property
    def scale(self) -> float | None:
        """How much larger the keeper is than the member (linear; the square root of the area ratio)."""
        if self.transform is None:
            return None
        a, b, _, d, e, _ = self.transform
        return math.sqrt(abs(a * e - b * d))

    @property
    def is_crop(self) -> bool:
        """The member covers only part of the keeper's picture."""
        if self.box is None or self.keeper_box is None:
            return False
        kl, kt, kr, kb = self.keeper_box
        w, h = max(kr - kl, 1), max(kb - kt, 1)
        left, top, right, bottom = self.box
        return (
            (left - kl) / w > _EDGE or (top - kt) / h > _EDGE or (kr - right) / w > _EDGE or (kb - bottom) / h > _EDGE
        )

    def describe(self) -> str:
        """One line for people, e.g. "crop of the keeper: x 12–88 %, y 5–95 %, tilted 3.1°, 412 inliers"."""
        parts: list[str] = []
        if self.verified:
            if self.box is not None and self.keeper_box is not None:
                kl, kt, kr, kb = self.keeper_box
                w, h = max(kr - kl, 1), max(kb - kt, 1)
                left, top, right, bottom = self.box
                if self.is_crop:
                    parts.append(
                        f"crop of the keeper: x {100 * (left - kl) / w:.0f}–{100 * (right - kl) / w:.0f} %, "
                        f"y {100 * (top - kt) / h:.0f}–{100 * (bottom - kt) / h:.0f} % "
                        f"({left},{top}–{right},{bottom} px)"
                    )
                else:
                    parts.append("covers the whole keeper")
            angle, scale = self.angle, self.scale
            if angle is not None and abs(angle) >= 0.5:
                parts.append(f"tilted {abs(angle):.1f}° {'counter-clockwise' if angle > 0 else 'clockwise'}")
            if scale is not None and abs(scale - 1.0) >= 0.02:
                parts.append(f"scale ×{scale:.2f}")
            check = "strict check" if self.strict else "verified"
            if not self.aligned_by:
                parts.append(f"{check} (no detail stored)")
            elif self.aligned_by == "content boxes":
                parts.append(f"{check}: content boxes laid on each other")
            else:
                parts.append(f"{check}: {self.inliers} inliers, coverage {self.coverage:.0%}")
            if self.aligned_by:
                parts.append(f"{self.bad_cells:.0%} of cells disagree")
        if self.hash_bits is not None:
            turn = {90: "90° counter-clockwise", 180: "180°", 270: "90° clockwise"}.get(self.turned)
            parts.append(f"hash distance {self.hash_bits} bits" + (f", turned {turn}" if turn else ""))
        return ", ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        """For the JSON report: the measured values, None where unknown."""
        # Shallow: every field is a scalar or a tuple of scalars, and `dataclasses.asdict`'s deep copy was
        # a tenth of an unchanged rescan's time in a 4,000-file report.
        out = {name: getattr(self, name) for name in _EVIDENCE_FIELDS}
        out["angle"], out["scale"], out["crop"] = self.angle, self.scale, self.is_crop
        return out

    def against_other(self, keeper: FileRecord, member: FileRecord) -> Evidence:
        """The same finding seen from the other side: `keeper` becomes the member, `member` the keeper."""
        hashed = hash_evidence(member, keeper, self.hash_bits if self.hash_bits is not None else math.inf)
        if not self.verified or self.transform is None:
            return hashed if self.hash_bits is not None else Evidence(member.path)
        return dataclasses.replace(
            _placed(member, keeper, invert_affine(self.transform), hashed),
            verified=True,
            strict=self.strict,
            aligned_by=self.aligned_by,
            inliers=self.inliers,
            coverage=self.coverage,
            bad_cells=self.bad_cells,
        )


def _frame(record: FileRecord) -> tuple[int, int, int, int]:
    return record.content or (0, 0, record.width, record.height)


def _placed(keep: FileRecord, rec: FileRecord, transform: tuple[float, ...], base: Evidence) -> Evidence:
    """`base` with the transform (rec's upright pixels to keep's) and the box rec covers in keep."""
    a, b, c, d, e, f = transform
    left, top, right, bottom = _frame(rec)
    corners = [(x, y) for x in (left, right) for y in (top, bottom)]
    xs = [a * x + b * y + c for x, y in corners]
    ys = [d * x + e * y + f for x, y in corners]
    kl, kt, kr, kb = _frame(keep)
    box = (
        round(min(max(min(xs), kl), kr)),
        round(min(max(min(ys), kt), kb)),
        round(min(max(max(xs), kl), kr)),
        round(min(max(max(ys), kt), kb)),
    )
    return dataclasses.replace(base, transform=transform, box=box, keeper_box=(kl, kt, kr, kb))


def _turn(keep: FileRecord, rec: FileRecord) -> tuple[float, int]:
    """The closest pixel turn between the two by their turned hashes: (bits, degrees rec is turned
    counter-clockwise from keep), or inf.

    Turn angles are known only when a record holds all three turns in hashing's order (90, 180, 270)."""
    from photodedup.client.grouping.hamming import hamming_bits  # numpy: only when hashes are compared

    best: tuple[float, int] = (math.inf, 0)
    own_rec, own_keep = (rec.dhash, rec.phash), (keep.dhash, keep.phash)
    if len(rec.rotated_hashes) == 3:
        for k, h in enumerate(rec.rotated_hashes, 1):
            best = min(best, (hamming_bits(h, own_keep), 360 - 90 * k))  # type: ignore[arg-type]
    if len(keep.rotated_hashes) == 3:
        for k, h in enumerate(keep.rotated_hashes, 1):
            best = min(best, (hamming_bits(own_rec, h), 90 * k))  # type: ignore[arg-type]
    return best


def hash_evidence(keep: FileRecord, rec: FileRecord, link: float) -> Evidence:
    """How the two files' hashes compare: their distance, through a pixel turn when the turn is what is
    close (closer than unturned, and no farther than the link grouping joined them by)."""
    from photodedup.client.grouping.hamming import hamming_bits

    if None in (keep.dhash, keep.phash, rec.dhash, rec.phash):
        return Evidence(keep.path)
    plain = hamming_bits((keep.dhash, keep.phash), (rec.dhash, rec.phash))  # type: ignore[arg-type]
    bits, degrees = _turn(keep, rec)
    if bits < plain and bits <= link:
        return Evidence(keep.path, hash_bits=int(bits), turned=degrees)
    return Evidence(keep.path, hash_bits=int(plain))


class VerdictLog:
    """Wraps a grouping verifier: answers grouping with its yes or no, and keeps what it found for the
    members' evidence. A verifier may return a bool (nothing to keep) or a verdict with `.same` and, when
    known, `.transform` (a's upright pixels to b's), `.inliers`, `.coverage`, `.bad_cells`, `.strict`
    and `.aligned_by` (`client.verify.Verdict`)."""

    def __init__(self, verifier: Callable[..., Any]) -> None:
        self.verifier = verifier
        self.found: dict[tuple[str, str], Any] = {}  # (md5 a, md5 b) -> verdict of a against b

    def prefetch(self, pairs: Sequence[tuple[FileRecord, FileRecord, bool]]) -> None:
        """Let the verifier answer these (a, b, strict) ahead, in parallel, when it can."""
        prefetch = getattr(self.verifier, "prefetch", None)
        if prefetch is not None:
            prefetch(pairs)

    def __call__(self, a: FileRecord, b: FileRecord, strict: bool = False) -> bool:
        result = self.verifier(a, b, strict=True) if strict else self.verifier(a, b)
        same = bool(getattr(result, "same", result))
        if same and not isinstance(result, bool):
            self.found[(a.md5, b.md5)] = result
        return same

    def evidence(self, keep: FileRecord, rec: FileRecord, link: float, hashed: bool) -> Evidence | None:
        """What is known of `rec` against `keep`: the verdict between them (either way round) and, when
        `hashed` (a near-tier member), how their hashes compare; None when nothing was found."""
        base = hash_evidence(keep, rec, link) if hashed else Evidence(keep.path)
        verdict, transform = self.found.get((rec.md5, keep.md5)), None
        if verdict is not None:
            transform = getattr(verdict, "transform", None)
        elif (verdict := self.found.get((keep.md5, rec.md5))) is not None:
            transform = getattr(verdict, "transform", None)
            transform = None if transform is None else invert_affine(transform)
        if verdict is None:
            return base if base.hash_bits is not None else None
        if not getattr(verdict, "aligned_by", ""):  # a verdict stored before details were: its decision only
            return dataclasses.replace(base, verified=True, strict=bool(getattr(verdict, "strict", False)))
        found = dataclasses.replace(
            base,
            verified=True,
            strict=bool(getattr(verdict, "strict", False)),
            aligned_by=str(getattr(verdict, "aligned_by", "")),
            inliers=int(getattr(verdict, "inliers", 0)),
            coverage=float(getattr(verdict, "coverage", 0.0)),
            bad_cells=float(getattr(verdict, "bad_cells", 0.0)),
        )
        return found if transform is None else _placed(keep, rec, transform, found)


def evidence_for(keep: FileRecord, rec: FileRecord, near: bool, link: float, log: VerdictLog | None) -> Evidence | None:
    """A member's evidence against its keeper (`near`: it joined through hashes), or None."""
    if log is not None:
        return log.evidence(keep, rec, link, near)
    return hash_evidence(keep, rec, link) if near else None


_EVIDENCE_FIELDS = tuple(f.name for f in dataclasses.fields(Evidence))
