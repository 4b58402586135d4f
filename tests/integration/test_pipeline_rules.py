"""Alert rules in a real worker: threshold held for a duration, replay idempotency, absence
in wall-clock time, and the alert-list tile."""

from __future__ import annotations

import time

import orjson
import pytest

from ioc.events import Event
from ioc.rules import alert_id
from ioc.tiles import decode_tile
from tests.integration.pipeline_fixtures import TopicTail, consumed_all, publish, wait_for

CONFIG = """
streams:
  absence_check_every_s: 1
  tiles: {min_interval_s: 0.2}
  rules:
    - {id: pm25_high, kind: threshold, metric: pm25, op: ">", value: 55, for_s: 60,
       severity: critical, scope: air, message: "PM2.5 {value:.0f} at {entity}"}
    - {id: silent, kind: absence, entity_prefix: quiet-, for_s: 3, severity: warning, scope: air}
"""
# A multiple of 60, 15 minutes ago: the alert-list tiles keep a cleared alert for
# tiles.views_cleared_retention_s (1 h) after the newest alert time they have seen, and
# the absence alert below is raised at the wall clock's time, so a T0 years ago made the
# cleared threshold alert leave the tile at the views' next expiry (within 1 s): the tile
# check passed only when the tile went out before it (flaky in CI, session 9).
T0 = float(int(time.time()) // 60 * 60 - 900)


def series() -> list[Event]:
    # above 55 from T0 for 90 s (raised at T0+60), then below (cleared at T0+100)
    vals = [80.0] * 10 + [40.0] * 3
    return [Event(id=f"a{i}", source="t", type="air.quality", entity="air-1", time=T0 + 10 * i,
                  values={"pm25": v}) for i, v in enumerate(vals)]


@pytest.mark.timeout(180)
def test_threshold_absence_and_replay_raise_each_alert_once(fresh_namespace, spawn, tmp_path):
    s = fresh_namespace("rul")
    cfg = tmp_path / "ioc.yaml"
    cfg.write_text(CONFIG)
    worker = spawn(["worker", "--agents", "rules,tiles"], settings=s,
                   env={"IOC_CONFIG": str(cfg)}, name="worker")
    alerts = TopicTail(s, "alerts")
    states: list[tuple[str, str, str]] = []

    def collect(n: int):
        for r in alerts.poll():
            d = orjson.loads(r.value)
            states.append((d["id"], d["entity"], d["state"]))
        return len(states) >= n

    publish(s, series())
    wait_for(lambda: collect(2), timeout=90, every=0.3, alive=worker.alive, what="raised + cleared")
    want = alert_id("pm25_high", "air-1", int(T0))
    assert states == [(want, "air-1", "raised"), (want, "air-1", "cleared")]

    publish(s, series())  # the same events again (a replay): nothing new may be raised
    wait_for(lambda: consumed_all(s), timeout=60, every=0.5, what="the replay to be consumed")

    t_quiet = time.time()
    publish(s, [Event(id="q", source="t", type="noise.level", entity="quiet-7", time=t_quiet,
                      values={"laeq": 50.0})])
    wait_for(lambda: collect(3), timeout=60, every=0.3, alive=worker.alive, what="absence alert")
    assert time.time() - t_quiet >= 3, "absence raised before 3 s of silence"
    assert states[:2] == [(want, "air-1", "raised"), (want, "air-1", "cleared")]
    assert [st[1:] for st in states[2:]] == [("quiet-7", "raised")], states

    tiles = TopicTail(s, "wall.tiles")
    latest: dict[str, object] = {}

    def tile_has_both():
        for r in tiles.poll():
            t = decode_tile(r.value)
            latest[t.id] = t
        t = latest.get("alerts:air")
        return t if t is not None and len(t.payload["items"]) == 2 else None

    tile = wait_for(tile_has_both, timeout=30, every=0.3, what="alerts:air tile with both alerts")
    items = tile.payload["items"]
    assert [(i["entity"], i["state"]) for i in items] == [("quiet-7", "raised"), ("air-1", "cleared")]
    assert "alerts:all" in latest
    collect(0)
    alerts.close()
    tiles.close()
    assert sum(1 for st in states if st[2] == "raised" and st[1] == "air-1") == 1
