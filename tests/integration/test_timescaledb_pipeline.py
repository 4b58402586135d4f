"""The pipeline and the sink's outage tests on TimescaleDB (``IOC_TEST_TIMESCALEDB_DSN``).

- a replay of old event times through a real worker (aggregate) and ``ioc sink``: the
  rollups land in the hypertable and ``rollups_1h`` answers like plain PostgreSQL
  although a recent hour was materialised first (the watermark is above the replay);
- the KPI pipeline test with its ``kpi_values`` on the TimescaleDB server;
- the sink's two database-outage tests, on a private cluster that preloads TimescaleDB
  (the same scenarios as tests/integration/test_sink_events.py, checked to have run on
  hypertables).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kafka import KafkaConsumer, TopicPartition

import tests.integration.test_pipeline_kpis as kpi_tests
import tests.integration.test_sink_events as sink_tests
from ioc.config import Settings
from ioc.events import Event
from ioc.kafka import kafka_python_kwargs
from ioc.kafka.clients import admin_client
from ioc.storage import connect
from ioc.topics import topic_name
from tests.fixtures.events import private_postgres  # noqa: F401
from tests.fixtures.timescale import (  # noqa: F401
    hypertables,
    ts_fresh_namespace,
    ts_private_postgres,
    ts_settings,
)
from tests.integration.pipeline_fixtures import consumed_all, publish, wait_for
from tests.integration.test_timescaledb import _hourly, _pause_jobs, _watermark

pytestmark = [pytest.mark.timescaledb, pytest.mark.db, pytest.mark.kafka]

TABLES = {"events", "rollups", "alerts", "detections", "camera_health"}


def _sink_caught_up(s: Settings, table: str, suffix: str) -> bool:
    """The sink group of ``table`` committed the end of ``<ns>.<suffix>`` (rows and the
    after-write refresh are done before a commit)."""
    topic = topic_name(s.namespace, suffix)
    admin = admin_client(s.kafka)
    consumer = KafkaConsumer(enable_auto_commit=False, **kafka_python_kwargs(s.kafka))
    try:
        group = f"{s.namespace}-sink-{table}"
        committed = admin.list_group_offsets([group]).get(group, {})
        tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        ends = consumer.end_offsets(tps)
        return bool(ends) and all(
            (committed[tp].offset if tp in committed else 0) >= end for tp, end in ends.items())
    finally:
        consumer.close()
        admin.close()


def _series(prefix: str, start: datetime, *, entities: int = 3, hours: float = 2.0
            ) -> list[Event]:
    """One event per 10 s per entity over ``hours``, then an end marker two hours on
    that closes every earlier 60-second window."""
    out = []
    for i in range(int(hours * 360)):
        for k in range(entities):
            out.append(Event(id=f"{prefix}{k}-{i}", source="tsp", type="air.quality",
                             entity=f"{prefix}-{k}", time=start.timestamp() + 10 * i + k * 0.01,
                             values={"pm25": float(i % 40)}))
    end = start.timestamp() + hours * 3600 + 7200
    out += [Event(id=f"{prefix}{k}-end", source="tsp", type="air.quality", entity=f"{prefix}-{k}",
                  time=end, values={"pm25": 0.0}) for k in range(entities)]
    return out


def _drained(s: Settings) -> Callable[[], bool]:
    return lambda: (consumed_all(s) and _sink_caught_up(s, "rollups", "rollups")
                    and _sink_caught_up(s, "events", "events"))


@pytest.mark.timeout(420)
def test_replay_through_worker_and_sink_keeps_rollups_1h_true(ts_fresh_namespace, spawn):  # noqa: F811
    s = ts_fresh_namespace("pip")
    job = _pause_jobs(s)[("policy_refresh_continuous_aggregate", "rollups_1h")]
    env = {"IOC_STREAMS__AGGREGATE__WINDOW_SIZES_S": "[60]",
           "IOC_STREAMS__AGGREGATE__ALLOWED_LATENESS_S": "30"}
    worker = spawn(["worker", "--agents", "aggregate"], settings=s, env=env, name="worker")
    sink = spawn(["sink", "--tables", "events,rollups", "--linger", "0.2"], settings=s,
                 env=env, name="sink")
    alive = lambda: worker.alive() and sink.alive()  # noqa: E731
    now = datetime.now(UTC).replace(second=0, microsecond=0)

    # Live operation: the last hours, then the policy materialises what it may.
    live = _series("live", now - timedelta(hours=4), hours=2.0)
    publish(s, live)
    wait_for(_drained(s), timeout=180, every=1.0, alive=alive, what="the live events stored")
    with connect(s.database, autocommit=True) as conn:
        conn.execute("call run_job(%s)", (job,))
        mark = _watermark(conn, s.db_schema)
    assert mark >= now - timedelta(hours=3), mark

    # A replay of a recording ten days old, far below the watermark.
    old = _series("old", now - timedelta(days=10, hours=5), hours=2.0)
    publish(s, old)
    wait_for(_drained(s), timeout=180, every=1.0, alive=alive, what="the replay stored")
    with connect(s.database, autocommit=True) as conn:
        view, plain = _hourly(conn, s)
        counts: dict[str, Any] = {}
        for r in view:
            counts[r[0]] = counts.get(r[0], 0) + r[3]
        n_events = conn.execute(f'select count(*) from "{s.db_schema}".events').fetchone()[0]
    assert view == plain, (len(view), len(plain))
    assert n_events == len(live) + len(old)
    # every event of the closed minutes (2 h x 360 per entity), plus each end marker's
    # open window ('updated' rollups count too)
    for k in range(3):
        assert counts[f"old-{k}"] >= 720 and counts[f"live-{k}"] >= 720, counts
    assert hypertables(s.database.dsn.get_secret_value(), s.db_schema) >= TABLES
    assert worker.stop() in (0, -15) and sink.stop() == 0


@pytest.mark.timeout(240)
def test_kpi_pipeline_on_timescaledb(ts_fresh_namespace, spawn, tmp_path):  # noqa: F811
    made: list[Settings] = []

    def make(tag: str = "x") -> Settings:
        made.append(ts_fresh_namespace(tag))
        return made[-1]

    kpi_tests.test_dossiers_make_the_kpi_tile_show_26_3_percent(make, spawn, tmp_path)
    assert made and hypertables(made[0].database.dsn.get_secret_value(),
                                made[0].db_schema) >= TABLES


def _outage(scenario: Callable[..., None], fresh_namespace: Any, spawn: Any,
            ts_private_postgres: Any) -> None:  # noqa: F811
    made: list[Settings] = []

    def fresh(tag: str = "x") -> Settings:
        made.append(fresh_namespace(tag))
        return made[-1]

    t0 = time.monotonic()
    scenario(fresh, spawn, ts_private_postgres)
    (pg,) = ts_private_postgres.made
    assert hypertables(pg.dsn, made[0].db_schema) >= TABLES, "the scenario did not run on TimescaleDB"
    print(f"outage scenario on TimescaleDB took {time.monotonic() - t0:.0f} s")


@pytest.mark.timeout(300)
def test_sink_survives_20s_database_outage_on_timescaledb(fresh_namespace, spawn,
                                                         ts_private_postgres):  # noqa: F811
    _outage(sink_tests.test_sink_survives_20s_database_outage, fresh_namespace, spawn,
            ts_private_postgres)


@pytest.mark.timeout(300)
def test_sink_rebalance_during_database_outage_on_timescaledb(fresh_namespace, spawn,
                                                             ts_private_postgres):  # noqa: F811
    _outage(sink_tests.test_sink_rebalance_during_database_outage, fresh_namespace, spawn,
            ts_private_postgres)
