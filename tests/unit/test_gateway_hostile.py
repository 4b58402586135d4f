"""Unit: the gateway never answers 5xx for anything a client sends.

The gateway runs in-process on 127.0.0.1 behind its real listener (``GatewayServer``);
Kafka is replaced by a recording stand-in (``tests/fixtures/gateway.py``) to isolate
request handling. ``tests/integration/test_gateway_hostile.py`` does the same against the
real broker and a real ``ioc gateway`` process.
"""

from __future__ import annotations

import http.client
import json
import socket
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fixtures.gateway import KEY, GatewayThread, gateway_settings, post
from tests.fixtures.hostile import (
    deep_json,
    hostile_bytes,
    hostile_json_bytes,
    hostile_json_values,
    hostile_text,
    invalid_utf8_in_string,
    mutated_json_objects,
)

EVENTS = "/v1/events"
NGSI = ("/ngsi-ld/v1/entityOperations/upsert?source=air", "/ngsi-ld/v1/entities?source=loops")
# What a client may get for what it sent. 5xx is never in it.
CLIENT_STATUSES = {200, 207, 400, 401, 403, 404, 405, 408, 413, 415, 422}
STATUSES: Counter[int] = Counter()  # printed at the end of the module (pytest -s)

VALID = {"id": "e1", "source": "loops", "type": "traffic.flow", "entity": "loop-1",
         "time": time.time() - 60, "values": {"intensity": 10.0},
         "attributes": {"lane": "1"}}
NGSI_VALID = {"id": "urn:ngsi-ld:TrafficFlowObserved:loop-7", "type": "TrafficFlowObserved",
              "@context": ["https://smartdatamodels.org/context.jsonld"],
              "dateObserved": {"type": "Property", "value": "2025-05-01T10:05:00+02:00"},
              "intensity": {"type": "Property", "value": 197, "observedAt":
                            "2025-05-01T10:05:00Z"},
              "location": {"type": "GeoProperty", "value": {"type": "Point",
                                                           "coordinates": [-3.7, 40.4]}}}
HYPO = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def gw() -> Iterator[GatewayThread]:
    with GatewayThread(gateway_settings(max_body_bytes=256 * 1024)) as g:
        _SERVERS.append(g)
        yield g
        _SERVERS.remove(g)
    print(f"\ngateway unit property tests, status histogram: {dict(sorted(STATUSES.items()))}")


@pytest.fixture(scope="module")
def conn(gw: GatewayThread) -> Iterator[http.client.HTTPConnection]:
    c = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=30)
    yield c
    c.close()


def _send(conn: http.client.HTTPConnection, path: str, body: bytes, **kw: Any) -> tuple[int, Any]:
    """POST and check the status is one a client may get; no bug of ours was counted."""
    bugs = _bugs()
    try:
        status, reply = post(conn, path, body, **kw)
    except (http.client.HTTPException, ConnectionError):
        conn.close()  # a closed keep-alive connection: once more on a fresh one
        status, reply = post(conn, path, body, **kw)
    STATUSES[status] += 1
    assert status in CLIENT_STATUSES, (status, reply, body[:200])
    if status >= 400 and status != 405:
        assert isinstance(reply, dict) and (reply.get("error") or reply.get("results")), reply
    assert _bugs() == bugs, (reply, body[:300])
    return status, reply


_SERVERS: list[GatewayThread] = []


def _bugs() -> tuple[int, int]:
    """(internal_errors, item_errors) of the module's gateway."""
    m = _SERVERS[0].metrics if _SERVERS else None
    return (m.internal_errors, m.item_errors) if m else (0, 0)


def _no_bugs(gw: GatewayThread) -> None:
    assert gw.metrics.internal_errors == 0 and gw.metrics.item_errors == 0, gw.metrics


def _encode(value: Any) -> bytes:
    """JSON text of ``value``, NaN/Infinity literals and lone-surrogate escapes included."""
    try:
        return json.dumps(value, allow_nan=True).encode()
    except (ValueError, TypeError, RecursionError):
        return b"null"


# --- the crashes reported in issue 12 ---------------------------------------------------

