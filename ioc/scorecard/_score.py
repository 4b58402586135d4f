"""Scores, area totals, targets, rankings and data-quality flags over stored counts (pure).

Everything here is a function of the leaf counts (``LeafCount``: full numerator and
denominator per indicator, period and drill path) and the settings, so the gateway's
export, a wall tile and a test compute the same scorecard from the same rows, on plain
PostgreSQL or TimescaleDB alike. A unit at drill level ``k`` is a path prefix of length
``k + 1``; its counts are the sums of the leaves below it.

Flags (``FLAGS``): ``no_data`` the unit counted nothing for the indicator in the
period (ratio None, score 0, not ranked); ``low_denominator`` fewer than the
indicator's (or the section's) ``min_denominator`` events; ``provisional`` the period
ends less than ``provisional_days`` before ``now`` (late reports still change it).

Targets (``target_for``) may differ by the unit's level, its part at
``scorecards.target_level``: a district agency and the district level as a whole take
the district's target, the province as a whole (above that level) the indicator's
default. Progress, the linear score, the export and the tiles all use that target.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from ..config._scorecard import IndicatorSpec, ScorecardSettings
from ._counts import LeafCount
from ._periods import period_bounds, previous_period, year_of

__all__ = [
    "FLAGS",
    "AreaResult",
    "IndicatorResult",
    "UnitScorecard",
    "build_scorecard",
    "competition_ranks",
    "indicator_score",
    "is_provisional",
    "level_index",
    "progress",
    "rank_changes",
    "ratio",
    "roll_up",
    "target_depth",
    "target_for",
    "unit_level",
]

FLAGS = ("no_data", "low_denominator", "provisional")

Unit = tuple[str, ...]


def ratio(numerator: float, denominator: float, spec: IndicatorSpec) -> float | None:
    """``numerator / denominator * scale``, rounded to the spec's decimals; None when empty."""
    if denominator <= 0:
        return None
    return round(numerator / denominator * spec.scale, spec.decimals)


def target_for(spec: IndicatorSpec, period_key: str, level: str | None = None) -> float | None:
    """The target of a unit of ``level`` in ``period_key``.

    ``level`` is the unit's part at ``scorecards.target_level`` (``'district'``), None for
    a unit above that level (the province as a whole) or without one. The most specific
    period comes first: ``period_key``'s own entry, then its year's. An entry is a number
    (every unit's target) or a mapping level -> number, which gives the target of a unit
    whose level it lists and passes over the others. Last comes the indicator's
    ``target`` (None when unset).
    """
    for key in dict.fromkeys((period_key, year_of(period_key))):
        t = spec.targets.get(key)
        if t is None:
            continue
        if not isinstance(t, dict):
            return t
        if level is not None and level in t:
            return t[level]
    return spec.target


def target_depth(cfg: ScorecardSettings) -> int | None:
    """The path position of ``scorecards.target_level`` (None when not set)."""
    return None if cfg.target_level is None else level_index(cfg, cfg.target_level)


def unit_level(unit: Unit, depth: int | None) -> str | None:
    """The unit's part at the target level's position; None above it or without one."""
    return unit[depth] if depth is not None and len(unit) > depth else None


def indicator_score(value: float | None, spec: IndicatorSpec, target: float | None) -> float:
    """Points for ``value`` under the spec's rule, always within [0, max_score].

    ``linear`` without a usable target (None, or not above the floor) scores full
    points when the value reaches the floor's side of it, so a target of 0 is met by 0.
    """
    if value is None or not math.isfinite(value):
        return 0.0
    rule = spec.scoring
    m = spec.max_score
    if rule.rule == "linear":
        lo = rule.floor
        if target is None:
            return 0.0
        if target == lo:
            share = 1.0 if (value >= target if spec.higher_is_better else value <= target) else 0.0
        else:
            share = (value - lo) / (target - lo)
        return min(m, max(0.0, m * share))
    if rule.rule == "thresholds":
        pts = 0.0
        for step in rule.steps:  # ascending
            if value >= step.at:
                pts = step.points
        return min(m, max(0.0, pts))
    for band in rule.bands:
        if band.lower <= value < band.upper:
            return min(m, max(0.0, band.points))
    return 0.0


