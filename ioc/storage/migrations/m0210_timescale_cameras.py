"""Re-set compression of detections and camera_health on TimescaleDB namespaces built
before this version (the key columns seq and state were in neither ``segmentby`` nor
``orderby``); see ``_timescale.COMPRESSION``. A no-op for new namespaces and plain
PostgreSQL.
"""

import psycopg

from .._migrate import Migration, MigrationContext
from ._timescale import set_compression


def apply(conn: psycopg.Connection, ctx: MigrationContext) -> None:
    if not ctx.timescaledb:
        return
    for table in ("detections", "camera_health"):
        set_compression(conn, ctx, table)


MIGRATION = Migration(210, "timescale_camera_compression_keys", apply)
