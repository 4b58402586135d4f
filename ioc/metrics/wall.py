"""Collector of ``ioc wall serve``: reads the ``WallServer`` (clients, queues, counters,
store) at scrape time; ``screen`` labels are the configured screens only."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..wall.exceptions import CloseCode
from ._registry import histogram_family, snapshot_items

__all__ = ["CLOSE_CODES", "WallCollector"]

#: The close codes the server sends (``ioc.wall.exceptions.CloseCode``): the values of
#: ``ioc_wall_closes_total{code}``.
CLOSE_CODES = frozenset(v for k, v in vars(CloseCode).items()
                        if k.isupper() and isinstance(v, int))
_CLOSED = re.compile(r"^(?:closed|refused)_(\d+)$")
# counters that are closes with a fixed code
_NAMED = {"refused_full": CloseCode.TRY_AGAIN_LATER, "auth_timeout": CloseCode.AUTH_TIMEOUT}


def _snapshot(s: set[Any]) -> list[Any]:
    for _ in range(10):
        try:
            return list(s)
        except RuntimeError:  # the event loop changed the set meanwhile
            continue
    return []


class WallCollector(Collector):
    """Metrics of one wall server (``server``: ``ioc.wall.server.WallServer``)."""

    def __init__(self, server: Any) -> None:
        self.server = server

    def collect(self) -> Iterator[Metric]:
        srv = self.server
        screens = srv.cfg.screens
        clients = _snapshot(srv.clients)
        n: dict[str, int] = dict.fromkeys(screens, 0)
        delivered: dict[str, int] = dict.fromkeys(screens, 0)
        drops: dict[str, int] = dict.fromkeys(screens, 0)
        for (screen, what), k in snapshot_items(srv.closed_by_screen):
            if screen in screens:
                (delivered if what == "delivered" else drops)[screen] += k
        for c in clients:
            if c.screen in screens:
                n[c.screen] += 1
                delivered[c.screen] += c.queue.delivered
                drops[c.screen] += c.queue.drops
        g = GaugeMetricFamily("ioc_wall_clients", "screens connected", labels=["screen"])
        d = CounterMetricFamily("ioc_wall_deliveries", "tile versions written to clients",
                                labels=["screen"])
        dr = CounterMetricFamily("ioc_wall_drops", "tile versions not sent because a newer "
                                 "one replaced them in a slow client's queue (latest wins)",
                                 labels=["screen", "reason"])
        for screen in sorted(screens):
            g.add_metric([screen], n[screen])
            d.add_metric([screen], delivered[screen])
            dr.add_metric([screen, "superseded"], drops[screen])
        yield from (g, d, dr)
        closes: dict[int, int] = {}
        for key, k in snapshot_items(srv.counters):
            m = _CLOSED.match(key)
            code = int(m.group(1)) if m else _NAMED.get(key)
            if code is not None and code in CLOSE_CODES:
                closes[code] = closes.get(code, 0) + k
        cl = CounterMetricFamily("ioc_wall_closes", "connections the server closed or "
                                 "refused, by websocket close code", labels=["code"])
        for code, k in sorted(closes.items()):
            cl.add_metric([str(code)], k)
        yield cl
        yield histogram_family("ioc_wall_fanout_seconds", "seconds from a new tile version "
                               "in the store to it being written to (or queued for) every "
                               "client showing it", [], [([], srv.fanout_seconds)])
        yield histogram_family("ioc_wall_snapshot_bytes", "bytes of each snapshot sent "
                               "(JSON and image frames)", [], [([], srv.snapshot_bytes)])
        age = GaugeMetricFamily("ioc_wall_oldest_tile_age_seconds", "age of the stalest "
                                "tile a screen shows (now - tile time)", labels=["screen"])
        now = time.time()
        store = srv.store
        for screen, layout in sorted(screens.items()):
            times = [t.tile.time for tid in layout.tile_ids()
                     if (t := store.get(tid)) is not None]
            if times:
                age.add_metric([screen], max(0.0, now - min(times)))
        yield age
        yield GaugeMetricFamily("ioc_wall_tiles", "tiles held (latest version of each)",
                                value=len(store))
