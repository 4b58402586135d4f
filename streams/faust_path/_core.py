"""``EventCore``: aggregate+kpis+rules on one batched ``<ns>.events`` record, Sans-I/O.

``process(partition, offset, value, load)`` takes one batched record (``decode_batch``)
and returns its outputs (rollups, KPI values, alerts, dead letters) and its state
writes: one ``(table, key, bytes)`` per touched key per table per record. ``load(table,
key)`` reads a state's bytes (a Faust table in the agent, a dict in tests). No Kafka,
no clock of its own except where the stages use one (the update throttle's monotonic
clock, the wall clock of absence rules), which callers may pass in.

It computes what ``streams.aggregate``, ``streams.kpis`` and ``streams.rules`` compute
from the same events, with the same domain classes (``EntityWindows``, ``KpiCounts``,
``EntityRules``) and the same exactly-once marks, except that the (partition, offset)
mark is that of the batched record: an entity's events of one record are applied, or
skipped as a redelivery, together.

Decoded states are kept (bounded by ``cache_limit``; cleared when full) for the
partitions the caller owns; the caller calls ``forget`` on every rebalance, since a
restored state replaces them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

from ioc.aggregate import EntityWindows, UpdateThrottle, WindowId
from ioc.config import Settings
from ioc.errors import InvalidEvent, InvalidRecord
from ioc.events import dead_letter_headers, decode_event, raw_origin
from ioc.kpi import KpiCounts
from ioc.kpi._ratio import CountKey
from ioc.rules import Alert, EntityRules
from ioc.topics import topic_name

from ..engine.applied import Tracked
from ..kpis import kpi_partition
from ..rules import alert_partition
from ._batched import decode_batch

__all__ = ["AGG", "KPI", "RULES", "TABLES", "CoreMetrics", "CoreOutput", "EventCore"]

log = logging.getLogger(__name__)

_AGG_LOAD = Tracked.decoder(EntityWindows.from_dict, "the windows of an entity")
_AGG_NEW = Tracked.factory(EntityWindows)
_KPI_LOAD = Tracked.decoder(KpiCounts.from_dict, "the KPI counts of a group")
_KPI_NEW = Tracked.factory(KpiCounts)

AGG, KPI, RULES = "agg-windows", "kpi-counts", "rule-states"
TABLES = (AGG, KPI, RULES)
Load = Callable[[str, bytes], bytes | None]
Write = tuple[str, bytes, bytes]  # table, key, state bytes


class CoreOutput(NamedTuple):
    """An output record; ``partition`` None means the key's partition."""

    topic: str
    key: bytes | None
    value: bytes
    partition: int | None
    headers: list[tuple[str, bytes]] | None = None


@dataclass
class CoreMetrics:
    records: int = 0
    events: int = 0
    applied: int = 0
    late: int = 0
    redelivered: int = 0
    undecodable: int = 0
    state_writes: int = 0
    rollups_updated: int = 0
    rollups_closed: int = 0


