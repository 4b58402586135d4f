"""Bring namespaces built on TimescaleDB before this version to the settings of today.

Migrations 0100 and 0150 first set compression with the unique keys partly outside
``segmentby``/``orderby`` and a ``rollups_1h`` refresh policy covering 3 days only, so
replayed or late rollups older than that stayed out of the view. This version re-sets
compression of events, rollups and alerts (``_timescale.COMPRESSION``; chunks already
compressed keep their old settings until recompressed) and the refresh policy. New
namespaces already have them (a no-op then). Nothing to do on plain PostgreSQL.
"""

import psycopg

from .._migrate import Migration, MigrationContext
from ._timescale import set_compression, set_hourly_policy


def apply(conn: psycopg.Connection, ctx: MigrationContext) -> None:
    if not ctx.timescaledb:
        return
    for table in ("events", "rollups", "alerts"):
        set_compression(conn, ctx, table)
    set_hourly_policy(conn, ctx)


MIGRATION = Migration(160, "timescale_compression_keys_and_hourly_policy", apply)
