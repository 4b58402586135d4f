"""The tiles agents: rollups, KPI values and alerts -> wall tiles on ``<ns>.wall.tiles``.

* ``sensor:<entity>:<metric>`` (kind ``series``) from rollups of the smallest window
  size: the latest value and a bounded sparkline of window means. The sparkline lives
  in memory; after a restart it refills from new rollups.
* ``kpi:<id>`` (overall group) and ``kpi:<id>:<group>`` (kind ``kpi``) from
  ``<ns>.kpis``, with trend and ranking. The latest KPI values are kept in the Faust
  table ``tile-kpis`` (changelog), so the overall sum and ranking survive a restart.
* ``alerts:<scope>`` and ``alerts:all`` (kind ``alerts``) from ``<ns>.alerts``, kept in
  the table ``tile-alerts``.

All tiles pass through one ``TileCoalescer``: each tile id is produced at most once per
``tiles.min_interval_s`` (latest wins), so a 10k events/s stream makes at most
(number of tiles / min_interval_s) tiles per second. A timer sends what is due every
``tiles.flush_every_s``.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import faust
import orjson

from ioc.aggregate import Rollup
from ioc.config import Settings
from ioc.kpi import KpiValue
from ioc.rules import Alert
from ioc.tilegen import AlertBoard, KpiBoard, SensorSeries, TileCoalescer, sensor_tile
from ioc.tiles import Tile, encode_tile
from ioc.topics import spec, topic_name

from .agent_spec import AgentSpec
from .aggregate import Sender, save_state

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
    raw: dict[str, Any] = {"value_serializer": "raw", "key_serializer": "raw"}
    rollups = app.topic(topic_name(ns, "rollups"), **raw)
    kpis = app.topic(topic_name(ns, "kpis"), **raw)
    alerts = app.topic(topic_name(ns, "alerts"), **raw)
    out = topic_name(ns, "wall.tiles")
    kpi_table = app.Table("tile-kpis", default=None, partitions=spec("kpis").partitions,
                          key_type=bytes, value_type=bytes, help="latest KPI values for tiles")
    alert_table = app.Table("tile-alerts", default=None, partitions=spec("alerts").partitions,
                            key_type=bytes, value_type=bytes, help="latest alert states for tiles")
    sender = Sender(app, "tiles")
    coalescer = TileCoalescer(min_interval_s=ts.min_interval_s, max_pending=ts.max_pending)
    series: dict[tuple[str, str], SensorSeries] = {}
    kpi_board = KpiBoard(s.kpis, trend_points=ts.trend_points)
    alert_board = AlertBoard(items=ts.alert_items)
    loaded = {"kpi": False, "alert": False}
    stats = {"sent": 0, "errors": 0, "last_log": time.monotonic()}

    def offer(tile: Tile | None) -> None:
        if tile is not None:
            coalescer.offer(tile)

    @app.agent(rollups, name=f"{ns}.tiles.rollups")
    async def tiles_rollups(stream):  # type: ignore[no-untyped-def]
        async for batch in stream.take_events(1000, within=0.02):
            changed: set[tuple[str, str]] = set()
            for ev in batch:
                r = Rollup.from_dict(orjson.loads(ev.value))
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
            for k in changed:
                offer(sensor_tile(series[k], unit=UNITS.get(k[1], "")))

    @app.agent(kpis, name=f"{ns}.tiles.kpis")
    async def tiles_kpis(stream):  # type: ignore[no-untyped-def]
        async for batch in stream.take_events(1000, within=0.02):
            if not loaded["kpi"]:  # the table was recovered from its changelog before this
                loaded["kpi"] = True
                for value in list(kpi_table.data.values()):
                    kpi_board.update(KpiValue.from_bytes(value))
            ids: set[str] = set()
            for ev in batch:
                v = KpiValue.from_bytes(ev.value)
                await save_state(kpi_table, ev.key, ev.value, ev.message.partition, sender)
                ids.update(kpi_board.update(v))
            for tid in ids:
                offer(kpi_board.tile(tid))

    @app.agent(alerts, name=f"{ns}.tiles.alerts")
    async def tiles_alerts(stream):  # type: ignore[no-untyped-def]
        async for batch in stream.take_events(1000, within=0.02):
            if not loaded["alert"]:
                loaded["alert"] = True
                for value in list(alert_table.data.values()):
                    alert_board.update(Alert.from_bytes(value))
            ids: set[str] = set()
            for ev in batch:
                await save_state(alert_table, ev.key, ev.value, ev.message.partition, sender)
                ids.update(alert_board.update(Alert.from_bytes(ev.value)))
            for tid in ids:
                offer(alert_board.tile(tid))

    @app.timer(ts.flush_every_s, name=f"{ns}.tiles.flush")
    async def flush() -> None:
        now = time.monotonic()
        for tile in coalescer.due(now):
            try:
                await sender.send(out, tile.id.encode(), encode_tile(tile))
                stats["sent"] += 1
            except Exception:  # a produce error must not stop the flusher; counted
                stats["errors"] += 1
                log.exception("tiles: could not send %s", tile.id)
        if now - stats["last_log"] > 60:
            stats["last_log"] = now
            log.info("tiles: sent=%s coalesced=%s dropped=%s errors=%s", stats["sent"],
                     coalescer.coalesced, coalescer.dropped, stats["errors"])




TILES = AgentSpec("tiles", _register, "rollups/kpis/alerts -> rate-limited wall tiles")
