"""How window rollups land in PostgreSQL: the ``rollups`` table's sink spec."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

from ..storage.sink import Headers, TableSink

__all__ = ["ROLLUPS_SINK", "rollup_rows"]


def _ts(t: float | None) -> datetime | None:
    return None if t is None else datetime.fromtimestamp(t, UTC)


def rollup_rows(key: bytes | None, value: bytes | None, headers: Headers) -> list[tuple[Any, ...]]:
    """One row per rollup message (``<ns>.rollups`` value); later messages overwrite."""
    if value is None:
        return []
    d = orjson.loads(value)
    return [(d["entity"], d["metric"], int(d["size"]), _ts(d["start"]), int(d["count"]),
             float(d["sum"]), d["min"], d["max"], d["last"], _ts(d["last_time"]), d["state"])]


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
)
