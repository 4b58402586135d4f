"""The rules agent: ``<ns>.events`` (+ wall-clock ticks) -> alerts -> ``<ns>.alerts``.

State: one ``EntityRules`` per entity in the Faust table ``rule-states``, co-partitioned
with ``<ns>.events``. Threshold and rate rules run on each event in event time.

Absence rules need a clock that runs when no data arrives: the leader's timer sends,
every ``absence_check_every_s``, one tick per partition to the internal topic
``<ns>.rules.ticks`` (created at start) (as many partitions as ``<ns>.events``). The agent reads events
and ticks from one stream, so a tick for partition p is handled where partition p's
states live and can update them (a Faust table can only be changed from a stream).

Alerts are keyed by their deterministic id on the compacted ``<ns>.alerts`` topic, in
the partition of their scope, so one reader sees a whole alert list.
"""

from __future__ import annotations

import logging
import time
import zlib
from typing import Any

import faust
import orjson

from ioc.config import Settings
from ioc.errors import InvalidEvent, KafkaError
from ioc.events import decode_event
from ioc.kafka import ensure_topics
from ioc.rules import Alert, EntityRules
from ioc.topics import TopicSpec, spec, topic_name

from .agent_spec import AgentSpec
from .aggregate import Sender, StateCache, save_state

__all__ = ["RULES", "TICKS", "alert_partition"]

log = logging.getLogger(__name__)


def alert_partition(scope: str, partitions: int | None = None) -> int:
    """The ``<ns>.alerts`` partition of every alert of ``scope``."""
    return zlib.crc32(scope.encode()) % (partitions or spec("alerts").partitions)


# Wall-clock ticks of the absence rules; as many partitions as <ns>.events (co-partitioned).
TICKS = TopicSpec("rules.ticks", spec("events").partitions, "partition number", "JSON {now}",
                  "delete", 3600 * 1000, "wall-clock ticks of the absence rules")


def _ensure_ticks(settings: Settings) -> None:
    # The worker subscribes at start and ignores topics that do not exist yet, so the
    # ticks topic must exist before the app runs (Faust does not declare a topic that
    # only appears inside a multi-topic channel).
    try:
        report = ensure_topics(settings, [TICKS])
    except KafkaError as exc:
        log.warning("rules: could not create %s (absence rules will not tick): %s",
                    TICKS.name(settings.namespace), exc)
        return
    if not report.success:
        log.warning("rules: %s", "; ".join(report.lines()))


def _register(app: faust.App, settings: Settings) -> None:
    ns = settings.namespace
    s = settings.streams
    rules = list(s.rules)
    absence = [r for r in rules if r.kind == "absence"]
    nparts = spec("events").partitions
    raw: dict[str, Any] = {"value_serializer": "raw", "key_serializer": "raw"}
    ticks_name = TICKS.name(ns)
    if absence:
        _ensure_ticks(settings)
    ticks = app.topic(ticks_name, **raw)
    source = app.topic(topic_name(ns, "events"), ticks_name, **raw)
    alerts = topic_name(ns, "alerts")
    out = Sender(app, "rules")
    cache = StateCache()
    table = app.Table("rule-states", default=None, partitions=nparts,
                      key_type=bytes, value_type=bytes, help="alert rule state per entity")

    async def emit(found: list[Alert]) -> None:
        for a in found:
            await out.send(alerts, a.id.encode(), a.to_bytes(), partition=alert_partition(a.scope))

    async def on_tick(msg: Any, now: float) -> None:
        for key, value in list(table.data.items()):
            er = EntityRules.from_bytes(value)
            if er.partition != msg.partition:
                continue
            found = er.check_absence(absence, now)
            if found:
                await emit(found)
                await save_state(table, key, er.to_bytes(), msg.partition, out)

    async def process(batch: list[Any]) -> None:
        states: dict[bytes, EntityRules] = {}
        now = time.time()
        for ev in batch:
            msg = ev.message
            if msg.topic == ticks_name:
                if absence:
                    for key, er in states.items():  # flush first: the tick reads the table
                        await save_state(table, key, er.to_bytes(), er.partition, out)
                    states.clear()
                    await on_tick(msg, orjson.loads(ev.value)["now"])
                continue
            try:
                e = decode_event(ev.value)
            except InvalidEvent:
                continue  # dead-lettered by the aggregate agent
            key = e.entity.encode()
            cur = states.get(key)
            if cur is None:
                cur = states[key] = cache.get(table, key, EntityRules.from_bytes,
                                              EntityRules, e.entity)
            er = cur
            er.partition = msg.partition
            await emit(er.evaluate(rules, t=e.time, values=e.values, type=e.type, now=now))
        for key, er in states.items():
            await cache.put(table, key, er, er.to_bytes(), er.partition, out)

    @app.agent(source, name=f"{ns}.rules")
    async def rules_agent(stream):  # type: ignore[no-untyped-def]
        async for batch in stream.take_events(s.aggregate.batch_max, within=s.aggregate.batch_within_s):
            await process(batch)

    if absence:
        @app.timer(s.absence_check_every_s, on_leader=True, name=f"{ns}.rules.tick")
        async def tick() -> None:
            body = orjson.dumps({"now": time.time()})
            for p in range(nparts):
                await ticks.send(key=str(p).encode(), value=body, partition=p)


RULES = AgentSpec("rules", _register, "events -> alert rules (threshold, absence, rate) -> alerts")
