"""The plain-PostgreSQL side of the TimescaleDB work, run in CI (no TimescaleDB needed):
the rollups sink's refresh hook is a no-op on a plain namespace and ``rollups_1h`` (a
``date_bin`` view there) answers the same query for live and replayed rollups."""

from __future__ import annotations

import logging
import secrets
from datetime import UTC, datetime, timedelta

import pytest

from ioc.aggregate._storage import ROLLUPS_SINK
from ioc.storage import connect, drop_schema, migrate
from ioc.storage.sink import TableWriter
from tests.integration.test_timescaledb import _hourly, _minutes

pytestmark = pytest.mark.db


@pytest.fixture
def plain_namespace(stack):
    """A schema built on the plain path whatever the server has (timescaledb: off)."""
    db = stack.database.model_copy(update={"timescaledb": "off"})
    s = stack.model_copy(update={"database": db}).with_namespace(f"tpln{secrets.token_hex(4)}")
    features, _ = migrate(s)
    assert not features.timescaledb
    yield s
    drop_schema(s)


def test_rollups_sink_and_hourly_view_on_plain_postgresql(plain_namespace, caplog):
    s = plain_namespace
    caplog.set_level(logging.DEBUG, logger="ioc.aggregate")
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    w = TableWriter(s, ROLLUPS_SINK)
    try:
        assert w.write(_minutes("live", now - timedelta(hours=2), 120)) == 120
        assert w.write(_minutes("replay", now - timedelta(days=10), 120, count=3)) == 120
    finally:
        w.close()
    with connect(s.database, autocommit=True) as conn:
        view, plain = _hourly(conn, s)
    assert view == plain
    assert sum(r[3] for r in view if r[0] == "replay") == 360
    assert [r.getMessage() for r in caplog.records if r.name == "ioc.aggregate._storage"] == []
