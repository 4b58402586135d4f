"""How window rollups land in PostgreSQL: the ``rollups`` table's sink spec.

With TimescaleDB, ``rollups_1h`` is a real-time continuous aggregate: buckets below
its watermark are read from the materialisation, the rest live from ``rollups``. Rows
written below the watermark (a replay with its original event times, a window closed
more than an hour late) would stay out of the view until a refresh covers them, so
the sink refreshes exactly those hours once their batch is committed
(:func:`refresh_hourly_view`). Live rollups are in the open hours above the watermark
and cost no refresh. Decision and costs: docs/adr/0001-timescaledb-continuous-aggregate.md.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import psycopg
from psycopg import sql

from ..config import Settings
from ..storage.migrations._timescale import HOURLY_END_OFFSET_S
from ..storage.sink import Headers, TableSink

__all__ = ["ROLLUPS_SINK", "hourly_refresh_ranges", "refresh_hourly_view", "rollup_rows"]

log = logging.getLogger(__name__)

_HOUR = timedelta(hours=1)


def _ts(t: float | None) -> datetime | None:
    return None if t is None else datetime.fromtimestamp(t, UTC)


def rollup_rows(key: bytes | None, value: bytes | None, headers: Headers) -> list[tuple[Any, ...]]:
    """One row per rollup message (``<ns>.rollups`` value); later messages overwrite."""
    if value is None:
        return []
    d = orjson.loads(value)
    return [(d["entity"], d["metric"], int(d["size"]), _ts(d["start"]), int(d["count"]),
             float(d["sum"]), d["min"], d["max"], d["last"], _ts(d["last_time"]), d["state"])]


def hourly_refresh_ranges(
    starts: Iterable[datetime],
    *,
    now: datetime,
    end_offset_s: float = HOURLY_END_OFFSET_S,
    max_ranges: int = 4,
    max_span: timedelta = timedelta(days=7),
) -> list[tuple[datetime, datetime]]:
    """The ``[lo, hi)`` windows to refresh after writing 1-minute rollups at ``starts``.

    Only whole hours that ended ``end_offset_s`` before ``now`` or earlier: the policy
    never materialises later ones, so the watermark is never above them and they are
    read live (refreshing them would move the watermark over hours still filling).
    Hours are coalesced into at most ``max_ranges`` windows, cut at the widest gaps
    (a refresh over hours nobody wrote costs next to nothing: TimescaleDB only
    recomputes invalidated ranges); a window longer than ``max_span`` is cut into
    pieces so one call holds the refresh lock for a bounded time. Pure, no I/O.
    """
    if max_ranges < 1:
        raise ValueError(f"max_ranges must be >= 1, got {max_ranges}")
    limit = now - timedelta(seconds=end_offset_s)
    hours = sorted({s.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
                    for s in starts})
    hours = [h for h in hours if h + _HOUR <= limit]
    if not hours:
        return []
    gaps = sorted(range(1, len(hours)), key=lambda i: hours[i] - hours[i - 1], reverse=True)
    cuts = sorted(i for i in gaps[:max_ranges - 1] if hours[i] - hours[i - 1] > _HOUR)
    out: list[tuple[datetime, datetime]] = []
    first = 0
    for cut in [*cuts, len(hours)]:
        lo, hi = hours[first], hours[cut - 1] + _HOUR
        while lo < hi:
            out.append((lo, min(hi, lo + max_span)))
            lo += max_span
        first = cut
    return out


# (host, port, dbname, schema) -> whether the namespace was built on TimescaleDB.
_STORAGE_PATH: dict[tuple[str, int, str, str], bool] = {}


def _on_timescaledb(conn: psycopg.Connection, schema: str) -> bool:
    key = (conn.info.host, conn.info.port, conn.info.dbname, schema)
    if key not in _STORAGE_PATH:
        with conn.transaction():
            row = conn.execute(sql.SQL(
                "select (value->>'timescaledb')::boolean from {} where key = 'storage'"
            ).format(sql.Identifier(schema, "namespace_info"))).fetchone()
        _STORAGE_PATH[key] = bool(row and row[0])
    return _STORAGE_PATH[key]


def refresh_hourly_view(conn: psycopg.Connection, settings: Settings,
                        rows: Sequence[Sequence[Any]]) -> None:
    """``after_write`` hook of the rollups sink: refresh ``rollups_1h`` over the hours
    of the committed 1-minute rollups that may lie below its watermark.

    ``conn`` must be idle (no open transaction): ``refresh_continuous_aggregate``
    refuses to run inside one. A no-op on plain PostgreSQL (the view is computed at
    query time) and for live rollups.

    Raises:
        psycopg.OperationalError: the connection failed (the sink retries the batch).
    """
    schema = settings.db_schema
    ranges = hourly_refresh_ranges((r[3] for r in rows if r[2] == 60), now=datetime.now(UTC))
    if not ranges:
        return  # live rollups only: nothing can be below the watermark
    try:
        if not _on_timescaledb(conn, schema):
            return
    except psycopg.OperationalError:
        raise
    except psycopg.Error as exc:
        log.warning("rollups: cannot tell the storage path of schema %s (%s); %s not "
                    "refreshed", schema, str(exc).strip(), "rollups_1h")
        return
    view = f"{schema}.rollups_1h"
    t0 = time.perf_counter()
    conn.autocommit = True
    try:
        for lo, hi in ranges:
            conn.execute("call refresh_continuous_aggregate(%s::regclass, %s, %s)",
                         (view, lo, hi))
    except psycopg.OperationalError:
        raise
    except psycopg.Error as exc:
        # The rows are stored; the refresh policy covers these hours at its next run.
        log.warning("rollups: refreshing %s over %d window(s) from %s failed (%s); the "
                    "refresh policy will catch up", view, len(ranges), ranges[0][0],
                    str(exc).strip())
        return
    finally:
        if not conn.closed:
            conn.autocommit = False
    log.debug("rollups: refreshed %s over %d window(s) (%s .. %s) in %.1f ms", view,
              len(ranges), ranges[0][0], ranges[-1][1], 1000 * (time.perf_counter() - t0))


ROLLUPS_SINK = TableSink(
    name="rollups",
    topic_suffix="rollups",
    table="rollups",
    columns=("entity", "metric", "size_s", "start", "count", "sum", "min", "max", "last",
             "last_time", "state"),
    types=("text", "text", "int4", "timestamptz", "int8", "float8", "float8", "float8", "float8",
           "timestamptz", "text"),
    conflict=("entity", "metric", "size_s", "start"),
    to_rows=rollup_rows,
    on_conflict="update",
    description="event-time window aggregates (latest per window)",
    after_write=refresh_hourly_view,
)
