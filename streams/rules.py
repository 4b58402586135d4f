"""The rules agent: ``<ns>.events`` (+ a wall clock) -> alerts -> ``<ns>.alerts``.

A batch stage (``streams.engine``). State: one ``EntityRules`` per entity in the
``StateTable`` ``rule-states``, co-partitioned with ``<ns>.events``. Threshold and rate
rules run on each event in event time.

Absence rules need a clock that runs when no data arrives: the stage's tick runs every
``absence_check_every_s`` between batches, in the same task as the batches, and checks
the states of the partitions this worker owns (so each entity is checked by exactly
one worker, and no other task changes the states).

Alerts are keyed by their deterministic id on the compacted ``<ns>.alerts`` topic, in
the partition of their scope, so one reader sees a whole alert list.
"""

from __future__ import annotations

import logging
import time
import zlib

from ioc.config import Settings
from ioc.errors import InvalidEvent
from ioc.events import Event
from ioc.rules import Alert, EntityRules
from ioc.topics import spec, topic_name

from .agent_spec import AgentSpec
from .engine import Outbox, Record, Stage, StateTable

__all__ = ["RULES", "alert_partition"]

log = logging.getLogger(__name__)


def alert_partition(scope: str, partitions: int | None = None) -> int:
    """The ``<ns>.alerts`` partition of every alert of ``scope``."""
    return zlib.crc32(scope.encode()) % (partitions or spec("alerts").partitions)


def build(settings: Settings) -> list[Stage]:
    """The rules stage (Sans-I/O: records in, an ``Outbox`` out), with fresh state."""
    ns = settings.namespace
    s = settings.streams
    rules = list(s.rules)
    absence = [r for r in rules if r.kind == "absence"]
    alerts = topic_name(ns, "alerts")
    source = topic_name(ns, "events")
    table = StateTable("rule-states", source, settings.topics.spec("events").partitions)
    n_alerts = settings.topics.spec("alerts").partitions

    def emit(found: list[Alert], out: Outbox) -> None:
        for a in found:
            out.add(alerts, a.id.encode(), a.to_bytes(), partition=alert_partition(a.scope, n_alerts))

    def check_absence(now: float, out: Outbox) -> None:
        # every state of the partitions this stage owns; wall-clock time
        for key in table.state_keys():
            er = table.get(key, EntityRules.from_bytes, EntityRules, "")
            found = er.check_absence(absence, now)
            if found:
                emit(found, out)
                table.change(key, er, table.where[key])

    def process(records: list[Record], events: list[Event | InvalidEvent], out: Outbox) -> None:
        states: dict[bytes, EntityRules] = {}
        where: dict[bytes, int] = {}
        now = time.time()
        for msg, e in zip(records, events, strict=True):
            if isinstance(e, InvalidEvent):
                continue  # dead-lettered by the aggregate agent
            key = e.entity.encode()
            er = states.get(key)
            if er is None:
                er = states[key] = table.get(key, EntityRules.from_bytes, EntityRules,
                                             e.entity)
            where[key] = msg.partition
            emit(er.evaluate(rules, t=e.time, values=e.values, type=e.type, now=now), out)
        for key, er in states.items():
            table.change(key, er, where[key])

    return [Stage.of_events(
        "rules", [source], process, tables=[table],
        tick=check_absence if absence else None, tick_every_s=s.absence_check_every_s,
        batch_max=s.aggregate.batch_max, within_s=s.aggregate.batch_within_s)]


RULES = AgentSpec.of_stages("rules", build, "events -> alert rules (threshold, absence, rate) -> alerts")
