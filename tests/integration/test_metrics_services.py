"""Integration: the services' /metrics while events flow (real Kafka and PostgreSQL).

``ioc gateway``, ``ioc worker --agents validate`` and ``ioc sink --tables events`` of a
namespace of their own, each with ``--metrics-port 0`` (the bound URL is read from the
line each prints); events are posted to the gateway, one undecodable raw record is
produced straight to ``<ns>.events.raw``. The sink starts after the events are in
``<ns>.events``, so its group's lag is first the backlog and then 0 once written.
"""

from __future__ import annotations

import json
import re
import socket
import time
import urllib.request
from typing import Any

import orjson
import pytest

from ioc.gateway import hash_key, new_key
from tests.fixtures.events import wait_for
from tests.fixtures.metrics import Scrape, scrape

pytestmark = [pytest.mark.kafka, pytest.mark.db]

KEY = new_key()
_URL = re.compile(r"metrics on (http://127\.0\.0\.1:\d+/metrics)")


def _metrics_url(proc: Any, timeout: float = 60.0) -> str:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        assert proc.alive(), proc.output()[-3000:]
        m = _URL.search(proc.output())
        if m:
            return m.group(1)
        time.sleep(0.2)
    pytest.fail(f"no 'metrics on' line within {timeout:.0f} s: {proc.output()[-3000:]}")


def _free_port() -> int:
    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        return int(sk.getsockname()[1])


def _try_scrape(url: str) -> Scrape | None:
    try:
        return scrape(url, timeout=5)
    except OSError:
        return None


def _post(url: str, events: list[dict[str, Any]]) -> int:
    req = urllib.request.Request(url, data=orjson.dumps(events), method="POST", headers={
        "Content-Type": "application/json", "Authorization": f"Bearer {KEY}"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


def _ev(i: int, **kw: Any) -> dict[str, Any]:
    return {"id": f"m{i}", "source": "loops", "type": "traffic.flow", "entity": f"loop{i % 3}",
            "time": time.time() - 5, "values": {"intensity": float(i)}, **kw}


@pytest.mark.timeout(300)
def test_accepted_events_rows_written_and_lag_move(fresh_namespace, spawn):
    s = fresh_namespace("mx")
    ns = s.namespace
    pubs = {"traffic": {"key_sha256": hash_key(KEY), "sources": ["loops"]}}
    gw_port = _free_port()
    gw = spawn(["gateway", "--port", str(gw_port), "--metrics-port", "0"], settings=s,
               env={"IOC_GATEWAY__PUBLISHERS": json.dumps(pubs)}, name="gateway")
    worker = spawn(["worker", "--agents", "validate", "--metrics-port", "0"], settings=s,
                   name="worker")
    gw_metrics, w_metrics = _metrics_url(gw), _metrics_url(worker)
    for url, service in ((gw_metrics, "gateway"), (w_metrics, "worker")):
        first = scrape(url)
        assert first.labels("ioc_build_info")[0] == {
            "version": first.labels("ioc_build_info")[0]["version"], "service": service,
            "namespace": ns}
        assert "process_resident_memory_bytes" in first.names()

    n = 300
    events = f"http://127.0.0.1:{gw_port}/v1/events"
    statuses = [_post(events, [_ev(i) for i in range(k, k + 100)]) for k in range(0, n, 100)]
    assert statuses == [200, 200, 200]
    assert _post(events, [_ev(n + 1, time="not a time")]) == 422
    g = scrape(gw_metrics)
    assert g.value("ioc_gateway_events_accepted_total") == n
    assert g.value("ioc_gateway_events_rejected_total", reason="bad_time") == 1
    assert g.value("ioc_gateway_requests_total", route="/v1/events", status="200") == 3
    assert g.value("ioc_gateway_request_seconds_count", route="/v1/events") == 4

    # one raw record the validate stage cannot read: a dead letter with its reason
    from kafka import KafkaProducer

    from ioc.kafka import kafka_python_kwargs

    p = KafkaProducer(**kafka_python_kwargs(s.kafka))
    p.send(f"{ns}.events.raw", b"{not json").get(timeout=30)
    p.close(timeout=10)

    group = f"{ns}-streams.validate"
    w = wait_for(lambda: _try_scrape(w_metrics), timeout=120, until=lambda m: m is not None and
                 m.value("ioc_stage_events_in_total", 0, stage="validate") >= n + 1
                 and m.value("ioc_dead_letters_total", 0, stage="validate") >= 1
                 and m.value("ioc_consumer_lag", -1, group=group) == 0)
    assert w is not None, worker.output()[-3000:]
    assert w.value("ioc_stage_events_in_total", stage="validate") == n + 1, worker.output()[-3000:]
    assert w.value("ioc_dead_letters_total", stage="validate", reason="not_json") == 1
    assert w.value("ioc_stage_records_out_total", stage="validate") >= n + 1
    assert w.value("ioc_consumer_lag", group=group, topic=f"{ns}.events.raw") == 0
    assert {d["partition"] for d in w.labels("ioc_consumer_lag")} >= {"0"}

    # The sink starts on a backlog: its lag is the backlog, then 0 once the rows are in.
    # Lag counts from committed offsets, and an 8 s linger holds the first commit back
    # past the lag's second refresh (every 5 s; the first may run before the sink's
    # groups are known): with 3 s the rows were in before any refresh saw the backlog
    # (CI, 2026-12-03: every lag read -1, then 0).
    sink = spawn(["sink", "--tables", "events", "--linger", "8", "--metrics-port", "0"],
                 settings=s, name="sink")
    sink_metrics = _metrics_url(sink)
    sgroup = f"{ns}-sink-events"
    lags: list[float] = []

    def sink_scrape() -> Scrape | None:
        m = _try_scrape(sink_metrics)
        if m is not None:
            lags.append(m.value("ioc_consumer_lag", -1, group=sgroup))
        return m

    done = wait_for(sink_scrape, timeout=120, until=lambda m: m is not None and
                    m.value("ioc_sink_rows_written_total", 0, table="events") >= n
                    and m.value("ioc_consumer_lag", -1, group=sgroup) == 0)
    assert done is not None, sink.output()[-3000:]
    assert done.value("ioc_sink_rows_written_total", table="events") == n
    assert done.value("ioc_sink_paused", table="events") == 0
    assert done.value("ioc_sink_batch_seconds_count", table="events") >= 1
    assert max(lags) >= 1, lags  # the backlog was seen before it was written
    assert lags[-1] == 0
    assert done.labels("ioc_build_info")[0]["service"] == "sink"
    for proc in (sink, worker, gw):
        assert proc.stop() == 0, proc.output()[-2000:]
