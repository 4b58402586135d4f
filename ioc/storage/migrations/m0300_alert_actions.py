"""The ``alert_actions`` audit table (wall, versions 300-399).

One row per operator action at the wall (ack, assign, comment, close, preset switch):
who (``actor``: the operator's name from the token), when (``at``, the wall server's
time), on what and from where. ``id`` is the action id the wall server gave it, so the
sink storing a redelivered record is a no-op. The workflow state the screens show is
folded from ``<ns>.alerts.actions`` by the wall servers; this table is the record.
"""

import psycopg
from psycopg import sql

from .._migrate import Migration, MigrationContext


def apply(conn: psycopg.Connection, ctx: MigrationContext) -> None:
    t = ctx.ident("alert_actions")
    conn.execute(sql.SQL(
        "create table {t} ("
        " id text primary key,"
        " alert text not null,"
        " action text not null"
        "   check (action in ('ack', 'assign', 'comment', 'close', 'preset')),"
        " actor text not null,"
        " at timestamptz not null,"
        " assigned_to text,"
        " comment text,"
        " preset text,"
        " screen text not null default '',"
        " server text not null default '')").format(t=t))
    conn.execute(sql.SQL("create index on {t} (alert, at)").format(t=t))
    conn.execute(sql.SQL("create index on {t} (actor, at)").format(t=t))


MIGRATION = Migration(300, "alert_actions", apply)
