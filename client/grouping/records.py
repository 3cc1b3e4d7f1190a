"""What grouping reads (one record per scanned file) and what it returns (groups of members by tier)."""

from __future__ import annotations

import enum
import hashlib
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from photodedup.client.grouping.evidence import Evidence

if TYPE_CHECKING:
    import numpy as np


class Tier(enum.StrEnum):
    """How a file matches its group's keeper; a group's kind is its loosest member's tier.

    A str enum: it compares equal to, and serialises as, the plain names reports and journals use.
    """

    EXACT = "exact"
    NEAR = "near"
    SIMILAR = "similar"
    # Same scene, different shot: embedding neighbours that geometric verification rejected. Shown for
    # review, never acted on (a series member is never a target).
    SERIES = "series"


_PAIR = struct.Struct("<2Q")


class HashPairs(Sequence[tuple[int, int]]):
    """(dhash, phash) pairs held as the index stores them, 16 bytes each (uint64 little-endian), read as a
    tuple of unsigned int pairs (equal to one, with its repr): the three turns' hashes cost ~450 bytes a record
    as tuples of ints and ~130 so, a large library's records being held together while it is grouped."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data) // _PAIR.size

    def __getitem__(self, k: int | slice) -> Any:
        if isinstance(k, slice):
            return tuple(self)[k]
        n = len(self)
        if not -n <= k < n:
            raise IndexError("hash pair index out of range")
        return _PAIR.unpack_from(self.data, _PAIR.size * (k % n))

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return _PAIR.iter_unpack(self.data)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, HashPairs):
            return self.data == other.data
        if isinstance(other, tuple):
            return tuple(self) == other
        return NotImplemented

    def __hash__(self) -> int:
        return hash(tuple(self))

    def __repr__(self) -> str:
        return repr(tuple(self))


class WindowSource(Protocol):
    """Where window hashes left out of memory are read back from (the index)."""

    def read_windows(self, paths: Sequence[str]) -> list[bytes | None]:
        """The stored window bytes of each path, in order; None for a path no longer there."""
        ...


def window_digest(data: bytes) -> bytes:
    """16 bytes that tell stored window hashes apart (what grouping compares and digests of them)."""
    return hashlib.blake2b(data, digest_size=16).digest()


@dataclass(frozen=True, slots=True)
class StoredWindows:
    """A record's window hashes left in the index until the loose search reads them, a part of the library at
    a time: ~94 hashes a picture are 1.5 KB, most of a record's memory, and only that search reads them all.
    `frame` is the full-frame pair (the search's query, 16 bytes) and `digest` tells the stored bytes apart;
    `hamming.window_array` reads them back and checks the digest."""

    source: WindowSource = field(compare=False, repr=False)
    path: str = field(compare=False)
    count: int
    frame: bytes
    digest: bytes

    def __len__(self) -> int:
        return self.count

    @classmethod
    def of(cls, source: WindowSource, path: str, data: bytes) -> StoredWindows:
        return cls(source, path, len(data) // 16, data[:16], window_digest(data))


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
    # The index gives them packed (`HashPairs`), which reads as the same tuple.
    rotated_hashes: tuple[tuple[int, int], ...] | HashPairs = ()
    # The picture inside uniform borders, (left, top, right, bottom) in upright pixels; None: whole frame.
    content: tuple[int, int, int, int] | None = None
    # Pixels of the picture itself (frame less added bars and a rotated copy's filled corners); None: unknown.
    picture_pixels: int | None = None
    # (dhash, phash) of sub-windows of the content, the full frame first (`client.content.WINDOWS`):
    # a cropped copy's full-frame window meets one of its original's. Empty when not computed. The index
    # gives them left in it (`StoredWindows`: `Index.records`) or as the stored bytes (uint64 pairs,
    # little-endian, read without numpy: `Index.records_of`); int pairs and (n, 2) arrays are accepted too.
    # `hamming.window_array` reads any of them.
    windows: tuple[tuple[int, int], ...] | np.ndarray | bytes | StoredWindows = ()
    # Keeper signals (`client.fidelity`): camera EXIF present, estimated quality (0: a lossless file
    # carrying JPEG block traces), a grey picture. None when not computed.
    camera: bool | None = None
    quality: int | None = None
    grey: bool | None = None
    # Grey standard deviation of the content at 32 x 32 px (`client.content.contrast`); None: unknown.
    contrast: float | None = None
    # Share of the frame at most half opaque (`client.content.transparent_share`): a cut-out is a drawn
    # graphic (`near.is_drawn`). None: unknown (hashed before it was measured), read as not drawn.
    transparent: float | None = None

    @property
    def content_pixels(self) -> int:
        """Pixels of the picture itself, borders (and a rotated copy's filled corners) excluded."""
        if self.picture_pixels is not None:
            return self.picture_pixels
        if self.content is None:
            return self.width * self.height
        left, top, right, bottom = self.content
        return max(0, right - left) * max(0, bottom - top)


@dataclass
class Member:
    """A file in a group: `tier` and `distance` (0 exact, Hamming bits, cosine distance) are to the keeper.

    The keeper's own member has tier EXACT and distance 0; whether a member is the keeper is
    `member.record is group.keep`. `evidence` is what was found against the keeper (hash distance and
    turn, what verification measured), for people; None for the keeper, exact copies and when unknown.
    """

    record: FileRecord
    distance: float
    tier: Tier = Tier.EXACT
    evidence: Evidence | None = None


@dataclass
class Group:
    """Files that are copies of `keep`; `members` include it. `protected` are reference-dir paths."""

    kind: Tier
    keep: FileRecord
    members: list[Member]
    protected: frozenset[str] = field(default_factory=frozenset)

    @property
    def targets(self) -> list[Member]:
        """Members an action may touch: not the keeper, not under a reference dir, not a series shot."""
        return [
            m
            for m in self.members
            if m.record is not self.keep and m.record.path not in self.protected and m.tier is not Tier.SERIES
        ]

    @property
    def reclaimable_bytes(self) -> int:
        return sum(m.record.size for m in self.targets)
