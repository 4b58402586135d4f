"""Pure tile builders and the per-tile rate limit."""

from __future__ import annotations

from ioc.aggregate import Agg, Rollup
from ioc.rules import Alert
from ioc.tilegen import AlertBoard, SensorSeries, TileCoalescer, sensor_tile
from ioc.tiles import Tile, decode_tile, encode_tile


def test_coalescer_latest_wins_and_rate_limit():
    c = TileCoalescer(min_interval_s=1.0, max_pending=2)
    for i in range(1000):
        c.offer(Tile("sensor:a:v", "series", i, 0.0))
    assert [t.version for t in c.due(10.0)] == [999]
    c.offer(Tile("sensor:a:v", "series", 1000, 0.0))
    assert c.due(10.5) == []  # too soon
    assert [t.version for t in c.due(11.0)] == [1000]
    assert c.coalesced == 999 and c.released == 2


def test_coalescer_is_bounded_and_counts_drops():
    c = TileCoalescer(min_interval_s=0, max_pending=2)
    assert c.offer(Tile("a", "text", 1, 0)) and c.offer(Tile("b", "text", 1, 0))
    assert not c.offer(Tile("c", "text", 1, 0))
    assert c.offer(Tile("a", "text", 2, 0))  # an id already pending is replaced, not dropped
    assert c.dropped == 1 and len(c.due(0)) == 2


def test_sensor_tile_series_is_bounded_and_ordered():
    s = SensorSeries("air-1", "pm25", points=3)
    for start in (30, 0, 10, 20, 40):
        s.update(Rollup("air-1", "pm25", 10, start, Agg.of(start / 10, start + 1.0), "updated"))
    tile = decode_tile(encode_tile(sensor_tile(s, unit="ug/m3")))
    assert tile.id == "sensor:air-1:pm25" and tile.kind == "series"
    assert tile.payload["series"] == [[20, 2.0], [30, 3.0], [40, 4.0]]
    assert tile.payload["value"] == 4.0 and tile.version == 41000


def test_alert_board_orders_raised_first_and_keeps_latest_state():
    b = AlertBoard(items=10)
    a1 = Alert("x", "r", "e1", "m", "warning", "raised", 0, 10.0, None, 1.0, "m1", "air")
    a2 = Alert("y", "r", "e2", "m", "critical", "raised", 0, 20.0, None, 1.0, "m2", "air")
    assert b.update(a1) == ["alerts:air", "alerts:all"]
    b.update(a2)
    b.update(Alert("x", "r", "e1", "m", "warning", "cleared", 0, 10.0, 30.0, 1.0, "m1", "air"))
    items = b.tile("alerts:air").payload["items"]
    assert [(i["id"], i["state"]) for i in items] == [("y", "raised"), ("x", "cleared")]
