"""Numerator/denominator counts per indicator, period and drill path (pure).

The ``scorecards`` stage keeps one ``ScorecardCounts`` per event entity (an agency)
and publishes each changed ``LeafCount``, the *full* counts of one (indicator, period,
period key, drill path), to the compacted ``<ns>.scorecards`` topic; the sink upserts
them into ``scorecard_counts``. A leaf belongs to one entity, and an entity's events
to one partition, so each leaf has exactly one writer whatever the number of workers;
every total above a leaf (an agency, a district, the province) is a sum of leaves,
computed where the counts are read (``ioc.scorecard.build_scorecard``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from ..config._scorecard import DrillLevel, EventPredicate, ScorecardSettings
from ..errors import JSON_SHAPE_ERRORS, InvalidRecord, load_json_state
from ._periods import period_key

__all__ = ["LeafCount", "LeafKey", "ScorecardCounts", "attribute_text", "drill_path",
           "matches", "path_key"]

LeafKey = tuple[str, str, str, tuple[str, ...]]  # indicator, period, period key, drill path


def attribute_text(v: object) -> str:
    """An attribute as the predicates compare it: booleans 'true'/'false', else str()."""
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def matches(p: EventPredicate, type: str, attributes: Mapping[str, object]) -> bool:
    """Whether an event of ``type`` with ``attributes`` satisfies ``p``."""
    if type != p.event_type:
        return False
    for name, accepted in p.where.items():
        if name not in attributes or attribute_text(attributes[name]) not in accepted:
            return False
    return True


def drill_path(levels: list[DrillLevel], entity: str,
               attributes: Mapping[str, object]) -> tuple[str, ...]:
    """The event's unit at every level, outermost first."""
    out = []
    for lv in levels:
        if lv.source == "entity":
            out.append(entity)
        else:
            v = attributes.get(lv.attribute or "")
            out.append(lv.default if v is None or v == "" else attribute_text(v))
    return tuple(out)


def path_key(path: tuple[str, ...]) -> str:
    """The drill path as one text key ('province/district/district-3/all').

    Units are separated by '/', and a '/' or '%' inside a unit is percent-escaped, so
    the key is unique per path and a prefix of it is the key of an outer unit.
    """
    return "/".join(u.replace("%", "%25").replace("/", "%2F") for u in path)


def _number(v: object) -> float:
    """A JSON number as a float; TypeError for anything else (strings such as "nan" and
    booleans included: ``to_bytes`` writes numbers, and JSON has no non-finite ones)."""
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise TypeError(f"expected a JSON number, got {str(v)[:40]!r}")
    return float(v)  # an int beyond a double: OverflowError (JSON_SHAPE_ERRORS)


@dataclass(frozen=True, slots=True)
class LeafCount:
    """The full counts of one indicator, period and drill path (not a delta)."""

    indicator: str
    period: str
    period_key: str
    path: tuple[str, ...]
    numerator: float
    denominator: float
    levels: tuple[str, ...] = ()
    at: float = 0.0  # wall time it was counted (unix s)

    @property
    def key(self) -> str:
        return f"{self.indicator}|{self.period}|{self.period_key}|{path_key(self.path)}"

    def to_bytes(self) -> bytes:
        return orjson.dumps({"indicator": self.indicator, "period": self.period,
                             "period_key": self.period_key, "path": list(self.path),
                             "levels": list(self.levels), "numerator": self.numerator,
                             "denominator": self.denominator, "at": self.at})

    @classmethod
    def from_bytes(cls, data: bytes) -> LeafCount:
        """Decode ``to_bytes`` output (a ``<ns>.scorecards`` value).

        Raises:
            InvalidRecord: ``data`` is not a leaf count (nothing else, whatever the bytes).
        """
        try:
            d = orjson.loads(data)
            if not isinstance(d["path"], list) or not isinstance(d.get("levels", []), list):
                raise TypeError("path and levels must be JSON arrays")
            path = tuple(str(u) for u in d["path"])
            levels = tuple(str(x) for x in d.get("levels", ()))
            num, den = _number(d["numerator"]), _number(d["denominator"])
            if levels and len(levels) != len(path):
                raise ValueError(f"{len(levels)} levels for a path of {len(path)}")
            return cls(str(d["indicator"]), str(d["period"]), str(d["period_key"]), path,
                       num, den, levels, _number(d.get("at", 0.0)))
        except (*JSON_SHAPE_ERRORS, ValueError) as exc:
            raise InvalidRecord.undecodable(
                "a scorecard count (JSON object with indicator, period, period_key, path, "
                "numerator, denominator)", exc) from exc


