"""Plain PostgreSQL: the events' unique key leads with ``time``; the BRIN on time goes.

Migration 0100 made the idempotency key ``unique (source, id, time)``. Each new event
then lands at a scattered place of that index (ids do not sort by arrival), so every
insert searches and dirties a different leaf page, and after a checkpoint writes it
whole to the WAL. Keyed ``(time, source, id)`` the same constraint takes events at its
right edge, where the last pages stay in cache: PostgreSQL's CPU per COPYed event row
fell 17-20% in a filled table (docs/storage.md, "The events' unique key and the
database's collation"). The constraint keeps its name
and its columns, so ``ON CONFLICT (source, id, time)`` (the sink) still infers it, and
the answers are the same. The btree now serves ranges and ``order by time, source, id``
(replays from the database), so the BRIN on time is dropped.

Without TimescaleDB only. On a hypertable the key stays as 0100 made it: each chunk
holds one day in an index of its own, and rebuilding a unique key across compressed
chunks is not something this version was verified on (docs/storage.md).

The rebuild takes the table's exclusive lock for the time of one index build (the sink
waits and retries meanwhile; not measured on a large table).
"""

import psycopg
from psycopg import sql

from .._migrate import Migration, MigrationContext


def apply(conn: psycopg.Connection, ctx: MigrationContext) -> None:
    if ctx.timescaledb:
        return
    t = ctx.ident("events")
    conn.execute(sql.SQL(
        "alter table {t} drop constraint events_idem, "
        "add constraint events_idem unique (time, source, id)").format(t=t))
    conn.execute(sql.SQL("drop index if exists {i}").format(
        i=sql.Identifier(ctx.schema, "events_time_brin")))


MIGRATION = Migration(110, "events_key_time_first", apply)
