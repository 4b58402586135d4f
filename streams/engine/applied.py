"""Exactly-once bookkeeping of the stages' keyed state, kept beside the domain state.

The domain classes (``ioc.aggregate.EntityWindows``, ``ioc.kpi.KpiCounts``,
``ioc.rules.EntityRules``) know events, windows and counts, nothing of Kafka. What a
stage needs on top of at-least-once Kafka to apply each event once lives here:

* ``Applied``: the last applied source record (partition, offset) of one key, and per
  ``<ns>.events.raw`` partition the last applied raw origin (``ioc.raw`` header:
  offset, index) of events that validate re-emitted after a crash.
* ``Tracked``: a domain state with its ``Applied`` marks, stored as one value of a
  ``StateTable``. The changelog value is the domain state's dict with the marks' keys
  (``p``, ``o``, ``r``) beside it: the same bytes as before the split, so changelogs
  written by earlier versions restore unchanged.

Invariant: a stage applies a record to a key's state only when ``not seen(...)``, and
marks it in the same batch, before the state is written to the changelog; the
changelog write and the offset commit share one transaction, so a redelivered record
is always ``seen``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

import orjson

from ioc.errors import InvalidEvent, load_json_state
from ioc.events import Event, origin_mark, origin_seen, raw_origin
from ioc.events._route import Origin

from .records import Record

__all__ = ["Applied", "DictState", "Tracked", "apply_once"]

_log = logging.getLogger(__name__)


@dataclass(slots=True)
class Applied:
    """The source records already applied to one key's state."""

    partition: int = -1
    offset: int = -1
    raw: dict[int, tuple[int, int]] = field(default_factory=dict)

    def seen(self, partition: int, offset: int, origin: Origin | None = None) -> bool:
        """True when the record at ``partition``/``offset`` (or, for a re-emitted event,
        its raw ``origin``) was already applied."""
        return (partition == self.partition and offset <= self.offset) or origin_seen(
            self.raw, origin)

    def record_seen(self, partition: int, offset: int) -> bool:
        """True when the record itself was applied (one record may hold many events)."""
        return partition == self.partition and offset <= self.offset

    def origin_seen(self, origin: Origin | None) -> bool:
        return origin_seen(self.raw, origin)

    def mark(self, partition: int, offset: int, origin: Origin | None = None) -> None:
        self.partition, self.offset = partition, offset
        origin_mark(self.raw, origin)

    def mark_origin(self, origin: Origin | None) -> None:
        origin_mark(self.raw, origin)

    def to_dict(self) -> dict[str, Any]:
        return {"p": self.partition, "o": self.offset,
                "r": [[p, o, i] for p, (o, i) in self.raw.items()]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Applied:
        """From ``to_dict`` keys; absent keys mean nothing applied. Raises what a wrong
        shape raises (``JSON_SHAPE_ERRORS``); ``Tracked.decoder`` turns it into InvalidRecord."""
        p, o = d.get("p", -1), d.get("o", -1)
        if not isinstance(p, int) or not isinstance(o, int):
            raise TypeError(f"p/o: expected integers, got {type(p).__name__}/{type(o).__name__}")
        raw: dict[int, tuple[int, int]] = {}
        for rp, ro, ri in d.get("r", ()):
            if not (isinstance(rp, int) and isinstance(ro, int) and isinstance(ri, int)):
                raise TypeError("r: expected [partition, offset, index] integers")
            raw[rp] = (ro, ri)
        return cls(p, o, raw)


class DictState(Protocol):
    """A domain state that converts to and from a JSON-ready dict."""

    def to_dict(self) -> dict[str, Any]: ...


S = TypeVar("S", bound=DictState)


@dataclass(slots=True)
class Tracked(Generic[S]):
    """A domain state and its exactly-once marks: one ``StateTable`` value."""

    state: S
    marks: Applied = field(default_factory=Applied)

    def to_bytes(self) -> bytes:
        d = self.state.to_dict()
        d.update(self.marks.to_dict())
        return orjson.dumps(d)

    @staticmethod
    def decoder(from_dict: Callable[[dict[str, Any]], S], what: str
                ) -> Callable[[bytes], Tracked[S]]:
        """A changelog decoder: bytes -> ``Tracked`` of ``from_dict``'s state.

        The decoder raises ``InvalidRecord`` (and nothing else, whatever the bytes) when
        the value is not ``what``.
        """
        def tracked(d: Any) -> Tracked[S]:
            if not isinstance(d, dict):
                raise TypeError(f"expected a JSON object, got {type(d).__name__}")
            return Tracked(from_dict(d), Applied.from_dict(d))

        return lambda data: load_json_state(data, tracked, what)

    @staticmethod
    def factory(new: Callable[..., S]) -> Callable[..., Tracked[S]]:
        """A ``StateTable.get`` factory: a fresh state with nothing applied."""
        return lambda *args: Tracked(new(*args))


K = TypeVar("K")


def apply_once(records: list[Record], events: list[Event | InvalidEvent], table: Any,
               load: Callable[[bytes], Tracked[S]], new: Callable[[str], Tracked[S]], *,
               types: set[str], apply: Callable[[S, Event], set[K]], stage: str
               ) -> tuple[dict[bytes, Tracked[S]], dict[bytes, int], dict[bytes, set[K]]]:
    """Apply each event of ``events`` (``records`` decoded, one per record) whose type is
    in ``types`` to its entity's state in ``table`` (a ``StateTable``), once: records or
    raw origins already applied are skipped, the rest marked. Undecodable records are
    skipped (the aggregate stage dead-letters them). ``apply(state, event)`` returns the
    keys it changed.

    Returns ``(states, where, touched)``: the states got, by key; the partition of each
    key that applied something (only those need writing); the changed keys per key.
    """
    states: dict[bytes, Tracked[S]] = {}
    where: dict[bytes, int] = {}
    touched: dict[bytes, set[K]] = {}
    for msg, e in zip(records, events, strict=True):
        if isinstance(e, InvalidEvent):
            _log.debug("%s: undecodable record at %s/%s/%s: %s", stage, msg.topic,
                       msg.partition, msg.offset, e)
            continue
        if e.type not in types:
            continue
        key = e.entity.encode()
        tr = states.get(key)
        if tr is None:
            tr = states[key] = table.get(key, load, new, e.entity)
        origin = raw_origin(msg.headers)
        if tr.marks.seen(msg.partition, msg.offset, origin):
            continue
        hit = apply(tr.state, e)
        tr.marks.mark(msg.partition, msg.offset, origin)
        where[key] = msg.partition
        touched.setdefault(key, set()).update(hit)
    return states, where, touched
