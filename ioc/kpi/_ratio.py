"""Ratio KPIs over calendar periods, per group, with an overall group and rankings.

Pure: the stream agent keeps one ``KpiCounts`` per entity (an agency) in a Faust table
and publishes every changed ``KpiValue`` (the entity's full numerator/denominator for
one period, not a delta) to the compacted ``<ns>.kpis`` topic. Because each message
carries the full count, the overall group is the sum of the latest value per entity,
computed by ``combine`` wherever the values are read (the tiles agent, SQL).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
import orjson

from ..aggregate._window import MSGSPEC_UNDECODABLE as _UNDECODABLE
from ..config._streams import KpiSpec
from ..errors import InvalidRecord, load_json_state

__all__ = ["KpiCounts", "KpiValue", "combine", "kpi_ratio", "period_key", "ranking"]

_FMT = {"day": "%Y-%m-%d", "month": "%Y-%m", "year": "%Y"}


def period_key(t: float, period: str, tz: ZoneInfo) -> str:
    """The calendar period holding unix time ``t`` in ``tz``: '2021-03-04', '2021-03' or '2021'."""
    try:
        fmt = _FMT[period]
    except KeyError:
        raise ValueError(f"period must be one of {sorted(_FMT)}, got {period!r}") from None
    return datetime.fromtimestamp(t, tz).strftime(fmt)


def kpi_ratio(numerator: float, denominator: float, spec: KpiSpec) -> float | None:
    """``numerator / denominator * scale`` rounded to the spec's decimals; None when empty."""
    if denominator <= 0:
        return None
    return round(numerator / denominator * spec.scale, spec.decimals)


@dataclass(frozen=True, slots=True)
class KpiValue:
    """One KPI for one group and one calendar period (full counts, not a delta)."""

    kpi: str
    group: str
    period: str
    period_key: str
    numerator: float
    denominator: float
    value: float | None
    unit: str = "%"

    @property
    def key(self) -> str:
        return f"{self.kpi}|{self.group}|{self.period}|{self.period_key}"

    def to_bytes(self) -> bytes:
        return orjson.dumps({"kpi": self.kpi, "group": self.group, "period": self.period,
                             "period_key": self.period_key, "numerator": self.numerator,
                             "denominator": self.denominator, "value": self.value,
                             "unit": self.unit})

    @classmethod
    def from_bytes(cls, data: bytes) -> KpiValue:
        """Decode ``to_bytes`` output (a ``<ns>.kpis`` value), typed.

        Raises:
            InvalidRecord: ``data`` is not a KPI value (nothing else, whatever the bytes).
        """
        try:
            w = _kpi_decoder.decode(data)
        except _UNDECODABLE as exc:
            raise InvalidRecord.undecodable(
                "a KPI value (JSON object with kpi, group, period...)", exc) from exc
        return cls(w.kpi, w.group, w.period, w.period_key, w.numerator, w.denominator,
                   w.value, w.unit)


class _KpiWire(msgspec.Struct):
    """The fields of ``KpiValue.to_bytes`` (others are ignored)."""

    kpi: str
    group: str
    period: str
    period_key: str
    numerator: float
    denominator: float
    value: float | None
    unit: str = "%"


_kpi_decoder = msgspec.json.Decoder(_KpiWire)


CountKey = tuple[str, str, str]  # kpi id, period, period key


@dataclass
class KpiCounts:
    """Numerator/denominator per KPI and period for one group (entity).

    ``keep`` bounds how many period keys are kept per KPI and period kind (oldest
    dropped first), so the state of a long-running worker does not grow without end.
    """

    group: str
    counts: dict[CountKey, list[float]] = field(default_factory=dict)
    keep: int = 400

    def add(self, specs: Sequence[KpiSpec], tz: ZoneInfo, *, type: str, t: float,
            values: Mapping[str, float], attributes: Mapping[str, object]) -> set[CountKey]:
        """Count one event in every matching KPI and period; return the changed keys."""
        touched: set[CountKey] = set()
        for spec in specs:
            if spec.event_type != type:
                continue
            n = float(values.get(spec.count_value, 1.0))
            hit = str(attributes.get(spec.attribute)) in spec.equals
            for period in spec.periods:
                key = (spec.id, period, period_key(t, period, tz))
                c = self.counts.get(key)
                if c is None:
                    c = self.counts[key] = [0.0, 0.0]
                    self._trim(spec.id, period)
                if hit:
                    c[0] += n
                c[1] += n
                touched.add(key)
        return touched

    def _trim(self, kpi: str, period: str) -> None:
        keys = sorted(k for k in self.counts if k[0] == kpi and k[1] == period)
        for k in keys[: max(0, len(keys) - self.keep)]:
            del self.counts[k]

    def value(self, key: CountKey, spec: KpiSpec) -> KpiValue:
        num, den = self.counts[key]
        return KpiValue(key[0], self.group, key[1], key[2], num, den,
                        kpi_ratio(num, den, spec), spec.unit)

    def to_dict(self) -> dict[str, Any]:
        return {"g": self.group, "c": [[*k, *v] for k, v in self.counts.items()]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> KpiCounts:
        """From ``to_dict`` output; raises what a wrong shape raises (``JSON_SHAPE_ERRORS``)."""
        kc = cls(d["g"], {})
        for kpi, period, pk, num, den in d["c"]:
            kc.counts[(kpi, period, pk)] = [num, den]
        return kc

    def to_bytes(self) -> bytes:
        return orjson.dumps(self.to_dict())

    @classmethod
    def from_bytes(cls, data: bytes) -> KpiCounts:
        """Decode ``to_bytes`` output.

        Raises:
            InvalidRecord: ``data`` is not the KPI counts of a group (nothing else, whatever
                the bytes).
        """
        return load_json_state(data, cls.from_dict, "the KPI counts of a group")


def combine(values: Iterable[KpiValue], spec: KpiSpec, group: str) -> KpiValue | None:
    """The overall value of one KPI and period key: the sum of the groups' counts."""
    vals = list(values)
    if not vals:
        return None
    num = sum(v.numerator for v in vals)
    den = sum(v.denominator for v in vals)
    first = vals[0]
    return KpiValue(first.kpi, group, first.period, first.period_key, num, den,
                    kpi_ratio(num, den, spec), spec.unit)


def ranking(values: Iterable[KpiValue]) -> list[dict[str, object]]:
    """Groups ordered by value, highest first (ties by group id); empty groups last."""
    vals = sorted(values, key=lambda v: (v.value is None, -(v.value or 0.0), v.group))
    return [{"group": v.group, "value": v.value} for v in vals]
