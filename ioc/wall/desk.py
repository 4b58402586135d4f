"""The operator desk: alerts, their workflow, presets and pop-ups of every screen; no I/O.

The wall server feeds it alert tiles (:meth:`OperatorDesk.on_alert_tile`) and stored
action records (:meth:`fold`), asks it to authorise requests (:meth:`authorise`), and
sends what it returns: the changed alert states and the screens whose view (preset,
pop-ups) changed. Nothing here awaits or touches a socket, Kafka or the database.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..config._wall import WallSettings
from .alerts import AlertIndex
from .auth import TokenClaims
from .presets import DEFAULT, ScreenView, screen_view
from .protocol import Rejected, Request
from .workflow import ActionRecord, AlertWorkflow, WorkflowBook, check

__all__ = ["Changes", "OperatorDesk"]


@dataclass
class Changes:
    """What a change means for the clients."""

    alert_states: dict[str, AlertWorkflow] = field(default_factory=dict)
    screens: dict[str, tuple[ScreenView, ScreenView]] = field(default_factory=dict)  # old, new

    def __bool__(self) -> bool:
        return bool(self.alert_states or self.screens)


class OperatorDesk:
    """Everything operators change, for all screens of ``cfg``.

    Args:
        cfg: the wall settings (screens with presets, rules and pop-ups; limits).
        tiles: the tile ids a pop-up may show (e.g. the store's ids plus every placed id);
            read at each evaluation.
    """

    def __init__(self, cfg: WallSettings, tiles: Collection[str] = frozenset()) -> None:
        self.cfg = cfg
        self.alerts = AlertIndex()
        self.book = WorkflowBook(max_alerts=cfg.max_alert_states)
        self.overrides: dict[str, tuple[str, str]] = {}  # screen -> (preset|DEFAULT, operator)
        self.views: dict[str, ScreenView] = {s: ScreenView() for s in cfg.screens}
        self.placed = frozenset().union(*(lay.all_tile_ids() for lay in cfg.screens.values()))
        self.tiles: Collection[str] = tiles
        self.folded = 0

    # -- inputs ----------------------------------------------------------------------------

    def on_alert_tile(self, tile_id: str, payload: Mapping[str, Any] | None) -> Changes:
        """An ``alerts:*`` tile changed (None: removed)."""
        changed = (self.alerts.remove_tile(tile_id) if payload is None
                   else self.alerts.update_tile(tile_id, payload))
        return self._reevaluate() if changed else Changes()

    def fold(self, rec: ActionRecord) -> Changes:
        """A stored action record (from the actions topic, in partition order)."""
        self.folded += 1
        if rec.action == "preset":
            if rec.alert not in self.cfg.screens:
                return Changes()
            if rec.preset is None:
                self.overrides.pop(rec.alert, None)
            elif rec.preset == DEFAULT or rec.preset in self.cfg.screens[rec.alert].presets:
                self.overrides[rec.alert] = (rec.preset, rec.by)
            return self._reevaluate()
        new = self.book.fold(rec)
        if new is None:
            return Changes()
        out = self._reevaluate()
        out.alert_states[rec.alert] = new
        return out

    # -- requests --------------------------------------------------------------------------

    def authorise(self, claims: TokenClaims, screen: str, req: Request, *, now: float,
                  server: str = "") -> ActionRecord | Rejected:
        """The record to store for ``req`` from a connection of ``claims`` on ``screen``,
        or why not (forbidden, unknown_alert, unknown_preset, invalid).

        An action with an ``idempotency_key`` gets the id :meth:`ActionRecord.retry_id`;
        if that id is already folded (the first try was stored after all), the same
        record is returned without checking again, so a retried ack is ``ok``, not
        ``already acknowledged``; storing it again changes nothing (the fold and the audit
        table skip a known id).
        """
        who = claims.operator
        if who is None:
            return Rejected(req.id, "forbidden",
                            f"a {claims.role} token may not act; an operator token is needed")
        if req.kind == "preset":
            layout = self.cfg.screens[screen]
            if req.preset is not None and req.preset != DEFAULT and req.preset not in layout.presets:
                return Rejected(req.id, "unknown_preset",
                                f"screen {screen!r} has presets {sorted(layout.presets)}")
            return ActionRecord.new("preset", screen, who, at=now, screen=screen, server=server,
                                    preset=req.preset)
        assert req.action is not None and req.alert is not None
        rid = None
        if req.idempotency_key is not None:
            rid = ActionRecord.retry_id(req.idempotency_key, who, req.action, req.alert,
                                        req.to, req.text)
            if self.book.folded(rid):
                return ActionRecord.new(req.action, req.alert, who, at=now, id=rid, to=req.to,
                                        text=req.text, screen=screen, server=server)
        if self.alerts.get(req.alert) is None and self.book.get(req.alert) is None:
            return Rejected(req.id, "unknown_alert", f"no alert {req.alert[:40]!r} on the wall")
        why = check(self.book.get(req.alert), req.action, to=req.to, text=req.text)
        if why is not None:
            return Rejected(req.id, "invalid", why)
        return ActionRecord.new(req.action, req.alert, who, at=now, id=rid, to=req.to,
                                text=req.text, screen=screen, server=server)

    # -- views -----------------------------------------------------------------------------

    def alert_states(self) -> dict[str, dict[str, Any]]:
        """Every held workflow state, as the snapshot's ``alert_states``."""
        return {aid: st.as_message() for aid, st in self.book.states.items()}

    def _candidates(self) -> _Union:
        return _Union(self.placed, self.tiles)

    def _reevaluate(self) -> Changes:
        out = Changes()
        tiles = self._candidates()
        alerts = list(self.alerts.alerts())
        for name, layout in self.cfg.screens.items():
            new = screen_view(layout, alerts, self.book.get, tiles,
                              override=self.overrides.get(name))
            old = self.views.get(name, ScreenView())
            if new != old:
                self.views[name] = new
                out.screens[name] = (old, new)
        return out


class _Union(Collection[str]):
    """Membership in either of two collections, without copying them."""

    def __init__(self, a: Collection[str], b: Collection[str]) -> None:
        self.a, self.b = a, b

    def __contains__(self, x: object) -> bool:
        return x in self.a or x in self.b

    def __iter__(self):  # type: ignore[no-untyped-def]
        yield from self.a
        yield from (x for x in self.b if x not in self.a)

    def __len__(self) -> int:
        return len(self.a) + sum(1 for x in self.b if x not in self.a)
