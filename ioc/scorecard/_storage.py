"""How scorecard counts land in PostgreSQL and are read back.

``scorecard_counts`` holds one row per (indicator, period, period key, drill path):
the full numerator and denominator (never only the ratio), upserted last-write-wins
from the compacted ``<ns>.scorecards`` topic. Every period key stays: that is the
history the scorecards, rank changes and late-event recomputations read.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql

from ..storage.sink import Headers, TableSink
from ._counts import LeafCount, path_key

__all__ = ["SCORECARD_COUNTS_SINK", "counts_query", "leaves_of_rows", "load_leaves",
           "scorecard_rows"]


def scorecard_rows(key: bytes | None, value: bytes | None, headers: Headers
                   ) -> list[tuple[Any, ...]]:
    """One row per count message; later messages overwrite (full counts)."""
    if value is None:
        return []
    lf = LeafCount.from_bytes(value)
    at = datetime.fromtimestamp(lf.at, UTC) if lf.at > 0 else datetime.now(UTC)
    return [(lf.indicator, lf.period, lf.period_key, path_key(lf.path), list(lf.path),
             list(lf.levels), float(lf.numerator), float(lf.denominator), at)]


SCORECARD_COUNTS_SINK = TableSink(
    name="scorecard_counts",
    topic_suffix="scorecards",
    table="scorecard_counts",
    columns=("indicator", "period", "period_key", "unit_path", "path", "levels",
             "numerator", "denominator", "updated_at"),
    types=("text", "text", "text", "text", "jsonb", "jsonb", "float8", "float8",
           "timestamptz"),
    conflict=("indicator", "period", "period_key", "unit_path"),
    to_rows=scorecard_rows,
    on_conflict="update",
    description="scorecard numerator/denominator per indicator, period and drill path",
)


def counts_query(schema: str) -> sql.Composed:
    """Rows of one period kind and a list of period keys, at most %(limit)s of them."""
    return sql.SQL(
        "select indicator, period, period_key, path, levels, numerator, denominator "
        "from {t} where period = %(period)s and period_key = any(%(keys)s) "
        "order by period_key, indicator, unit_path limit %(limit)s").format(
            t=sql.Identifier(schema, "scorecard_counts"))


def latest_key_query(schema: str) -> sql.Composed:
    return sql.SQL("select max(period_key) from {t} where period = %(period)s").format(
        t=sql.Identifier(schema, "scorecard_counts"))


def leaves_of_rows(rows: list[tuple[Any, ...]]) -> list[LeafCount]:
    return [LeafCount(ind, period, pk, tuple(path), float(num), float(den), tuple(levels))
            for ind, period, pk, path, levels, num, den in rows]


def load_leaves(conn: psycopg.Connection, schema: str, period: str, keys: list[str], *,
                limit: int = 50_000) -> list[LeafCount]:
    """The stored counts of ``keys`` (synchronous; tests and tools)."""
    rows = conn.execute(counts_query(schema),
                        {"period": period, "keys": keys, "limit": limit}).fetchall()
    return leaves_of_rows(rows)
