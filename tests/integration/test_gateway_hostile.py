"""A real ``ioc gateway`` process and the real broker under hostile clients.

A few hundred hostile bodies (any bytes, any JSON, broken envelopes and NGSI-LD shapes)
interleaved with valid events: no 5xx, no counted bug, and exactly the accepted events
are on ``<ns>.events.raw``. Then slow clients at 1 byte/s against the same process: cut at
the configured header/body timeouts and counted in ``/healthz``.
"""

from __future__ import annotations

import http.client
import json
import socket
import time
from collections import Counter
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ioc.events import split_raw, validate_event
from ioc.gateway import hash_key, new_key
from tests.fixtures.events import read_topic
from tests.fixtures.hostile import hostile_bytes, hostile_json_bytes, mutated_json_objects

KEY = new_key()
CLIENT_STATUSES = {200, 207, 400, 403, 408, 413, 415, 422}
HEADER_S = BODY_S = 2.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(spawn, s) -> tuple[Any, int]:
    port = _free_port()
    env = {"IOC_GATEWAY__PUBLISHERS": json.dumps(
               {"p": {"key_sha256": hash_key(KEY), "sources": ["loops", "air"]}}),
           "IOC_GATEWAY__HEADER_TIMEOUT_S": str(HEADER_S),
           "IOC_GATEWAY__BODY_TIMEOUT_S": str(BODY_S),
           "IOC_GATEWAY__MAX_BODY_BYTES": str(256 * 1024)}
    proc = spawn(["-v", "gateway", "--port", str(port)], settings=s, env=env, name="gateway")
    end = time.monotonic() + 30
    while time.monotonic() < end:
        assert proc.alive(), proc.output()[-2000:]
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc, port
        except OSError:
            time.sleep(0.2)
    pytest.fail(f"gateway did not listen: {proc.output()[-2000:]}")


def _post(conn: http.client.HTTPConnection, path: str, body: bytes) -> tuple[int, Any]:
    for attempt in (1, 2):
        try:
            conn.request("POST", path, body=body, headers={
                "Content-Type": "application/json", "Authorization": f"Bearer {KEY}"})
            r = conn.getresponse()
            data = r.read()
            break
        except (http.client.HTTPException, ConnectionError):
            conn.close()  # the server closed a kept-alive connection: once more
            if attempt == 2:
                raise
    try:
        return r.status, orjson.loads(data)
    except orjson.JSONDecodeError:
        return r.status, data


def _valid(i: int) -> dict[str, Any]:
    return {"id": f"ok{i}", "source": "loops", "type": "traffic.flow", "entity": "loop-1",
            "time": time.time() - 30, "values": {"intensity": float(i)}}


def _healthz(port: int) -> dict[str, Any]:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("GET", "/healthz")
    out = orjson.loads(c.getresponse().read())
    c.close()
    return out["metrics"]


@pytest.mark.kafka
@pytest.mark.timeout(300)
def test_hostile_bodies_get_no_5xx_and_only_accepted_events_reach_kafka(fresh_namespace, spawn):
    s = fresh_namespace("gwh")
    proc, port = _start(spawn, s)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    statuses: Counter[int] = Counter()
    accepted: Counter[str] = Counter()
    paths = ["/v1/events", "/ngsi-ld/v1/entityOperations/upsert?source=air"]
    n = [0]

    def send(path: str, body: bytes) -> None:
        status, reply = _post(conn, path, body)
        statuses[status] += 1
        assert status in CLIENT_STATUSES, (status, reply, body[:200])
        if isinstance(reply, dict):
            for r in reply.get("results", []):
                if r["status"] == "accepted":
                    accepted[r["id"]] += 1

    @settings(max_examples=300, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(body=hostile_bytes() | hostile_json_bytes()
           | st.lists(mutated_json_objects(_valid(0)), min_size=1, max_size=4).map(
               lambda xs: json.dumps(xs, allow_nan=True).encode()),
           path=st.sampled_from(paths))
    def hostile(body: bytes, path: str) -> None:
        send(path, body)
        n[0] += 1
        if n[0] % 10 == 0:  # valid traffic keeps flowing in between
            send("/v1/events", orjson.dumps([_valid(n[0])]))

    hostile()
    conn.close()
    print(f"\nintegration hostile bodies, status histogram: {dict(sorted(statuses.items()))}")
    assert sum(statuses.values()) >= 300 and not any(k >= 500 for k in statuses)
    m = _healthz(port)
    assert m["internal_errors"] == 0 and m["item_errors"] == 0, m
    assert sum(1 for i in accepted if i.startswith("ok")) >= 30
    recs = read_topic(s, "events.raw", expect=len(accepted), timeout=30)
    on_topic = Counter(validate_event(b).id for r in recs for b in split_raw(r.value))
    assert on_topic == accepted
    assert proc.alive()


def _slow(port: int, prefix: bytes, trickle: bytes) -> tuple[float, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=20) as c:
        c.sendall(prefix)
        t0 = time.monotonic()
        got = b""
        for i in range(len(trickle)):
            try:
                c.send(trickle[i:i + 1])
            except OSError:
                break
            c.settimeout(1.0)
            try:
                got = c.recv(65536)
                break
            except TimeoutError:
                continue
            except OSError:
                break
        return time.monotonic() - t0, got


@pytest.mark.kafka
@pytest.mark.timeout(120)
def test_slow_clients_are_cut_at_the_configured_timeouts(settings, spawn):
    proc, port = _start(spawn, settings)
    body = orjson.dumps([_valid(1)])
    head = (b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer " + KEY.encode() + b"\r\nContent-Length: "
            + str(len(body)).encode() + b"\r\n\r\n")
    t_head, r_head = _slow(port, b"", head)
    t_body, r_body = _slow(port, head, body)
    print(f"\nslow headers cut after {t_head:.2f} s, slow body after {t_body:.2f} s "
          f"(timeouts {HEADER_S:g} s / {BODY_S:g} s)")
    assert r_head.startswith(b"HTTP/1.1 408 ") and b"header_timeout" in r_head
    assert r_body.startswith(b"HTTP/1.1 408 ") and b"body_timeout" in r_body
    assert t_head <= HEADER_S + 3 and t_body <= BODY_S + 3
    m = _healthz(port)
    assert m["header_timeouts"] == 1 and m["body_timeouts"] == 1, m
    proc.stop()
    assert "gateway stopped:" in proc.output() and "'header_timeouts': 1" in proc.output()
