"""Which preset and which pop-ups a screen shows, pure: from alerts, workflow and choices.

:func:`screen_view` is the whole decision for one screen, recomputed by the server
whenever an alert tile, an action or an operator's choice changes:

- **preset**: an operator's choice (``override``) wins; else the first of the screen's
  ``preset_rules`` that has a matching alert raised and not closed; else none (the
  default layout). ``DEFAULT`` as a choice pins the default layout against the rules.
- **pop-ups**: raised alerts of at least ``popups.severity`` (and ``entity_prefix``),
  neither acknowledged nor closed, whose camera/sensor tile is known, newest first,
  at most ``popups.max_open``.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass

from ..config._wall import PresetRule, ScreenLayout
from .alerts import SEVERITY_RANK, AlertInfo, alert_tile_id
from .workflow import AlertWorkflow

__all__ = ["DEFAULT", "Popup", "ScreenView", "entity_matches", "rule_matches", "screen_view"]

DEFAULT = "default"
"""An operator's choice of the default layout (pins it while a rule would switch)."""


@dataclass(frozen=True, slots=True)
class Popup:
    alert: str
    tile: str
    severity: str

    def as_message(self) -> dict[str, str]:
        return {"alert": self.alert, "tile": self.tile, "severity": self.severity}


@dataclass(frozen=True, slots=True)
class ScreenView:
    """What a screen shows besides its tiles' data."""

    preset: str | None = None  # None: the default layout
    by: str | None = None  # "rule:<id>" | "operator:<name>" | None
    popups: tuple[Popup, ...] = ()

    def popup_tiles(self) -> frozenset[str]:
        return frozenset(p.tile for p in self.popups)


def entity_matches(entity: str, prefix: str) -> bool:
    """``entity`` starts with ``prefix``, with or without a ``camera:``/``sensor:`` head."""
    if entity.startswith(prefix):
        return True
    head, _, bare = entity.partition(":")
    return head in ("camera", "sensor") and bare.startswith(prefix)


def rule_matches(rule: PresetRule, alert: AlertInfo) -> bool:
    """``alert`` satisfies every condition of ``rule`` (state and workflow aside)."""
    return ((rule.rule is None or alert.rule == rule.rule)
            and entity_matches(alert.entity, rule.entity_prefix)
            and alert.rank >= SEVERITY_RANK[rule.severity])


def screen_view(layout: ScreenLayout, alerts: Iterable[AlertInfo],
                workflow: Callable[[str], AlertWorkflow | None], tiles: Collection[str], *,
                override: tuple[str, str] | None = None) -> ScreenView:
    """The preset and pop-ups of a screen with ``layout``.

    Args:
        alerts: every known alert.
        workflow: the workflow state of an alert id (None: untouched).
        tiles: the tile ids a pop-up may show (placed somewhere or held).
        override: an operator's ``(preset or DEFAULT, operator name)``.
    """
    live = []
    for a in alerts:
        if not a.raised:
            continue
        wf = workflow(a.id)
        if wf is not None and wf.closed:
            continue
        live.append((a, wf))
    live.sort(key=lambda x: -x[0].raised_at)
    preset: str | None = None
    by: str | None = None
    if override is not None:
        choice, who = override
        preset, by = (None if choice == DEFAULT else choice), f"operator:{who}"
    else:
        for rule in layout.preset_rules:
            if any(rule_matches(rule, a) for a, _ in live):
                preset, by = rule.preset, f"rule:{rule.id}"
                break
    popups: list[Popup] = []
    cfg = layout.popups
    if cfg.enabled:
        floor = SEVERITY_RANK[cfg.severity]
        for a, wf in live:
            if len(popups) >= cfg.max_open:
                break
            if a.rank < floor or not entity_matches(a.entity, cfg.entity_prefix):
                continue
            if wf is not None and wf.acked:
                continue
            tile = alert_tile_id(a, tiles)
            if tile is not None:
                popups.append(Popup(a.id, tile, a.severity))
    return ScreenView(preset, by, tuple(popups))
