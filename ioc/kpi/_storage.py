"""How KPI values land in PostgreSQL: the ``kpi_values`` table's sink spec."""

from __future__ import annotations

from typing import Any

from ..storage.sink import Headers, TableSink
from ._ratio import KpiValue

__all__ = ["KPI_VALUES_SINK", "kpi_rows"]


def kpi_rows(key: bytes | None, value: bytes | None, headers: Headers) -> list[tuple[Any, ...]]:
    """One row per KPI value message (``<ns>.kpis``); later messages overwrite."""
    if value is None:
        return []
    v = KpiValue.from_bytes(value)
    return [(v.kpi, v.group, v.period, v.period_key, float(v.numerator), float(v.denominator),
             v.value, v.unit)]


KPI_VALUES_SINK = TableSink(
    name="kpi_values",
    topic_suffix="kpis",
    table="kpi_values",
    columns=("kpi", "grp", "period", "period_key", "numerator", "denominator", "value", "unit"),
    types=("text", "text", "text", "text", "float8", "float8", "float8", "text"),
    conflict=("kpi", "grp", "period", "period_key"),
    to_rows=kpi_rows,
    on_conflict="update",
    description="ratio KPI values per group and calendar period (latest)",
)
