"""Event-time tumbling windows: partial aggregates and per-entity window state.

Pure: no Kafka, no clock. The stream agent feeds events in, gets rollups and late
events out, and stores ``EntityWindows.to_bytes()`` in a Faust table.

Lateness is measured against the entity's *watermark* (its newest event time): an
event older than ``watermark - allowed_lateness`` is late (counted, never applied); a
window closes once ``watermark >= window end + allowed_lateness``. So an event that
is applied never lands in a closed window, and the result depends only on the order of
one entity's events (one Kafka partition), which makes a replay after a crash give the
same totals.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec
import orjson

from ..errors import InvalidRecord, load_json_state

__all__ = ["Agg", "EntityWindows", "Rollup", "WindowId", "rollup_key", "window_start"]


def window_start(t: float, size: int) -> int:
    """Start (unix seconds) of the ``size``-second tumbling window holding ``t``."""
    return math.floor(t / size) * size


def rollup_key(entity: str, metric: str, size: int, start: int) -> str:
    """``entity|metric|size|start``: the rollups topic key and the DB row identity."""
    return f"{entity}|{metric}|{size}|{start}"


@dataclass(slots=True)
class Agg:
    """count/sum/min/max/last of one metric in one window; ``mean`` derived.

    ``merge`` is commutative and associative (up to float rounding of ``sum``):
    ``last`` is the value with the greatest event time, ties broken by the greater value.
    """

    count: int = 0
    sum: float = 0.0
    min: float = math.inf
    max: float = -math.inf
    last: float = math.nan
    last_time: float = -math.inf

    @classmethod
    def of(cls, value: float, t: float) -> Agg:
        return cls(1, value, value, value, value, t)

    def add(self, value: float, t: float) -> None:
        self.count += 1
        self.sum += value
        if value < self.min:
            self.min = value
        if value > self.max:
            self.max = value
        if t > self.last_time or (t == self.last_time and not value <= self.last):
            self.last, self.last_time = value, t

    def merge(self, other: Agg) -> Agg:
        """A new aggregate holding both inputs."""
        if other.count == 0:
            return Agg(self.count, self.sum, self.min, self.max, self.last, self.last_time)
        if self.count == 0:
            return Agg(other.count, other.sum, other.min, other.max, other.last, other.last_time)
        if other.last_time > self.last_time or (
            other.last_time == self.last_time and other.last > self.last
        ):
            last, last_time = other.last, other.last_time
        else:
            last, last_time = self.last, self.last_time
        return Agg(self.count + other.count, self.sum + other.sum, min(self.min, other.min),
                   max(self.max, other.max), last, last_time)

    @property
    def mean(self) -> float | None:
        return self.sum / self.count if self.count else None

    def as_dict(self) -> dict[str, float | int | None]:
        return {"count": self.count, "sum": self.sum, "min": self.min, "max": self.max,
                "mean": self.mean, "last": self.last, "last_time": self.last_time}


@dataclass(frozen=True, slots=True)
class Rollup:
    """One window's aggregate as emitted: ``state`` says whether it may still change."""

    entity: str
    metric: str
    size: int
    start: int
    agg: Agg
    state: Literal["updated", "closed"]

    @property
    def key(self) -> str:
        return rollup_key(self.entity, self.metric, self.size, self.start)

    @property
    def end(self) -> int:
        return self.start + self.size

    def as_dict(self) -> dict[str, object]:
        return {"entity": self.entity, "metric": self.metric, "size": self.size,
                "start": self.start, "end": self.end, "state": self.state, **self.agg.as_dict()}

    def to_bytes(self) -> bytes:
        return orjson.dumps(self.as_dict())

    @classmethod
    def from_bytes(cls, data: bytes) -> Rollup:
        """Decode ``to_bytes`` output (one typed pass, fields it does not need ignored).

        Raises:
            InvalidRecord: ``data`` is not a rollup (nothing else, whatever the bytes).
        """
        try:
            w = _rollup_decoder.decode(data)
        except MSGSPEC_UNDECODABLE as exc:
            raise InvalidRecord.undecodable(
                "a rollup (JSON object with entity, metric, size, start...)", exc) from exc
        agg = Agg(w.count, w.sum, math.inf if w.min is None else w.min,
                  -math.inf if w.max is None else w.max, math.nan if w.last is None else w.last,
                  -math.inf if w.last_time is None else w.last_time)  # JSON null: empty
        return cls(w.entity, w.metric, w.size, w.start, agg,
                   "closed" if w.state == "closed" else "updated")


