"""Unit: the gateway's /metrics (ioc.metrics.gateway) follows its counters, with bounded labels.

The gateway runs in-process behind its real listener with a recording stand-in for Kafka
(``tests/fixtures/gateway.py``); the endpoint is the real ``start_metrics`` on a free
port, scraped over HTTP and parsed with ``prometheus_client.parser``.
"""

from __future__ import annotations

import http.client
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ioc.gateway._app import gateway_state
from ioc.metrics import MetricsEndpoint, start_metrics
from ioc.metrics.gateway import REJECT_REASONS, GatewayCollector
from tests.fixtures.gateway import GatewayThread, gateway_settings, post
from tests.fixtures.hostile import hostile_json_values, mutated_json_objects
from tests.fixtures.metrics import Scrape, scrape

VALID = {"id": "m1", "source": "loops", "type": "traffic.flow", "entity": "loop-1",
         "time": time.time() - 60, "values": {"intensity": 10.0}}


@pytest.fixture(scope="module")
def gw() -> Iterator[tuple[GatewayThread, MetricsEndpoint]]:
    with GatewayThread(gateway_settings()) as g:
        assert g.server is not None
        ep = start_metrics(g.settings, "gateway", [GatewayCollector(gateway_state(g.server.app))],
                           port=0, announce=False)
        assert ep is not None
        try:
            yield g, ep
        finally:
            ep.close()


@pytest.fixture(scope="module")
def conn(gw: tuple[GatewayThread, MetricsEndpoint]) -> Iterator[http.client.HTTPConnection]:
    c = http.client.HTTPConnection("127.0.0.1", gw[0].port, timeout=30)
    yield c
    c.close()


def _scrape(gw: tuple[GatewayThread, MetricsEndpoint]) -> Scrape:
    return scrape(gw[1].url)


def test_build_info_process_metrics_and_every_gateway_name(gw):
    s = _scrape(gw)
    info = s.labels("ioc_build_info")
    assert info and info[0]["service"] == "gateway" and info[0]["namespace"] == "ioc"
    assert s.value("ioc_build_info") == 1
    assert "process_cpu_seconds_total" in s.names() and "python_info" in s.names()
    for name in ("ioc_gateway_events_accepted_total", "ioc_gateway_broker_unavailable_total",
                 "ioc_gateway_open_connections", "ioc_gateway_timeouts_total",
                 "ioc_gateway_connections_refused_total"):
        assert name in s.names(), name
    assert {d["phase"] for d in s.labels("ioc_gateway_timeouts_total")} == {"header", "body"}


def test_accepted_rejected_requests_and_latency_move(gw, conn):
    before = _scrape(gw)
    bad = {**VALID, "id": "m2", "time": "yesterday"}
    status, reply = post(conn, "/v1/events", orjson.dumps([{**VALID, "id": "m1"}, bad]))
    assert status == 207, reply
    after = _scrape(gw)
    assert after.value("ioc_gateway_events_accepted_total") == \
        before.value("ioc_gateway_events_accepted_total") + 1
    assert after.value("ioc_gateway_events_rejected_total", 0, reason="bad_time") == \
        before.value("ioc_gateway_events_rejected_total", 0, reason="bad_time") + 1
    r = {"route": "/v1/events", "status": "207"}
    assert after.value("ioc_gateway_requests_total", **r) == \
        before.value("ioc_gateway_requests_total", 0, **r) + 1
    assert after.value("ioc_gateway_request_seconds_count", route="/v1/events") == \
        before.value("ioc_gateway_request_seconds_count", 0, route="/v1/events") + 1
    inf = after.value("ioc_gateway_request_seconds_bucket", route="/v1/events", le="+Inf")
    assert inf == after.value("ioc_gateway_request_seconds_count", route="/v1/events")
    # an open keep-alive connection (ours) is counted
    assert after.value("ioc_gateway_open_connections") >= 1


def test_an_increment_of_gateway_metrics_shows_on_the_next_scrape(gw):
    g, _ = gw
    n = _scrape(gw).value("ioc_gateway_connections_refused_total")
    g.metrics.connections_refused += 3
    try:
        assert _scrape(gw).value("ioc_gateway_connections_refused_total") == n + 3
    finally:
        g.metrics.connections_refused -= 3


def test_unknown_paths_are_one_route_label(gw, conn):
    for path in ("/x/1", "/x/2", "/v1/events/abc"):
        status, _ = post(conn, path, b"{}")
        assert status == 404
    routes = {d["route"] for d in _scrape(gw).labels("ioc_gateway_requests_total")}
    assert "other" in routes
    assert not any(r.startswith("/x") or r == "/v1/events/abc" for r in routes), routes


HYPO = settings(max_examples=100, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])
ALLOWED_ROUTES = {"/v1/events", "/ngsi-ld/v1/entityOperations/upsert",
                  "/ngsi-ld/v1/entityOperations/create", "/ngsi-ld/v1/entities", "/healthz",
                  "other"}


def _check_bounded(s: Scrape) -> None:
    reasons = {d["reason"] for d in s.labels("ioc_gateway_events_rejected_total")}
    assert reasons <= REJECT_REASONS, reasons - REJECT_REASONS
    routes = {d["route"] for d in s.labels("ioc_gateway_requests_total")}
    assert routes <= ALLOWED_ROUTES, routes - ALLOWED_ROUTES


def _collected(g: GatewayThread) -> Scrape:
    """The collector's exposition text without the HTTP round trip (per example)."""
    from prometheus_client import CollectorRegistry, generate_latest

    assert g.server is not None
    reg = CollectorRegistry()
    reg.register(GatewayCollector(gateway_state(g.server.app)))
    return Scrape(generate_latest(reg).decode())


@HYPO
@given(items=st.lists(st.one_of(mutated_json_objects(VALID), hostile_json_values()),
                      min_size=1, max_size=5),
       path=st.sampled_from(["/v1/events", "/ngsi-ld/v1/entities?source=air",
                             "/ngsi-ld/v1/entityOperations/upsert?source=loops",
                             "/v1/eee"]))
def test_no_label_value_outside_the_bounded_sets(gw, conn, items: list[Any], path: str):
    try:
        body = orjson.dumps(items)
    except (TypeError, orjson.JSONEncodeError):
        body = b"[]"
    try:
        post(conn, path, body)
    except (http.client.HTTPException, ConnectionError):
        conn.close()
    _check_bounded(_collected(gw[0]))


def test_after_the_property_test_the_scrape_is_still_bounded(gw):
    _check_bounded(_scrape(gw))


def test_reasons_outside_the_set_are_exported_as_other(gw):
    g, _ = gw
    assert g.server is not None
    state = gateway_state(g.server.app)
    state.rejections["a-reason-nobody-declared"] += 2
    try:
        s = _scrape(gw)
        _check_bounded(s)
        assert s.value("ioc_gateway_events_rejected_total", reason="other") >= 2
    finally:
        del state.rejections["a-reason-nobody-declared"]
