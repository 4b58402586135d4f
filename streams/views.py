"""The views stage: the wall tiles that need every partition, built by one owner at a time.

``alerts:all`` lists the alerts of every scope, and each KPI's overall tile ``kpi:<id>``
sums, and its ranking orders, every group; ``alerts:<scope>`` and ``kpi:<id>:<group>``
(which carries the ranking too) are built here with them. Their inputs are spread over
the partitions of ``<ns>.alerts`` and ``<ns>.kpis``, which the partitioned tiles stage
(``streams.tiles``) shares among the workers; it forwards each KPI value and alert
state it reads, as a ``ioc.tilegen.ViewFact``, to the single-partition merge topic
``<ns>.views``. This stage reads that topic in its own consumer group
(``<app id>.views``): with one partition, exactly one worker owns it at a time
however many run, and that worker builds the tiles from all of them.

Contract:

* State: the latest fact per key in the ``StateTable`` ``view-facts`` (changelog
  ``<ns>.state.<app>.view-facts``, one partition). When the partition is assigned the
  views are rebuilt from it and *every* tile is offered again (a tile the previous
  owner held back in its throttle when it died is sent now); when it is revoked the
  views are forgotten and the held tiles dropped, so a worker that no longer owns the
  partition sends nothing more.
* Exactly-once over at-least-once Kafka: tiles, then the state changelog, then the
  offsets (``streams.engine``). A fact redelivered by the tiles stage (after its crash
  or rebalance), or older than the one applied for its key, is skipped by its source
  offset (``GlobalViews.is_stale``), so a view never moves backwards.
* Bounded (``GlobalViews``): KPI values no tile shows (other periods, periods older
  than the trend) are not kept, alerts pushed out of every list or cleared more than
  ``tiles.views_cleared_retention_s`` before the newest alert time leave (checked every
  second), and beyond
  ``tiles.views_max_facts`` the least recently updated facts leave; each is deleted
  from the state (a changelog tombstone) and counted (``counters["views"]``).
* A record that is not a view fact goes to ``<ns>.dlq`` (reason ``undecodable``,
  stage ``views``) and is counted (``counters["views_stage"]``, a ``ViewsStageCounts``,
  with the tiles sent); a state entry that does not decode is skipped and counted.
* Tiles pass through a ``TileCoalescer`` (``tiles.min_interval_s``, ``tiles.max_per_s``)
  flushed every ``tiles.flush_every_s``; the version of a tile is its build time in ms.
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass
from typing import Any

import faust

from ioc.config import Settings
from ioc.errors import InvalidRecord
from ioc.events import LogThrottle, dead_letter_headers
from ioc.tilegen import GlobalViews, TileCoalescer, ViewFact
from ioc.tiles import encode_tile
from ioc.topics import spec, topic_name

from .engine import Outbox, Stage, StateTable, TopicPartition, host_stage

__all__ = ["VIEWS_PARTITION", "ViewsStageCounts", "register_views"]

log = logging.getLogger(__name__)

VIEWS_PARTITION = 0  # <ns>.views has one partition: every fact goes there


@dataclass
class ViewsStageCounts:
    """What the views stage sent and dead-lettered (cumulative; logged every minute; not
    exported: the dead letters are in ``ioc_dead_letters_total``, and what the views
    hold, skip and remove comes from ``GlobalViews.counters()``, ``counters["views"]``)."""

    sent: int = 0  # tiles put in the outbox
    undecodable: int = 0  # records that are not view facts, dead-lettered


def register_views(app: faust.App, settings: Settings) -> None:
    """Host the views stage on ``app`` (the tiles agent calls it: ``streams.tiles``)."""
    ns = settings.namespace
    ts = settings.streams.tiles
    views = topic_name(ns, "views")
    out_topic = topic_name(ns, "wall.tiles")
    dlq = topic_name(ns, "dlq")
    table = StateTable("view-facts", views, spec("views").partitions)
    board = GlobalViews(settings.streams.kpis, trend_points=ts.trend_points,
                        alert_items=ts.alert_items,
                        cleared_retention_s=ts.views_cleared_retention_s,
                        max_facts=ts.views_max_facts)
    coalescer = TileCoalescer(min_interval_s=ts.min_interval_s, max_pending=ts.max_pending,
                              max_per_s=ts.max_per_s)
    counts = ViewsStageCounts()
    last_expire = time.monotonic()
    quiet = LogThrottle(10.0)
    every_minute = LogThrottle(60.0)
    every_minute.allow("stats")  # the first line a minute from now

    def offer(tids: list[str]) -> None:
        for tid in tids:
            coalescer.offer_lazy(tid, functools.partial(board.tile, tid))

    def on_assigned(tps: set[TopicPartition]) -> None:
        if TopicPartition(views, VIEWS_PARTITION) not in tps:
            return
        got = (table.get(key, ViewFact.from_bytes, _no_state, "") for key in table.state_keys())
        facts = [f for f in got if f is not None]  # one that does not decode: counted, logged
        tids = board.rebuild(facts)
        kept = board.origins
        # facts the bounds no longer keep (older states, undecodable entries) leave the state
        # at the next tick (no outbox here)
        board.removed = [k for k in table.state_keys() if k not in kept]
        coalescer.pending.clear()
        offer(tids)
        log.info("stage views: own %s[%d]: rebuilt from %d fact(s), %d tile(s) offered "
                 "(%d state entries undecodable so far)", views, VIEWS_PARTITION, len(facts),
                 len(tids), table.undecodable)

    def on_revoked(tps: set[TopicPartition]) -> None:
        if TopicPartition(views, VIEWS_PARTITION) not in tps:
            return
        board.clear()
        coalescer.pending.clear()  # tiles of a partition we no longer own must not go out
        log.info("stage views: %s[%d] revoked; views forgotten", views, VIEWS_PARTITION)

    def process(batch: list[Any], out: Outbox) -> None:
        for msg in batch:
            try:
                fact = ViewFact.from_bytes(msg.value)
            except InvalidRecord as exc:
                counts.undecodable += 1
                out.add(dlq, msg.key, msg.value if msg.value is not None else b"",
                        headers=dead_letter_headers(exc.reason, topic=msg.topic,
                                                    partition=msg.partition, offset=msg.offset,
                                                    message=str(exc), stage="views",
                                                    headers=list(msg.headers or ())))
                if quiet.allow(msg.topic) is not None:
                    log.warning("views: undecodable record at %s[%d]@%d dead-lettered (%d so "
                                "far): %s", msg.topic, msg.partition, msg.offset,
                                counts.undecodable, exc)
                continue
            tids = board.apply(fact)
            if tids is None:
                continue  # redelivered, older than what the views hold, or shown by no tile
            table.change(fact.record_key(), msg.value, msg.partition)
            offer(tids)
        forget(out)
        flush(0.0, out)

    def forget(out: Outbox) -> None:
        for key in board.take_removed():
            table.delete(key, VIEWS_PARTITION, out)

    def flush(_now: float, out: Outbox) -> None:
        nonlocal last_expire
        now = time.monotonic()
        if now - last_expire >= 1.0:
            last_expire = now
            offer(board.expire())
        forget(out)
        for tile in coalescer.due(now):
            out.add(out_topic, tile.id.encode(), encode_tile(tile))
            counts.sent += 1
        if every_minute.allow("stats", now) is not None:
            log.info("views: sent=%s coalesced=%s dropped=%s held=%s undecodable=%s %s",
                     counts.sent, coalescer.coalesced, coalescer.dropped, coalescer.held,
                     counts.undecodable,
                     " ".join(f"{k}={v}" for k, v in board.counters().items()))

    host_stage(app, settings, Stage(
        "views", [views], process, tables=[table], tick=flush, tick_every_s=ts.flush_every_s,
        on_assigned=on_assigned, on_revoked=on_revoked, batch_max=5000,
        within_s=min(0.02, ts.flush_every_s),
        counters={"throttle": coalescer, "views": board, "views_stage": counts}))


def _no_state(_entity: str) -> None:
    return None
