"""Builders of wall tiles from rollups, KPI values and alerts, and the per-tile rate limit.

Pure: no Kafka. The tiles stage keeps a ``SensorSeries`` per sensor; the views stage
keeps ``GlobalViews`` (a ``KpiBoard`` and an ``AlertBoard`` fed by ``ViewFact``s from
every partition). Both turn changes into ``Tile``s with the builders below and pass
them through a ``TileCoalescer`` so that a tile id is produced at most once per
``min_interval_s`` (latest wins) however fast its inputs change.
"""

from __future__ import annotations

import time as _time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from .aggregate import Rollup, TokenBucket
from .config._streams import KpiSpec
from .errors import InvalidRecord
from .kpi import KpiValue, combine, ranking
from .rules import Alert
from .tiles import Tile

__all__ = [
    "AlertBoard",
    "GlobalViews",
    "KpiBoard",
    "SensorSeries",
    "TileCoalescer",
    "ViewFact",
    "alerts_tile",
    "kpi_tile",
    "sensor_tile",
]


@dataclass
class SensorSeries:
    """The recent windows of one entity and metric (bounded), for a sparkline."""

    entity: str
    metric: str
    points: int = 60
    series: OrderedDict[int, float] = field(default_factory=OrderedDict)
    value: float | None = None
    time: float = 0.0

    def update(self, r: Rollup) -> bool:
        """Apply a rollup of the sparkline's window size; False when it is older than the series."""
        if self.series and r.start < next(iter(self.series)) and len(self.series) >= self.points:
            return False
        mean = r.agg.mean
        if mean is None:
            return False
        out_of_order = bool(self.series) and r.start < next(reversed(self.series))
        self.series[r.start] = mean
        if out_of_order:
            self.series = OrderedDict(sorted(self.series.items()))
        while len(self.series) > self.points:
            self.series.popitem(last=False)
        if r.agg.last_time >= self.time:
            self.value, self.time = r.agg.last, r.agg.last_time
        return True


def sensor_tile(s: SensorSeries, *, unit: str = "", label: str | None = None) -> Tile:
    """``sensor:<entity>:<metric>`` (kind ``series``); version = data time in ms."""
    return Tile(
        id=f"sensor:{s.entity}:{s.metric}", kind="series", version=int(s.time * 1000), time=s.time,
        payload={"label": label or f"{s.entity} {s.metric}", "entity": s.entity, "metric": s.metric,
                 "unit": unit, "value": s.value, "series": [[t, v] for t, v in s.series.items()]})


class KpiBoard:
    """Latest KPI values per (kpi, group, period, period key), and what a tile needs."""

    def __init__(self, specs: Iterable[KpiSpec], *, trend_points: int = 12) -> None:
        self.specs = {s.id: s for s in specs}
        self.trend_points = trend_points
        # kpi -> period -> period_key -> group -> value
        self.values: dict[str, dict[str, dict[str, dict[str, KpiValue]]]] = {}

    def update(self, v: KpiValue) -> list[str]:
        """Store ``v``; return the tile ids it changes (its group's and the overall one)."""
        spec = self.specs.get(v.kpi)
        if spec is None or v.period != spec.tile_period:
            if spec is not None:
                self.values.setdefault(v.kpi, {}).setdefault(v.period, {}).setdefault(
                    v.period_key, {})[v.group] = v
            return []
        self.values.setdefault(v.kpi, {}).setdefault(v.period, {}).setdefault(v.period_key, {})[v.group] = v
        ids = [f"kpi:{v.kpi}:{v.group}"]
        if spec.overall_group:
            ids.append(f"kpi:{v.kpi}")
        return ids

    def _keys(self, kpi: str, period: str) -> list[str]:
        return sorted(self.values.get(kpi, {}).get(period, {}))

    def tile(self, tile_id: str) -> Tile | None:
        """Build the KPI tile ``kpi:<id>[:<group>]`` for the latest period key seen."""
        parts = tile_id.split(":", 2)
        spec = self.specs.get(parts[1])
        if spec is None:
            return None
        group = parts[2] if len(parts) == 3 else None
        keys = self._keys(spec.id, spec.tile_period)
        if not keys:
            return None
        by_key = self.values[spec.id][spec.tile_period]

        def value_at(pk: str) -> KpiValue | None:
            groups = by_key.get(pk, {})
            if group is None:
                return combine(groups.values(), spec, spec.overall_group or "all")
            return groups.get(group)

        current_key = keys[-1]
        current = value_at(current_key)
        trend = [v.value for pk in keys[-self.trend_points:] if (v := value_at(pk)) is not None
                 and v.value is not None]
        shown_group = group if group is not None else (spec.overall_group or "all")
        return kpi_tile(spec, shown_group, current_key, current, trend,
                        ranking(by_key.get(current_key, {}).values()))


