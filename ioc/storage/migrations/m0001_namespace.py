"""Namespace metadata: what this schema is and which storage path it was built with."""

import psycopg
import psycopg.sql
from psycopg.types.json import Jsonb

from .._migrate import Migration, MigrationContext


def apply(conn: psycopg.Connection, ctx: MigrationContext) -> None:
    conn.execute(
        psycopg.sql.SQL(
            "create table {} (key text primary key, value jsonb not null, "
            "updated_at timestamptz not null default now())"
        ).format(ctx.ident("namespace_info"))
    )
    conn.execute(
        psycopg.sql.SQL("insert into {} (key, value) values ('storage', %s)").format(
            ctx.ident("namespace_info")
        ),
        (Jsonb({"timescaledb": ctx.timescaledb, "version": ctx.features.timescaledb_version}),),
    )


MIGRATION = Migration(1, "namespace_info", apply)
