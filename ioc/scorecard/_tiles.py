"""Leaderboard tiles of the scorecards (pure): ranked units, rank changes, score bars.

One tile per parent unit at the leaderboard level (``scorecards.leaderboard_level``):
``scorecard:<level>:<parent path key>`` ranks the units below that parent by total
score for the latest period of ``scorecards.tile_period``. The tile is of kind
``text`` (its ``text`` is the ranking in one line, which every wall already renders);
``rows`` carries the structured ranking for a dedicated renderer (not written yet)::

    {"text", "title", "level", "period", "period_key", "parent": [units],
     "rows": [{"rank", "unit", "score", "max_score", "share": 0..1, "rank_change",
               "flags"}]}
"""

from __future__ import annotations

from itertools import groupby
from typing import Any

from ..tiles import Tile
from ._counts import path_key
from ._score import UnitScorecard

__all__ = ["leaderboard_tiles"]


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
             "share": round(c.total / max_total, 4) if max_total > 0 else 0.0,
             "rank_change": c.rank_change, "flags": list(c.flags)} for c in units]
        where = " / ".join(parent) if parent else ""
        title = f"Scorecard {first.period_key} · {first.level}" + (f" · {where}" if where else "")
        text = " · ".join(
            f"{r['rank'] if r['rank'] is not None else '-'}. {r['unit']} {r['score']:g} "
            f"{_arrow(r['rank_change']) if r['rank'] is not None else 'no data'}"
            for r in items)
        out.append(Tile(
            id=f"scorecard:{first.level}:{path_key(parent) or '-'}", kind="text",
            version=version, time=now,
            payload={"text": f"{title}: {text}", "title": title, "level": first.level,
                     "period": first.period, "period_key": first.period_key,
                     "parent": list(parent), "rows": items}))
    return out