def kpi_tile(spec: KpiSpec, group: str, period_key: str, v: KpiValue | None,
             trend: list[float], rank: list[dict[str, object]], *, now: float | None = None) -> Tile:
    """``kpi:<id>`` (overall group) or ``kpi:<id>:<group>`` (kind ``kpi``)."""
    overall = group == spec.overall_group
    tid = f"kpi:{spec.id}" if overall else f"kpi:{spec.id}:{group}"
    denominator = v.denominator if v else 0
    # A KPI is "as of now"; a new period restarts its counts, so the version is the
    # build time, not a count (a version must only grow).
    now = _time.time() if now is None else now
    return Tile(
        id=tid, kind="kpi", version=int(now * 1000), time=now,
        payload={"label": spec.label, "value": v.value if v else None, "unit": spec.unit,
                 "period": f"{spec.tile_period}:{period_key}", "group": group, "trend": trend,
                 "ranking": rank, "numerator": v.numerator if v else 0,
                 "denominator": denominator})


class AlertBoard:
    """Current alerts per scope (raised first, then recently cleared), bounded."""

    def __init__(self, *, items: int = 50) -> None:
        self.items = items
        self.scopes: dict[str, OrderedDict[str, Alert]] = {}

    def update(self, a: Alert, *, forgotten: Callable[[str], None] | None = None) -> list[str]:
        """Store ``a`` (latest state per id); return the tile ids it changes.
        ``forgotten`` is called with the id of each alert a full list pushes out."""
        ids = []
        for scope in dict.fromkeys((a.scope, "all")):
            board = self.scopes.setdefault(scope, OrderedDict())
            board[a.id] = a
            board.move_to_end(a.id)
            while len(board) > self.items:
                # forget the oldest cleared alert first, else the oldest one
                victim = next((k for k, x in board.items() if x.state == "cleared"), None)
                gone = victim if victim is not None else next(iter(board))
                board.pop(gone)
                if forgotten is not None:
                    forgotten(gone)
            ids.append(f"alerts:{scope}")
        return ids

    def listed(self, alert_id: str) -> bool:
        """True when some scope's list holds ``alert_id``."""
        return any(alert_id in board for board in self.scopes.values())

    def remove(self, alert_id: str) -> list[str]:
        """Take ``alert_id`` out of every list; return the tile ids that changes."""
        return [f"alerts:{scope}" for scope, board in self.scopes.items()
                if board.pop(alert_id, None) is not None]

    def tile(self, tile_id: str) -> Tile:
        scope = tile_id.split(":", 1)[1]
        return alerts_tile(scope, list(self.scopes.get(scope, {}).values()))


_SEVERITY = {"critical": 0, "warning": 1, "info": 2}


def alerts_tile(scope: str, alerts: list[Alert], *, now: float | None = None) -> Tile:
    """``alerts:<scope>`` (kind ``alerts``): raised alerts by severity, then cleared ones."""
    ordered = sorted(alerts, key=lambda a: (a.state != "raised", _SEVERITY.get(a.severity, 3),
                                            -a.raised_at))
    # the list is the state as of now (an empty list is news too): stamped with build time
    now = _time.time() if now is None else now
    return Tile(
        id=f"alerts:{scope}", kind="alerts", version=int(now * 1000), time=now,
        payload={"scope": scope, "items": [
            {"id": a.id, "severity": a.severity, "entity": a.entity, "message": a.message,
             "raised_at": a.raised_at, "state": a.state, "rule": a.rule, "metric": a.metric}
            for a in ordered]})


