"""The scorecards agents: ``<ns>.events`` -> scorecard counts -> ``<ns>.scorecards``, and
``<ns>.scorecards`` -> leaderboard tiles on ``<ns>.wall.tiles``.

A batch stage (``streams.engine``). State: one ``ScorecardCounts`` per entity (an
agency) in the ``StateTable`` ``scorecard-counts``, co-partitioned with ``<ns>.events``;
redelivered and re-emitted records are skipped by offset and raw origin, as in the KPI
agent. Every changed leaf (indicator, period, period key, drill path) is published
with its full numerator and denominator to the compacted ``<ns>.scorecards`` topic,
keyed by the leaf; the sink upserts it into ``scorecard_counts``. Scores, rankings and
flags are computed from the stored counts (``ioc.scorecard.build_scorecard``), never
from this stage's memory, so they are right with any number of workers. A late event
for a closed period (still within ``scorecards.keep_periods``) re-emits that period's
full counts, so the stored row is recomputed. docs/adr/0004-scorecards.md.

The leaderboard stage (``scorecard_tiles``, in the same agent) reads ``<ns>.scorecards``,
which has one partition: one worker owns every leaf, so its leaderboards are built from
all units whatever the number of workers. It keeps the latest bytes of each leaf in
the ``StateTable`` ``scorecard-leaves`` (restored from its changelog after a restart)
and, at most every ``scorecards.tile_every_s`` after a change, scores the latest period
(or ``scorecards.tile_period_key``) of ``scorecards.tile_period`` with the same pure functions as the export
(``build_scorecard``) and sends ``ioc.scorecard._tiles.leaderboard_tiles`` (at the
leaderboard level) and, for each unit of the outermost drill level (the province),
``target_tiles`` (one per indicator) and ``card_tiles`` (its areas and total).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any
from zoneinfo import ZoneInfo

from ioc.config import Settings
from ioc.errors import InvalidEvent, InvalidRecord
from ioc.events import Event, LogThrottle
from ioc.scorecard import LeafCount, ScorecardCounts, build_scorecard, previous_period
from ioc.scorecard._counts import LeafKey
from ioc.scorecard._tiles import card_tiles, leaderboard_tiles, target_tiles
from ioc.tiles import encode_tile
from ioc.topics import spec, topic_name

from .agent_spec import AgentSpec
from .engine import Outbox, Record, Stage, StateTable
from .engine.applied import Tracked, apply_once

__all__ = ["SCORECARDS", "LeaderboardStage", "leaves_table", "scorecard_stage",
           "scorecard_table"]

log = logging.getLogger(__name__)


def scorecard_table(settings: Settings) -> StateTable:
    return StateTable("scorecard-counts", topic_name(settings.namespace, "events"),
                      settings.topics.spec("events").partitions)


def scorecard_stage(settings: Settings, table: StateTable, *,
                    clock: Callable[[], float] = time.time) -> Stage:
    """The counting stage over ``table`` (no Kafka in it); ``clock`` stamps the leaves."""
    cfg = settings.scorecards
    tz = ZoneInfo(settings.streams.timezone)
    out_topic = topic_name(settings.namespace, "scorecards")
    types = {p.event_type for i in cfg.indicators for p in (i.numerator, i.denominator)}
    levels = tuple(lv.id for lv in cfg.levels)

    def new(entity: str) -> Tracked[ScorecardCounts]:
        return Tracked(ScorecardCounts(entity, keep=cfg.keep_periods))

    def from_dict(d: dict[str, Any]) -> ScorecardCounts:
        sc = ScorecardCounts.from_dict(d)
        sc.keep = cfg.keep_periods  # a setting, not state: not in the changelog
        return sc

    load = Tracked.decoder(from_dict, "the scorecard counts of an entity")

    def count(st: ScorecardCounts, e: Event) -> set[LeafKey]:
        return st.add(cfg, tz, type=e.type, t=e.time, values=e.values,
                      attributes=e.attributes)

    def process(records: list[Record], events: list[Event | InvalidEvent], out: Outbox) -> None:
        states, where, touched = apply_once(records, events, table, load, new, types=types,
                                            apply=count, stage="scorecards")
        now = clock()
        for key, tr in states.items():
            if key not in where:
                continue
            st = tr.state
            for lk in sorted(touched.get(key, ())):
                if lk in st.counts:
                    lf = st.leaf(lk, levels, now)
                    out.add(out_topic, lf.key.encode(), lf.to_bytes())
            table.change(key, tr, where[key])

    a = settings.streams.aggregate
    return Stage.of_events("scorecards", [topic_name(settings.namespace, "events")], process,
                           tables=[table], batch_max=a.batch_max, within_s=a.batch_within_s)


def leaves_table(settings: Settings) -> StateTable:
    return StateTable("scorecard-leaves", topic_name(settings.namespace, "scorecards"),
                      spec("scorecards").partitions)


class LeaderboardStage:
    """``process`` keeps each leaf's latest bytes; ``tick`` sends the leaderboard, target
    and scorecard tiles when leaves changed, at most every ``scorecards.tile_every_s`` (no Kafka in it).

    A record that is not a leaf count is skipped, counted in ``undecodable`` (exported by
    ``ioc.metrics.stages``: the stage's ``counters["leaderboard"]``) and logged as a
    warning at most every 10 s per topic; ``sent`` counts the tiles put in the outbox."""

    def __init__(self, settings: Settings, table: StateTable) -> None:
        self.cfg = settings.scorecards
        self.tz = ZoneInfo(settings.streams.timezone)
        self.table = table
        self.tiles_topic = topic_name(settings.namespace, "wall.tiles")
        self.dirty = False
        self.last = 0.0
        self.undecodable = 0
        self.sent = 0
        self._quiet = LogThrottle(10.0)
        areas = sum(a.max_points for a in self.cfg.areas)
        self.max_total = areas or sum(i.max_score for i in self.cfg.indicators)

    def process(self, batch: list[Any], out: Outbox) -> None:
        for msg in batch:
            if msg.key is None or msg.value is None:
                continue
            try:
                LeafCount.from_bytes(msg.value)
            except InvalidRecord as exc:
                self.undecodable += 1
                held = self._quiet.allow(msg.topic)
                if held is not None:
                    log.warning("scorecard_tiles: not a leaf count at %s[%d]@%d, skipped (%d so "
                                "far, %d not logged since the last line): %s", msg.topic,
                                msg.partition, msg.offset, self.undecodable, held, exc)
                continue
            self.table.change(msg.key, msg.value, msg.partition)
            self.dirty = True

    def assigned(self, _tps: Any) -> None:
        self.dirty = True  # restored leaves: build again

    def tick(self, now: float, out: Outbox) -> None:
        if not self.dirty or now - self.last < self.cfg.tile_every_s:
            return
        self.dirty, self.last = False, now
        period = self.cfg.tile_period
        by_key: dict[str, list[bytes]] = {}
        for k in self.table.state_keys():
            parts = k.split(b"|", 3)
            if len(parts) == 4 and parts[1].decode(errors="replace") == period:
                by_key.setdefault(parts[2].decode(errors="replace"), []).append(k)
        if not by_key:
            return
        latest = self.cfg.tile_period_key or max(by_key)  # a pinned period, else the latest
        prev = previous_period(period, latest)

        def leaves(pk: str) -> list[LeafCount]:
            got = [self.table.get(k, LeafCount.from_bytes, lambda _e: None, "")
                   for k in by_key.get(pk, ())]
            return [lf for lf in got if lf is not None]

        cur, before = leaves(latest), leaves(prev)
        version = int(now * 1000)
        cards = build_scorecard(self.cfg, cur, before, period=period, period_key=latest,
                                level=self.cfg.leaderboard_level, tz=self.tz, now=now)
        tiles = leaderboard_tiles(cards, max_total=self.max_total, rows=self.cfg.tile_rows,
                                  now=now, version=version)
        top = build_scorecard(self.cfg, cur, before, period=period, period_key=latest,
                              level=self.cfg.levels[0].id, tz=self.tz, now=now)
        tiles += target_tiles(self.cfg, top, now=now, version=version)
        tiles += card_tiles(self.cfg, top, max_total=self.max_total, now=now, version=version)
        for tile in tiles:
            out.add(self.tiles_topic, tile.id.encode(), encode_tile(tile))
            self.sent += 1


def build(settings: Settings) -> list[Stage]:
    """The counting stage and the leaderboard stage; none without indicators."""
    if not settings.scorecards.enabled or not settings.scorecards.indicators:
        log.info("scorecards: no indicators configured; the stage is not started")
        return []
    a = settings.streams.aggregate
    table = scorecard_table(settings)
    leaves = leaves_table(settings)
    board = LeaderboardStage(settings, leaves)
    return [
        scorecard_stage(settings, table),
        Stage("scorecard_tiles", [topic_name(settings.namespace, "scorecards")], board.process,
              tables=[leaves], tick=board.tick,
              tick_every_s=min(1.0, settings.scorecards.tile_every_s),
              on_assigned=board.assigned, batch_max=a.batch_max, within_s=a.batch_within_s,
              counters={"leaderboard": board})]


SCORECARDS = AgentSpec.of_stages(
    "scorecards", build,
    "events -> numerator/denominator per indicator, period and drill path -> scorecards")
