"""How canonical events land in PostgreSQL: the ``events`` table's sink spec."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from ..storage.sink import Headers, TableSink
from ._envelope import decode_event

__all__ = ["EVENTS_SINK", "event_rows"]

_fromts = datetime.fromtimestamp


def event_rows(key: bytes | None, value: bytes | None, headers: Headers) -> list[tuple[Any, ...]]:
    """One row per canonical event (``<ns>.events`` value)."""
    if value is None:
        return []
    e = decode_event(value)
    return [(_fromts(e.time, UTC), e.source, e.id, e.type, e.entity, e.values, e.attributes)]


EVENTS_SINK = TableSink(
    name="events",
    topic_suffix="events",
    table="events",
    columns=("time", "source", "id", "type", "entity", "values", "attributes"),
    types=("timestamptz", "text", "text", "text", "text", "jsonb", "jsonb"),
    # The same key on both storage paths: a hypertable's unique index must contain the
    # time column, and a redelivered event carries the same time anyway.
    conflict=("source", "id", "time"),
    to_rows=event_rows,
    on_conflict="nothing",
    description="canonical city events",
)
