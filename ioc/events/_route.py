"""Routing of raw records: canonical events or dead letters (pure, no Kafka here).

``route_raw`` is what the validate agent does for each record of ``<ns>.events.raw``;
it is a plain function so it is tested without a broker.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from ..errors import InvalidEvent
from ._deadletter import DLQ_HEADERS, dead_letter_headers
from ._envelope import encode_event, validate_event
from ._raw import split_raw

__all__ = ["DLQ_HEADERS", "RAW_ORIGIN", "Origin", "RouteCounts", "Routed", "origin_mark",
           "origin_seen", "raw_origin", "route_raw"]

class Routed(NamedTuple):
    """One output record: to ``events`` (valid) or ``dlq`` (rejected).

    A NamedTuple: made once per event, and a frozen dataclass costs ~1 µs more.
    """

    suffix: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]


@dataclass
class RouteCounts:
    """Events seen, valid and dead-lettered (by reason)."""

    valid: int = 0
    dead: int = 0
    reasons: dict[str, int] = field(default_factory=dict)

    def add(self, routed: Sequence[Routed]) -> None:
        for r in routed:
            if r.suffix == "events":
                self.valid += 1
            else:
                self.dead += 1
                reason = dict(r.headers).get("dlq.reason", b"?").decode()
                self.reasons[reason] = self.reasons.get(reason, 0) + 1


def _dead(value: bytes, key: bytes | None, headers: Sequence[tuple[str, bytes]],
          exc: InvalidEvent, topic: str, partition: int, offset: int, index: int | None
          ) -> Routed:
    return Routed("dlq", key, value, dead_letter_headers(
        exc.reason, topic=topic, partition=partition, offset=offset, message=str(exc),
        field=exc.field, index=index, stage="validate", headers=headers))


def route_raw(value: bytes | None, key: bytes | None, headers: Sequence[tuple[str, bytes]],
              *, topic: str, partition: int, offset: int, now: float | None = None
              ) -> list[Routed]:
    """Validate one raw record (one event or a JSON array of events).

    Each valid event becomes a canonical record keyed by entity; each invalid one a
    dead letter carrying its original bytes and, in headers, the reason, message,
    field, source topic, partition, offset and index in the batch
    (``dead_letter_headers``). Raises nothing for any bytes.
    """
    if value is None:
        exc = InvalidEvent("not_json", "not_json: empty record (tombstone)")
        return [_dead(b"", key, headers, exc, topic, partition, offset, None)]
    try:
        items = split_raw(value)
    except InvalidEvent as exc:
        return [_dead(value, key, headers, exc, topic, partition, offset, None)]
    if not items:  # nothing to route, but a record nonetheless: seen, not dropped
        empty = InvalidEvent("bad_value", "bad_value: an empty batch (JSON array): expected "
                             "at least one event")
        return [_dead(value, key, headers, empty, topic, partition, offset, None)]
    now = time.time() if now is None else now
    single = len(items) == 1 and value.lstrip()[:1] == b"{"
    out: list[Routed] = []
    append = out.append
    origin = b"%d:%d:" % (partition, offset)
    for i, raw in enumerate(items):
        try:
            e = validate_event(raw, now=now)
        except InvalidEvent as exc:
            append(_dead(raw, key, headers, exc, topic, partition, offset,
                         None if single else i))
            continue
        append(Routed("events", e.entity.encode(), encode_event(e),
                      [(RAW_ORIGIN, origin + str(i).encode())]))
    return out


# Header of every canonical event: where validate found it ("<raw partition>:<raw
# offset>:<index in the record>"). Stateful stages remember the newest origin per raw
# partition, so events that validate re-emits after a crash (same origin, new offset on
# <ns>.events) are recognised and not counted twice.
RAW_ORIGIN = "ioc.raw"

Origin = tuple[int, int, int]


def raw_origin(headers: Sequence[tuple[str, bytes]] | None) -> Origin | None:
    """The ``ioc.raw`` origin of a canonical event record, or None (not via validate, or
    a header that is not one)."""
    for k, v in headers or ():
        if k == RAW_ORIGIN:
            try:
                p, o, i = v.split(b":")
                return int(p), int(o), int(i)
            except (ValueError, TypeError, AttributeError):  # not ours: ignored
                return None
    return None


def origin_seen(marks: dict[int, tuple[int, int]], origin: Origin | None) -> bool:
    """True when an event from ``origin`` or later in its raw partition was applied."""
    if origin is None:
        return False
    last = marks.get(origin[0])
    return last is not None and (origin[1], origin[2]) <= last


def origin_mark(marks: dict[int, tuple[int, int]], origin: Origin | None) -> None:
    if origin is not None:
        marks[origin[0]] = (origin[1], origin[2])
