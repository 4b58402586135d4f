"""Protocol 2 at the wall against real servers: actions, presets, pop-ups, persistence.

Two wall servers on one namespace (real Kafka), the sink writing the audit table (real
PostgreSQL), a restart; and the refusals (viewer, rate limit, bad requests) on a
server fed without Kafka.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any

import orjson
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from ioc.config._wall import GridLayout, ScreenLayout, TilePlacement
from ioc.storage import connect as db_connect
from ioc.storage.sink import SinkOptions, run_sinks
from ioc.tiles import Tile
from ioc.wall._storage import ALERT_ACTIONS_SINK

from .wall_fixtures import ServerThread, TileProducer, recv_until, wall_settings

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(120)]

V1_TYPES = {"snapshot", "tile", "remove", "ping", "pong"}
V1_SNAPSHOT_KEYS = {"type", "screen", "full", "layout", "tiles", "removed", "server_time",
                    "heartbeat_s"}
RIVER = "sensor:river-01:level"


def ops_screen() -> ScreenLayout:
    def p(tile: str, col: int, row: int) -> TilePlacement:
        return TilePlacement(tile=tile, col=col, row=row, title=tile)

    return ScreenLayout(
        title="ops", columns=2, rows=1, tiles=[p("alerts:all", 1, 1), p("kpi:a", 2, 1)],
        presets={"flood": GridLayout(columns=2, rows=1,
                                     tiles=[p(RIVER, 1, 1), p("alerts:all", 2, 1)])},
        preset_rules=[{"id": "floods", "preset": "flood", "rule": "river_high"}],  # type: ignore[list-item]
        popups={"enabled": True},  # type: ignore[arg-type]
    )


def alert_item(aid: str, state: str = "raised", severity: str = "critical") -> dict[str, Any]:
    return {"id": aid, "rule": "river_high", "entity": "river-01", "metric": "level",
            "severity": severity, "state": state, "raised_at": time.time(),
            "message": "river level above 3.2 m"}


def hello(ws: Any, token: str, screen: str = "ops", **extra: Any) -> dict[str, Any]:
    ws.send(json.dumps({"type": "hello", "token": token, "screen": screen, **extra}))
    msg = orjson.loads(ws.recv(timeout=10))
    assert msg["type"] == "snapshot", msg
    return msg


def is_type(kind: str, **fields: Any):  # type: ignore[no-untyped-def]
    def pred(m: Any) -> bool:
        return isinstance(m, dict) and m.get("type") == kind and all(
            m.get(k) == v for k, v in fields.items())
    return pred


class SwitchSeen:
    """True once the flood preset, the pop-up and the gauge tile have all arrived."""

    def __init__(self) -> None:
        self.seen: list[Any] = []

    def __call__(self, m: Any) -> bool:
        self.seen.append(m)
        msgs = [x for x in self.seen if isinstance(x, dict)]
        return (any(is_type("popup", alert="x1", tile=RIVER)(x) for x in msgs)
                and any(is_type("preset", preset="flood", by="rule:floods")(x) for x in msgs)
                and any(x["type"] == "tile" and x["tile"]["id"] == RIVER for x in msgs))


class SinkThread:
    """``run_sinks`` for the audit table in a thread of its own, until stop()."""

    def __init__(self, settings: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.stop_ev: asyncio.Event | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(settings,), daemon=True)
        self.thread.start()

    def _run(self, settings: Any) -> None:
        async def main() -> None:
            self.stop_ev = asyncio.Event()
            await run_sinks(settings, [ALERT_ACTIONS_SINK],
                            SinkOptions(batch_rows=100, linger_s=0.1), self.stop_ev)

        try:
            self.loop.run_until_complete(main())
        except BaseException as exc:  # reported by stop()
            self.error = exc

    def stop(self) -> None:
        if self.stop_ev is not None:
            self.loop.call_soon_threadsafe(self.stop_ev.set)
        self.thread.join(30)
        assert self.error is None, self.error


def audit_rows(settings: Any) -> list[tuple[Any, ...]]:
    with db_connect(settings.database) as conn:
        return conn.execute(
            f'select id, alert, action, actor, assigned_to, comment from "{settings.db_schema}"'
            f'.alert_actions order by at').fetchall()


@pytest.mark.db
def test_ack_reaches_another_replica_is_audited_and_survives_a_restart(fresh_namespace) -> None:
    s = wall_settings(fresh_namespace("wop"), {"ops": ops_screen()})
    producer = TileProducer(s)
    a = ServerThread(s)
    b = ServerThread(s)
    sink = SinkThread(s)
    a2 = None
    try:
        producer.send(RIVER, 1, {"value": 3.4}, kind="series")
        with connect(a.url) as op, connect(b.url) as viewer, connect(b.url) as old:
            snap_op = hello(op, a.operator_token("alice", "ops"), protocol=2)
            assert (snap_op["protocol"], snap_op["role"], snap_op["operator"]) == (2, "operator",
                                                                                  "alice")
            hello(viewer, b.token("ops"), protocol=2)
            snap_old = hello(old, b.token("ops"))
            assert set(snap_old) == V1_SNAPSHOT_KEYS
            producer.send("alerts:all", 1, {"scope": "all", "items": [alert_item("x1")]},
                          kind="alerts")
            # the alert switches both screens to the flood preset and pops the gauge up
            for ws in (op, viewer):
                seen = recv_until(ws, SwitchSeen(), timeout=10)
                kinds = [x["type"] if x["type"] != "tile" else x["tile"]["id"]
                         for x in seen if isinstance(x, dict)]
                assert kinds.index("preset") < kinds.index(RIVER), kinds  # layout first
            op.send(json.dumps({"type": "action", "id": "r1", "action": "ack", "alert": "x1"}))
            sent = time.monotonic()
            recv_until(op, is_type("result", id="r1", ok=True), timeout=10)
            # the other replica's page: the state and the end of the pop-up within 1 s
            got = recv_until(viewer, is_type("alert_state", alert="x1"), timeout=1.0)
            latency = time.monotonic() - sent
            state = got[-1]["state"]
            assert state["acked_by"] == "alice" and state["acked_at"] and not state["closed"]
            recv_until(viewer, is_type("popup_end", alert="x1"), timeout=1.0)
            print(f"ack -> other replica's page: {latency * 1000:.0f} ms")
            op.send(json.dumps({"type": "action", "id": "r2", "action": "comment", "alert": "x1",
                                "text": "crew on site"}))
            recv_until(op, is_type("result", id="r2", ok=True), timeout=10)
            recv_until(viewer, lambda m: is_type("alert_state", alert="x1")(m)
                       and m["state"]["comments"], timeout=5)
            # a protocol-1 page saw none of it
            old_msgs = []
            with pytest.raises(TimeoutError):
                while True:
                    raw = old.recv(timeout=1.0)
                    old_msgs.append(raw)
            kinds = {orjson.loads(r)["type"] for r in old_msgs if isinstance(r, str)}
            assert kinds <= V1_TYPES, kinds
        # the audit table, through the sink
        deadline = time.monotonic() + 30
        while len(rows := audit_rows(s)) < 2 and time.monotonic() < deadline:
            time.sleep(0.3)
        assert [(r[1], r[2], r[3], r[5]) for r in rows] == [
            ("x1", "ack", "alice", None), ("x1", "comment", "alice", "crew on site")]
        # a restarted replica rebuilds the state from the topic
        a.stop()
        a2 = ServerThread(s)
        with connect(a2.url) as again:
            snap = hello(again, a2.token("ops"), protocol=2)
        st = snap["alert_states"]["x1"]
        assert st["acked_by"] == "alice" and [c["text"] for c in st["comments"]] == ["crew on site"]
        assert snap["preset"] == "flood" and snap["popups"] == []
        assert {t["id"] for t in snap["tiles"]} == {RIVER, "alerts:all"}
    finally:
        producer.close()
        sink.stop()
        b.stop()
        if a2 is not None:
            a2.stop()
        else:
            a.stop()


def test_refusals_answers_and_the_rate_limit(settings) -> None:
    s = wall_settings(settings, {"ops": ops_screen()}, action_rate_per_s=1, action_burst=3,
                      action_flood_close=5)
    w = ServerThread(s, kafka=False)
    try:
        w.call(lambda: w.server.store.apply(Tile("alerts:all", "alerts", 1, time.time(), {
            "scope": "all", "items": [alert_item("x1", severity="warning")]})))
        with connect(w.url) as viewer:
            hello(viewer, w.token("ops"), protocol=2)
            viewer.send(json.dumps({"type": "action", "id": 7, "action": "ack", "alert": "x1"}))
            res = recv_until(viewer, is_type("result", id=7))[-1]
            assert (res["ok"], res["error"]) == (False, "forbidden")
            viewer.send(json.dumps({"type": "ping", "t": 1}))
            recv_until(viewer, is_type("pong", t=1))  # still open
        with connect(w.url) as op:
            hello(op, w.operator_token("bob", "ops"), protocol=2)
            cases = [
                ({"action": "ack", "alert": "nope"}, "unknown_alert"),
                ({"action": "assign", "alert": "x1"}, "invalid"),  # no "to"
            ]
            for i, (fields, error) in enumerate(cases):
                op.send(json.dumps({"type": "action", "id": i, **fields}))
                res = recv_until(op, is_type("result", id=i))[-1]
                assert res["error"] == error, res
            op.send(json.dumps({"type": "preset", "id": "p", "preset": "nothere"}))
            assert recv_until(op, is_type("result", id="p"))[-1]["error"] == "unknown_preset"
            # the bucket (3) is empty now: refused, then closed with 1008
            codes = []
            try:
                for i in range(20):
                    op.send(json.dumps({"type": "preset", "id": f"f{i}", "preset": None}))
                    raw = op.recv(timeout=5)
                    if isinstance(raw, str):
                        codes.append(orjson.loads(raw).get("error"))
            except ConnectionClosed as exc:
                assert exc.rcvd is not None and exc.rcvd.code == 1008, exc
            else:
                raise AssertionError(f"expected a close with 1008, got answers {codes}")
            assert "rate_limited" in codes
        with connect(w.url) as old:
            hello(old, w.token("ops"))
            old.send(json.dumps({"type": "action", "id": 1, "action": "ack", "alert": "x1"}))
            with pytest.raises(ConnectionClosed) as e:
                while True:
                    old.recv(timeout=5)
            assert e.value.rcvd is not None and e.value.rcvd.code == 4000
    finally:
        w.stop()