@dataclass
class ScorecardCounts:
    """Counts per leaf for one entity (pure: the stage keeps the redelivery marks beside
    it, ``streams.engine.applied``).

    ``keep`` bounds the period keys kept per indicator and period kind (oldest dropped
    first), so a long-running worker's state does not grow without end.
    """

    entity: str
    counts: dict[LeafKey, list[float]] = field(default_factory=dict)
    keep: int = 400

    def add(self, cfg: ScorecardSettings, tz: ZoneInfo, *, type: str, t: float,
            values: Mapping[str, float], attributes: Mapping[str, object]) -> set[LeafKey]:
        """Count one event in every indicator it is a numerator or denominator of, in
        every period kind; return the changed leaves."""
        touched: set[LeafKey] = set()
        path: tuple[str, ...] | None = None
        for ind in cfg.indicators:
            in_num = matches(ind.numerator, type, attributes)
            in_den = matches(ind.denominator, type, attributes)
            if not (in_num or in_den):
                continue
            if path is None:
                path = drill_path(cfg.levels, self.entity, attributes)
            n_num = float(values.get(ind.numerator.count_value, 1.0))
            n_den = float(values.get(ind.denominator.count_value, 1.0))
            for period in cfg.periods:
                key = (ind.id, period, period_key(t, period, tz), path)
                c = self.counts.get(key)
                if c is None:
                    c = self.counts[key] = [0.0, 0.0]
                    self._trim(ind.id, period)
                    if key not in self.counts:  # it was the oldest: dropped at once
                        continue
                if in_num:
                    c[0] += n_num
                if in_den:
                    c[1] += n_den
                touched.add(key)
        return touched

    def _trim(self, indicator: str, period: str) -> None:
        pks = sorted({k[2] for k in self.counts if k[0] == indicator and k[1] == period})
        drop = set(pks[: max(0, len(pks) - self.keep)])
        if drop:
            for k in [k for k in self.counts
                      if k[0] == indicator and k[1] == period and k[2] in drop]:
                del self.counts[k]

    def leaf(self, key: LeafKey, levels: tuple[str, ...], at: float) -> LeafCount:
        num, den = self.counts[key]
        return LeafCount(key[0], key[1], key[2], key[3], num, den, levels, at)

    def to_dict(self) -> dict[str, Any]:
        return {"e": self.entity, "c": [[k[0], k[1], k[2], list(k[3]), *v]
                                        for k, v in self.counts.items()]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ScorecardCounts:
        """From ``to_dict`` output; raises what a wrong shape raises (``JSON_SHAPE_ERRORS``)."""
        sc = cls(d["e"], {})
        for ind, period, pk, path, num, den in d["c"]:
            sc.counts[(ind, period, pk, tuple(path))] = [num, den]
        return sc

    def to_bytes(self) -> bytes:
        return orjson.dumps(self.to_dict())

    @classmethod
    def from_bytes(cls, data: bytes) -> ScorecardCounts:
        """Decode ``to_bytes`` output (a state changelog record).

        Raises:
            InvalidRecord: ``data`` is not the scorecard counts of an entity.
        """
        return load_json_state(data, cls.from_dict, "the scorecard counts of an entity")
