"""The aggregate agent: ``<ns>.events`` -> event-time windows -> ``<ns>.rollups``.

State: one ``EntityWindows`` per entity in the Faust table ``agg-windows`` (changelog
topic, memory store rebuilt on start), co-partitioned with ``<ns>.events`` (keyed by
entity). Each batch of events updates the states, then per entity:

* windows whose end + allowed lateness has passed the entity's watermark are emitted
  once with ``state: "closed"`` and dropped from the state;
* open windows of the ``update_sizes_s`` that the batch touched are emitted with
  ``state: "updated"`` (one message per window per batch, the full aggregate, so a
  lost update is healed by the next one);
* late events go to ``<ns>.dlq`` with header ``reason: late`` and are counted.

Exactly-once totals on top of at-least-once Kafka: the state remembers the last
applied (partition, offset), so records redelivered after a crash (kill -9 between a
changelog write and the offset commit) are skipped, not counted twice.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import faust

from ioc.aggregate import EntityWindows, Rollup, UpdateThrottle, WindowId
from ioc.config import Settings
from ioc.errors import InvalidEvent
from ioc.events import decode_event
from ioc.topics import spec, topic_name

from .agent_spec import AgentSpec

__all__ = ["AGGREGATE", "AggregateMetrics", "Sender", "StateCache", "dlq_headers", "save_state"]

log = logging.getLogger(__name__)


class Sender:
    """Sends through the app's producer without Faust's per-message topic machinery.

    The returned futures are not awaited one by one: Faust flushes the producer before
    it commits offsets, so a record is durable before its source offset is committed.
    Failed sends are counted (and logged), never ignored.
    """

    def __init__(self, app: faust.App, what: str) -> None:
        self.app = app
        self.what = what
        self.sent = 0
        self.failed = 0

    def _done(self, fut: Any) -> None:
        if fut.cancelled() or fut.exception() is not None:
            self.failed += 1
            log.error("%s: send failed: %r", self.what, None if fut.cancelled() else fut.exception())

    async def send(self, topic: str, key: bytes | None, value: bytes, *, partition: int | None = None,
                   headers: list[tuple[str, bytes]] | None = None) -> None:
        fut = await self.app.producer.send(topic, key, value, partition, None, headers)
        self.sent += 1
        if hasattr(fut, "add_done_callback"):
            fut.add_done_callback(self._done)


class StateCache:
    """Decoded table values, reused while the table still holds the very same bytes.

    The identity check makes a rebalance or a changelog recovery (new bytes objects)
    invalidate the cache without hooks; it saves decoding every state on every batch.
    """

    def __init__(self, limit: int = 100_000) -> None:
        self.limit = limit
        self.items: dict[bytes, tuple[bytes, Any]] = {}

    def get(self, table: Any, key: bytes, load: Any, new: Any, entity: str) -> Any:
        """The state of ``key``: cached, else ``load(bytes)``, else ``new(entity)``."""
        raw = table.data.get(key)
        hit = self.items.get(key)
        if hit is not None and raw is not None and hit[0] is raw:
            return hit[1]
        return load(raw) if raw else new(entity)

    async def put(self, table: Any, key: bytes, obj: Any, raw: bytes, partition: int,
                  out: Sender) -> None:
        await save_state(table, key, raw, partition, out)
        if len(self.items) >= self.limit:
            self.items.clear()  # bounded: start over rather than grow
        self.items[key] = (raw, obj)


async def save_state(table: Any, key: bytes, value: bytes, partition: int, out: Sender) -> None:
    """Set a table key and write its changelog record to the source record's partition.

    Batches (``take_events``) mix partitions, so Faust's implicit "partition of the
    current event" would be wrong for all but the last event of a batch. The record
    goes straight to the producer (the same bytes Faust would write: raw key and
    value): Faust's per-record changelog path cost most of the worker's CPU. The memory
    store recovers from the whole changelog, so Faust's persisted-offset bookkeeping
    for the record is not needed.
    """
    table.data[key] = value
    await out.send(table.changelog_topic.get_topic_name(), key, value, partition=partition)


def dlq_headers(reason: str, msg: Any, detail: str = "") -> list[tuple[str, bytes]]:
    """Dead-letter headers: why, and where the original record was."""
    return [("reason", reason.encode()), ("source_topic", str(msg.topic).encode()),
            ("source_partition", str(msg.partition).encode()),
            ("source_offset", str(msg.offset).encode()), ("detail", detail.encode()[:500])]


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


def _register(app: faust.App, settings: Settings) -> None:
    ns = settings.namespace
    cfg = settings.streams.aggregate
    sizes = cfg.window_sizes_s
    lateness = cfg.allowed_lateness_s
    update_sizes = cfg.emit_update_sizes
    raw: dict[str, Any] = {"value_serializer": "raw", "key_serializer": "raw"}
    events = app.topic(topic_name(ns, "events"), **raw)
    rollups = topic_name(ns, "rollups")
    dlq = topic_name(ns, "dlq")
    out = Sender(app, "aggregate")
    cache = StateCache()
    throttle: UpdateThrottle[tuple[Rollup, int]] = UpdateThrottle(
        min_interval_s=cfg.update_interval_s, max_pending=100_000)
    table = app.Table("agg-windows", default=None, partitions=spec("events").partitions,
                      key_type=bytes, value_type=bytes, help="open windows per entity")
    m = AggregateMetrics()
    last_log = [time.monotonic()]

    async def process(batch: list[Any]) -> None:
        now = time.monotonic()
        states: dict[bytes, EntityWindows] = {}
        where: dict[bytes, int] = {}
        touched: dict[bytes, set[WindowId]] = {}
        for ev in batch:
            msg = ev.message
            m.events += 1
            try:
                e = decode_event(ev.value)
            except InvalidEvent as exc:
                m.undecodable += 1
                await out.send(dlq, ev.key, ev.value, headers=dlq_headers(exc.reason, msg, str(exc)))
                continue
            key = e.entity.encode()
            st = states.get(key)
            if st is None:
                st = states[key] = cache.get(table, key, EntityWindows.from_bytes,
                                             EntityWindows, e.entity)
            if st.seen(msg.partition, msg.offset):
                m.redelivered += 1
                continue
            hit = st.add(e.time, e.values, sizes, lateness)
            st.mark(msg.partition, msg.offset)
            where[key] = msg.partition
            if hit is None:
                m.late += 1
                await out.send(dlq, ev.key, ev.value, headers=dlq_headers(
                    "late", msg, f"event time {e.time} is more than {lateness} s behind the "
                    f"watermark {st.watermark} of {e.entity}"))
            else:
                m.applied += 1
                touched.setdefault(key, set()).update(hit)
        for key, st in states.items():
            if key not in where:
                continue
            p = where[key]
            for r in st.close_due(lateness):
                throttle.forget(r.key)
                await out.send(rollups, r.key.encode(), r.to_bytes(), partition=p)
                m.rollups_closed += 1
            for wid in sorted(touched.get(key, ()), key=lambda w: (w[2], w[1], w[0])):
                if wid[1] in update_sizes and wid in st.windows:
                    r = st.rollup(wid)
                    if throttle.offer(r.key, (r, p), now) is not None:
                        await out.send(rollups, r.key.encode(), r.to_bytes(), partition=p)
                        m.rollups_updated += 1
            await cache.put(table, key, st, st.to_bytes(), p, out)
        if time.monotonic() - last_log[0] > 60:
            last_log[0] = time.monotonic()
            log.info("aggregate: %s sent=%s send_failed=%s", m.line(), out.sent, out.failed)

    async def send_due() -> None:
        for r, p in throttle.due(time.monotonic()):
            # a snapshot of the window when it was held back; a newer one follows
            await out.send(rollups, r.key.encode(), r.to_bytes(), partition=p)
            m.rollups_updated += 1

    @app.timer(max(0.05, cfg.update_interval_s / 2), name=f"{ns}.aggregate.updates")
    async def flush_updates() -> None:
        await send_due()

    @app.agent(events, name=f"{ns}.aggregate")
    async def aggregate(stream):  # type: ignore[no-untyped-def]
        async for batch in stream.take_events(cfg.batch_max, within=cfg.batch_within_s):
            t0 = time.perf_counter()
            await process(batch)
            await send_due()
            m.batches += 1
            m.busy_s += time.perf_counter() - t0


AGGREGATE = AgentSpec("aggregate", _register,
                      "events -> event-time tumbling windows -> rollups (+ late events to dlq)")
