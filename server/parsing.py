"""Request bytes to messages, within bounds, before the protobuf parser runs.

gRPC calls a method's request deserializer on the event loop, and the protobuf parser holds the GIL for
its whole run (a worker thread would stall the loop just the same: measured, a 176 ms parse stalls another
thread for 171 ms). Parse cost follows the number of fields, not the bytes: a 2 MB message of a million
empty items, or a 20 MB message of ten million unknown fields, takes 100 ms or more. So the fields are
counted from the wire bytes first, stopping as soon as a limit is passed, and only a message within
its limits reaches the parser; a refused message costs O(limit) work whatever its size.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from google.protobuf.descriptor import Descriptor
from google.protobuf.message import Message

# Fields one image may bring: the item, its id, its image, the image's data, and a raw image's rgb,
# width and height (7), with room for a client that repeats one.
FIELDS_PER_ITEM = 8
# Fields a message may have besides its items (dtype and a few unknown ones from newer clients).
SPARE_FIELDS = 16
# Deepest nesting of known message fields that is followed (the request schema is 4 deep).
MAX_DEPTH = 8

_VARINT, _FIXED64, _LENGTH, _FIXED32 = 0, 1, 2, 5


@dataclass(frozen=True)
class Unparsed:
    """Stands in for a request message that was not parsed; `reason` completes "the message ..."."""

    reason: str


MALFORMED = Unparsed("is not a valid protobuf message")


class _Malformed(Exception):
    pass


class _OverLimit(Exception):
    def __init__(self, reason: str) -> None:
        self.reason = reason


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    """The varint at `pos` and the position after it."""
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise _Malformed
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


class FieldCounter:
    """Counts the fields of one message's wire bytes (following known message fields into their bytes),
    and raises as soon as there are more items or fields than allowed."""

    def __init__(self, max_fields: int, item_field: int | None = None, max_items: int = 0) -> None:
        self.max_fields = max_fields
        self.item_field = item_field
        self.max_items = max_items
        self.fields = 0
        self.items = 0

    def count(self, buf: bytes, descriptor: Descriptor) -> None:
        self._walk(buf, 0, len(buf), descriptor, 0)

    def _walk(self, buf: bytes, pos: int, end: int, descriptor: Descriptor, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise _Malformed
        children = _message_fields(descriptor)
        item_field = self.item_field if depth == 0 else None
        while pos < end:
            tag = buf[pos]  # one-byte tags and lengths are the common case: read them inline
            if tag < 0x80:
                pos += 1
            else:
                tag, pos = _varint(buf, pos)
            number, kind = tag >> 3, tag & 7
            self.fields += 1
            if number == item_field:
                self.items += 1
                if self.items > self.max_items:
                    raise _OverLimit(f"has more than {self.max_items} images; the limit is {self.max_items}")
            if self.fields > self.max_fields:
                raise _OverLimit(f"has more than {self.max_fields} fields")
            if kind == _LENGTH:
                size = buf[pos] if pos < end else 0x80
                if size < 0x80:
                    pos += 1
                else:
                    size, pos = _varint(buf, pos)
                start, pos = pos, pos + size
                if pos > end:
                    raise _Malformed
                child = children.get(number)
                if child is not None:
                    self._walk(buf, start, pos, child, depth + 1)
            elif kind == _VARINT:
                _, pos = _varint(buf, pos)
            elif kind == _FIXED64:
                pos += 8
            elif kind == _FIXED32:
                pos += 4
            else:  # groups (deprecated) and invalid wire types: nothing we send or accept
                raise _Malformed
        if pos > end:
            raise _Malformed


@functools.cache
def _message_fields(descriptor: Descriptor) -> dict[int, Descriptor]:
    """Field number -> message type, for the fields of `descriptor` that are messages."""
    return {f.number: f.message_type for f in descriptor.fields if f.message_type is not None}


@dataclass(frozen=True)
class BoundedParser:
    """A request deserializer for gRPC: counts fields first, then parses. Never raises: a message over
    its limits or unparsable becomes an Unparsed for the handler to refuse with one status."""

    message: type[Message]
    max_items: int = 0
    item_field: int | None = None

    @property
    def max_fields(self) -> int:
        return self.max_items * FIELDS_PER_ITEM + SPARE_FIELDS

    def __call__(self, data: bytes) -> Message | Unparsed:
        counter = FieldCounter(self.max_fields, self.item_field, self.max_items)
        try:
            counter.count(data, self.message.DESCRIPTOR)
            return self.message.FromString(data)
        except _OverLimit as exc:
            return Unparsed(exc.reason)
        except Exception:  # noqa: BLE001 - any parse failure is the client's malformed message
            return MALFORMED


def bounded_parser(deserialize: Callable[[bytes], Any] | None, max_items: int) -> Callable[[bytes], Any] | None:
    """The bounded deserializer standing in for a generated one (`SomeMessage.FromString`). A message with
    one repeated message field (a request's images or items) may have `max_items` of them; others only a
    few fields."""
    message = getattr(deserialize, "__self__", None)
    if deserialize is None or not (isinstance(message, type) and issubclass(message, Message)):
        return tolerant(deserialize)
    repeated = [
        f
        for f in message.DESCRIPTOR.fields
        if f.message_type is not None and _is_repeated(f) and not f.containing_oneof
    ]
    if len(repeated) == 1:
        return BoundedParser(message, max_items, repeated[0].number)
    return BoundedParser(message)


def _is_repeated(field: Any) -> bool:
    flag = getattr(field, "is_repeated", None)
    if flag is not None:
        return bool(flag)
    return field.label == field.LABEL_REPEATED


def tolerant(deserialize: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """A deserializer that returns MALFORMED instead of raising inside gRPC (which would answer UNKNOWN or
    INTERNAL with a class name and log a traceback per call)."""
    if deserialize is None:
        return None

    def parse(data: bytes) -> Any:
        try:
            return deserialize(data)
        except Exception:  # noqa: BLE001 - any parse failure is the client's malformed message
            return MALFORMED

    return parse