def test_the_reported_500s_are_400_and_422(gw, conn):
    st_, r = _send(conn, EVENTS, b'[{"id":"x\xff\xfe"}]')
    assert st_ == 400 and r["error"] == "not_json" and "UTF-8" in r["message"]
    for kind in ("list", "object", "mixed", "unclosed"):
        st_, r = _send(conn, EVENTS, deep_json(10_000, kind))
        assert st_ == 400 and r["error"] == "not_json", (kind, r)
    st_, r = _send(conn, NGSI[0], orjson.dumps([{**NGSI_VALID, "type": ["TrafficFlowObserved"]}]))
    assert st_ == 422 and r["results"][0]["reason"] == "unsupported_type"
    st_, r = _send(conn, NGSI[0], orjson.dumps([{**NGSI_VALID, "dateObserved": 1e300}]))
    assert st_ == 422 and r["results"][0]["reason"] == "bad_time"
    st_, r = _send(conn, NGSI[0], b'[{"id":"x","type":"AirQualityObserved","dateObserved":'
                   + b"9" * 400 + b"}]")
    assert st_ == 422 and r["results"][0]["reason"] == "bad_time"
    _no_bugs(gw)


def test_content_types(gw, conn):
    body = orjson.dumps([{**VALID, "id": "ct"}])
    for ctype in ("application/json", "application/json; charset=utf-8", "application/ld+json",
                  "application/geo+json", None):
        assert _send(conn, EVENTS, body, content_type=ctype)[0] == 200, ctype
    for ctype in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data",
                  "application/json; charset=latin-1", "application/octet-stream", "json"):
        st_, r = _send(conn, EVENTS, body, content_type=ctype)
        assert st_ == 415 and r["error"] == "unsupported_media_type", (ctype, r)


def test_unknown_path_and_method_get_json_4xx(gw, conn):
    st_, r = _send(conn, "/v2/nothing", b"{}")
    assert st_ == 404 and r["error"] == "not_found"
    conn.request("GET", EVENTS)
    resp = conn.getresponse()
    assert resp.status == 405 and orjson.loads(resp.read())["error"] == "method_not_allowed"


def test_broker_failure_stays_503_not_500():
    with GatewayThread(gateway_settings(), fail_produce=True) as g:
        c = http.client.HTTPConnection("127.0.0.1", g.port, timeout=10)
        st_, r = post(c, EVENTS, orjson.dumps([VALID]))
        assert st_ == 503 and r["error"] == "kafka_unavailable"
        assert r["results"][0]["reason"] == "not_acknowledged"
        _no_bugs(g)


# --- properties: any bytes, any JSON, any envelope, any NGSI-LD shape --------------------

@HYPO
@given(body=hostile_bytes() | hostile_json_bytes(), path=st.sampled_from([EVENTS, *NGSI]))
def test_any_bytes_get_a_client_status(gw, conn, body, path):
    _send(conn, path, body)


@HYPO
@given(value=hostile_json_values(max_leaves=40), wrap=st.sampled_from(["one", "list", "events"]),
       path=st.sampled_from([EVENTS, *NGSI]))
def test_any_json_value_gets_a_client_status(gw, conn, value, wrap, path):
    body = {"one": value, "list": [value], "events": {"events": [value]}}[wrap]
    _send(conn, path, _encode(body))


@HYPO
@given(items=st.lists(mutated_json_objects(VALID), min_size=1, max_size=5),
       wrap=st.booleans())
def test_any_envelope_shape_is_judged_per_item(gw, conn, items, wrap):
    body = _encode({"events": items} if wrap else items)
    _, r = _send(conn, EVENTS, body)
    if body != b"null" and isinstance(r, dict) and "results" in r:
        assert [x["index"] for x in r["results"]] == list(range(len(items)))
        assert all(x["status"] == "accepted" or x["reason"] != "invalid" for x in r["results"])


_small = hostile_json_values(max_leaves=3)
_ngsi_types = st.sampled_from(["TrafficFlowObserved", "AirQualityObserved"]) | _small
_ngsi_times = (st.integers() | st.floats() | _small
               | st.sampled_from(["0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00",
                                  "2025-05-01T10:00:00Z", "+10000-01-01T00:00:00Z", "", "Z"]))


@st.composite
def _ngsi_entities(draw: st.DrawFn) -> dict[str, Any]:
    """NGSI-LD-like entities: a valid one with its type, times, @context and one property
    replaced by hostile shapes (type as list/object/number, times out of range, ...)."""
    e: dict[str, Any] = dict(NGSI_VALID)
    e["type"] = draw(_ngsi_types)
    e["dateObserved"] = draw(_ngsi_times | st.builds(
        lambda t: {"type": "Property", "value": {"@type": "DateTime", "@value": t}},
        _ngsi_times))
    e["@context"] = draw(_small)
    e[draw(st.sampled_from(["intensity", "pm25", "location", "id", ""]))] = draw(
        st.fixed_dictionaries({
            "type": st.sampled_from(["Property", "Relationship", "GeoProperty"]) | _small,
            "value": _small, "object": _small, "observedAt": _ngsi_times}) | _small)
    return e


