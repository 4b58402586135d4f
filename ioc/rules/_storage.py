"""How alerts land in PostgreSQL: the ``alerts`` table's sink spec."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from ..storage.sink import Headers, TableSink
from ._engine import Alert

__all__ = ["ALERTS_SINK", "alert_rows"]


def _ts(t: float | None) -> datetime | None:
    return None if t is None else datetime.fromtimestamp(t, UTC)


def alert_rows(key: bytes | None, value: bytes | None, headers: Headers) -> list[tuple[Any, ...]]:
    """One row per alert state message (``<ns>.alerts``); 'cleared' overwrites 'raised'."""
    if value is None:
        return []
    a = Alert.from_bytes(value)
    return [(a.id, a.rule, a.entity, a.metric, a.severity, a.state, _ts(a.start), _ts(a.raised_at),
             _ts(a.cleared_at), a.value, a.message, a.scope)]


ALERTS_SINK = TableSink(
    name="alerts",
    topic_suffix="alerts",
    table="alerts",
    columns=("id", "rule", "entity", "metric", "severity", "state", "start", "raised_at",
             "cleared_at", "value", "message", "scope"),
    types=("text", "text", "text", "text", "text", "text", "timestamptz", "timestamptz",
           "timestamptz", "float8", "text", "text"),
    conflict=("id", "raised_at"),
    to_rows=alert_rows,
    on_conflict="update",
    description="alert states (raised, then cleared)",
)
