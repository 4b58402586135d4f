"""Scorecard wall tiles (pure): leaderboards, target progress, scorecards (areas).

All three are built from ``build_scorecard`` results (``UnitScorecard``), the same pure
functions as the export. Every payload also carries a one-line ``text``, so a wall
client without the renderer (an old one) shows it as a text tile.

- ``leaderboard_tiles``: kind ``leaderboard``, id ``scorecard:<level>:<parent path key>``
  (``-`` for no parent): the units below one parent at the leaderboard level, ranked by
  total score::

    {"text", "title", "level", "period", "period_key", "parent": [units],
     "rows": [{"rank": int|None, "unit", "score", "max_score", "share": 0..1,
               "rank_change": int|None, "flags": [flag]}]}

- ``target_tiles``: kind ``target``, id ``target:<indicator>:<unit path key>``: one
  indicator of one unit against its target for the period::

    {"text", "title", "label", "indicator", "unit", "value_unit", "value": float|None,
     "target": float|None, "progress": float|None (1.0 = reached), "score", "max_score",
     "numerator", "denominator", "period", "period_key", "flags": [flag]}

- ``card_tiles``: kind ``scorecard``, id ``card:<unit path key>``: one unit's areas with
  their points out of their maximum, and the total::

    {"text", "title", "unit", "level", "period", "period_key", "total", "max_total",
     "rank": int|None, "ranked_of": int (units ranked in its parent),
     "rank_change": int|None, "flags": [flag],
     "areas": [{"area", "label", "points", "max_points", "indicators": int}]}

  (``indicators``: how many configured indicators count towards the area; 0 points of
  an area without any is shown as such, not as a failure.)
"""

from __future__ import annotations

from itertools import groupby
from typing import Any

from ..config._scorecard import ScorecardSettings
from ..tiles import Tile
from ._counts import path_key
from ._score import UnitScorecard

__all__ = ["card_tiles", "leaderboard_tiles", "target_tiles"]


def _arrow(change: int | None) -> str:
    if change is None:
        return "new"
    if change > 0:
        return f"▲{change}"
    if change < 0:
        return f"▼{-change}"
    return "="


def leaderboard_tiles(cards: list[UnitScorecard], *, max_total: float, rows: int,
                      now: float, version: int) -> list[Tile]:
    """The leaderboard tiles of ``cards`` (one level and period, in ``build_scorecard``
    order); at most ``rows`` units each, ranked ones first."""
    out = []
    for parent, group in groupby(cards, key=lambda c: c.unit[:-1]):
        units = list(group)[:rows]
        if not units:
            continue
        first = units[0]
        items: list[dict[str, Any]] = [
            {"rank": c.rank, "unit": c.name, "score": round(c.total, 2), "max_score": max_total,
             "share": round(min(1.0, max(0.0, c.total / max_total)), 4) if max_total > 0 else 0.0,
             "rank_change": c.rank_change, "flags": list(c.flags)} for c in units]
        where = " / ".join(parent) if parent else ""
        title = f"Scorecard {first.period_key} · {first.level}" + (f" · {where}" if where else "")
        text = " · ".join(
            f"{r['rank'] if r['rank'] is not None else '-'}. {r['unit']} {r['score']:g} "
            f"{_arrow(r['rank_change']) if r['rank'] is not None else 'no data'}"
            for r in items)
        out.append(Tile(
            id=f"scorecard:{first.level}:{path_key(parent) or '-'}", kind="leaderboard",
            version=version, time=now,
            payload={"text": f"{title}: {text}", "title": title, "level": first.level,
                     "period": first.period, "period_key": first.period_key,
                     "parent": list(parent), "rows": items}))
    return out


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:g}"


def target_tiles(cfg: ScorecardSettings, cards: list[UnitScorecard], *, now: float,
                 version: int) -> list[Tile]:
    """One ``target`` tile per indicator and unit of ``cards``."""
    specs = {i.id: i for i in cfg.indicators}
    out = []
    for c in cards:
        for r in c.indicators:
            spec = specs[r.indicator]
            label = spec.short_label or spec.label
            title = f"{label} · {c.name} · {c.period_key}"
            text = (f"{title}: {_fmt(r.ratio)}{spec.unit} of target {_fmt(r.target)}{spec.unit}"
                    f" ({_fmt(None if r.progress is None else round(r.progress * 100))}%)")
            out.append(Tile(
                id=f"target:{r.indicator}:{path_key(c.unit)}", kind="target", version=version,
                time=now,
                payload={"text": text, "title": title, "label": spec.label,
                         "indicator": r.indicator, "unit": c.name, "value_unit": spec.unit,
                         "value": r.ratio, "target": r.target,
                         "progress": None if r.progress is None else round(r.progress, 4),
                         "score": round(r.score, 2), "max_score": r.max_score,
                         "numerator": r.numerator, "denominator": r.denominator,
                         "period": c.period, "period_key": c.period_key,
                         "flags": list(r.flags)}))
    return out


def card_tiles(cfg: ScorecardSettings, cards: list[UnitScorecard], *, max_total: float,
               now: float, version: int) -> list[Tile]:
    """One ``scorecard`` tile per unit of ``cards``: its areas' points and its total."""
    labels = {a.id: a.label or a.id for a in cfg.areas}
    ranked: dict[tuple[str, ...], int] = {}
    for c in cards:
        ranked[c.unit[:-1]] = ranked.get(c.unit[:-1], 0) + (c.rank is not None)
    out = []
    for c in cards:
        areas = [{"area": a.area, "label": labels.get(a.area, a.area),
                  "points": round(a.points, 2), "max_points": a.max_points,
                  "indicators": a.indicators} for a in c.areas]
        title = f"Scorecard {c.name} · {c.period_key}"
        text = f"{title}: {round(c.total, 2):g}/{max_total:g} · " + " · ".join(
            f"{a['label']} {a['points']:g}/{a['max_points']:g}" for a in areas)
        out.append(Tile(
            id=f"card:{path_key(c.unit)}", kind="scorecard", version=version, time=now,
            payload={"text": text, "title": title, "unit": c.name, "level": c.level,
                     "period": c.period, "period_key": c.period_key,
                     "total": round(c.total, 2), "max_total": max_total, "rank": c.rank,
                     "ranked_of": ranked[c.unit[:-1]],
                     "rank_change": c.rank_change, "flags": list(c.flags), "areas": areas}))
    return out
