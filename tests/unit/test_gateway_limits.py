"""Unit: header and body read timeouts and the connection bound, with real sockets.

The gateway runs in-process on 127.0.0.1 behind its real listener, with small timeouts
from its settings; Kafka is replaced by a recording stand-in (isolates request handling).
A slow client sends at 1 byte/s, as in issue 12. The bounds on elapsed time are the
configured timeout plus a generous slack (the check is that the server closes at all,
not how fast).
"""

from __future__ import annotations

import http.client
import socket
import time
from collections.abc import Iterator

import orjson
import pytest

from tests.fixtures.gateway import KEY, GatewayThread, gateway_settings, post

HEADER_S = 2.0
BODY_S = 2.0
SLACK_S = 3.0
VALID = {"id": "e1", "source": "loops", "type": "traffic.flow", "entity": "loop-1",
         "time": time.time() - 60, "values": {"intensity": 10.0}}
BODY = orjson.dumps([VALID])
HEAD = (b"POST /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer " + KEY.encode() + b"\r\nContent-Length: %d\r\n\r\n")


@pytest.fixture
def gw() -> Iterator[GatewayThread]:
    s = gateway_settings(header_timeout_s=HEADER_S, body_timeout_s=BODY_S, max_connections=4)
    with GatewayThread(s) as g:
        yield g


def _trickle(port: int, data: bytes, *, prefix: bytes = b"", every_s: float = 1.0,
             limit_s: float = 20.0) -> tuple[float, bytes]:
    """Send ``prefix`` at once, then ``data`` one byte per ``every_s`` until the server
    answers or closes; (seconds from the first trickled byte to that, what it sent)."""
    with socket.create_connection(("127.0.0.1", port), timeout=limit_s) as s:
        s.sendall(prefix)
        t0 = time.monotonic()
        for i in range(len(data)):
            try:
                s.send(data[i:i + 1])
            except OSError:
                break
            s.settimeout(every_s)
            try:
                got = s.recv(65536)
                break  # an answer (or b"": closed)
            except TimeoutError:
                continue
            except OSError:
                got = b""
                break
        else:
            pytest.fail("the server read the whole slow request without closing")
        s.settimeout(limit_s)
        reply = got
        try:
            while got:
                got = s.recv(65536)
                reply += got
        except OSError:
            pass
        return time.monotonic() - t0, reply


def _json_body(reply: bytes) -> dict:
    return orjson.loads(reply.split(b"\r\n\r\n", 1)[1])


def test_headers_at_one_byte_per_second_are_cut_at_the_header_timeout(gw):
    elapsed, reply = _trickle(gw.port, HEAD % len(BODY))
    assert reply.startswith(b"HTTP/1.1 408 "), reply[:200]
    assert _json_body(reply)["error"] == "header_timeout"
    assert HEADER_S - 0.5 <= elapsed <= HEADER_S + SLACK_S, elapsed
    assert gw.metrics.header_timeouts == 1 and gw.metrics.connections_open == 0


def test_a_connection_that_sends_nothing_is_closed_at_the_header_timeout(gw):
    with socket.create_connection(("127.0.0.1", gw.port), timeout=HEADER_S + SLACK_S) as s:
        t0 = time.monotonic()
        reply = s.recv(65536)
        elapsed = time.monotonic() - t0
    assert reply.startswith(b"HTTP/1.1 408 ") and elapsed <= HEADER_S + SLACK_S
    assert gw.metrics.header_timeouts == 1


def test_a_body_at_one_byte_per_second_is_cut_at_the_body_timeout(gw):
    elapsed, reply = _trickle(gw.port, BODY, prefix=HEAD % len(BODY))
    assert reply.startswith(b"HTTP/1.1 408 "), reply[:200]
    assert _json_body(reply)["error"] == "body_timeout"
    assert BODY_S - 0.5 <= elapsed <= BODY_S + SLACK_S, elapsed
    assert gw.metrics.body_timeouts == 1 and gw.events == []
    assert gw.metrics.internal_errors == 0


def test_the_next_request_on_a_kept_alive_connection_is_timed_too(gw):
    with socket.create_connection(("127.0.0.1", gw.port), timeout=20) as s:
        s.sendall(HEAD % len(BODY) + BODY)
        first = s.recv(65536)
        assert first.startswith(b"HTTP/1.1 200 "), first[:200]
        time.sleep(HEADER_S + 0.5)  # idle between requests: the keep-alive timeout's job
        head = HEAD % len(BODY)
        t0 = time.monotonic()
        reply = b""
        for i in range(len(head)):
            s.send(head[i:i + 1])
            s.settimeout(1.0)
            try:
                reply = s.recv(65536)
                break
            except TimeoutError:
                continue
        elapsed = time.monotonic() - t0
    assert reply.startswith(b"HTTP/1.1 408 "), reply[:200]
    assert elapsed <= HEADER_S + SLACK_S and gw.metrics.header_timeouts == 1


def test_a_slow_but_timely_client_is_served(gw):
    head = HEAD % len(BODY)
    with socket.create_connection(("127.0.0.1", gw.port), timeout=20) as s:
        for part in (head[:20], head[20:], BODY[:10], BODY[10:]):
            s.sendall(part)
            time.sleep(HEADER_S / 5)
        reply = s.recv(65536)
    assert reply.startswith(b"HTTP/1.1 200 "), reply[:300]
    assert len(gw.events) == 1 and gw.metrics.header_timeouts == gw.metrics.body_timeouts == 0


def test_connections_beyond_the_bound_are_refused_and_counted(gw):
    held = [socket.create_connection(("127.0.0.1", gw.port), timeout=5) for _ in range(4)]
    try:
        time.sleep(0.2)
        assert gw.metrics.connections_open == 4
        with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as extra:
            try:
                extra.sendall(HEAD % len(BODY) + BODY)
                got = extra.recv(65536)
            except ConnectionError:
                got = b""
        assert got == b"" and gw.metrics.connections_refused == 1
    finally:
        for s in held:
            s.close()
    deadline = time.monotonic() + 5
    while gw.metrics.connections_open and time.monotonic() < deadline:
        time.sleep(0.05)
    c = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    assert post(c, "/v1/events", BODY)[0] == 200  # room again once they closed
    c.close()
