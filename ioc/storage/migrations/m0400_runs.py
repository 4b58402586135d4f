"""The ``runs`` registry (record/replay, versions 400-499).

Every namespace schema gets the table; the one in the *live* namespace's schema is the
registry ``ioc runs`` reads and writes. A run is one pipeline run over a replay
namespace with its own settings: the namespace is the isolation (its own topics, rows
and tiles), so a run's results are never mixed with live ones. ``namespace`` is
unique: one run per namespace.
"""

import psycopg
from psycopg import sql

from .._migrate import Migration, MigrationContext


def apply(conn: psycopg.Connection, ctx: MigrationContext) -> None:
    conn.execute(sql.SQL(
        "create table {t} ("
        " id text primary key,"
        " namespace text not null unique,"
        " label text not null default '',"
        " status text not null default 'running'"
        "   check (status in ('running', 'finished', 'failed')),"
        " settings jsonb not null,"
        " settings_diff jsonb not null default '{{}}',"
        " source jsonb not null default '{{}}',"
        " started_at timestamptz not null default now(),"
        " finished_at timestamptz,"
        " host text not null default '',"
        " note text not null default '')").format(t=ctx.ident("runs")))


MIGRATION = Migration(400, "runs_registry", apply)