@settings(HYPO, max_examples=200)
@given(entities=st.lists(_ngsi_entities(), min_size=1, max_size=3) | st.lists(
    mutated_json_objects(NGSI_VALID), min_size=1, max_size=3),
       path=st.sampled_from(NGSI))
def test_any_ngsi_ld_shape_is_judged_per_item(gw, conn, entities, path):
    body = _encode(entities if "upsert" in path else entities[0])
    _send(conn, path, body)


_header_text = hostile_text(max_size=40).map(lambda s: s.encode("utf-8", "surrogatepass"))


@settings(max_examples=150, deadline=None, suppress_health_check=[
    HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(ctype=_header_text | st.sampled_from([b"application/json", b"application/ld+json"]),
       auth=_header_text.map(lambda b: b"Bearer " + b) | st.just(f"Bearer {KEY}".encode()),
       source=_header_text, query=_header_text,
       body=st.sampled_from([orjson.dumps([VALID]), orjson.dumps([NGSI_VALID])])
       | invalid_utf8_in_string())
def test_any_header_or_query_bytes_get_a_client_status(gw, ctype, auth, source, query, body):
    """Raw request bytes: header values and query strings that are not text at all."""
    for b in (ctype, auth, source, query):
        assert isinstance(b, bytes)
    clean = [x.replace(b"\r", b"").replace(b"\n", b"") for x in (ctype, auth, source)]
    path = b"/ngsi-ld/v1/entityOperations/upsert?source=" + query.replace(b" ", b"%20")
    req = (b"POST " + path + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: " + clean[0]
           + b"\r\nAuthorization: " + clean[1] + b"\r\nX-IOC-Source: " + clean[2]
           + b"\r\nConnection: close\r\nContent-Length: " + str(len(body)).encode()
           + b"\r\n\r\n" + body)
    bugs = _bugs()
    with socket.create_connection(("127.0.0.1", gw.port), timeout=30) as s:
        s.sendall(req)
        reply = b""
        while chunk := s.recv(65536):
            reply += chunk
    status = int(reply.split(b" ", 2)[1])
    STATUSES[status] += 1
    assert status in CLIENT_STATUSES, reply[:500]
    assert _bugs() == bugs, reply[:500]


def test_bodies_that_do_not_decode_or_frame_are_400_and_counted(gw):
    import gzip

    cases = [(gzip.compress(b"[" + b" " * 5_000_000 + b"]"), {"Content-Encoding": "gzip"}, 413),
             (b"\x1f\x8bnot gzip", {"Content-Encoding": "gzip"}, 400),
             (b"[1]", {"Content-Encoding": "br"}, 400),
             (b"[1]", {"Content-Encoding": "deflate"}, 400),
             (b"[1]", {"Transfer-Encoding": "chunked"}, 400)]
    before = gw.metrics.bad_http
    for body, headers, want in cases:
        c = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=45)
        status, _ = post(c, EVENTS, body, headers=headers)
        c.close()
        STATUSES[status] += 1
        assert status in (want if isinstance(want, tuple) else (want,)), (headers, status)
    # refused by aiohttp's parser, not the app; aiohttp logs (and so we count) such a
    # request after its 400 has gone out: the last count may come a moment after the
    # reply (seen once in CI: 1 of 2 counted when read at once)
    deadline = time.monotonic() + 5
    while gw.metrics.bad_http - before < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gw.metrics.bad_http - before >= 2
    _no_bugs(gw)


@pytest.mark.parametrize("framing", [b"Transfer-Encoding: chunked", b"Content-Encoding: deflate"
                                     b"\r\nContent-Length: 3"])
def test_a_body_that_fails_to_parse_after_the_headers_is_400_at_once(gw, framing):
    """Headers in one read, the body that cannot be parsed in a later one: aiohttp alone
    leaves the handler waiting until body_timeout_s (408); the guard fails the payload."""
    head = (b"POST " + EVENTS.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nAuthorization: Bearer " + KEY.encode()
            + b"\r\n" + framing + b"\r\n\r\n")
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as s:
        s.sendall(head)
        time.sleep(0.3)  # the handler is now reading the body
        t0 = time.monotonic()
        s.sendall(b"[1]")
        reply = b""
        while chunk := s.recv(65536):
            reply += chunk
    status = int(reply.split(b" ", 2)[1])
    STATUSES[status] += 1
    assert status == 400, reply[:500]
    assert b"bad_body" in reply, reply[:500]
    assert time.monotonic() - t0 < 5
    _no_bugs(gw)
