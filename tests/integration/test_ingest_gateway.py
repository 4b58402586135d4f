"""The HTTP gateway as a real `ioc gateway` process against the real broker."""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from typing import Any

import orjson
import pytest

from ioc.events import split_raw, validate_event
from ioc.gateway import hash_key, new_key
from tests.fixtures.events import read_topic

KEY = new_key()
OTHER_KEY = new_key()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _post(url: str, body: Any, key: str | None = None, raw: bytes | None = None
          ) -> tuple[int, dict[str, Any], dict[str, str]]:
    data = raw if raw is not None else orjson.dumps(body)
    req = urllib.request.Request(url, data=data, method="POST",
                                 headers={"Content-Type": "application/json"})
    if key:
        req.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read()), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}"), dict(e.headers)


def _start(spawn, settings, *, kafka: str | None = None) -> str:
    port = _free_port()
    pubs = {"traffic": {"key_sha256": hash_key(KEY), "sources": ["loops", "air"]},
            "egov": {"key_sha256": hash_key(OTHER_KEY), "sources": ["dossiers"]}}
    env = {"IOC_GATEWAY__PUBLISHERS": json.dumps(pubs), "IOC_GATEWAY__MAX_BATCH_EVENTS": "50",
           "IOC_GATEWAY__MAX_BODY_BYTES": "65536", "IOC_GATEWAY__ACK_TIMEOUT_S": "5"}
    if kafka:
        env["IOC_KAFKA__BOOTSTRAP_SERVERS"] = kafka
    proc = spawn(["gateway", "--port", str(port)], settings=settings, env=env, name="gateway")
    end = time.monotonic() + 30
    while time.monotonic() < end:
        assert proc.alive(), proc.output()[-2000:]
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.2)
    pytest.fail(f"gateway did not listen on {port}: {proc.output()[-2000:]}")


def _ev(i: int, source: str = "loops", **kw: Any) -> dict[str, Any]:
    return {"id": f"e{i}", "source": source, "type": "traffic.flow", "entity": f"loop{i % 3}",
            "time": time.time() - 5, "values": {"intensity": 10.0 + i}, **kw}


@pytest.mark.timeout(120)
def test_gateway_auth_limits_reasons_and_delivery(fresh_namespace, spawn):
    s = fresh_namespace("gw")
    url = _start(spawn, s) + "/v1/events"
    # Authentication
    st, body, hdr = _post(url, [_ev(0)])
    assert st == 401 and body["error"] == "unauthorized" and "WWW-Authenticate" in hdr
    st, body, _ = _post(url, [_ev(0)], key=new_key())
    assert st == 401 and body["message"] == "unknown API key"
    # A source this publisher may not publish for
    st, body, _ = _post(url, [_ev(0, source="dossiers")], key=KEY)
    assert st == 403 and body["results"][0]["reason"] == "source_not_allowed"
    # Mixed batch: each item gets its own verdict and reason
    batch = [_ev(1), _ev(2, values={"intensity": "lots"}), _ev(3, source="dossiers"),
             {k: v for k, v in _ev(4).items() if k != "entity"}, _ev(5, source="air")]
    st, body, _ = _post(url, {"events": batch}, key=KEY)
    assert st == 207, body
    verdicts = [(r["index"], r["status"], r.get("reason"), r.get("field"))
                for r in body["results"]]
    assert verdicts == [(0, "accepted", None, None),
                        (1, "rejected", "wrong_type", "values.intensity"),
                        (2, "rejected", "source_not_allowed", "source"),
                        (3, "rejected", "missing_field", "entity"),
                        (4, "accepted", None, None)]
    # All valid; source filled in for a single-source publisher
    st, body, _ = _post(url, [{k: v for k, v in _ev(100 + i, source="dossiers").items()
                               if k != "source"} | {"type": "egov.dossier",
                                                    "attributes": {"channel": "online"}}
                              for i in range(3)], key=OTHER_KEY)
    assert st == 200 and body["accepted"] == 3, body
    # Limits
    st, body, _ = _post(url, [_ev(i) for i in range(51)], key=KEY)
    assert st == 413 and body["error"] == "batch_too_large" and "50" in body["message"]
    st, body, _ = _post(url, None, key=KEY, raw=b"[" + b" " * 70000 + b"]")
    assert st == 413 and body["error"] == "body_too_large"
    st, body, _ = _post(url, None, key=KEY, raw=b"{nope")
    assert st == 400 and body["error"] == "not_json"
    st, body, _ = _post(url, None, key=KEY, raw=b'[{"id":"\xff"}]')  # was a 500
    assert st == 400 and body["error"] == "not_json" and "UTF-8" in body["message"]
    # What was acknowledged is on events.raw: exactly e1, e5, e100..e102
    recs = read_topic(s, "events.raw", expect=2, timeout=20)
    ids = sorted(validate_event(b).id for r in recs for b in split_raw(r.value))
    assert ids == ["e1", "e100", "e101", "e102", "e5"]


