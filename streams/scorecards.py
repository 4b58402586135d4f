"""The scorecards agent: ``<ns>.events`` -> scorecard counts -> ``<ns>.scorecards``.

A batch stage (``streams.batch``). State: one ``ScorecardCounts`` per entity (an
agency) in the ``StateTable`` ``scorecard-counts``, co-partitioned with ``<ns>.events``;
redelivered and re-emitted records are skipped by offset and raw origin, as in the KPI
agent. Every changed leaf (indicator, period, period key, drill path) is published
with its full numerator and denominator to the compacted ``<ns>.scorecards`` topic,
keyed by the leaf; the sink upserts it into ``scorecard_counts``. Scores, rankings and
flags are computed from the stored counts (``ioc.scorecard.build_scorecard``), never
from this stage's memory, so they are right with any number of workers. A late event
for a closed period (still within ``scorecards.keep_periods``) re-emits that period's
full counts, so the stored row is recomputed. docs/adr/0004-scorecards.md.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any
from zoneinfo import ZoneInfo

import faust

from ioc.config import Settings
from ioc.errors import InvalidEvent
from ioc.events import origin_mark, origin_seen, raw_origin
from ioc.scorecard import ScorecardCounts
from ioc.scorecard._counts import LeafKey
from ioc.topics import spec, topic_name

from .agent_spec import AgentSpec
from .batch import Outbox, Stage, StateTable, decoded_events, host_stage

__all__ = ["SCORECARDS", "scorecard_process", "scorecard_table"]

log = logging.getLogger(__name__)


def scorecard_table(settings: Settings) -> StateTable:
    return StateTable("scorecard-counts", topic_name(settings.namespace, "events"),
                      spec("events").partitions)


def scorecard_process(settings: Settings, table: StateTable, *,
                      clock: Callable[[], float] = time.time
                      ) -> Callable[[list[Any], Outbox], None]:
    """The stage's ``process(records, outbox)`` over ``table`` (no Kafka in it)."""
    cfg = settings.scorecards
    tz = ZoneInfo(settings.streams.timezone)
    out_topic = topic_name(settings.namespace, "scorecards")
    types = {p.event_type for i in cfg.indicators for p in (i.numerator, i.denominator)}
    levels = tuple(lv.id for lv in cfg.levels)

    def new(entity: str) -> ScorecardCounts:
        return ScorecardCounts(entity, keep=cfg.keep_periods)

    def process(batch: list[Any], out: Outbox) -> None:
        states: dict[bytes, ScorecardCounts] = {}
        where: dict[bytes, int] = {}
        touched: dict[bytes, set[LeafKey]] = {}
        for msg, e in zip(batch, decoded_events(batch), strict=True):
            if isinstance(e, InvalidEvent):
                # the aggregate agent dead-letters undecodable records
                log.debug("scorecards: undecodable record at %s/%s/%s: %s", msg.topic,
                          msg.partition, msg.offset, e)
                continue
            if e.type not in types:
                continue
            key = e.entity.encode()
            st = states.get(key)
            if st is None:
                st = states[key] = table.get(key, ScorecardCounts.from_bytes, new, e.entity)
                st.keep = cfg.keep_periods
            origin = raw_origin(msg.headers)
            if st.seen(msg.partition, msg.offset) or origin_seen(st.raw, origin):
                continue
            hit = st.add(cfg, tz, type=e.type, t=e.time, values=e.values,
                         attributes=e.attributes)
            st.mark(msg.partition, msg.offset)
            origin_mark(st.raw, origin)
            where[key] = msg.partition
            touched.setdefault(key, set()).update(hit)
        now = clock()
        for key, st in states.items():
            if key not in where:
                continue
            for lk in sorted(touched.get(key, ())):
                if lk in st.counts:
                    lf = st.leaf(lk, levels, now)
                    out.add(out_topic, lf.key.encode(), lf.to_bytes())
            table.change(key, st, where[key])

    return process


def _register(app: faust.App, settings: Settings) -> None:
    if not settings.scorecards.enabled or not settings.scorecards.indicators:
        log.info("scorecards: no indicators configured; the stage is not started")
        return
    a = settings.streams.aggregate
    table = scorecard_table(settings)
    host_stage(app, settings, Stage(
        "scorecards", [topic_name(settings.namespace, "events")],
        scorecard_process(settings, table), tables=[table],
        batch_max=a.batch_max, within_s=a.batch_within_s))


SCORECARDS = AgentSpec(
    "scorecards", _register,
    "events -> numerator/denominator per indicator, period and drill path -> scorecards")