def progress(value: float | None, target: float | None, *, higher_is_better: bool = True
             ) -> float | None:
    """How far ``value`` is towards ``target`` (1.0 = reached; can exceed 1); None when unknown."""
    if value is None or target is None:
        return None
    if higher_is_better:
        return value / target if target > 0 else (1.0 if value >= target else None)
    return target / value if value > 0 else 1.0


def is_provisional(period: str, key: str, tz: ZoneInfo, now: float, days: float) -> bool:
    """Whether the period ends less than ``days`` days before ``now`` (or has not ended)."""
    end = period_bounds(period, key, tz)[1].timestamp()
    return now < end + days * 86400.0


def level_index(cfg: ScorecardSettings, level: str) -> int:
    """The position of drill level ``level``.

    Raises:
        ValueError: naming the known levels.
    """
    ids = [lv.id for lv in cfg.levels]
    if level not in ids:
        raise ValueError(f"level must be one of {ids}, got {level!r}")
    return ids.index(level)


def roll_up(leaves: Iterable[LeafCount], depth: int) -> dict[tuple[str, Unit], list[float]]:
    """Sum the leaves per (indicator, unit), a unit being the path's first ``depth + 1`` parts."""
    out: dict[tuple[str, Unit], list[float]] = {}
    for lf in leaves:
        k = (lf.indicator, lf.path[: depth + 1])
        c = out.get(k)
        if c is None:
            out[k] = [lf.numerator, lf.denominator]
        else:
            c[0] += lf.numerator
            c[1] += lf.denominator
    return out


def competition_ranks(values: Mapping[Unit, float | None], *, higher_is_better: bool = True
                      ) -> dict[Unit, int | None]:
    """Rank per unit within each parent (the unit without its last part): 1 is best,
    equal values share a rank and the next one skips ('1224'); None values are unranked."""
    by_parent: dict[Unit, list[tuple[float, Unit]]] = {}
    out: dict[Unit, int | None] = {}
    for u, v in values.items():
        if v is None:
            out[u] = None
        else:
            by_parent.setdefault(u[:-1], []).append((v if higher_is_better else -v, u))
    for items in by_parent.values():
        items.sort(key=lambda x: (-x[0], x[1]))
        prev_v: float | None = None
        rank = 0
        for i, (v, u) in enumerate(items, start=1):
            if v != prev_v:
                rank, prev_v = i, v
            out[u] = rank
    return out


def rank_changes(now: Mapping[Unit, int | None], before: Mapping[Unit, int | None]
                 ) -> dict[Unit, int | None]:
    """Places gained since the previous period (positive: moved up); None if either is unranked."""
    out: dict[Unit, int | None] = {}
    for u, r in now.items():
        p = before.get(u)
        out[u] = None if r is None or p is None else p - r
    return out


@dataclass(frozen=True, slots=True)
class IndicatorResult:
    """One indicator of one unit in one period."""

    indicator: str
    numerator: float
    denominator: float
    ratio: float | None
    score: float
    max_score: float
    target: float | None
    progress: float | None
    flags: tuple[str, ...]
    rank: int | None = None
    rank_change: int | None = None


@dataclass(frozen=True, slots=True)
class AreaResult:
    """An area's points for one unit: the sum of its indicators' scores."""

    area: str
    points: float
    max_points: float
    indicators: int  # how many indicators count towards it


@dataclass(frozen=True, slots=True)
class UnitScorecard:
    """The scorecard of one unit at one drill level for one period."""

    level: str
    unit: Unit
    period: str
    period_key: str
    indicators: tuple[IndicatorResult, ...]
    areas: tuple[AreaResult, ...]
    total: float
    rank: int | None
    rank_change: int | None
    flags: tuple[str, ...]

    @property
    def name(self) -> str:
        return self.unit[-1]