@pytest.mark.timeout(60)
def test_gateway_ngsi_ld_normalized_and_key_values(fresh_namespace, spawn):
    s = fresh_namespace("gwn")
    base = _start(spawn, s)
    normalized = {
        "id": "urn:ngsi-ld:AirQualityObserved:madrid-01", "type": "AirQualityObserved",
        "dateObserved": {"type": "Property",
                         "value": {"@type": "DateTime", "@value": "2025-05-01T10:00:00Z"}},
        "pm25": {"type": "Property", "value": 12.5, "unitCode": "GQ"},
        "refDevice": {"type": "Relationship", "object": "urn:ngsi-ld:Device:d1"},
        "@context": ["https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context.jsonld"]}
    key_values = {"id": "urn:ngsi-ld:TrafficFlowObserved:loop-7",
                  "type": "TrafficFlowObserved", "dateObserved": "2025-05-01T10:05:00+02:00",
                  "intensity": 197, "averageVehicleSpeed": 52.3, "congested": False,
                  "location": {"type": "Point", "coordinates": [-3.7, 40.4]}}
    st, body, _ = _post(base + "/ngsi-ld/v1/entityOperations/upsert?source=air",
                        [normalized, key_values, {"id": "x", "type": "WeatherObserved"}],
                        key=KEY)
    assert st == 207, body
    assert [r["status"] for r in body["results"]] == ["accepted", "accepted", "rejected"]
    assert body["results"][2]["reason"] == "unsupported_type"
    recs = read_topic(s, "events.raw", expect=1, timeout=20)
    evs = {e.entity: e for e in (validate_event(b) for r in recs for b in split_raw(r.value))}
    assert evs["madrid-01"].type == "air.quality" and evs["madrid-01"].values == {"pm25": 12.5}
    assert evs["madrid-01"].attributes["refDevice"] == "urn:ngsi-ld:Device:d1"
    assert evs["loop-7"].values == {"intensity": 197.0, "averageVehicleSpeed": 52.3}
    assert evs["loop-7"].time == 1746086700.0 and evs["loop-7"].source == "air"


@pytest.mark.timeout(60)
def test_gateway_answers_503_when_kafka_is_unreachable(settings, spawn):
    closed = _free_port()  # nothing listens there
    base = _start(spawn, settings, kafka=f"127.0.0.1:{closed}")
    st, body, hdr = _post(base + "/v1/events", [_ev(1), _ev(2, values={"x": "y"})], key=KEY)
    assert st == 503, body
    assert hdr.get("Retry-After") == "5" and body["error"] == "kafka_unavailable"
    assert [r["reason"] for r in body["results"]] == ["not_acknowledged", "wrong_type"]
    st, _, _ = _post(base + "/v1/events", [_ev(3)], key=KEY)
    assert st == 503