class TileCoalescer:
    """Per-tile rate limit: each id is released at most once per ``min_interval_s``.

    ``offer`` replaces a pending tile of the same id (latest wins, counted in
    ``coalesced``). ``offer_lazy`` queues a builder instead, called only when the id is
    released, so a tile whose inputs change 100 times between two releases is built
    once (from the latest state). The pending set is bounded by ``max_pending``: a tile
    of a *new* id offered when it is full is dropped and counted in ``dropped``.
    ``max_per_s`` (None: none) caps the tiles released per second in total (a token
    bucket): when more tiles are busy, each waits longer, oldest first, latest wins,
    so the tiles topic, the wall servers and the screens see a bounded rate however
    many sensors report (``held`` counts the releases put off by it).
    """

    def __init__(self, *, min_interval_s: float = 0.1, max_pending: int = 10_000,
                 max_per_s: float | None = None) -> None:
        self.min_interval_s = min_interval_s
        self.max_pending = max_pending
        self.bucket = TokenBucket(max_per_s) if max_per_s is not None else None
        self.held = 0
        self.pending: dict[str, Tile | Callable[[], Tile | None]] = {}
        self.last_sent: dict[str, float] = {}
        self.coalesced = 0
        self.dropped = 0
        self.released = 0

    def offer(self, tile: Tile) -> bool:
        """Queue ``tile``; False when it was dropped because the pending set is full."""
        return self.offer_lazy(tile.id, tile)

    def offer_lazy(self, tid: str, build: Tile | Callable[[], Tile | None]) -> bool:
        """Queue tile ``tid``, built by ``build()`` when released (None: nothing to send)."""
        if tid in self.pending:
            self.coalesced += 1
        elif len(self.pending) >= self.max_pending:
            self.dropped += 1
            return False
        self.pending[tid] = build
        return True

    def due(self, now: float) -> list[Tile]:
        """Release the pending tiles whose id was last released ``min_interval_s`` ago or more."""
        out = []
        for tid in list(self.pending):
            if now - self.last_sent.get(tid, -1e18) >= self.min_interval_s:
                if self.bucket is not None and not self.bucket.take(now):
                    self.held += 1
                    break
                item = self.pending.pop(tid)
                tile = item if isinstance(item, Tile) else item()
                if tile is not None:  # nothing sent: the next tile of tid need not wait
                    out.append(tile)
                    self.last_sent[tid] = now
        if len(self.last_sent) > 4 * self.max_pending:
            horizon = now - self.min_interval_s
            self.last_sent = {k: t for k, t in self.last_sent.items() if t >= horizon}
        self.released += len(out)
        return out


@dataclass(frozen=True, slots=True)
class ViewFact:
    """One input of the global views, as the tiles stage forwards it to ``<ns>.views``.

    ``item`` is a KPI value (kind ``kpi``) or an alert state (kind ``alert``);
    ``value`` its bytes as read from ``<ns>.kpis``/``<ns>.alerts``, at ``partition`` and
    ``offset`` there, so the views can tell a redelivered or older copy from a newer
    one. Wire form (the record value on ``<ns>.views``, also the views state):
    ``b"<kind> <partition> <offset>"``, a newline, then ``value`` unchanged.
    """

    item: KpiValue | Alert
    value: bytes
    partition: int
    offset: int

    @property
    def kind(self) -> str:
        return "kpi" if isinstance(self.item, KpiValue) else "alert"

    @property
    def key(self) -> str:
        """The KPI value's key (``kpi|group|period|period key``) or the alert id."""
        return self.item.key if isinstance(self.item, KpiValue) else self.item.id

    def record_key(self) -> bytes:
        """``<kind>|<key>``: the record key on ``<ns>.views`` and in the views state."""
        return f"{self.kind}|{self.key}".encode()

    def to_bytes(self) -> bytes:
        return b"%s %d %d\n%s" % (self.kind.encode(), self.partition, self.offset, self.value)

    @classmethod
    def from_bytes(cls, data: bytes | None) -> ViewFact:
        """Decode ``to_bytes`` output (the value too; the record key is not needed).

        Raises:
            InvalidRecord: ``data`` is not a view fact of a decodable KPI value or alert.
        """
        try:
            if data is None:
                raise ValueError("no value")
            head, value = bytes(data).split(b"\n", 1)
            kind_b, part_b, off_b = head.split(b" ")
            if kind_b not in (b"kpi", b"alert"):
                raise ValueError(f"kind {kind_b[:20]!r} is neither b'kpi' nor b'alert'")
            partition, offset = int(part_b), int(off_b)
            if partition < 0 or offset < 0:
                raise ValueError(f"negative partition or offset ({partition}, {offset})")
        except (ValueError, TypeError) as exc:
            raise InvalidRecord.undecodable(
                "a view fact (b'<kpi|alert> <partition> <offset>', newline, value)",
                exc) from exc
        item = KpiValue.from_bytes(value) if kind_b == b"kpi" else Alert.from_bytes(value)
        return cls(item, value, partition, offset)