def _results(cfg: ScorecardSettings, sums: Mapping[tuple[str, Unit], list[float]],
             units: Sequence[Unit], period_key: str, provisional: bool
             ) -> dict[Unit, tuple[list[IndicatorResult], float]]:
    out: dict[Unit, tuple[list[IndicatorResult], float]] = {}
    depth = target_depth(cfg)
    for u in units:
        results = []
        level = unit_level(u, depth)
        for ind in cfg.indicators:
            num, den = sums.get((ind.id, u), (0.0, 0.0))
            value = ratio(num, den, ind)
            target = target_for(ind, period_key, level)
            flags = []
            if den <= 0:
                flags.append("no_data")
            elif den < (ind.min_denominator if ind.min_denominator is not None
                        else cfg.min_denominator):
                flags.append("low_denominator")
            if provisional:
                flags.append("provisional")
            results.append(IndicatorResult(
                ind.id, num, den, value, indicator_score(value, ind, target), ind.max_score,
                target, progress(value, target, higher_is_better=ind.higher_is_better),
                tuple(flags)))
        out[u] = (results, sum(r.score for r in results))
    return out


def _units(leaves: Iterable[LeafCount], depth: int) -> set[Unit]:
    return {lf.path[: depth + 1] for lf in leaves}


def build_scorecard(cfg: ScorecardSettings, leaves: Iterable[LeafCount],
                    previous: Iterable[LeafCount] = (), *, period: str, period_key: str,
                    level: str, tz: ZoneInfo, now: float) -> list[UnitScorecard]:
    """The scorecard of every unit at ``level`` for one period, ranked within its parent.

    ``leaves`` are the counts of ``period_key``; ``previous`` those of the period before
    (for rank changes). Every unit seen in either, and every one of
    ``scorecards.expected_units`` at this level, is listed: one that counted nothing
    this period gets ``no_data`` on every indicator, total 0 and no rank. Units are in
    order of parent, then rank (unranked last), then id.

    Raises:
        ValueError: an unknown level or a period key not of ``period``'s form.
    """
    depth = level_index(cfg, level)
    cur = [lf for lf in leaves if lf.period == period and lf.period_key == period_key]
    prev_key = previous_period(period, period_key)
    old = [lf for lf in previous if lf.period == period and lf.period_key == prev_key]
    expected = {tuple(u) for u in cfg.expected_units if len(u) == depth + 1}
    units = sorted(_units(cur, depth) | _units(old, depth) | expected)
    provisional = is_provisional(period, period_key, tz, now, cfg.provisional_days)
    now_res = _results(cfg, roll_up(cur, depth), units, period_key, provisional)
    old_units = sorted(_units(old, depth))
    old_res = _results(cfg, roll_up(old, depth), old_units, prev_key, False)

    def totals(res: Mapping[Unit, tuple[list[IndicatorResult], float]]) -> dict[Unit, float | None]:
        return {u: (None if all("no_data" in r.flags for r in rs) else t)
                for u, (rs, t) in res.items()}

    ranks = competition_ranks(totals(now_res))
    changes = rank_changes(ranks, competition_ranks(totals(old_res)))
    ind_ranks: dict[str, dict[Unit, int | None]] = {}
    ind_changes: dict[str, dict[Unit, int | None]] = {}
    for n, ind in enumerate(cfg.indicators):
        r_now = competition_ranks({u: rs[n].ratio for u, (rs, _) in now_res.items()},
                                  higher_is_better=ind.higher_is_better)
        r_old = competition_ranks({u: rs[n].ratio for u, (rs, _) in old_res.items()},
                                  higher_is_better=ind.higher_is_better)
        ind_ranks[ind.id], ind_changes[ind.id] = r_now, rank_changes(r_now, r_old)
    out = []
    for u in units:
        rs, total = now_res[u]
        rs = [IndicatorResult(r.indicator, r.numerator, r.denominator, r.ratio, r.score,
                              r.max_score, r.target, r.progress, r.flags,
                              ind_ranks[r.indicator][u], ind_changes[r.indicator][u])
              for r in rs]
        areas = tuple(
            AreaResult(a.id, sum(r.score for r, i in zip(rs, cfg.indicators, strict=True)
                                 if i.area == a.id),
                       a.max_points, sum(1 for i in cfg.indicators if i.area == a.id))
            for a in cfg.areas)
        flags = tuple(f for f in FLAGS if any(f in r.flags for r in rs))
        out.append(UnitScorecard(level, u, period, period_key, tuple(rs), areas, total,
                                 ranks[u], changes[u], flags))
    out.sort(key=lambda c: (c.unit[:-1], c.rank is None, c.rank or 0, c.unit))
    return out
