"""The TimescaleDB storage path against a real TimescaleDB (``IOC_TEST_TIMESCALEDB_DSN``).

- ``rollups_1h`` (a real-time continuous aggregate) gives the plain-PostgreSQL answers
  for replayed history, late windows and rewritten windows below its watermark;
- idempotent inserts (events: direct COPY, then merge) and upserts (rollups) into
  compressed chunks store each key once with the latest figures;
- every background job (compression, retention, refresh) runs, and retention drops
  what is older than each table keeps;
- a server that has the extension installed but not preloaded: ``auto`` gives plain
  tables with one warning naming the postgresql.conf line, ``on`` fails with it, and an
  extension created but no longer preloaded is a clear error, not a closed connection.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from psycopg import sql

from ioc.aggregate._storage import ROLLUPS_SINK
from ioc.config import Settings, load_settings
from ioc.errors import StorageError
from ioc.events import Event, encode_event
from ioc.events._storage import EVENTS_SINK, event_rows
from ioc.storage import PRELOAD_HINT, connect, migrate
from ioc.storage.migrations.m0150_aggregates import _HOURLY
from ioc.storage.sink import TableWriter
from tests.conftest import ROOT, settings_env
from tests.fixtures.events import private_postgres, timescaledb_installed  # noqa: F401
from tests.fixtures.timescale import (  # noqa: F401
    hypertables,
    ts_fresh_namespace,
    ts_settings,
)

pytestmark = [pytest.mark.timescaledb, pytest.mark.db, pytest.mark.timeout(300)]

NOW = datetime.now(UTC).replace(second=0, microsecond=0)
HOUR0 = NOW.replace(minute=0)


def _rollup(entity: str, start: datetime, count: int, total: float, state: str = "closed",
            size: int = 60) -> tuple[Any, ...]:
    return (entity, "m", size, start, count, total, 0.0, total, total, start, state)


def _minutes(entity: str, first: datetime, n: int, *, count: int = 1, state: str = "closed"
             ) -> list[tuple[Any, ...]]:
    return [_rollup(entity, first + timedelta(minutes=i), count, float(i % 17), state)
            for i in range(n)]


def _hourly(conn: Any, s: Settings) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """(rows of rollups_1h, the same query computed on plain PostgreSQL from rollups)."""
    cols = "entity, metric, bucket, count, sum, min, max, mean"
    view = conn.execute(sql.SQL(f"select {cols} from {{}} order by entity, metric, bucket").format(
        sql.Identifier(s.db_schema, "rollups_1h"))).fetchall()
    bucket = sql.SQL("date_bin(interval '1 hour', start, timestamptz 'epoch')")
    plain = conn.execute(sql.SQL(f"select {cols} from (" + _HOURLY + ") p "
                                 "order by entity, metric, bucket").format(
        bucket=bucket, bucket_group=bucket,
        rollups=sql.Identifier(s.db_schema, "rollups"))).fetchall()
    return view, plain


def _jobs(conn: Any, schema: str) -> dict[tuple[str, str], int]:
    return {(r[1], r[2]): r[0] for r in conn.execute(
        "select job_id, proc_name, hypertable_name from timescaledb_information.jobs "
        "where hypertable_schema = %s", (schema,))}


def _pause_jobs(s: Settings) -> dict[tuple[str, str], int]:
    """Unschedule the namespace's jobs (the test runs them with run_job) and list them:
    the scheduler would otherwise run them at moments of its own, racing the test."""
    with connect(s.database, autocommit=True) as conn:
        jobs = _jobs(conn, s.db_schema)
        for job in jobs.values():
            conn.execute("select alter_job(%s, scheduled => false)", (job,))
    return jobs


def _watermark(conn: Any, schema: str) -> datetime:
    return conn.execute(
        "select _timescaledb_functions.to_timestamp(_timescaledb_functions.cagg_watermark("
        "mat_hypertable_id)) from _timescaledb_catalog.continuous_agg where user_view_schema = %s "
        "and user_view_name = 'rollups_1h'", (schema,)).fetchone()[0]


def test_hourly_view_answers_like_plain_postgresql_for_replayed_history(ts_fresh_namespace):  # noqa: F811
    s = ts_fresh_namespace("cag")
    job = _pause_jobs(s)[("policy_refresh_continuous_aggregate", "rollups_1h")]
    w = TableWriter(s, ROLLUPS_SINK)
    try:
        with connect(s.database, autocommit=True) as conn:
            # Live operation: two hours of rollups up to now, the policy materialises.
            w.write(_minutes("live", NOW - timedelta(hours=2), 120))
            conn.execute("call run_job(%s)", (job,))
            mark = _watermark(conn, s.db_schema)
            assert HOUR0 - timedelta(hours=1) <= mark <= HOUR0, mark
            view, plain = _hourly(conn, s)
            assert view == plain and len(plain) >= 2

            # The bug: rows below the watermark that no refresh covers are not in the view
            # (written here without the sink, so nothing refreshes them).
            conn.execute(sql.SQL(
                "insert into {} (entity, metric, size_s, start, count, sum, min, max, state) "
                "values ('bypass', 'm', 60, %s, 5, 5, 0, 5, 'closed')").format(
                    sql.Identifier(s.db_schema, "rollups")), (HOUR0 - timedelta(days=10),))
            view, plain = _hourly(conn, s)
            assert [r for r in plain if r[0] == "bypass"] and not [r for r in view if r[0] == "bypass"]
            conn.execute("call run_job(%s)", (job,))  # the policy's window covers it
            view, plain = _hourly(conn, s)
            assert view == plain

            # A replay 10 days back: first 'updated' figures, then the 'closed' ones.
            old = HOUR0 - timedelta(days=10, hours=3)
            w.write(_minutes("replay", old, 120, count=1, state="updated"))
            view, plain = _hourly(conn, s)
            assert view == plain
            w.write(_minutes("replay", old, 120, count=3))
            view, plain = _hourly(conn, s)
            assert view == plain
            assert [r[3] for r in view if r[0] == "replay"] == [180, 180]

            # A long replay in one batch (cut into 7-day refreshes), a window 90 min late,
            # 10-second windows (not in the view) and hour windows of the same entity.
            long = [_rollup("long", HOUR0 - timedelta(days=30) + timedelta(hours=5 * i), 2, 2.0)
                    for i in range(100)]
            w.write([*long, _rollup("late", NOW - timedelta(minutes=150), 4, 4.0),
                     _rollup("replay", old, 9, 9.0, size=10),
                     _rollup("replay", old, 99, 99.0, size=3600)])
            view, plain = _hourly(conn, s)
            assert view == plain
            assert sum(1 for r in view if r[0] == "long") == 100
            assert _watermark(conn, s.db_schema) == mark  # the sink never moved it up
    finally:
        w.close()


def _events(entities: int, per: int, first: datetime, *, prefix: str = "e") -> list[tuple[Any, ...]]:
    out = []
    for k in range(entities):
        for i in range(per):
            e = Event(id=f"{prefix}{k}-{i}", source="ts", type="air.quality", entity=f"air-{k}",
                      time=(first + timedelta(seconds=30 * i + k)).timestamp(),
                      values={"pm25": float(i % 50)})
            out.extend(event_rows(None, encode_event(e), ()))
    return out


def _count(conn: Any, s: Settings, table: str, where: str = "true") -> int:
    return conn.execute(sql.SQL(f"select count(*) from {{}} where {where}").format(
        sql.Identifier(s.db_schema, table))).fetchone()[0]


def _compressed(conn: Any, s: Settings, table: str) -> int:
    return conn.execute("select count(*) from timescaledb_information.chunks where "
                        "hypertable_schema = %s and hypertable_name = %s and is_compressed",
                        (s.db_schema, table)).fetchone()[0]


def test_idempotent_writes_into_compressed_chunks(ts_fresh_namespace):  # noqa: F811
    s = ts_fresh_namespace("cmp")
    jobs = _pause_jobs(s)
    ev = TableWriter(s, EVENTS_SINK)
    ro = TableWriter(s, ROLLUPS_SINK)
    try:
        first = HOUR0 - timedelta(days=10)  # older than the 7 days before events compress
        rows = _events(10, 200, first)
        assert ev.write(rows) == 2000
        old = HOUR0 - timedelta(days=40)  # older than the 30 days before rollups compress
        assert ro.write(_minutes("air-1", old, 300)) == 300
        with connect(s.database, autocommit=True) as conn:
            for table in ("events", "rollups"):
                conn.execute("call run_job(%s)", (jobs[("policy_compression", table)],))
                assert _compressed(conn, s, table) >= 1, table
            # The settings each chunk was compressed with: the unique key is covered.
            got = conn.execute(
                "select distinct segmentby, orderby from timescaledb_information.chunk_compression_settings "
                "where hypertable::text = %s", (f"{s.db_schema}.events",)).fetchall()
            assert got == [("entity", '"time" DESC,source,id')], got

            # A redelivery into the compressed chunk: nothing new, nothing doubled.
            assert ev.write(rows[:1000]) == 0
            assert ev.direct_fallbacks == 1
            # Half old, half new keys in the same compressed chunk.
            more = _events(10, 300, first)[-1000:]  # i = 200..299 of entity 6..9 + overlap
            new = len({r[2] for r in more} - {r[2] for r in rows})
            assert 0 < new < len(more)
            assert ev.write(more) == new
            assert _count(conn, s, "events") == 2000 + new
            assert conn.execute(sql.SQL("select count(distinct (source, id, time)) from {}").format(
                sql.Identifier(s.db_schema, "events"))).fetchone()[0] == 2000 + new

            # Upserts into compressed rollups: the latest figures win, one row per key.
            assert ro.write(_minutes("air-1", old, 300, count=7)) == 300
            assert _count(conn, s, "rollups") == 300
            assert _count(conn, s, "rollups", "count = 7") == 300
            view, plain = _hourly(conn, s)
            assert view == plain and sum(r[3] for r in view) == 2100
    finally:
        ev.close()
        ro.close()


def test_retention_and_every_background_job(ts_fresh_namespace):  # noqa: F811
    s = ts_fresh_namespace("job")
    jobs = _pause_jobs(s)
    ev = TableWriter(s, EVENTS_SINK)
    ro = TableWriter(s, ROLLUPS_SINK)
    try:
        ev.write(_events(2, 10, HOUR0 - timedelta(days=100), prefix="gone")
                 + _events(2, 10, HOUR0 - timedelta(days=10), prefix="kept"))
        ro.write(_minutes("r", HOUR0 - timedelta(days=400), 10)
                 + _minutes("r", HOUR0 - timedelta(days=40), 10))
        with connect(s.database, autocommit=True) as conn:
            tables = ("events", "rollups", "alerts", "detections", "camera_health")
            assert set(jobs) == {(p, t) for t in tables
                                 for p in ("policy_compression", "policy_retention")} | {
                ("policy_refresh_continuous_aggregate", "rollups_1h"),
                ("policy_retention", "rollups_1h")}
            for key in sorted(jobs, key=lambda k: k[0] != "policy_retention"):
                conn.execute("call run_job(%s)", (jobs[key],))  # raises if a job fails
            assert _count(conn, s, "events", "id like 'gone%'") == 0
            assert _count(conn, s, "events", "id like 'kept%'") == 20
            assert _count(conn, s, "rollups") == 10
            assert _compressed(conn, s, "events") >= 1 and _compressed(conn, s, "rollups") >= 1
            view, plain = _hourly(conn, s)
            # The sink had materialised the 400-day-old hour; the view's own retention
            # dropped it with the rollups it came from.
            assert view == plain and sum(r[3] for r in view) == 10
    finally:
        ev.close()
        ro.close()


# -- installed, not preloaded ----------------------------------------------------------


def _private(pg: Any, namespace: str, mode: str = "auto") -> Settings:
    return load_settings(env={}, overrides={
        "namespace": namespace, "database": {"dsn": pg.dsn, "passfile": None, "timescaledb": mode}})


@pytest.fixture
def not_preloaded(ts_settings, private_postgres):  # noqa: F811
    """A private cluster with the extension installed on this machine but not preloaded."""
    if not timescaledb_installed():
        pytest.fail(f"{__name__}: the timescaledb extension is not installed on this machine "
                    "(these tests start a private cluster that has it but does not preload it)")
    return private_postgres(timescaledb=False)


def test_installed_not_preloaded_auto_gives_plain_tables_and_one_warning(not_preloaded, caplog):
    import ioc.storage._db as db

    db._warned.clear()
    s = _private(not_preloaded, "tsnopre")
    with caplog.at_level(logging.WARNING, logger="ioc.storage"):
        features, ran = migrate(s)
        migrate(s)
    assert not features.timescaledb and ran
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "not preloaded" in warnings[0] and "shared_preload_libraries = 'timescaledb'" in warnings[0]
    assert hypertables(not_preloaded.dsn, "tsnopre") == set()
    w = TableWriter(s, EVENTS_SINK)
    try:
        assert w.write(_events(1, 5, HOUR0)) == 5
    finally:
        w.close()
    env = settings_env(s) | {"IOC_DATABASE__TIMESCALEDB": "auto"}
    env.pop("IOC_DATABASE__PASSFILE", None)
    out = subprocess.run([sys.executable, "-m", "ioc", "db", "status"], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "without TimescaleDB" in out.stdout and "PENDING" not in out.stdout, out.stdout


def test_installed_not_preloaded_on_fails_with_the_postgresql_conf_line(not_preloaded):
    with pytest.raises(StorageError) as ei:
        migrate(_private(not_preloaded, "tsnopreon", "on"))
    assert "database.timescaledb is 'on'" in str(ei.value) and PRELOAD_HINT in str(ei.value)


def test_extension_created_then_not_preloaded_is_a_clear_error(ts_settings, private_postgres):  # noqa: F811
    if not timescaledb_installed():
        pytest.fail("the timescaledb extension is not installed on this machine")
    pg = private_postgres(timescaledb=True)
    features, _ = migrate(_private(pg, "tscreated"))
    assert features.timescaledb
    pg.stop()
    pg.preload_timescaledb = False
    pg.start()
    for mode in ("auto", "on"):
        with pytest.raises(StorageError, match="created in this database but the server does not"):
            migrate(_private(pg, "tscreated2", mode))
