"""Migrations 0110 and 0120 on the real PostgreSQL: the events' unique key leads with
time, and the ``(type, time desc)`` index is gone.

A namespace built before 0110 (migrations up to 0100, rows in it) is brought up to date:
the rows stay, the constraint keeps its name and columns in the order (time, source,
id), the BRIN on time is gone, a duplicate is still refused, ``ON CONFLICT (source, id,
time)`` (what the sink says) still infers the key, and the sink's writer stores a
redelivered batch once; 0120 dropped the type index and kept the entity one. On
TimescaleDB (a stack that has it) 0110 leaves the key as 0100 made it, and the test
checks that instead.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from ioc.config import Settings
from ioc.events import Event, encode_event
from ioc.events._storage import EVENTS_SINK
from ioc.storage import connect, drop_schema, migrate
from ioc.storage.migrations import MIGRATIONS
from ioc.storage.sink import TableWriter


@pytest.fixture
def old_namespace(stack: Settings) -> Iterator[Settings]:
    s = stack.with_namespace(f"tkey{secrets.token_hex(4)}")
    upto_0100 = [m for m in MIGRATIONS if m.version <= 100]
    assert [m.version for m in upto_0100] == [1, 100]
    migrate(s, upto_0100)
    yield s
    drop_schema(s)


def _key_and_indexes(conn: psycopg.Connection, schema: str) -> tuple[str, set[str]]:
    row = conn.execute(
        "select pg_get_constraintdef(c.oid) from pg_constraint c "
        "join pg_class t on t.oid = c.conrelid join pg_namespace n on n.oid = t.relnamespace "
        "where n.nspname = %s and t.relname = 'events' and c.conname = 'events_idem'",
        (schema,)).fetchone()
    assert row is not None, "events_idem is gone"
    indexes = {r[0] for r in conn.execute(
        "select indexname from pg_indexes where schemaname = %s and tablename = 'events'",
        (schema,))}
    return str(row[0]), indexes


def test_0110_rekeys_events_time_first_and_keeps_rows_and_idempotency(old_namespace):
    s = old_namespace
    # Two hours ago, whole seconds: on TimescaleDB rows years old would be the retention
    # policy's (90 days) to drop while the test runs; seen with 2023 times.
    T0 = float(int(time.time()) - 7200)
    t = sql.Identifier(s.db_schema, "events")
    insert = sql.SQL("insert into {} (time, source, id, type, entity) values "
                     "(to_timestamp(%s), %s, %s, 'noise.level', 'm1')").format(t)
    with connect(s.database, autocommit=True) as conn:
        before, _ = _key_and_indexes(conn, s.db_schema)
        assert before == "UNIQUE (source, id, \"time\")"
        for i in range(50):
            conn.execute(insert, (T0 + i, f"src{i % 3}", f"id{i}"))
        hypertable = conn.execute(
            "select 1 from pg_extension where extname = 'timescaledb'").fetchone() is not None \
            and conn.execute(
                "select 1 from timescaledb_information.hypertables where hypertable_schema = %s"
                " and hypertable_name = 'events'", (s.db_schema,)).fetchone() is not None
        if hypertable:  # 0120 drops an index of a hypertable whose chunk is compressed
            conn.execute("select compress_chunk(c) from show_chunks(%s::regclass) c",
                         (f"{s.db_schema}.events",))

    features, ran = migrate(s)
    assert features.timescaledb == hypertable
    assert {110, 120} <= {m.version for m in ran}

    with connect(s.database, autocommit=True) as conn:
        key, indexes = _key_and_indexes(conn, s.db_schema)
        if features.timescaledb:
            assert key == "UNIQUE (source, id, \"time\")"
            chunk_type_indexes = conn.execute(
                "select count(*) from pg_indexes i join (select c::text as name from "
                "show_chunks(%s::regclass) c) ch on i.schemaname || '.' || i.tablename = ch.name"
                " where i.indexname like %s", (f"{s.db_schema}.events", "%type_time%")).fetchone()
            assert chunk_type_indexes == (0,)
        else:
            assert key == "UNIQUE (\"time\", source, id)"
            assert "events_time_brin" not in indexes
        # 0120: the type index is gone on both paths, the entity index stays
        assert "events_entity_time" in indexes
        assert "events_type_time" not in indexes
        count = conn.execute(sql.SQL("select count(*) from {}").format(t)).fetchone()
        assert count == (50,)
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute(insert, (T0 + 7, "src1", "id7"))
        cur = conn.execute(sql.SQL(
            "insert into {} (time, source, id, type, entity) values "
            "(to_timestamp(%s), %s, %s, 'noise.level', 'm1') "
            "on conflict (source, id, time) do nothing").format(t), (T0 + 8, "src2", "id8"))
        assert cur.rowcount == 0

    # The sink's writer: a batch, then the same batch again (a redelivery), then one
    # that mixes both: each event stored once, the fallback to the merge path taken.
    rows = [r for i in range(100) for r in EVENTS_SINK.to_rows(b"k", encode_event(Event(
        id=f"w{i}", source="key-test", type="noise.level", entity=f"m{i % 5}",
        time=T0 + i * 0.5, values={"db": 40.0 + i})), ())]
    writer = TableWriter(s, EVENTS_SINK)
    try:
        assert writer.write(rows, encoded=True) == 100
        assert writer.write(rows, encoded=True) == 0
        assert writer.direct_fallbacks == 1
        more = [r for i in range(100, 120) for r in EVENTS_SINK.to_rows(b"k", encode_event(Event(
            id=f"w{i}", source="key-test", type="noise.level", entity="m0",
            time=T0 + i * 0.5)), ())]
        assert writer.write(rows[:10] + more, encoded=True) == 20
    finally:
        writer.close()
    with connect(s.database, autocommit=True) as conn:
        got = conn.execute(sql.SQL("select count(*), count(distinct (source, id, time)) "
                                   "from {} where source = 'key-test'").format(t)).fetchone()
        assert got == (120, 120)