class _RollupWire(msgspec.Struct):
    """The fields of ``Rollup.to_bytes`` that ``from_bytes`` reads (others are ignored)."""

    entity: str
    metric: str
    size: int
    start: int
    state: str
    count: int
    sum: float
    min: float | None
    max: float | None
    last: float | None
    last_time: float | None


_rollup_decoder = msgspec.json.Decoder(_RollupWire)
# msgspec's own errors, and what it raises besides on hostile bytes (UnicodeDecodeError
# inside a string, RecursionError on deep nesting, TypeError for a non-bytes value).
MSGSPEC_UNDECODABLE = (msgspec.MsgspecError, ValueError, TypeError, OverflowError, RecursionError)

WindowId = tuple[str, int, int]  # metric, size, start


@dataclass
class EntityWindows:
    """Open windows of one entity, its watermark and counters; serialisable as a whole.

    Pure: which source records were applied (exactly-once over at-least-once Kafka) is
    the stage's business, kept beside this state (``streams.engine.applied``).
    """

    entity: str
    watermark: float = -math.inf
    windows: dict[WindowId, Agg] = field(default_factory=dict)
    late: int = 0
    applied: int = 0
    # earliest watermark at which a window closes (-inf: not known yet); not serialised
    next_close: float = field(default=-math.inf, repr=False, compare=False)

    def add(self, t: float, values: Mapping[str, float], sizes: Iterable[int],
            lateness: float) -> set[WindowId] | None:
        """Apply one event; return the windows it touched, or None when it is late."""
        if t < self.watermark - lateness:
            self.late += 1
            return None
        touched: set[WindowId] = set()
        windows = self.windows
        starts = [(size, window_start(t, size)) for size in sizes]  # once per event
        for metric, v in values.items():
            v = float(v)
            if math.isnan(v):
                continue
            for size, start in starts:
                wid = (metric, size, start)
                agg = windows.get(wid)
                if agg is None:
                    windows[wid] = Agg.of(v, t)
                    if start + size + lateness < self.next_close:
                        self.next_close = start + size + lateness
                else:
                    agg.add(v, t)
                touched.add(wid)
        if t > self.watermark:
            self.watermark = t
        self.applied += 1
        return touched

    def close_due(self, lateness: float) -> list[Rollup]:
        """Remove and return the windows whose end + lateness has passed the watermark."""
        if self.watermark < self.next_close:
            return []  # nothing can be due yet (most calls)
        due = [w for w in self.windows if w[2] + w[1] + lateness <= self.watermark]
        out = [Rollup(self.entity, m, s, st, self.windows.pop((m, s, st)), "closed")
               for (m, s, st) in sorted(due, key=lambda w: (w[2], w[1], w[0]))]
        self.next_close = min((st + s + lateness for (_m, s, st) in self.windows),
                              default=math.inf)
        return out

    def rollup(self, wid: WindowId) -> Rollup:
        return Rollup(self.entity, wid[0], wid[1], wid[2], self.windows[wid], "updated")

    def to_dict(self) -> dict[str, Any]:
        return {
            "e": self.entity, "wm": self.watermark if math.isfinite(self.watermark) else None,
            "late": self.late, "n": self.applied,
            "w": [[m, s, st, a.count, a.sum, a.min, a.max, a.last, a.last_time]
                  for (m, s, st), a in self.windows.items()],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EntityWindows:
        """From ``to_dict`` output; raises what a wrong shape raises (``JSON_SHAPE_ERRORS``)."""
        ew = cls(d["e"], -math.inf if d["wm"] is None else d["wm"], {}, d["late"], d["n"])
        for m, s, st, c, sm, mn, mx, last, lt in d["w"]:
            ew.windows[(m, s, st)] = Agg(c, sm, mn, mx, last, lt)
        return ew

    def to_bytes(self) -> bytes:
        return orjson.dumps(self.to_dict())

    @classmethod
    def from_bytes(cls, data: bytes) -> EntityWindows:
        """Decode ``to_bytes`` output.

        Raises:
            InvalidRecord: ``data`` is not the windows of an entity (nothing else, whatever
                the bytes).
        """
        return load_json_state(data, cls.from_dict, "the windows of an entity")
