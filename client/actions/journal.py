"""The apply journal: one JSON object per line, fsynced before the caller goes on.

Entries are dataclasses; on disk each is a flat JSON object with a "type" key, the format every
release has written (version 1), so an older journal still undoes:

    {"type": "begin", "version": 1, "time": ..., "count": N}
    {"type": "intent", "seq": i, "time": ..., <Action fields>, ["backup": ..., "temp": ...]}
    {"type": "skip", "seq": i, "path": ..., "reason": ...}
    {"type": "done", "seq": i, ["trashed": {"file": ..., "info": ...}]}
    {"type": "failed", "seq": i, "error": ...}
    {"type": "undone", "seq": i, "restored": true|false}
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

from photodedup.client.actions.plan import Action
from photodedup.client.actions.trash import TrashEntry

log = logging.getLogger(__name__)

JOURNAL_VERSION = 1
_ACTION_FIELDS = tuple(f.name for f in fields(Action))


@dataclass(frozen=True)
class Begin:
    type: ClassVar[str] = "begin"
    time: float
    count: int
    version: int = JOURNAL_VERSION

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type, "version": self.version, "time": self.time, "count": self.count}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Begin:
        return cls(d.get("time", 0.0), d.get("count", 0), d.get("version", JOURNAL_VERSION))


@dataclass(frozen=True)
class Intent:
    """Written before an operation: what is about to happen and where its undo data will be."""

    type: ClassVar[str] = "intent"
    seq: int
    time: float
    action: Action
    backup: str | None = None  # hardlink: the original's hidden hard-link backup
    temp: str | None = None  # hardlink: the link to the keeper before it replaces the file

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type, "seq": self.seq, "time": self.time, **asdict(self.action)}
        if self.backup is not None:
            out["backup"] = self.backup
        if self.temp is not None:
            out["temp"] = self.temp
        return out

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Intent:
        action = Action(**{name: d.get(name) for name in _ACTION_FIELDS})
        return cls(d["seq"], d.get("time", 0.0), action, d.get("backup"), d.get("temp"))


@dataclass(frozen=True)
class Skip:
    type: ClassVar[str] = "skip"
    seq: int
    path: str
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type, "seq": self.seq, "path": self.path, "reason": self.reason}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Skip:
        return cls(d["seq"], d.get("path", ""), d.get("reason", ""))


@dataclass(frozen=True)
class Done:
    type: ClassVar[str] = "done"
    seq: int
    trashed: TrashEntry | None = None  # trash: where the file went, so undo need not search

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type, "seq": self.seq}
        if self.trashed is not None:
            out["trashed"] = asdict(self.trashed)
        return out

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Done:
        t = d.get("trashed")
        return cls(d["seq"], TrashEntry(t["file"], t["info"]) if t else None)


@dataclass(frozen=True)
class Failed:
    type: ClassVar[str] = "failed"
    seq: int
    error: str

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type, "seq": self.seq, "error": self.error}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Failed:
        return cls(d["seq"], d.get("error", ""))


@dataclass(frozen=True)
class Undone:
    type: ClassVar[str] = "undone"
    seq: int
    restored: bool

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type, "seq": self.seq, "restored": self.restored}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Undone:
        return cls(d["seq"], bool(d.get("restored")))


Entry = Begin | Intent | Skip | Done | Failed | Undone
_TYPES: dict[str, Any] = {cls.type: cls for cls in (Begin, Intent, Skip, Done, Failed, Undone)}


class Journal:
    """Append-only JSON lines; every line is flushed and fsynced before the caller goes on."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(path, "a", encoding="utf-8")

    def write(self, entry: Entry) -> None:
        self._fh.write(json.dumps(entry.to_json(), sort_keys=True) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_journal(path: Path) -> Iterator[Entry]:
    """Entries in order; a torn last line (a crash mid-write) and unknown entry types are skipped."""
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            try:
                raw = json.loads(line)
                cls = _TYPES.get(raw.get("type"))
                if cls is None:
                    log.warning("journal %s: ignoring an entry of unknown type %r", path, raw.get("type"))
                    continue
                yield cls.from_json(raw)
            except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
                log.warning("journal %s: ignoring a torn line", path)
