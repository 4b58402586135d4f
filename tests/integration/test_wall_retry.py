"""A retried comment is stored once (issue #17), against a real wall server, the real
Kafka broker and the audit table in the real PostgreSQL.

The page sends a comment, gets no usable answer (``unavailable`` or its own timeout)
and sends it again with the same ``idempotency_key``: one comment in the state every
page sees, one row in ``alert_actions``. A comment under another key is another comment.
"""

from __future__ import annotations

import json
import time

import pytest
from websockets.sync.client import connect

from .test_wall_operators import SinkThread, alert_item, audit_rows, hello, is_type, ops_screen
from .wall_fixtures import ServerThread, TileProducer, recv_until, wall_settings

pytestmark = [pytest.mark.kafka, pytest.mark.db, pytest.mark.timeout(120)]


def test_a_comment_sent_twice_with_one_key_is_stored_once(fresh_namespace) -> None:
    s = wall_settings(fresh_namespace("wrt"), {"ops": ops_screen()})
    producer = TileProducer(s)
    server = ServerThread(s)
    sink = SinkThread(s)
    try:
        with connect(server.url) as op, connect(server.url) as viewer:
            hello(op, server.operator_token("alice", "ops"), protocol=2)
            hello(viewer, server.token("ops"), protocol=2)
            producer.send("alerts:all", 1, {"scope": "all", "items": [alert_item("x1")]},
                          kind="alerts")
            recv_until(viewer, is_type("popup", alert="x1"), timeout=10)

            def send(rid: str, text: str, key: str) -> None:
                op.send(json.dumps({"type": "action", "id": rid, "action": "comment",
                                    "alert": "x1", "text": text, "idempotency_key": key}))
                recv_until(op, is_type("result", id=rid, ok=True), timeout=10)

            send("c1", "crew on site", "e-00000000000000000001")
            send("c1-retry", "crew on site", "e-00000000000000000001")  # the retry
            send("c2", "pump restarted", "e-00000000000000000002")
            got = recv_until(viewer, lambda m: is_type("alert_state", alert="x1")(m)
                             and len(m["state"]["comments"]) >= 2, timeout=10)
            assert [c["text"] for c in got[-1]["state"]["comments"]] == [
                "crew on site", "pump restarted"]
            # nothing more arrives for x1: the retry changed no state
            with pytest.raises(AssertionError, match="expected a matching message"):
                recv_until(viewer, is_type("alert_state", alert="x1"), timeout=1.5)
        ops = server.call(server.server.health)["operators"]
        assert ops["actions_duplicate"] == 1, ops
        deadline = time.monotonic() + 30
        while len(rows := audit_rows(s)) < 2 and time.monotonic() < deadline:
            time.sleep(0.3)
        time.sleep(1.0)  # the duplicate, if it were written, would be by now
        rows = audit_rows(s)
        assert [(r[2], r[3], r[5]) for r in rows] == [
            ("comment", "alice", "crew on site"), ("comment", "alice", "pump restarted")], rows
    finally:
        producer.close()
        sink.stop()
        server.stop()
