"""The alerts the wall knows, pure: read from the ``alerts:<scope>`` tiles it holds.

The wall server sees alerts the way the screens do: as the items of the alert-list
tiles on ``<ns>.wall.tiles`` (built by :func:`ioc.tilegen.alerts_tile`). An alert is
*known* (operators may act on it) while at least one held alert tile lists it; it is
*raised* while one lists it as raised. Reading the tiles rather than ``<ns>.alerts``
keeps one input for the wall, and the alerts an operator can act on are exactly the
ones a screen shows.

:func:`alert_tile_id` maps an alert to the camera or sensor tile that pops up for it.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["SEVERITY_RANK", "AlertIndex", "AlertInfo", "alert_tile_id"]

SEVERITY_RANK = {"info": 0, "warning": 1, "critical": 2}
_MAX_ITEMS = 500  # items read per alert tile


@dataclass(frozen=True, slots=True)
class AlertInfo:
    """One alert as an alert tile lists it."""

    id: str
    rule: str
    entity: str
    metric: str | None
    severity: str
    state: str  # "raised" | "cleared"
    raised_at: float
    tile: str | None = None  # an explicit tile id, when the producer names one

    @property
    def raised(self) -> bool:
        return self.state == "raised"

    @property
    def rank(self) -> int:
        return SEVERITY_RANK.get(self.severity, 0)


def _item(raw: Any) -> AlertInfo | None:
    """An ``AlertInfo`` from one tile item, or None for an item of another shape."""
    if not isinstance(raw, dict):
        return None
    aid = raw.get("id")
    if not isinstance(aid, str) or not 0 < len(aid) <= 120:
        return None

    def s(name: str, default: str = "") -> str:
        v = raw.get(name)
        return v[:200] if isinstance(v, str) else default

    t = raw.get("raised_at")
    metric = raw.get("metric")
    tile = raw.get("tile")
    return AlertInfo(
        id=aid, rule=s("rule"), entity=s("entity"),
        metric=metric[:120] if isinstance(metric, str) else None,
        severity=s("severity", "info"), state=s("state", "raised"),
        raised_at=float(t) if isinstance(t, int | float) and not isinstance(t, bool) else 0.0,
        tile=tile[:130] if isinstance(tile, str) else None,
    )


class AlertIndex:
    """Alerts by id, merged from every held alert tile.

    ``update_tile`` / ``remove_tile`` return the ids whose merged view changed. When
    two tiles list the same alert (``alerts:all`` and ``alerts:<scope>``), a raised
    listing wins over a cleared one only if no tile lists it cleared (clearing is
    final: the tile that says cleared is the newer word on that alert).
    """

    def __init__(self) -> None:
        self._by_tile: dict[str, dict[str, AlertInfo]] = {}
        self._merged: dict[str, AlertInfo] = {}

    def __len__(self) -> int:
        return len(self._merged)

    def get(self, alert_id: str) -> AlertInfo | None:
        return self._merged.get(alert_id)

    def alerts(self) -> Iterable[AlertInfo]:
        return self._merged.values()

    def update_tile(self, tile_id: str, payload: Mapping[str, Any]) -> set[str]:
        items = payload.get("items") if isinstance(payload, Mapping) else None
        new: dict[str, AlertInfo] = {}
        if isinstance(items, list):
            for raw in items[:_MAX_ITEMS]:
                a = _item(raw)
                if a is not None:
                    new[a.id] = a
        old = self._by_tile.get(tile_id, {})
        self._by_tile[tile_id] = new
        return self._remerge(set(old) | set(new))

    def remove_tile(self, tile_id: str) -> set[str]:
        old = self._by_tile.pop(tile_id, {})
        return self._remerge(set(old))

    def _remerge(self, ids: set[str]) -> set[str]:
        changed = set()
        for aid in ids:
            views = [t[aid] for t in self._by_tile.values() if aid in t]
            merged = None
            if views:
                cleared = [v for v in views if not v.raised]
                merged = cleared[0] if cleared else views[0]
            if merged != self._merged.get(aid):
                changed.add(aid)
                if merged is None:
                    del self._merged[aid]
                else:
                    self._merged[aid] = merged
        return changed


def alert_tile_id(alert: AlertInfo, tiles: Collection[str]) -> str | None:
    """The camera or sensor tile that shows ``alert``, among the tile ids ``tiles``.

    In order: the item's own ``tile``; the entity itself when it is a tile id
    (``camera:north-gate``); ``sensor:<entity>:<metric>``; ``camera:<entity>``; the
    first (sorted) ``sensor:<entity>:*`` tile. None when no such tile is placed.
    """
    entity = alert.entity
    bare = entity.split(":", 1)[1] if entity.startswith(("camera:", "sensor:")) else entity
    candidates = [alert.tile, entity]
    if alert.metric:
        candidates.append(f"sensor:{bare}:{alert.metric}")
    candidates.append(f"camera:{bare}")
    for c in candidates:
        if c and c in tiles and c.startswith(("camera:", "sensor:")):
            return c
    prefix = f"sensor:{bare}:"
    return next((t for t in sorted(tiles) if t.startswith(prefix)), None)
