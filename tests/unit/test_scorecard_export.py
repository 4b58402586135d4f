"""The gateway's scorecard export without a database: keys, query errors, 503.

The answer with stored counts is in tests/integration/test_scorecards.py.
"""

from __future__ import annotations

import http.client
from pathlib import Path
from typing import Any

import orjson
import pytest

from ioc.config import load_settings
from ioc.gateway import hash_key, new_key
from tests.fixtures.gateway import KEY, SOURCES, GatewayThread

ROOT = Path(__file__).resolve().parents[2]
READER = new_key()
PATH = "/ngsi-ld/v1/entities"


def settings(**db: Any):
    return load_settings(ROOT / "deploy" / "scorecards.example.yaml", env={}, overrides={
        "gateway": {"publishers": {"traffic": {"key_sha256": hash_key(KEY), "sources": SOURCES}}},
        "scorecards": {"readers": {"portal": {"key_sha256": hash_key(READER)}},
                       "export_timeout_s": 2},
        # nothing listens on port 1: the export must answer 503, not hang or 500
        "database": {"dsn": "postgresql://ioc@127.0.0.1:1/ioc", "connect_timeout_s": 2, **db}})


def get(conn: http.client.HTTPConnection, query: str, key: str | None) -> tuple[int, Any, Any]:
    h = {"Authorization": f"Bearer {key}"} if key else {}
    conn.request("GET", PATH + query, headers=h)
    r = conn.getresponse()
    return r.status, orjson.loads(r.read()), r


@pytest.fixture(scope="module")
def gw():
    with GatewayThread(settings()) as g:
        yield g


def test_reading_needs_a_reader_key(gw):
    c = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    for key in (None, KEY, "iock_nothing"):  # a publisher's key cannot read
        status, body, _ = get(c, "?type=KeyPerformanceIndicator", key)
        assert status == 401 and body["error"] == "unauthorized", (key, body)
    assert gw.metrics.unauthorized >= 3


@pytest.mark.parametrize(("query", "param"), [
    ("", "type"), ("?type=TrafficFlowObserved", "type"),
    ("?type=KeyPerformanceIndicator&period=week", "period"),
    ("?type=KeyPerformanceIndicator&period=quarter&periodKey=2021-05", "periodKey"),
    ("?type=KeyPerformanceIndicator&level=street", "level"),
    ("?type=KeyPerformanceIndicator&indicator=nope", "indicator"),
])
def test_bad_queries_are_400_naming_the_parameter(gw, query, param):
    c = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    status, body, _ = get(c, query, READER)
    assert status == 400, body
    assert body["type"].endswith("BadRequestData") and param in body["title"]


def test_database_down_is_503_with_retry_after(gw):
    c = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=20)
    status, body, r = get(c, "?type=KeyPerformanceIndicator", READER)
    assert status == 503 and r.getheader("Retry-After") == "5", body
    assert gw.metrics.internal_errors == 0


def test_load_beyond_the_concurrency_bound_is_shed(gw, monkeypatch):
    from ioc.scorecard import _export

    monkeypatch.setattr(_export, "_in_flight", gw.settings.scorecards.export_max_concurrent)
    before = _export.shed
    c = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    status, body, r = get(c, "?type=KeyPerformanceIndicator", READER)
    assert status == 503 and body["title"] == "scorecards busy" and r.getheader("Retry-After")
    assert _export.shed == before + 1
