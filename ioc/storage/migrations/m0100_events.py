"""The ``events`` table: every canonical city event, idempotent on (source, id, time).

With TimescaleDB: a hypertable on ``time`` (1-day chunks), compressed after 7 days
(segment by ``entity``, order by ``time desc, source, id``: see ``_timescale``),
retention 90 days. A hypertable's unique indexes must contain the partitioning
column, so the idempotency key is (source, id, time) on both paths: the same answers
with and without the extension (tested against TimescaleDB 2.28, docs/storage.md).
Without it: a plain table, a btree on (entity, time) and a BRIN on time (migration
0110 then re-keys the unique constraint time first and drops the BRIN). Migration 0120
drops the (type, time) index on both paths.
"""

import psycopg
from psycopg import sql

from .._migrate import Migration, MigrationContext
from ._timescale import set_compression


def apply(conn: psycopg.Connection, ctx: MigrationContext) -> None:
    t = ctx.ident("events")
    conn.execute(sql.SQL(
        "create table {t} ("
        " time timestamptz not null,"
        " source text not null,"
        " id text not null,"
        " type text not null,"
        " entity text not null,"
        " values jsonb not null default '{{}}',"
        " attributes jsonb not null default '{{}}',"
        " received_at timestamptz not null default now(),"
        " constraint events_idem unique (source, id, time))").format(t=t))
    conn.execute(sql.SQL("create index events_entity_time on {t} (entity, time desc)").format(t=t))
    conn.execute(sql.SQL("create index events_type_time on {t} (type, time desc)").format(t=t))
    if ctx.timescaledb:
        qualified = f"{ctx.schema}.events"
        conn.execute("select create_hypertable(%s::regclass, 'time', "
                     "chunk_time_interval => interval '1 day', migrate_data => true)",
                     (qualified,))
        set_compression(conn, ctx, "events")
        conn.execute("select add_compression_policy(%s::regclass, interval '7 days')",
                     (qualified,))
        conn.execute("select add_retention_policy(%s::regclass, interval '90 days')",
                     (qualified,))
    else:
        conn.execute(sql.SQL("create index events_time_brin on {t} using brin (time)").format(t=t))


MIGRATION = Migration(100, "events", apply)