class EventCore:
    """The event path's work per batched record (see the module docstring)."""

    def __init__(self, settings: Settings, *, cache_limit: int = 200_000) -> None:
        ns = settings.namespace
        s = settings.streams
        cfg = s.aggregate
        self.sizes = cfg.window_sizes_s
        self.lateness = cfg.allowed_lateness_s
        self.update_sizes = cfg.emit_update_sizes
        self.kpi_specs = list(s.kpis)
        self.kpi_by_id = {k.id: k for k in self.kpi_specs}
        self.kpi_types = {k.event_type for k in self.kpi_specs}
        self.tz = ZoneInfo(s.timezone)
        self.rules = list(s.rules)
        self.absence = [r for r in self.rules if r.kind == "absence"]
        self.events = topic_name(ns, "events")
        self.rollups = topic_name(ns, "rollups")
        self.kpis = topic_name(ns, "kpis")
        self.alerts = topic_name(ns, "alerts")
        self.dlq = topic_name(ns, "dlq")
        self.throttle: UpdateThrottle[tuple[EntityWindows, WindowId, int]] = UpdateThrottle(
            min_interval_s=cfg.update_interval_s, max_pending=100_000,
            max_per_s=cfg.max_updates_per_s)
        self.cache_limit = cache_limit
        self.cache: dict[str, dict[bytes, Any]] = {t: {} for t in TABLES}
        self.where: dict[str, dict[bytes, int]] = {t: {} for t in TABLES}
        self.metrics = CoreMetrics()
        self.undecodable_states = 0

    # -- state --

    def _get(self, table: str, key: bytes, entity: str, load: Load,
             decode: Callable[[bytes], Any], new: Callable[[str], Any]) -> Any:
        cache = self.cache[table]
        obj = cache.get(key)
        if obj is not None:
            return obj
        raw = load(table, key)
        if raw:
            try:
                obj = decode(raw)
            except InvalidRecord as exc:
                self.undecodable_states += 1
                log.error("state %s: the state of %r does not decode (%s); starting anew",
                          table, key[:80], exc)
        if obj is None:
            obj = new(entity)
        if len(cache) >= self.cache_limit:
            cache.clear()  # bounded: start over rather than grow
            self.where[table].clear()
        cache[key] = obj
        return obj

    def forget(self, partitions: Iterable[int] | None = None) -> None:
        """Drop the decoded states (of ``partitions``; None: all) and the held updates of
        those partitions (another worker may own them now: its 'closed' rollup must not
        be followed by our late 'updated' one)."""
        gone = None if partitions is None else set(partitions)
        for t in TABLES:
            if gone is None:
                self.cache[t].clear()
                self.where[t].clear()
                continue
            keys = [k for k, p in self.where[t].items() if p in gone]
            for k in keys:
                self.cache[t].pop(k, None)
                self.where[t].pop(k, None)
        self.throttle.drop_where(lambda item: gone is None or item[2] in gone)

    # -- one record --

    def process(self, partition: int, offset: int, value: bytes | None, load: Load, *,
                now: float | None = None, mono: float | None = None,
                headers: list[tuple[str, bytes]] | None = None,
                ) -> tuple[list[CoreOutput], list[Write]]:
        """Outputs and state writes of the batched record at ``partition``/``offset``."""
        now = time.time() if now is None else now
        mono = time.monotonic() if mono is None else mono
        out: list[CoreOutput] = []
        writes: list[Write] = []
        m = self.metrics
        m.records += 1
        try:
            pairs = decode_batch(value)  # type: ignore[arg-type]
        except InvalidRecord as exc:
            m.undecodable += 1
            out.append(CoreOutput(self.dlq, None, value or b"", None, dead_letter_headers(
                exc.reason, topic=self.events, partition=partition, offset=offset,
                message=str(exc), stage="faust-path", headers=list(headers or ()))))
            return out, writes
        events: list[tuple[int, Any, Any, bytes]] = []  # index, Event, origin, bytes
        for i, (ob, raw) in enumerate(pairs):
            m.events += 1
            try:
                e = decode_event(raw)
            except InvalidEvent as exc:
                m.undecodable += 1
                out.append(CoreOutput(self.dlq, None, raw, None, dead_letter_headers(
                    exc.reason, topic=self.events, partition=partition, offset=offset,
                    message=str(exc), field=exc.field, index=i, stage="faust-path")))
                continue
            events.append((i, e, raw_origin((("ioc.raw", ob),)) if ob else None, raw))
        self._aggregate(partition, offset, events, load, mono, out, writes)
        self._kpis(partition, offset, events, load, out, writes)
        self._rules(partition, events, load, now, out, writes)
        out.extend(self.due(mono))
        m.state_writes += len(writes)
        return out, writes

    def _aggregate(self, p: int, o: int, events: list[tuple[int, Any, Any, bytes]], load: Load,
                   mono: float, out: list[CoreOutput], writes: list[Write]) -> None:
        m = self.metrics
        states: dict[bytes, Tracked[EntityWindows]] = {}
        skip: set[bytes] = set()
        applied: set[bytes] = set()
        touched: dict[bytes, set[WindowId]] = {}
        for i, e, origin, raw in events:
            key = e.entity.encode()
            tr = states.get(key)
            if tr is None:
                tr = states[key] = self._get(AGG, key, e.entity, load, _AGG_LOAD, _AGG_NEW)
                if tr.marks.record_seen(p, o):
                    skip.add(key)
            if key in skip or tr.marks.origin_seen(origin):
                m.redelivered += 1
                continue
            st = tr.state
            hit = st.add(e.time, e.values, self.sizes, self.lateness)
            tr.marks.mark_origin(origin)
            applied.add(key)
            if hit is None:
                m.late += 1
                out.append(CoreOutput(self.dlq, key, raw, None, dead_letter_headers(
                    "late", topic=self.events, partition=p, offset=o, index=i,
                    message=f"event time {e.time} is more than {self.lateness} s behind the "
                            f"watermark {st.watermark} of {e.entity}", stage="faust-path")))
            else:
                m.applied += 1
                touched.setdefault(key, set()).update(hit)
        for key in applied:
            tr = states[key]
            tr.marks.mark(p, o)
            st = tr.state
            for r in st.close_due(self.lateness):
                self.throttle.forget((r.entity, r.metric, r.size, r.start))
                out.append(CoreOutput(self.rollups, r.key.encode(), r.to_bytes(), p))
                m.rollups_closed += 1
            update = [w for w in touched.get(key, ()) if w[1] in self.update_sizes
                      and w in st.windows]
            for wid in sorted(update, key=lambda w: (w[2], w[1], w[0])):
                if self.throttle.offer((st.entity, *wid), (st, wid, p), mono) is not None:
                    r = st.rollup(wid)
                    out.append(CoreOutput(self.rollups, r.key.encode(), r.to_bytes(), p))
                    m.rollups_updated += 1
            self.where[AGG][key] = p
            writes.append((AGG, key, tr.to_bytes()))

    def _kpis(self, p: int, o: int, events: list[tuple[int, Any, Any, bytes]], load: Load,
              out: list[CoreOutput], writes: list[Write]) -> None:
        states: dict[bytes, Tracked[KpiCounts]] = {}
        skip: set[bytes] = set()
        applied: set[bytes] = set()
        touched: dict[bytes, set[CountKey]] = {}
        for _i, e, origin, _raw in events:
            if e.type not in self.kpi_types:
                continue
            key = e.entity.encode()
            tr = states.get(key)
            if tr is None:
                tr = states[key] = self._get(KPI, key, e.entity, load, _KPI_LOAD, _KPI_NEW)
                if tr.marks.record_seen(p, o):
                    skip.add(key)
            if key in skip or tr.marks.origin_seen(origin):
                continue
            hit = tr.state.add(self.kpi_specs, self.tz, type=e.type, t=e.time,
                               values=e.values, attributes=e.attributes)
            tr.marks.mark_origin(origin)
            applied.add(key)
            touched.setdefault(key, set()).update(hit)
        for key in applied:
            tr = states[key]
            tr.marks.mark(p, o)
            for ck in sorted(touched.get(key, ())):
                v = tr.state.value(ck, self.kpi_by_id[ck[0]])
                out.append(CoreOutput(self.kpis, v.key.encode(), v.to_bytes(),
                                      kpi_partition(v.kpi)))
            self.where[KPI][key] = p
            writes.append((KPI, key, tr.to_bytes()))

    def _emit(self, found: list[Alert], out: list[CoreOutput]) -> None:
        for a in found:
            out.append(CoreOutput(self.alerts, a.id.encode(), a.to_bytes(),
                                  alert_partition(a.scope)))

    def _rules(self, p: int, events: list[tuple[int, Any, Any, bytes]], load: Load, now: float,
               out: list[CoreOutput], writes: list[Write]) -> None:
        states: dict[bytes, EntityRules] = {}
        for _i, e, _origin, _raw in events:
            key = e.entity.encode()
            er = states.get(key)
            if er is None:
                er = states[key] = self._get(RULES, key, e.entity, load, EntityRules.from_bytes,
                                             EntityRules)
            self._emit(er.evaluate(self.rules, t=e.time, values=e.values, type=e.type,
                                   now=now), out)
        for key, er in states.items():
            self.where[RULES][key] = p
            writes.append((RULES, key, er.to_bytes()))

    # -- timers --

    def due(self, mono: float | None = None) -> list[CoreOutput]:
        """Held-back 'updated' rollups whose interval has passed (the figures now)."""
        out = []
        for st, wid, p in self.throttle.due(time.monotonic() if mono is None else mono):
            if wid not in st.windows:
                continue  # closed meanwhile (its 'closed' rollup went out then)
            r = st.rollup(wid)
            out.append(CoreOutput(self.rollups, r.key.encode(), r.to_bytes(), p))
            self.metrics.rollups_updated += 1
        return out

    def check_absence(self, states: Iterable[tuple[bytes, bytes, int]], now: float
                      ) -> tuple[list[CoreOutput], list[tuple[int, bytes, bytes]]]:
        """Absence alerts over ``(key, rule-state bytes, partition)`` of the owned
        partitions; returns the outputs and ``(partition, key, bytes)`` of changed states."""
        out: list[CoreOutput] = []
        writes: list[tuple[int, bytes, bytes]] = []
        if not self.absence:
            return out, writes
        cache = self.cache[RULES]
        for key, raw, p in states:
            er = cache.get(key)
            if er is None:
                try:
                    er = EntityRules.from_bytes(raw)
                except InvalidRecord:
                    continue
            found = er.check_absence(self.absence, now)
            if found:
                self._emit(found, out)
                writes.append((p, key, er.to_bytes()))
        return out, writes

