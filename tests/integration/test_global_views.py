"""Global views with two tiles workers on the real broker: ``alerts:all``, the alert
lists per scope and each KPI's overall tile with its ranking list everything, from every
partition, and stay right when the worker that builds them is killed and restarted.

Two ``ioc worker --agents tiles`` processes share the partitioned tiles group (each owns
one partition of ``<ns>.kpis`` and one of ``<ns>.alerts``); one of them owns the single
partition of ``<ns>.views``. KPI values of eight groups and alerts of three scopes are
written straight to both partitions of ``<ns>.kpis`` and ``<ns>.alerts`` (so each
worker's tiles stage sees only half of them). Before the views stage, each worker built
``alerts:all`` and ``kpi:<id>`` from its own half and they overwrote each other.
"""

from __future__ import annotations

import itertools
import re
import time
from typing import Any

import pytest
from kafka import KafkaProducer

from ioc.kafka import kafka_python_kwargs
from ioc.kafka.clients import admin_client
from ioc.kpi import KpiValue
from ioc.rules import Alert
from ioc.tiles import Tile, decode_tile
from ioc.topics import spec, topic_name
from tests.conftest import Proc
from tests.integration.pipeline_fixtures import TopicTail, wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(300)]

KPI = "dossiers_online"  # a default KPI (tile period: month)
GROUPS = [f"agency-{i:02d}" for i in range(8)]
SCOPES = ["air", "traffic", "flood"]
ENV = {"IOC_STREAMS__SESSION_TIMEOUT_S": "6",  # a killed worker's partitions move in 6 s
       "IOC_STREAMS__TILES__MIN_INTERVAL_S": "0.2"}
WORKER = ["worker", "--agents", "tiles", "--loglevel", "info"]
OWNS = re.compile(r"stage views: own \S+\[0\]: rebuilt from (\d+) fact")
VIEWS_LINE = re.compile(r"stage views: (own \S+\[0\]|\S+\[0\] revoked)")


def kpi_values(scale: int) -> list[tuple[int, KpiValue]]:
    """(partition, value): the groups alternate between the two partitions."""
    out = []
    for i, g in enumerate(GROUPS):
        num, den = float(i + scale), float(10 * scale + i)
        out.append((i % 2, KpiValue(KPI, g, "month", "2026-11", num, den,
                                    round(100 * num / den, 1))))
    return out


def alert(i: int, state: str = "raised") -> Alert:
    return Alert(f"gv-{i}", "pm25_high", f"s-{i}", "pm25", "critical", state,
                 1_700_000_000 + i, 1.7e9 + i, 1.7e9 + 500 + i if state == "cleared" else None,
                 80.0, f"pm25 high at s-{i}", SCOPES[i % len(SCOPES)])


def produce(s: Any, kpis: list[tuple[int, KpiValue]], alerts: list[Alert]) -> None:
    p = KafkaProducer(acks="all", **kafka_python_kwargs(s.kafka))
    try:
        for part, v in kpis:
            p.send(topic_name(s.namespace, "kpis"), key=v.key.encode(), value=v.to_bytes(),
                   partition=part)
        for a in alerts:  # alert gv-<i> always on partition i % 2
            p.send(topic_name(s.namespace, "alerts"), key=a.id.encode(), value=a.to_bytes(),
                   partition=int(a.id.split("-")[1]) % 2)
        p.flush(timeout=30)
    finally:
        p.close(timeout=10)


class Wall:
    """The tiles topic as the wall sees it: the latest tile per id, and every
    ``alerts:all`` list in the order it was written."""

    def __init__(self, s: Any) -> None:
        self.tail = TopicTail(s, "wall.tiles")
        self.latest: dict[str, Tile] = {}
        self.all_lists: list[dict[str, str]] = []

    def poll(self) -> dict[str, Tile]:
        for r in self.tail.poll():
            t = decode_tile(r.value)
            self.latest[t.id] = t
            if t.id == "alerts:all":
                self.all_lists.append({x["id"]: x["state"] for x in t.payload["items"]})
        return self.latest

    def complete(self, alerts: dict[str, str], kpis: list[tuple[int, KpiValue]]) -> bool:
        """True when alerts:all, every alerts:<scope> and the KPI tiles show exactly these."""
        tiles = self.poll()
        t = tiles.get("alerts:all")
        if t is None or {x["id"]: x["state"] for x in t.payload["items"]} != alerts:
            return False
        for scope in SCOPES:
            want = {a for a in alerts if SCOPES[int(a.split("-")[1]) % 3] == scope}
            st = tiles.get(f"alerts:{scope}")
            if st is None or {x["id"] for x in st.payload["items"]} != want:
                return False
        k = tiles.get(f"kpi:{KPI}")
        values = [v for _p, v in kpis]
        if k is None or (k.payload["numerator"], k.payload["denominator"]) != (
                sum(v.numerator for v in values), sum(v.denominator for v in values)):
            return False
        if sorted(r["group"] for r in k.payload["ranking"]) != GROUPS:
            return False
        for v in values:
            g = tiles.get(f"kpi:{KPI}:{v.group}")
            if g is None or g.payload["numerator"] != v.numerator:
                return False
        return True


