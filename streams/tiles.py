"""The tiles agent: rollups, KPI values and alerts -> wall tiles on ``<ns>.wall.tiles``.

Two stages (``streams.engine``), registered together:

* the partitioned **tiles** stage (group ``<app id>.tiles``) reads ``<ns>.rollups``,
  ``<ns>.kpis`` and ``<ns>.alerts``, shared by partition among the workers. It builds
  ``sensor:<entity>:<metric>`` (kind ``series``) from rollups of the smallest window
  size: the latest value and a bounded sparkline of window means. A sensor's rollups
  all go to its entity's partition, so one worker sees all of them; the sparkline
  lives in memory and refills from new rollups after a restart. Each KPI value of its
  KPI's tile period and each alert state is forwarded, as a ``ioc.tilegen.ViewFact``
  carrying its source partition and offset, to ``<ns>.views`` (the latest per key of
  each batch);
* the **views** stage (``streams.views``, one owner at a time) builds from those facts
  every tile that needs all partitions: ``alerts:<scope>``, ``alerts:all``,
  ``kpi:<id>`` and ``kpi:<id>:<group>`` (docs/aggregation.md, Global views).

A record that is not a rollup, KPI value or alert goes to ``<ns>.dlq`` (reason
``undecodable``, stage ``tiles``) and is neither forwarded nor shown. The stage's
counters (``counters["tiles"]``, a ``TilesStageCounts``: tiles sent, records
dead-lettered, facts forwarded) are logged every minute; ``ioc.metrics.stages`` exports
the facts forwarded.

All sensor tiles pass through one ``TileCoalescer``: each tile id is produced at most
once per ``tiles.min_interval_s`` (latest wins), so a 10k events/s stream makes at most
(number of tiles / min_interval_s) tiles per second. The stage's tick sends what is due
every ``tiles.flush_every_s``.
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass
from typing import Any

import faust

from ioc.aggregate import Rollup
from ioc.config import Settings
from ioc.errors import InvalidRecord
from ioc.events import LogThrottle, dead_letter_headers
from ioc.kpi import KpiValue
from ioc.rules import Alert
from ioc.tilegen import SensorSeries, TileCoalescer, ViewFact, sensor_tile
from ioc.tiles import Tile, encode_tile
from ioc.topics import topic_name

from .agent_spec import AgentSpec
from .engine import Outbox, Stage, host_stage
from .views import VIEWS_PARTITION, register_views

__all__ = ["TILES", "UNITS", "TilesStageCounts"]

log = logging.getLogger(__name__)

# Display units of the demo feeds' metrics (unknown metrics get none).
UNITS = {"pm25": "µg/m³", "co": "mg/m³", "no2": "µg/m³", "nox": "ppb", "benzene": "µg/m³",
         "temperature": "°C", "humidity": "%", "speed": "km/h", "occupancy": "%",
         "laeq": "dB(A)", "count": ""}


@dataclass
class TilesStageCounts:
    """What the tiles stage sent, dead-lettered and forwarded (cumulative; logged every
    minute; ``ioc.metrics.stages`` exports ``forwarded``, the dead letters are in
    ``ioc_dead_letters_total``)."""

    sent: int = 0  # sensor tiles put in the outbox
    undecodable: int = 0  # records that are not rollups, KPI values or alerts, dead-lettered
    forwarded: int = 0  # view facts put in the outbox for <ns>.views


def _register(app: faust.App, settings: Settings) -> None:
    ns = settings.namespace
    s = settings.streams
    ts = s.tiles
    series_size = s.aggregate.window_sizes_s[0]
    size_key = str(series_size).encode()
    rollups = topic_name(ns, "rollups")
    kpis = topic_name(ns, "kpis")
    alerts = topic_name(ns, "alerts")
    out_topic = topic_name(ns, "wall.tiles")
    views = topic_name(ns, "views")
    dlq = topic_name(ns, "dlq")
    tile_period = {k.id: k.tile_period for k in s.kpis}
    coalescer = TileCoalescer(min_interval_s=ts.min_interval_s, max_pending=ts.max_pending,
                              max_per_s=ts.max_per_s)
    series: dict[tuple[str, str], SensorSeries] = {}
    counts = TilesStageCounts()
    quiet = LogThrottle(10.0)
    every_minute = LogThrottle(60.0)
    every_minute.allow("stats")  # the first line a minute from now

    def undecodable(msg: Any, exc: InvalidRecord, out: Outbox) -> None:
        counts.undecodable += 1
        out.add(dlq, msg.key, msg.value if msg.value is not None else b"",
                headers=dead_letter_headers(exc.reason, topic=msg.topic,
                                            partition=msg.partition, offset=msg.offset,
                                            message=str(exc), stage="tiles",
                                            headers=list(msg.headers or ())))
        held = quiet.allow(msg.topic)
        if held is not None:
            log.warning("tiles: undecodable record at %s[%d]@%d dead-lettered (%d so far): %s",
                        msg.topic, msg.partition, msg.offset, counts.undecodable, exc)

    def process(batch: list[Any], out: Outbox) -> None:
        changed: set[tuple[str, str]] = set()
        facts: dict[bytes, ViewFact] = {}  # the latest per key of this batch
        for msg in batch:
            if msg.topic == rollups:
                # the key is entity|metric|size|start: other sizes are skipped undecoded
                if msg.key is not None and msg.key.rsplit(b"|", 2)[1:2] != [size_key]:
                    continue
                try:
                    r = Rollup.from_bytes(msg.value)
                except InvalidRecord as exc:
                    undecodable(msg, exc, out)
                    continue
                if r.size != series_size:
                    continue
                k = (r.entity, r.metric)
                ss = series.get(k)
                if ss is None:
                    if len(series) >= ts.max_pending:
                        coalescer.dropped += 1  # bounded: unknown sensors beyond the cap
                        continue
                    ss = series[k] = SensorSeries(r.entity, r.metric, points=ts.series_points)
                if ss.update(r):
                    changed.add(k)
            elif msg.topic in (kpis, alerts):
                item: KpiValue | Alert
                try:
                    item = (KpiValue.from_bytes(msg.value) if msg.topic == kpis
                            else Alert.from_bytes(msg.value))
                except InvalidRecord as exc:
                    undecodable(msg, exc, out)
                    continue
                if isinstance(item, KpiValue) and tile_period.get(item.kpi) != item.period:
                    continue  # no tile shows it (unknown KPI, or not its tile period)
                fact = ViewFact(item, msg.value, msg.partition, msg.offset)
                facts.pop(key := fact.record_key(), None)
                facts[key] = fact
        for key, fact in facts.items():
            out.add(views, key, fact.to_bytes(), partition=VIEWS_PARTITION)
        counts.forwarded += len(facts)
        for k in changed:
            coalescer.offer_lazy(f"sensor:{k[0]}:{k[1]}", functools.partial(build_sensor, k))
        flush(0.0, out)  # what may go now goes now, not at the next tick

    def build_sensor(k: tuple[str, str]) -> Tile:
        return sensor_tile(series[k], unit=UNITS.get(k[1], ""))

    def flush(_now: float, out: Outbox) -> None:
        now = time.monotonic()
        for tile in coalescer.due(now):
            out.add(out_topic, tile.id.encode(), encode_tile(tile))
            counts.sent += 1
        if every_minute.allow("stats", now) is not None:
            log.info("tiles: sent=%s coalesced=%s dropped=%s held=%s undecodable=%s "
                     "forwarded=%s", counts.sent, coalescer.coalesced, coalescer.dropped,
                     coalescer.held, counts.undecodable, counts.forwarded)

    host_stage(app, settings, Stage(
        "tiles", [rollups, kpis, alerts], process, tick=flush, tick_every_s=ts.flush_every_s,
        batch_max=5000, within_s=min(0.02, ts.flush_every_s),
        counters={"throttle": coalescer, "tiles": counts}))
    register_views(app, settings)


TILES = AgentSpec("tiles", _register, "rollups/kpis/alerts -> rate-limited sensor tiles; "
                                      "alert and KPI tiles from every partition (views)")
