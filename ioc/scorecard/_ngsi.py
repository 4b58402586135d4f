"""Scorecards as NGSI-LD ``KeyPerformanceIndicator`` entities (Smart Data Models), pure.

One entity per (indicator, unit, period), plus one per (unit, period) for the total
score (indicator id ``total``). Standard properties of the data model carry what they
are for (``kpiValue`` the ratio, ``calculationPeriod`` from/to dates,
``calculationFrequency``, ``calculationFormula``, ``organization`` the unit,
``currentStanding`` from the score's share of its maximum, ``businessTarget``); the
scorecard's own figures (numerator, denominator, score, maxScore, target, progress,
rank, rankChange, dataQuality, drillPath) are further properties of the entity, in
key-values (simplified) form. Field notes: docs/scorecards.md.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

from ..config._scorecard import ScorecardSettings
from ._periods import last_day, period_bounds
from ._score import UnitScorecard

__all__ = ["NGSI_CONTEXT", "kpi_entities", "standing"]

NGSI_CONTEXT = [
    "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context.jsonld",
    "https://raw.githubusercontent.com/smart-data-models/dataModel.KeyPerformanceIndicator/"
    "master/context.jsonld",
]

_FREQUENCY = {"month": "monthly", "quarter": "quarterly", "year": "yearly"}


def standing(score: float, max_score: float) -> str:
    """The data model's ``currentStanding`` from the share of the maximum score."""
    share = score / max_score if max_score > 0 else 0.0
    for limit, word in ((0.9, "veryGood"), (0.7, "good"), (0.5, "fair"), (0.3, "bad")):
        if share >= limit:
            return word
    return "veryBad"


def _urn(namespace: str, *parts: str) -> str:
    return "urn:ngsi-ld:KeyPerformanceIndicator:" + ":".join(
        quote(p, safe="") for p in (namespace, *parts))


def kpi_entities(cfg: ScorecardSettings, cards: list[UnitScorecard], *, namespace: str,
                 tz: ZoneInfo, now: float, context: bool = True) -> list[dict[str, Any]]:
    """The entities of ``cards`` (one drill level, one period), in card order."""
    specs = {i.id: i for i in cfg.indicators}
    level_ids = [lv.id for lv in cfg.levels]
    updated = datetime.fromtimestamp(now, UTC).isoformat().replace("+00:00", "Z")
    out: list[dict[str, Any]] = []
    for c in cards:
        start, _ = period_bounds(c.period, c.period_key, tz)
        span = {"from": start.date().isoformat(),
                "to": last_day(c.period, c.period_key, tz).date().isoformat()}
        drill = dict(zip(level_ids, c.unit, strict=False))
        unit_key = "/".join(c.unit)
        common: dict[str, Any] = {
            "calculationPeriod": span, "calculationFrequency": _FREQUENCY[c.period],
            "calculationMethod": "automatic", "category": ["quantitative"],
            "organization": c.name, "drillLevel": c.level, "drillPath": drill,
            "periodKey": c.period_key, "updatedAt": updated}
        for r in c.indicators:
            spec = specs[r.indicator]
            e: dict[str, Any] = {
                "id": _urn(namespace, r.indicator, c.period_key, unit_key),
                "type": "KeyPerformanceIndicator", "name": spec.label,
                "description": f"{spec.label}: {spec.numerator.event_type} "
                               f"{dict(spec.numerator.where)} over {spec.denominator.event_type} "
                               f"{dict(spec.denominator.where)}",
                "kpiValue": r.ratio,
                "calculationFormula": f"numerator / denominator * {spec.scale:g}",
                **common,
                "indicator": r.indicator, "scoreArea": spec.area, "unitCode": spec.unit,
                "numerator": r.numerator, "denominator": r.denominator,
                "score": round(r.score, 3), "maxScore": r.max_score,
                "currentStanding": standing(r.score, r.max_score),
                "target": r.target,
                "progress": None if r.progress is None else round(r.progress, 4),
                "rank": r.rank, "rankChange": r.rank_change, "dataQuality": list(r.flags)}
            if r.target is not None:
                e["businessTarget"] = f"{r.target:g}{spec.unit} in {c.period_key}"
            if "procedure" in drill:
                e["process"] = drill["procedure"]
            if context:
                e["@context"] = NGSI_CONTEXT
            out.append(e)
        max_total = sum(a.max_points for a in c.areas) or sum(r.max_score for r in c.indicators)
        t: dict[str, Any] = {
            "id": _urn(namespace, "total", c.period_key, unit_key),
            "type": "KeyPerformanceIndicator", "name": "Scorecard total",
            "description": "points of every area of the scorecard, out of their maximum",
            "kpiValue": round(c.total, 3),
            "calculationFormula": "sum of the indicators' scores",
            **common, "indicator": "total", "score": round(c.total, 3), "maxScore": max_total,
            "currentStanding": standing(c.total, max_total),
            "areas": [{"area": a.area, "points": round(a.points, 3), "maxPoints": a.max_points}
                      for a in c.areas],
            "rank": c.rank, "rankChange": c.rank_change, "dataQuality": list(c.flags)}
        if context:
            t["@context"] = NGSI_CONTEXT
        out.append(t)
    return out
