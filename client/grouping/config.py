"""Grouping thresholds and keeper policy, built once from Settings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from photodedup.settings import DEFAULT_KEEP_POLICY

if TYPE_CHECKING:
    from photodedup.settings import Settings

# The default rule order lives with the settings it is the default of.
KEEP_POLICY: tuple[str, ...] = DEFAULT_KEEP_POLICY
# Lower index is preferred: camera RAW and HEIC keep more of the original than a JPEG export.
FORMAT_PREFERENCE: tuple[str, ...] = (
    "DNG",
    "CR2",
    "CR3",
    "NEF",
    "ARW",
    "ORF",
    "RW2",
    "RAF",
    "RAW",
    "HEIC",
    "HEIF",
    "AVIF",
    "TIFF",
    "PNG",
    "WEBP",
    "JPEG",
    "BMP",
    "GIF",
)


# The similar tier's cosine-distance threshold for the models it has been calibrated on, by architecture:
# a threshold means something only in one model's embedding space. ViT-B-32's is Immich's default,
# chosen there on its CLIP weights. A model not listed (the 2-layer `photodedup-tiny` test config) or
# random weights (every picture within 0.01 of every other) has none: grouping look-alikes by it would
# only offer every pair of unrelated pictures for verification. `--similar-threshold` sets one anyway.
CALIBRATED_SIMILAR_THRESHOLDS: dict[str, float] = {"ViT-B-32": 0.01}


def calibrated_similar_threshold(model_id: str | None) -> float | None:
    """The calibrated threshold for a model id (`<model>@<weights>[+<quantisation>]`), or None."""
    if not model_id:
        return None
    model, _, weights = model_id.partition("@")
    if weights.startswith("random"):
        return None
    return CALIBRATED_SIMILAR_THRESHOLDS.get(model)


def similar_off_reason(model_id: str) -> str:
    """One line: why a scan that made embeddings for `model_id` groups nothing by them."""
    why = "random weights" if model_id.partition("@")[2].startswith("random") else "not calibrated for this model"
    return (
        f"similar tier skipped: {model_id} has no calibrated similar threshold ({why}); its embeddings are kept, "
        "--similar-threshold groups by them anyway"
    )


@dataclass
class GroupingConfig:
    """Thresholds and keeper policy; build it from Settings with `from_settings`."""

    near_threshold: int = 20
    similar_threshold: float | None = 0.01  # None: no similar tier (see `calibrated_similar_threshold`)
    keep_policy: tuple[str, ...] = KEEP_POLICY
    ann_threshold: int = 20_000
    format_preference: tuple[str, ...] = FORMAT_PREFERENCE
    ann_probes: int | None = None  # cells per vector in the ANN join; None: by threshold
    hamming_brute_force_max: int = 2048
    # Loose first stage for geometric verification: a full frame within this many bits of any window
    # (or full frame) of another picture is a candidate; it joins only if the verifier confirms it.
    # Off when it is not above near_threshold, or near_threshold is 0 (identical hashes only).
    candidate_threshold: int = 30
    # ... and agrees within this many bits on one of the pair's eight 16-bit substrings, which every pair
    # within 8 * (radius + 1) - 1 = 15 bits does. Multi-index search answers that rule exactly with 17
    # probes per substring instead of 697 for the whole 30-bit ball, whose candidates grow as the square
    # of the library (5,000 pictures: a minute). On the dev set the rule keeps 539 of the 541 pairs
    # within 30 bits (the two lost are a random crop and a small rotation; `benchmarks/bench_quality.py`).
    candidate_radius: int = 1
    verify: bool = True  # the scanner passes a geometric verifier to find_groups
    # Weak pictures: a hash distance says little about a picture whose content is under `weak_side` px on
    # its long side (icons, thumbnails of graphics) or whose 32 x 32 reduction has a grey standard
    # deviation under `weak_contrast` (sky, night shots, text on white). Their pairs join only when the
    # strict check confirms them (`client.strict.compare_strict`); without a verifier, not at all.
    weak_side: int = 64
    # A pair of pictures both under `icon_side` px is icon-sized too: a theme's 64 and 96 px glyphs (battery
    # levels, face emotes) are within the near threshold of one another (877 of 1,500 such pairs under
    # /usr/share are different pictures; the strict check accepts 6 of them). Both, not either: a photo's
    # half-size thumbnail still joins its original on hashes (as a weak picture it lost 6 % of the dev set's
    # resize_half copies). Two icon-sized pictures are no loose candidates of each other, and the second hop
    # never walks through one (`near.near_tier`). 0 turns it off.
    icon_side: int = 128
    weak_contrast: float = 12.5
    # A drawn graphic is weak too: at least `weak_transparent` of its frame see-through (a cut-out: icons, logos,
    # stickers; `client.content.transparent_share`). A theme's 512 px place icons, one folder with different
    # emblems, are 9-20 bits apart; no photo of the dev or camera sets has a see-through pixel. Unknown (files
    # hashed before it was measured) counts as not drawn. Above 1 turns it off.
    weak_transparent: float = 0.1
    weak_candidates: int = 8  # closest loose candidates a weak picture keeps (see `near.near_tier`)
    # Closest loose candidates (beyond its hash neighbours) each photo keeps for verification: the loose
    # net's chance meetings between unrelated photos grow with the square of the library, so without a cap
    # verification would too. A pair is kept if either side keeps it: on the dev set every true copy is
    # among the 5 closest of one side (among the 8 closest of both, where one photo's crops meet one another).
    loose_candidates: int = 8
    # A pixel-turned match (a hash of one picture turned by 90/180/270 degrees against another) counts only
    # between pictures that are not weak, whose own turns are at least `turn_asymmetry` bits from them (a
    # turn-symmetric picture says nothing by matching turned), and when the turned distance is at least
    # `turn_margin` bits below the unturned one. EXIF-rotated copies are upright before hashing: unaffected.
    turn_asymmetry: int = 24
    turn_margin: int = 6
    # Pictures with fewer content pixels than this take part in exact grouping only (0: every picture).
    min_pixels: int = 0

    def __post_init__(self) -> None:
        unknown = [k for k in self.keep_policy if k not in KEEP_POLICY]
        if unknown:
            raise ValueError(f"unknown keep policy {unknown}: use {', '.join(KEEP_POLICY)}")
        if not 0 <= self.near_threshold <= 128:
            raise ValueError("near_threshold is in bits of the 128-bit dHash||pHash key: 0..128")

    @classmethod
    def from_settings(cls, settings: Settings, model_id: str | None = None) -> GroupingConfig:
        """The settings' thresholds; an unset similar threshold is the calibrated one of `model_id`'s model."""
        similar = settings.grouping.similar_threshold
        return cls(
            near_threshold=settings.grouping.near_threshold,
            similar_threshold=similar if similar is not None else calibrated_similar_threshold(model_id),
            keep_policy=tuple(settings.grouping.keep_policy),
            ann_threshold=settings.grouping.ann_threshold,
            candidate_threshold=settings.grouping.candidate_threshold,
            verify=settings.grouping.verify,
            min_pixels=settings.grouping.min_pixels,
        )
