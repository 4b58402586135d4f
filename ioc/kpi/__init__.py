"""KPI maths (pure): ratio KPIs per group over calendar periods, overall group, rankings."""

from ._ratio import KpiCounts, KpiValue, combine, kpi_ratio, period_key, ranking

__all__ = ["KpiCounts", "KpiValue", "combine", "kpi_ratio", "period_key", "ranking"]
