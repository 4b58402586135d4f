"""The events' ``(type, time desc)`` index goes, on both paths.

Every stored event paid for three btrees: the unique key, ``(entity, time desc)`` and
``(type, time desc)``. The type index cost PostgreSQL ~2.9 µs of CPU per COPYed row, of
~9.8 µs for the three (a filled table after a checkpoint; docs/storage.md, "What each
index of events costs"), and the sink's drain after a database outage is bound by that
CPU. Its queries are served without it: ``type`` has a handful of values, and a query
for one type over a time range reads that range through the key, which leads with
``time`` on plain PostgreSQL (0110); on TimescaleDB through the chunks of the range
and their index on ``time``. What such a query costs instead is in the same section.
A deployment that asks by type over long spans adds the index back by hand
(``create index ... on <ns>.events (type, time desc)``).

``drop index if exists``: a database where someone dropped it by hand migrates too.
On a hypertable, dropping the index drops it on every chunk.
"""

import psycopg
from psycopg import sql

from .._migrate import Migration, MigrationContext


def apply(conn: psycopg.Connection, ctx: MigrationContext) -> None:
    conn.execute(sql.SQL("drop index if exists {i}").format(
        i=sql.Identifier(ctx.schema, "events_type_time")))


MIGRATION = Migration(120, "events_drop_type_index", apply)
