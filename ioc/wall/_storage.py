"""How operator actions land in PostgreSQL: the ``alert_actions`` table's sink spec.

``ioc sink`` reads ``<ns>.alerts.actions`` in its own consumer group and writes each
record once (the action id is the primary key: a redelivered record changes nothing).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from ..storage.sink import Headers, TableSink
from .workflow import ActionRecord

__all__ = ["ALERT_ACTIONS_SINK", "action_rows"]


def action_rows(key: bytes | None, value: bytes | None, headers: Headers) -> list[tuple[Any, ...]]:
    """One row per action record. Raises InvalidRecord for anything else."""
    if value is None:
        return []
    r = ActionRecord.from_bytes(value)
    return [(r.id, r.alert, r.action, r.by, datetime.fromtimestamp(r.at, UTC), r.to, r.text,
             r.preset, r.screen, r.server)]


ALERT_ACTIONS_SINK = TableSink(
    name="alert_actions",
    topic_suffix="alerts.actions",
    table="alert_actions",
    columns=("id", "alert", "action", "actor", "at", "assigned_to", "comment", "preset",
             "screen", "server"),
    types=("text", "text", "text", "text", "timestamptz", "text", "text", "text", "text",
           "text"),
    conflict=("id",),
    to_rows=action_rows,
    on_conflict="nothing",
    description="operator actions at the wall (audit)",
)
