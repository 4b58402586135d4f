"""The aggregate agent: ``<ns>.events`` -> event-time windows -> ``<ns>.rollups``.

A batch stage (``streams.engine``). State: one ``EntityWindows`` per entity in the
``StateTable`` ``agg-windows`` (compacted changelog topic, rebuilt when partitions are
assigned), co-partitioned with ``<ns>.events`` (keyed by entity). Each batch of events
updates the states, then per entity:

* windows whose end + allowed lateness has passed the entity's watermark are emitted
  once with ``state: "closed"`` and dropped from the state;
* open windows of the ``update_sizes_s`` that the batch touched are emitted with
  ``state: "updated"`` (one message per window per batch, the full aggregate, so a
  lost update is healed by the next one);
* late events go to ``<ns>.dlq`` with header ``dlq.reason: late`` and are counted;
  records that are not canonical events go there too (their ``InvalidEvent`` reason:
  ``not_json``, ``bad_time``...), counted as ``undecodable``.

Exactly-once totals on top of at-least-once Kafka: beside each entity's windows the
table keeps its ``Applied`` marks (``streams.engine.applied``: last applied partition/offset
and raw origins), so records redelivered after a crash (kill -9 between a changelog
write and the offset commit) are skipped, not counted twice. Held-back
'updated' rollups are sent by the stage's tick (every ``update_interval_s / 4``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from ioc.aggregate import EntityWindows, UpdateThrottle, WindowId
from ioc.config import Settings
from ioc.errors import InvalidEvent
from ioc.events import Event, LogThrottle, dead_letter_headers, raw_origin
from ioc.topics import topic_name

from .agent_spec import AgentSpec
from .engine import Outbox, Record, Stage, StateTable
from .engine.applied import Tracked

__all__ = ["AGGREGATE", "AggregateMetrics", "dlq_headers"]

log = logging.getLogger(__name__)


def dlq_headers(reason: str, msg: Any, detail: str = "", field: str | None = None
                ) -> list[tuple[str, bytes]]:
    """Dead-letter headers of a record of ``<ns>.events`` (``dead_letter_headers``)."""
    return dead_letter_headers(reason, topic=str(msg.topic), partition=msg.partition,
                               offset=msg.offset, message=detail, field=field,
                               stage="aggregate", headers=list(msg.headers or ()))


@dataclass
class AggregateMetrics:
    """Counters logged every minute by the agent."""

    events: int = 0
    applied: int = 0
    late: int = 0
    redelivered: int = 0
    undecodable: int = 0
    rollups_updated: int = 0
    rollups_closed: int = 0
    batches: int = 0
    busy_s: float = 0.0

    def line(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.__dict__.items())


def build(settings: Settings) -> list[Stage]:
    """The aggregate stage (Sans-I/O: records in, an ``Outbox`` out), with fresh state."""
    ns = settings.namespace
    cfg = settings.streams.aggregate
    sizes = cfg.window_sizes_s
    lateness = cfg.allowed_lateness_s
    update_sizes = cfg.emit_update_sizes
    rollups = topic_name(ns, "rollups")
    dlq = topic_name(ns, "dlq")
    # held updates: (entity's windows, window, partition) by (entity, *window); the
    # rollup is made when it is sent, with the window's figures then
    throttle: UpdateThrottle[tuple[EntityWindows, WindowId, int]] = UpdateThrottle(
        min_interval_s=cfg.update_interval_s, max_pending=100_000,
        max_per_s=cfg.max_updates_per_s)
    source = topic_name(ns, "events")
    table = StateTable("agg-windows", source, settings.topics.spec("events").partitions)
    load = Tracked.decoder(EntityWindows.from_dict, "the windows of an entity")
    new = Tracked.factory(EntityWindows)
    m = AggregateMetrics()
    every_minute = LogThrottle(60.0)
    every_minute.allow("metrics")  # the first line a minute from now

    def process(records: list[Record], events: list[Event | InvalidEvent], out: Outbox) -> None:
        t0 = time.perf_counter()
        now = time.monotonic()
        states: dict[bytes, Tracked[EntityWindows]] = {}
        where: dict[bytes, int] = {}
        touched: dict[bytes, set[WindowId]] = {}
        for msg, e in zip(records, events, strict=True):
            m.events += 1
            if isinstance(e, InvalidEvent):
                m.undecodable += 1
                out.add(dlq, msg.key, msg.value if msg.value is not None else b"",
                        headers=dlq_headers(e.reason, msg, str(e), e.field))
                continue
            key = e.entity.encode()
            tr = states.get(key)
            if tr is None:
                tr = states[key] = table.get(key, load, new, e.entity)
            origin = raw_origin(msg.headers)
            if tr.marks.seen(msg.partition, msg.offset, origin):
                m.redelivered += 1
                continue
            st = tr.state
            hit = st.add(e.time, e.values, sizes, lateness)
            tr.marks.mark(msg.partition, msg.offset, origin)
            where[key] = msg.partition
            if hit is None:
                m.late += 1
                out.add(dlq, msg.key, msg.value, headers=dlq_headers(
                    "late", msg, f"event time {e.time} is more than {lateness} s behind the "
                    f"watermark {st.watermark} of {e.entity}"))
            else:
                m.applied += 1
                touched.setdefault(key, set()).update(hit)
        for key, tr in states.items():
            if key not in where:
                continue
            st = tr.state
            p = where[key]
            for r in st.close_due(lateness):
                throttle.forget((r.entity, r.metric, r.size, r.start))
                out.add(rollups, r.key.encode(), r.to_bytes(), partition=p)
                m.rollups_closed += 1
            update = [w for w in touched.get(key, ()) if w[1] in update_sizes and w in st.windows]
            for wid in sorted(update, key=lambda w: (w[2], w[1], w[0])):
                if throttle.offer((st.entity, *wid), (st, wid, p), now) is not None:
                    r = st.rollup(wid)
                    out.add(rollups, r.key.encode(), r.to_bytes(), partition=p)
                    m.rollups_updated += 1
            table.change(key, tr, p)
        send_due(0.0, out)  # held-back updates that are due now go with this batch
        m.batches += 1
        m.busy_s += time.perf_counter() - t0
        if every_minute.allow("metrics") is not None:
            log.info("aggregate: %s", m.line())

    def send_due(_now: float, out: Outbox) -> None:
        for st, wid, p in throttle.due(time.monotonic()):
            if wid not in st.windows:
                continue  # closed meanwhile (its 'closed' rollup went out then)
            r = st.rollup(wid)  # the window's figures now
            out.add(rollups, r.key.encode(), r.to_bytes(), partition=p)
            m.rollups_updated += 1

    def on_revoked(tps: set[Any]) -> None:
        # Held-back updates of windows that another worker now owns must not be sent
        # later: they could land after that worker's 'closed' rollup of the window.
        gone = {tp.partition for tp in tps if tp.topic == source}
        dropped = throttle.drop_where(lambda item: item[2] in gone)
        if dropped:
            log.info("aggregate: dropped %d held update(s) of revoked partitions %s",
                     dropped, sorted(gone))

    return [Stage.of_events(
        "aggregate", [source], process, tables=[table], tick=send_due, on_revoked=on_revoked,
        tick_every_s=max(0.02, cfg.update_interval_s / 4), batch_max=cfg.batch_max,
        within_s=cfg.batch_within_s, counters={"aggregate": m, "throttle": throttle})]


AGGREGATE = AgentSpec.of_stages("aggregate", build,
                      "events -> event-time tumbling windows -> rollups (+ late events to dlq)")
