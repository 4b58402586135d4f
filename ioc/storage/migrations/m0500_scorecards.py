"""The ``scorecard_counts`` history table (e-government scorecards, versions 500-599).

One row per (indicator, period kind, period key, drill path): the full numerator and
denominator the ``scorecards`` stage counted, upserted by the sink (last write wins:
a late event re-emits its period's full counts). Every period key is kept, so the
table is the scorecards' history; scores, rankings and flags are computed from it.

The same plain table with TimescaleDB and without: it holds (indicators x periods x
units) rows, thousands a year, not a time series of events, and every read selects
whole periods by key; a hypertable would add chunks and a time column to the key for
nothing. docs/adr/0004-scorecards.md.
"""

import psycopg
from psycopg import sql

from .._migrate import Migration, MigrationContext


def apply(conn: psycopg.Connection, ctx: MigrationContext) -> None:
    t = ctx.ident("scorecard_counts")
    conn.execute(sql.SQL(
        "create table {t} ("
        " indicator text not null,"
        " period text not null check (period in ('month', 'quarter', 'year')),"
        " period_key text not null,"
        " unit_path text not null,"
        " path jsonb not null,"
        " levels jsonb not null default '[]',"
        " numerator float8 not null,"
        " denominator float8 not null,"
        " updated_at timestamptz not null default now(),"
        " primary key (indicator, period, period_key, unit_path))").format(t=t))
    conn.execute(sql.SQL("create index on {t} (period, period_key)").format(t=t))


MIGRATION = Migration(500, "scorecard_counts", apply)
