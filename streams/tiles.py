"""The tiles agents: rollups, KPI values and alerts -> wall tiles on ``<ns>.wall.tiles``.

* ``sensor:<entity>:<metric>`` (kind ``series``) from rollups of the smallest window
  size: the latest value and a bounded sparkline of window means. The sparkline lives
  in memory; after a restart it refills from new rollups.
* ``kpi:<id>`` (overall group) and ``kpi:<id>:<group>`` (kind ``kpi``) from
  ``<ns>.kpis``, with trend and ranking. The latest KPI values are kept in the
  ``StateTable`` ``tile-kpis`` (changelog), so the overall sum and ranking survive a
  restart.
* ``alerts:<scope>`` and ``alerts:all`` (kind ``alerts``) from ``<ns>.alerts``, kept in
  the table ``tile-alerts``.

One batch stage (``streams.batch``) reads the three topics. A record that is not a
rollup, KPI value or alert goes to ``<ns>.dlq`` (reason ``undecodable``, stage
``tiles``) and is neither kept in a table nor shown; an entry of a restored table
that does not decode (written by an older version, say) is skipped and counted.

All tiles pass through one ``TileCoalescer``: each tile id is produced at most once per
``tiles.min_interval_s`` (latest wins), so a 10k events/s stream makes at most
(number of tiles / min_interval_s) tiles per second. The stage's tick sends what is due
every ``tiles.flush_every_s``.
"""

from __future__ import annotations

import functools
import logging
import time
from typing import Any

import faust

from ioc.aggregate import Rollup
from ioc.config import Settings
from ioc.errors import InvalidRecord
from ioc.events import LogThrottle, dead_letter_headers
from ioc.kpi import KpiValue
from ioc.rules import Alert
from ioc.tilegen import AlertBoard, KpiBoard, SensorSeries, TileCoalescer, sensor_tile
from ioc.tiles import Tile, encode_tile
from ioc.topics import spec, topic_name

from .agent_spec import AgentSpec
from .batch import Outbox, Stage, StateTable, host_stage

__all__ = ["TILES", "UNITS"]

log = logging.getLogger(__name__)

# Display units of the demo feeds' metrics (unknown metrics get none).
UNITS = {"pm25": "µg/m³", "co": "mg/m³", "no2": "µg/m³", "nox": "ppb", "benzene": "µg/m³",
         "temperature": "°C", "humidity": "%", "speed": "km/h", "occupancy": "%",
         "laeq": "dB(A)", "count": ""}


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
    dlq = topic_name(ns, "dlq")
    kpi_table = StateTable("tile-kpis", kpis, spec("kpis").partitions)
    alert_table = StateTable("tile-alerts", alerts, spec("alerts").partitions)
    coalescer = TileCoalescer(min_interval_s=ts.min_interval_s, max_pending=ts.max_pending,
                              max_per_s=ts.max_per_s)
    series: dict[tuple[str, str], SensorSeries] = {}
    kpi_board = KpiBoard(s.kpis, trend_points=ts.trend_points)
    alert_board = AlertBoard(items=ts.alert_items)
    stats = {"sent": 0, "last_log": time.monotonic(), "undecodable": 0, "restore_skipped": 0}
    quiet = LogThrottle(10.0)

    def on_assigned(_tps: set[Any]) -> None:
        # the tables were just restored from their changelogs: rebuild the boards
        for value in list(kpi_table.data.values()):
            try:
                kpi_board.update(KpiValue.from_bytes(value))
            except InvalidRecord:
                stats["restore_skipped"] += 1
        for value in list(alert_table.data.values()):
            try:
                alert_board.update(Alert.from_bytes(value))
            except InvalidRecord:
                stats["restore_skipped"] += 1

    def undecodable(msg: Any, exc: InvalidRecord, out: Outbox) -> None:
        stats["undecodable"] += 1
        out.add(dlq, msg.key, msg.value if msg.value is not None else b"",
                headers=dead_letter_headers(exc.reason, topic=msg.topic,
                                            partition=msg.partition, offset=msg.offset,
                                            message=str(exc), stage="tiles",
                                            headers=list(msg.headers or ())))
        held = quiet.allow(msg.topic)
        if held is not None:
            log.warning("tiles: undecodable record at %s[%d]@%d dead-lettered (%d so far): %s",
                        msg.topic, msg.partition, msg.offset, stats["undecodable"], exc)

    def process(batch: list[Any], out: Outbox) -> None:
        changed: set[tuple[str, str]] = set()
        kpi_ids: set[str] = set()
        alert_ids: set[str] = set()
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
            elif msg.topic == kpis:
                try:
                    v = KpiValue.from_bytes(msg.value)
                except InvalidRecord as exc:
                    undecodable(msg, exc, out)
                    continue
                kpi_table.change(msg.key or v.key.encode(), msg.value, msg.partition)
                kpi_ids.update(kpi_board.update(v))
            elif msg.topic == alerts:
                try:
                    a = Alert.from_bytes(msg.value)
                except InvalidRecord as exc:
                    undecodable(msg, exc, out)
                    continue
                alert_table.change(msg.key or a.id.encode(), msg.value, msg.partition)
                alert_ids.update(alert_board.update(a))
        for k in changed:
            coalescer.offer_lazy(f"sensor:{k[0]}:{k[1]}", functools.partial(build_sensor, k))
        for tid in kpi_ids:
            coalescer.offer_lazy(tid, functools.partial(kpi_board.tile, tid))
        for tid in alert_ids:
            coalescer.offer_lazy(tid, functools.partial(alert_board.tile, tid))
        flush(0.0, out)  # what may go now goes now, not at the next tick

    def build_sensor(k: tuple[str, str]) -> Tile:
        return sensor_tile(series[k], unit=UNITS.get(k[1], ""))

    def flush(_now: float, out: Outbox) -> None:
        now = time.monotonic()
        for tile in coalescer.due(now):
            out.add(out_topic, tile.id.encode(), encode_tile(tile))
            stats["sent"] += 1
        if now - stats["last_log"] > 60:
            stats["last_log"] = now
            log.info("tiles: sent=%s coalesced=%s dropped=%s held=%s undecodable=%s "
                     "restore_skipped=%s", stats["sent"], coalescer.coalesced,
                     coalescer.dropped, coalescer.held, stats["undecodable"],
                     stats["restore_skipped"])

    host_stage(app, settings, Stage(
        "tiles", [rollups, kpis, alerts], process, tables=[kpi_table, alert_table],
        tick=flush, tick_every_s=ts.flush_every_s, on_assigned=on_assigned,
        batch_max=5000, within_s=min(0.02, ts.flush_every_s), counters={"throttle": coalescer}))


TILES = AgentSpec("tiles", _register, "rollups/kpis/alerts -> rate-limited wall tiles")
