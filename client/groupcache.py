"""The last grouping answer, kept in the index under a digest of everything it was computed from.

Grouping is a pure function of the records (what the index knows of each file), the configuration, the
"not duplicates" decisions, the reference folders and the code that groups and verifies. An unchanged rescan
would redo the near tier's searches and the loose window join (seconds for ten thousand pictures) only to
get the same groups; `load` hands back the stored answer when, and only when, the digest of those inputs
matches byte for byte. Any change to a file, a decision, a setting or the grouping code makes a new digest,
and the groups are computed again and stored in place of the old ones.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import logging
import sqlite3
import zlib
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from photodedup.client.grouping.evidence import Evidence
from photodedup.client.grouping.records import FileRecord, Group, Member, Tier

if TYPE_CHECKING:
    from photodedup.client.grouping import GroupingConfig
    from photodedup.client.index import Index

log = logging.getLogger(__name__)

# Modules whose code decides groups: a change to any of them (an upgrade, a fix) is a change of input.
_DECIDING_CODE = (
    "photodedup.client.grouping",
    "photodedup.client.verify",
    "photodedup.client.strict",
    "photodedup.client.verdicts",
    "photodedup.client.lineage",
    "photodedup.client.sources",
)
_code_digest: str | None = None


def _code() -> str:
    """Digest of the grouping and verification source, read once per process."""
    global _code_digest
    if _code_digest is None:
        from photodedup import __version__

        h = hashlib.blake2b(digest_size=16)
        h.update(__version__.encode())
        for name in _DECIDING_CODE:
            spec = importlib.util.find_spec(name)
            origin = Path(spec.origin) if spec is not None and spec.origin else None
            if origin is None or not origin.is_file():
                continue  # no readable source (a frozen build): the version above stands in
            files = sorted(origin.parent.glob("*.py")) if origin.name == "__init__.py" else [origin]
            for f in files:
                h.update(f.name.encode() + b"\0" + f.read_bytes())
        _code_digest = h.hexdigest()
    return _code_digest


def grouping_digest(
    records: Sequence[FileRecord],
    config: GroupingConfig,
    ignored: Collection[frozenset[str]],
    reference_dirs: Sequence[str],
) -> str:
    """A digest of every input of `find_groups` (records in order, each field grouping reads)."""
    import numpy as np  # here: a kept grouping read back by its quick digest needs none

    from photodedup.client.grouping.hamming import window_key

    h = _inputs(config, ignored, reference_dirs)
    for r in records:
        h.update(
            repr(
                (
                    r.path,
                    r.size,
                    r.width,
                    r.height,
                    r.md5,
                    r.dhash,
                    r.phash,
                    r.exif_time,
                    r.mtime,
                    r.format,
                    r.rotated_hashes,
                    r.content,
                    r.picture_pixels,
                    r.camera,
                    r.quality,
                    r.grey,
                    r.contrast,
                    r.transparent,
                    None if r.embedding is None else r.embedding.shape,
                )
            ).encode()
        )
        h.update(window_key(r.windows))  # a digest: windows left in the index are not read back
        if r.embedding is not None:
            h.update(np.ascontiguousarray(r.embedding).tobytes())
    return h.hexdigest()


def quick_digest(
    generation: int,
    config: GroupingConfig,
    ignored: Collection[frozenset[str]],
    reference_dirs: Sequence[str],
) -> str:
    """A digest of the same inputs with the records replaced by the index's generation, which moves on with
    any change to a file or an embedding: equal generations mean equal records, without reading them."""
    h = _inputs(config, ignored, reference_dirs)
    h.update(str(generation).encode())
    return h.hexdigest()


def _inputs(config: GroupingConfig, ignored: Collection[frozenset[str]], reference_dirs: Sequence[str]) -> Any:
    """A hash started on what both digests share: the grouping code, the settings, the decisions, the
    reference folders."""
    h = hashlib.blake2b(digest_size=20)
    h.update(_code().encode())
    h.update(repr(config).encode())
    h.update(repr(sorted(sorted(pair) for pair in ignored)).encode())
    h.update(repr(list(reference_dirs)).encode())
    return h


def _evidence_out(e: Evidence | None) -> dict[str, Any] | None:
    return None if e is None else dataclasses.asdict(e)


def _evidence_in(d: dict[str, Any] | None) -> Evidence | None:
    if d is None:
        return None
    return Evidence(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def _encode(groups: Sequence[Group]) -> bytes:
    out = [
        {
            "kind": str(g.kind),
            "keep": g.keep.path,
            "protected": sorted(g.protected),
            "members": [[m.record.path, m.distance, str(m.tier), _evidence_out(m.evidence)] for m in g.members],
        }
        for g in groups
    ]
    return zlib.compress(json.dumps(out, separators=(",", ":")).encode(), 6)


def _parse(blob: bytes) -> list[dict[str, Any]]:
    return json.loads(zlib.decompress(blob))


def _decode(parsed: list[dict[str, Any]], by_path: Mapping[str, FileRecord]) -> list[Group]:
    groups = []
    for g in parsed:
        members = [Member(by_path[p], float(d), Tier(t), _evidence_in(e)) for p, d, t, e in g["members"]]
        groups.append(Group(Tier(g["kind"]), by_path[g["keep"]], members, frozenset(g["protected"])))
    return groups


def scope_key(roots: Sequence[str], model_id: str | None) -> str:
    """Which grouping this is: one answer is kept per set of roots and model."""
    return json.dumps([sorted(roots), model_id or ""])


def _decoded(blob: bytes, records: Callable[[list[dict[str, Any]]], Mapping[str, FileRecord]]) -> list[Group] | None:
    """The stored groups with their members' records (`records` of the parsed answer); None when the
    stored answer cannot be read or names a file the records lack."""
    try:
        parsed = _parse(blob)
        return _decode(parsed, records(parsed))
    except (KeyError, ValueError, TypeError, zlib.error) as exc:  # unreadable: compute again
        log.warning("stored groups unreadable, grouping again: %s", exc)
        return None


def load_quick(index: Index, scope: str, quick: str, model_id: str | None) -> list[Group] | None:
    """The stored groups of `scope` if they were computed at this `quick_digest`, reading only their
    members' records; else None."""
    stored = index.stored_groups(scope)
    if stored is None or stored[1] != quick:
        return None

    def members(parsed: list[dict[str, Any]]) -> Mapping[str, FileRecord]:
        return index.records_of({p for g in parsed for p, *_ in g["members"]}, model_id, hashes=False)

    return _decoded(stored[2], members)


def load(index: Index, scope: str, digest: str, records: Sequence[FileRecord], quick: str) -> list[Group] | None:
    """The stored groups of `scope` if they were computed from inputs with this `digest` (then they also
    stand for `quick` from now on, where the index can be written); else None."""
    stored = index.stored_groups(scope)
    if stored is None or stored[0] != digest:
        return None
    by_path = {r.path: r for r in records}
    groups = _decoded(stored[2], lambda _: by_path)
    if groups is not None and stored[1] != quick:
        try:
            index.set_groups_quick(scope, quick)
        except sqlite3.OperationalError as exc:  # read-only or busy: the answer stands, the next load digests
            log.warning("groups not marked current in the index: %s", exc)
    return groups


def store(index: Index, scope: str, digest: str, quick: str, groups: Sequence[Group]) -> None:
    """Keep `groups` as the answer for `scope`, `digest` and `quick`, replacing the previous one."""
    index.store_groups(scope, digest, quick, _encode(groups))
