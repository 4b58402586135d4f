"""TimescaleDB settings shared by the migrations: compression per hypertable.

Each hypertable's unique key (the sink's idempotency key) is covered by its
``segmentby`` plus ``orderby`` columns. TimescaleDB then finds the compressed batches
that could hold a key by equality on the segment columns and the orderby min/max
ranges, so an idempotent insert or upsert into a compressed chunk decompresses only
those batches (and the server does not warn ``column "..." should be used for
segmenting or ordering``). ``segmentby`` is what queries filter by with equality (one
entity, one camera), ``orderby`` leads with time, the range every query has.
Decision and figures: docs/storage.md and bench/bench_timescale.py.

Frozen for migrations 0100/0150/0200 (new namespaces) and 0160/0210 (namespaces built
before): a later change is a new migration, not an edit here.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from .._migrate import MigrationContext

__all__ = [
    "COMPRESSION",
    "HOURLY_END_OFFSET_S",
    "HOURLY_SCHEDULE",
    "HOURLY_START_OFFSET",
    "set_compression",
    "set_hourly_policy",
]

# table -> (segmentby, orderby); unique keys in the comments.
COMPRESSION: dict[str, tuple[str, str]] = {
    "events": ("entity", "time desc, source, id"),  # (source, id, time)
    "rollups": ("entity, metric, size_s", "start desc"),  # (entity, metric, size_s, start)
    "alerts": ("entity", "raised_at desc, id"),  # (id, raised_at)
    "detections": ("camera", "time desc, seq"),  # (camera, time, seq)
    "camera_health": ("camera", "time desc, state"),  # (camera, time, state)
}


def set_compression(conn: psycopg.Connection, ctx: MigrationContext, table: str) -> None:
    """Enable (or re-set) compression of ``table`` with its ``COMPRESSION`` entry.

    On a hypertable that already has compressed chunks the new settings apply to the
    chunks compressed from now on (TimescaleDB 2.28 says so in a NOTICE).
    """
    segmentby, orderby = COMPRESSION[table]
    conn.execute(sql.SQL(
        "alter table {t} set (timescaledb.compress, timescaledb.compress_segmentby = {s}, "
        "timescaledb.compress_orderby = {o})").format(
            t=ctx.ident(table), s=sql.Literal(segmentby), o=sql.Literal(orderby)))


# The refresh policy of the hourly continuous aggregate ``rollups_1h``. The window
# reaches back as far as ``rollups`` keeps data (its retention, also the view's), so
# rollups written late or replayed with old event times are materialised by the
# policy's next run at the latest; the sink refreshes the hours it wrote below the watermark right away
# (``ioc.aggregate._storage``). end_offset keeps the open hours out of the
# materialisation: they are read live (materialized_only = false).
HOURLY_START_OFFSET = "365 days"
HOURLY_END_OFFSET_S = 3600
HOURLY_SCHEDULE = "15 minutes"


def set_hourly_policy(conn: psycopg.Connection, ctx: MigrationContext) -> None:
    """(Re)create the refresh policy of ``rollups_1h`` with the settings above, and a
    retention policy equal to that of ``rollups``: the materialised hours would outlive
    the rollups they were computed from otherwise, and the view must stay a function of
    what ``rollups`` holds."""
    view = f"{ctx.schema}.rollups_1h"
    conn.execute("select remove_continuous_aggregate_policy(%s::regclass, if_exists => true)",
                 (view,))
    conn.execute("select add_continuous_aggregate_policy(%s::regclass, "
                 "start_offset => %s::interval, end_offset => %s * interval '1 second', "
                 "schedule_interval => %s::interval)",
                 (view, HOURLY_START_OFFSET, HOURLY_END_OFFSET_S, HOURLY_SCHEDULE))
    conn.execute("select remove_retention_policy(%s::regclass, if_exists => true)", (view,))
    conn.execute("select add_retention_policy(%s::regclass, %s::interval)",
                 (view, HOURLY_START_OFFSET))
