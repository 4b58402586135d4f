"""How canonical events land in PostgreSQL: the ``events`` table's sink spec."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import msgspec

from ..storage.sink import Headers, TableSink
from ._envelope import decode_event

__all__ = ["EVENTS_SINK", "event_copy_rows", "event_rows", "pg_time_us"]

_fromts = datetime.fromtimestamp
_modf = math.modf
_json = msgspec.json.Encoder().encode
_PG_EPOCH = 946_684_800  # 2000-01-01 UTC in unix seconds: PostgreSQL's time origin


def event_rows(key: bytes | None, value: bytes | None, headers: Headers) -> list[tuple[Any, ...]]:
    """One row per canonical event (``<ns>.events`` value), in Python values of the
    columns' types (``datetime``, ``dict``).

    Raises:
        InvalidEvent: not a canonical event (``decode_event``).
    """
    if value is None:
        return []
    e = decode_event(value)
    return [(_fromts(e.time, UTC), e.source, e.id, e.type, e.entity, e.values, e.attributes)]


def pg_time_us(t: float) -> int:
    """Unix seconds as PostgreSQL's binary ``timestamptz``: microseconds since
    2000-01-01 UTC, rounded as ``datetime.fromtimestamp(t, UTC)`` rounds (the fraction's
    microseconds half to even), so both give the same stored time and key. ``t`` >= 0."""
    frac, whole = _modf(t)
    return (int(whole) - _PG_EPOCH) * 1_000_000 + round(frac * 1e6)


def event_copy_rows(key: bytes | None, value: bytes | None, headers: Headers
                    ) -> list[tuple[Any, ...]]:
    """``event_rows`` already in binary COPY form (``EVENTS_SINK.copy_types``): the
    time from ``pg_time_us``, values and attributes as binary jsonb (version byte 1 and
    the JSON text). The same stored row as ``event_rows`` gives, without a ``datetime``
    and two calls of psycopg's Python jsonb dumper per row.

    Raises:
        InvalidEvent: not a canonical event (``decode_event``), as ``event_rows``.
    """
    if value is None:
        return []
    e = decode_event(value)
    return [(pg_time_us(e.time), e.source, e.id, e.type, e.entity,
             b"\x01" + _json(e.values), b"\x01" + _json(e.attributes))]


EVENTS_SINK = TableSink(
    name="events",
    topic_suffix="events",
    table="events",
    columns=("time", "source", "id", "type", "entity", "values", "attributes"),
    types=("timestamptz", "text", "text", "text", "text", "jsonb", "jsonb"),
    # The same key on both storage paths: a hypertable's unique index must contain the
    # time column, and a redelivered event carries the same time anyway.
    conflict=("source", "id", "time"),
    to_rows=event_copy_rows,
    copy_types=("int8", "text", "text", "text", "text", "bytea", "bytea"),
    on_conflict="nothing",
    description="canonical city events",
)
