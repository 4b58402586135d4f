"""Unit: the wall's /metrics (ioc.metrics.wall) follow its clients, queues and store.

A real ``WallServer`` on port 0 without a Kafka source (``tests/integration/wall_fixtures``
feeds its store directly), a real websocket client, and the real ``start_metrics``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from ioc.config import load_settings
from ioc.metrics import MetricsEndpoint, start_metrics
from ioc.metrics.wall import CLOSE_CODES, WallCollector
from ioc.tiles import Tile
from tests.fixtures.metrics import scrape
from tests.integration.wall_fixtures import ServerThread, layout_of, recv_until, wall_settings

IDS = ["kpi:a", "kpi:b"]


@pytest.fixture(scope="module")
def wall() -> Iterator[tuple[ServerThread, MetricsEndpoint]]:
    s = wall_settings(load_settings(env={}), {"main": layout_of(IDS), "lobby": layout_of(IDS)})
    srv = ServerThread(s, kafka=False)
    ep = start_metrics(s, "wall", [WallCollector(srv.server)], port=0, announce=False)
    assert ep is not None
    try:
        yield srv, ep
    finally:
        ep.close()
        srv.stop()


def _tile(tid: str, version: int, age_s: float) -> Tile:
    return Tile(id=tid, kind="kpi", version=version, time=time.time() - age_s,
                payload={"value": version})


def test_clients_deliveries_snapshots_tiles_and_ages(wall):
    srv, ep = wall
    s0 = scrape(ep.url)
    assert s0.value("ioc_wall_clients", screen="main") == 0
    assert s0.value("ioc_wall_clients", screen="lobby") == 0
    assert s0.value("ioc_wall_tiles") == 0
    srv.call(lambda: srv.server.store.apply(_tile("kpi:a", 1, 120.0)))
    with connect(srv.url) as ws:
        ws.send(json.dumps({"type": "hello", "token": srv.token("main"), "screen": "main"}))
        recv_until(ws, lambda m: isinstance(m, dict) and m.get("type") == "snapshot")
        srv.call(lambda: srv.server.store.apply(_tile("kpi:b", 2, 5.0)))
        recv_until(ws, lambda m: isinstance(m, dict) and m.get("type") == "tile")
        s = scrape(ep.url)
        assert s.value("ioc_wall_clients", screen="main") == 1
        assert s.value("ioc_wall_clients", screen="lobby") == 0
        assert s.value("ioc_wall_deliveries_total", screen="main") >= 1
        assert s.value("ioc_wall_tiles") == 2
        assert s.value("ioc_wall_snapshot_bytes_count") == s0.value("ioc_wall_snapshot_bytes_count") + 1
        assert s.value("ioc_wall_fanout_seconds_count") >= 1
        assert 100 < s.value("ioc_wall_oldest_tile_age_seconds", screen="main") < 300
        assert s.value("ioc_wall_drops_total", screen="main", reason="superseded") == 0
    # closed: its deliveries stay counted, the gauge goes back to 0
    deadline = time.monotonic() + 10
    while srv.call(lambda: len(srv.server.clients)) and time.monotonic() < deadline:
        time.sleep(0.05)
    s2 = scrape(ep.url)
    assert s2.value("ioc_wall_clients", screen="main") == 0
    assert s2.value("ioc_wall_deliveries_total", screen="main") >= \
        s.value("ioc_wall_deliveries_total", screen="main")


def test_a_refused_screen_is_a_close_code(wall):
    srv, ep = wall
    before = scrape(ep.url).value("ioc_wall_closes_total", 0, code="4004")
    with connect(srv.url) as ws:
        ws.send(json.dumps({"type": "hello", "token": srv.token("main"), "screen": "nope"}))
        with pytest.raises(ConnectionClosed):  # closed by the server
            ws.recv(timeout=5)
    s = scrape(ep.url)
    assert s.value("ioc_wall_closes_total", code="4004") == before + 1
    assert {int(d["code"]) for d in s.labels("ioc_wall_closes_total")} <= CLOSE_CODES
    assert {d["screen"] for d in s.labels("ioc_wall_clients")} == {"main", "lobby"}
