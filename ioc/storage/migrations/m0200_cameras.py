"""The ``detections`` and ``camera_health`` tables (cameras/vision, versions 200-299).

``detections``: one row per analysed (or skipped) frame, idempotent on
(camera, time, seq): a redelivered frame result carries the same capture time and
sequence number, and a restarted capture process (seq from 0 again) has later times.
``camera_health``: one row per state change, idempotent on (camera, time, state).

With TimescaleDB: hypertables on ``time`` (1-day chunks), compressed after 7 days
(segment by ``camera``, order by time and the rest of the key: see ``_timescale``),
retention 30 days for detections and 365 days for health. A hypertable's unique
index must contain its time column, which both keys do, so the two storage paths
answer the same queries the same way (tested against TimescaleDB 2.28).
Without it: plain tables; the unique indexes lead with (camera, time) and serve the
"one camera over a time range" queries, plus a BRIN index on time.
"""

import psycopg
from psycopg import sql

from .._migrate import Migration, MigrationContext
from ._timescale import set_compression


def _timescale(conn: psycopg.Connection, ctx: MigrationContext, table: str, keep: str) -> None:
    qualified = f"{ctx.schema}.{table}"
    conn.execute("select create_hypertable(%s::regclass, 'time', "
                 "chunk_time_interval => interval '1 day', migrate_data => true)", (qualified,))
    set_compression(conn, ctx, table)
    conn.execute("select add_compression_policy(%s::regclass, interval '7 days')", (qualified,))
    conn.execute("select add_retention_policy(%s::regclass, %s::interval)", (qualified, keep))


def apply(conn: psycopg.Connection, ctx: MigrationContext) -> None:
    d = ctx.ident("detections")
    conn.execute(sql.SQL(
        "create table {t} ("
        " time timestamptz not null,"
        " camera text not null,"
        " seq bigint not null,"
        " skipped text,"
        " motion real,"
        " people integer,"
        " tracks integer,"
        " tamper boolean not null default false,"
        " result jsonb not null,"
        " received_at timestamptz not null default now(),"
        " constraint detections_idem unique (camera, time, seq))").format(t=d))
    h = ctx.ident("camera_health")
    conn.execute(sql.SQL(
        "create table {t} ("
        " time timestamptz not null,"
        " camera text not null,"
        " state text not null check (state in ('online', 'offline', 'degraded')),"
        " previous text,"
        " reason text not null,"
        " fps real not null,"
        " target_fps real not null,"
        " last_frame_at timestamptz,"
        " received_at timestamptz not null default now(),"
        " constraint camera_health_idem unique (camera, time, state))").format(t=h))
    if ctx.timescaledb:
        _timescale(conn, ctx, "detections", "30 days")
        _timescale(conn, ctx, "camera_health", "365 days")
    else:
        for name in ("detections", "camera_health"):
            conn.execute(sql.SQL("create index {i} on {t} using brin (time)").format(
                i=sql.Identifier(f"{name}_time_brin"), t=ctx.ident(name)))


MIGRATION = Migration(200, "camera_tables", apply)
