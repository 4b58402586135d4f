"""The KPI agent: ``<ns>.events`` -> ratio KPIs per entity (group) and period -> ``<ns>.kpis``.

A batch stage (``streams.engine``). State: one ``KpiCounts`` per entity (an agency) in
the ``StateTable`` ``kpi-counts``, co-partitioned with ``<ns>.events``; redelivered and
re-emitted records are skipped by offset and raw origin, as in the aggregate agent. Every changed (kpi, group, period, period key) is published with
its full numerator and denominator to the compacted ``<ns>.kpis`` topic. All groups
of one KPI go to the same partition (chosen from the KPI id), so one reader sees
every group of a KPI and can rank them and sum the overall group.
"""

from __future__ import annotations

import logging
import zlib
from zoneinfo import ZoneInfo

from ioc.config import Settings
from ioc.errors import InvalidEvent
from ioc.events import Event
from ioc.kpi import KpiCounts
from ioc.kpi._ratio import CountKey
from ioc.topics import spec, topic_name

from .agent_spec import AgentSpec
from .engine import Outbox, Record, Stage, StateTable
from .engine.applied import Tracked, apply_once

__all__ = ["KPIS", "kpi_partition"]

log = logging.getLogger(__name__)


def kpi_partition(kpi: str, partitions: int | None = None) -> int:
    """The ``<ns>.kpis`` partition of every value of KPI ``kpi`` (stable across processes)."""
    return zlib.crc32(kpi.encode()) % (partitions or spec("kpis").partitions)


def build(settings: Settings) -> list[Stage]:
    """The kpis stage (Sans-I/O: records in, an ``Outbox`` out), with fresh state."""
    ns = settings.namespace
    s = settings.streams
    specs = list(s.kpis)
    by_id = {k.id: k for k in specs}
    types = {k.event_type for k in specs}
    tz = ZoneInfo(s.timezone)
    kpis = topic_name(ns, "kpis")
    source = topic_name(ns, "events")
    table = StateTable("kpi-counts", source, settings.topics.spec("events").partitions)
    n_kpis = settings.topics.spec("kpis").partitions
    load = Tracked.decoder(KpiCounts.from_dict, "the KPI counts of a group")
    new = Tracked.factory(KpiCounts)

    def count(st: KpiCounts, e: Event) -> set[CountKey]:
        return st.add(specs, tz, type=e.type, t=e.time, values=e.values,
                      attributes=e.attributes)

    def process(records: list[Record], events: list[Event | InvalidEvent], out: Outbox) -> None:
        states, where, touched = apply_once(records, events, table, load, new, types=types,
                                            apply=count, stage="kpis")
        for key, tr in states.items():
            if key not in where:
                continue
            for ck in sorted(touched.get(key, ())):
                v = tr.state.value(ck, by_id[ck[0]])
                out.add(kpis, v.key.encode(), v.to_bytes(), partition=kpi_partition(v.kpi, n_kpis))
            table.change(key, tr, where[key])

    return [Stage.of_events("kpis", [source], process, tables=[table],
                            batch_max=s.aggregate.batch_max,
                            within_s=s.aggregate.batch_within_s)]


KPIS = AgentSpec.of_stages("kpis", build, "events -> ratio KPIs per group and calendar period -> kpis")