class GlobalViews:
    """The tiles that need every partition: ``alerts:all`` and ``alerts:<scope>``,
    ``kpi:<id>`` and ``kpi:<id>:<group>`` (whose ranking and overall value need every
    group), built from ``ViewFact``s.

    ``apply`` keeps the latest fact per key: a fact read at an offset at or below the
    one already applied for its key (same source partition) is a redelivered or older
    copy and is skipped (counted in ``stale``), so replays after a crash or a rebalance
    of the partitioned tiles stage never move a view backwards.

    Bounded: only what a tile shows is kept, and never more than ``max_facts`` facts.

    * KPI values of another period than their KPI's ``tile_period`` (or of a KPI not
      configured) are not kept (``unshown``); of the tile period only the newest
      ``trend_points`` period keys are, the older ones leave (``expired_periods``).
    * An alert that every bounded list (``alert_items`` per scope) has pushed out leaves
      (``unlisted``); ``expire()`` takes out cleared alerts that cleared more than
      ``cleared_retention_s`` before the newest alert time applied (``alert_time``:
      event time, so a replay of old alerts keeps them as long as live ones)
      (``expired_alerts``).
    * Beyond ``max_facts`` the least recently updated facts leave (``evicted``).

    The record key (``ViewFact.record_key``) of each fact that leaves is queued;
    ``take_removed`` hands them over (the views stage deletes them from its state).
    """

    def __init__(self, specs: Iterable[KpiSpec], *, trend_points: int = 12,
                 alert_items: int = 50, cleared_retention_s: float = 3600.0,
                 max_facts: int = 100_000) -> None:
        self.specs = list(specs)
        self.trend_points = trend_points
        self.alert_items = alert_items
        self.cleared_retention_s = cleared_retention_s
        self.max_facts = max_facts
        self.stale = self.unshown = self.expired_periods = self.unlisted = 0
        self.expired_alerts = self.evicted = 0
        self.removed: list[bytes] = []
        self.clear()

    def clear(self) -> None:
        """Forget everything (the views partition was revoked, or before a rebuild)."""
        self.kpis = KpiBoard(self.specs, trend_points=self.trend_points)
        self.alerts = AlertBoard(items=self.alert_items)
        # record key -> (source partition, offset, what to remove), least recently updated first
        self.origins: OrderedDict[bytes, tuple[int, int, tuple[str, ...]]] = OrderedDict()
        self.removed = []
        self.alert_time = 0.0  # the newest raised or cleared time of the alerts applied

    def counters(self) -> dict[str, int]:
        """What left the views and why, and what was skipped (cumulative)."""
        return {"stale": self.stale, "unshown": self.unshown, "expired_periods": self.expired_periods,
                "unlisted": self.unlisted, "expired_alerts": self.expired_alerts,
                "evicted": self.evicted, "facts": len(self.origins)}

    def is_stale(self, fact: ViewFact) -> bool:
        """True when ``fact`` is not newer than what was applied for its key."""
        seen = self.origins.get(fact.record_key())
        return seen is not None and seen[0] == fact.partition and fact.offset <= seen[1]

    def apply(self, fact: ViewFact) -> list[str] | None:
        """Apply ``fact``; return the tile ids it changes, or None when it is stale or
        not shown by any tile (then it is not kept)."""
        if self.is_stale(fact):
            self.stale += 1
            return None
        item = fact.item
        key = fact.record_key()
        if isinstance(item, KpiValue):
            spec = self.kpis.specs.get(item.kpi)
            if spec is None or item.period != spec.tile_period:
                self.unshown += 1
                return None
            ids = self.kpis.update(item)
            self.origins[key] = (fact.partition, fact.offset,
                                 ("kpi", item.kpi, item.period, item.period_key, item.group))
            self.origins.move_to_end(key)
            ids += self._trim_periods(item.kpi, item.period)
        else:
            self.origins[key] = (fact.partition, fact.offset, ("alert", item.id))
            self.origins.move_to_end(key)
            self.alert_time = max(self.alert_time, item.cleared_at or item.raised_at)
            ids = self.alerts.update(item, forgotten=self._pushed_out)
        while len(self.origins) > self.max_facts:
            old = next(iter(self.origins))
            self.evicted += 1
            ids += self._remove(old)
        return list(dict.fromkeys(ids))

    def _pushed_out(self, alert_id: str) -> None:
        if not self.alerts.listed(alert_id):
            self.unlisted += 1
            self.origins.pop(b"alert|" + alert_id.encode(), None)
            self.removed.append(b"alert|" + alert_id.encode())

    def _trim_periods(self, kpi: str, period: str) -> list[str]:
        by_key = self.kpis.values.get(kpi, {}).get(period, {})
        ids: list[str] = []
        for pk in sorted(by_key)[:-self.trend_points]:
            for v in list(by_key[pk].values()):
                self.expired_periods += 1
                ids += self._remove(b"kpi|" + v.key.encode())
        return ids

    def _remove(self, key: bytes) -> list[str]:
        """Take the fact of ``key`` out of the views; return the tile ids that changes."""
        entry = self.origins.pop(key, None)
        if entry is None:
            return []
        self.removed.append(key)
        what = entry[2]
        if what[0] == "alert":
            return self.alerts.remove(what[1])
        kpi, period, pk, group = what[1:]
        by_key = self.kpis.values.get(kpi, {}).get(period, {})
        groups = by_key.get(pk, {})
        groups.pop(group, None)
        if not groups:
            by_key.pop(pk, None)
        spec = self.kpis.specs.get(kpi)
        return [f"kpi:{kpi}:{group}"] + ([f"kpi:{kpi}"] if spec and spec.overall_group else [])

    def expire(self, now: float | None = None) -> list[str]:
        """Take out the alerts cleared more than ``cleared_retention_s`` before ``now``
        (seconds since the epoch; default ``alert_time``); return the tile ids that
        changes."""
        cutoff = (self.alert_time if now is None else now) - self.cleared_retention_s
        old = {a.id for board in self.alerts.scopes.values() for a in board.values()
               if a.state == "cleared" and (a.cleared_at or a.raised_at) < cutoff}
        ids: list[str] = []
        for alert_id in sorted(old):
            self.expired_alerts += 1
            ids += self._remove(b"alert|" + alert_id.encode())
        return list(dict.fromkeys(ids))

    def take_removed(self) -> list[bytes]:
        """The record keys of the facts that left since the last call."""
        out, self.removed = self.removed, []
        return out

    def rebuild(self, facts: Iterable[ViewFact]) -> list[str]:
        """Start over from ``facts`` (a restored state, any order); return every tile id.

        Alerts are applied in the order of their last change (cleared or raised time),
        so the bounded alert lists keep the same ones as when they arrived live. What
        the bounds do not keep is queued for ``take_removed`` with the rest.
        """
        self.clear()
        every = list(facts)
        alerts = [(f.item, f) for f in every if isinstance(f.item, Alert)]
        alerts.sort(key=lambda af: (af[0].cleared_at or af[0].raised_at, af[0].id))
        kpis = [f for f in every if isinstance(f.item, KpiValue)]
        kpis.sort(key=lambda f: f.item.period_key if isinstance(f.item, KpiValue) else "")
        for f in kpis:
            if self.apply(f) is None:
                self.removed.append(f.record_key())
        for _a, f in alerts:
            self.apply(f)
        return self.tile_ids()

    def tile_ids(self) -> list[str]:
        """Every tile these views can build now."""
        ids = [f"alerts:{scope}" for scope in self.alerts.scopes]
        for kpi, periods in self.kpis.values.items():
            spec = self.kpis.specs.get(kpi)
            if spec is None:
                continue
            groups = sorted({g for by_group in periods.get(spec.tile_period, {}).values()
                             for g in by_group})
            if not groups:
                continue
            ids.extend(f"kpi:{kpi}:{g}" for g in groups)
            if spec.overall_group:
                ids.append(f"kpi:{kpi}")
        return ids

    def tile(self, tile_id: str) -> Tile | None:
        """Build ``tile_id`` (``alerts:...`` or ``kpi:...``) from the current state."""
        if tile_id.startswith("alerts:"):
            return self.alerts.tile(tile_id)
        return self.kpis.tile(tile_id)