def owner(*procs: Proc) -> Proc | None:
    """The one worker whose views stage owns ``<ns>.views`` now (its last views line says
    so), else None."""
    got = []
    for p in procs:
        assert p.alive(), f"worker {p.pid} died:\n{p.output()[-4000:]}"
        lines = VIEWS_LINE.findall(p.output())
        if lines and lines[-1].startswith("own "):
            got.append(p)
    return got[0] if len(got) == 1 else None


def groups_split(s: Any, n: int) -> bool:
    """True when the tiles group is stable with ``n`` members, each owning some of the
    partitions of ``<ns>.rollups``, ``<ns>.kpis`` and ``<ns>.alerts`` and together all of
    those of ``kpis`` and ``alerts``, and the views group is stable with ``n``. (The
    cooperative-sticky assignor balances the number of partitions per member over the
    three topics, not each topic: a member may own both ``kpis`` partitions.)"""
    app_id = s.streams.app_id or f"{s.namespace}-streams"
    tiles, views = f"{app_id}.tiles", f"{app_id}.views"
    admin = admin_client(s.kafka)
    try:
        d = admin.describe_groups([tiles, views])
    finally:
        admin.close()
    if any(str(d[g].get("group_state")) != "Stable" or len(d[g].get("members") or ()) != n
           for g in (tiles, views)):
        return False
    wanted = {topic_name(s.namespace, t) for t in ("kpis", "alerts")}
    owned: set[tuple[str, int]] = set()
    for m in d[tiles]["members"]:
        mine = {(tp["topic"], p) for tp in (m.get("member_assignment") or {}).get(
            "assigned_partitions") or () for p in tp["partitions"]}
        if not mine:
            return False
        owned |= {(t, p) for t, p in mine if t in wanted}
    return len(owned) == spec("kpis").partitions + spec("alerts").partitions


def test_two_tiles_workers_show_every_partition_and_survive_the_owners_death(
        fresh_namespace, spawn):
    s = fresh_namespace("gvw")
    wall = Wall(s)
    w1 = spawn(WORKER, settings=s, env=ENV, name="w1")
    w2 = spawn(WORKER, settings=s, env=ENV, name="w2")
    wait_for(lambda: groups_split(s, 2), timeout=90, every=0.5,
             what="two workers sharing the tiles group, both in the views group")
    first = wait_for(lambda: owner(w1, w2), timeout=30, every=0.5,
                     what="one worker owning the views partition")

    batch1 = kpi_values(1)
    alerts1 = [alert(i) for i in range(12)]
    # in two halves, so that the wall sees at least two alerts:all lists
    produce(s, batch1[:4], alerts1[:6])
    wait_for(lambda: len(wall.poll().get("alerts:all", Tile("", "alerts", 0, 0)).payload.get(
        "items", ())) == 6, timeout=60, every=0.3, what="the first half on alerts:all")
    produce(s, batch1[4:], alerts1[6:])
    want1 = {a.id: "raised" for a in alerts1}
    wait_for(lambda: wall.complete(want1, batch1), timeout=60, every=0.3,
             what="alerts:all and kpi tiles listing both partitions")
    lists = wall.all_lists
    assert len(lists) >= 2
    # one builder: each alerts:all list holds the one before it (none is another
    # worker's partial list)
    assert all(set(a) <= set(b) for a, b in itertools.pairwise(lists)), lists
    print(f"batch 1 complete after {len(lists)} alerts:all tile(s)")

    # the owner of the views partition dies (kill -9) once its views state is in the
    # changelog (every commit_every_s: 1 s); the survivor takes the views partition over,
    # restoring the views from the changelog, with the dead worker's tiles partitions
    survivor = w2 if first is w1 else w1
    time.sleep(2.5)
    first.kill9()
    batch2 = kpi_values(3)
    alerts2 = [alert(i, "cleared") for i in range(4)] + [alert(i) for i in range(12, 16)]
    produce(s, batch2, alerts2)
    want2 = {**want1, **{a.id: a.state for a in alerts2}}
    wait_for(lambda: wall.complete(want2, batch2), timeout=90, every=0.3,
             alive=survivor.alive, what="the survivor's tiles after the owner's kill -9")
    restored = [int(n) for n in OWNS.findall(survivor.output())]
    assert restored and restored[-1] == len(batch1) + len(alerts1), (
        f"the survivor's views rebuilt from {restored} fact(s), expected "
        f"{len(batch1) + len(alerts1)} from the changelog")

    # the killed worker comes back (a restart): the group rebalances, and whichever
    # worker owns the views now keeps them right
    w3 = spawn(WORKER, settings=s, env=ENV, name="w3")
    wait_for(lambda: groups_split(s, 2), timeout=90, every=0.5, alive=w3.alive,
             what="the restarted worker back in the tiles and views groups")
    batch3 = kpi_values(5)
    alerts3 = [alert(i, "cleared") for i in range(12, 14)]
    produce(s, batch3, alerts3)
    want3 = {**want2, **{a.id: a.state for a in alerts3}}
    wait_for(lambda: wall.complete(want3, batch3), timeout=90, every=0.3,
             alive=lambda: survivor.alive() and w3.alive(),
             what="the tiles after the restart's rebalance")
    # through the kill and the restart, no alerts:all list ever lacked an alert of the
    # one before it (the new owner rebuilt the whole list from the changelog)
    lists = wall.all_lists
    assert all(set(a) <= set(b) for a, b in itertools.pairwise(lists)), lists
    print(f"{len(lists)} alerts:all tile(s) in all, each holding the one before")
    wall.tail.close()
