"""Alert rules (pure): threshold held for a duration, absence of data, rate of change.

One ``EntityRules`` per entity holds every rule's state and is stored by the rules
agent in a Faust table. Threshold and rate rules run in event time; absence rules run
in wall-clock time (``check_absence(now)``, called from the worker's timer).

Idempotency: an alert id is ``sha1(rule|entity|start window)``, so the same data gives
the same id; events not newer than the last one a rule saw (a replay, a redelivery)
are skipped; and the ids already raised or cleared are remembered (bounded), so the
same alert is never raised twice.
"""

from __future__ import annotations

import hashlib
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec
import orjson

from ..aggregate import window_start
from ..aggregate._window import MSGSPEC_UNDECODABLE as _UNDECODABLE
from ..config._streams import RuleSpec
from ..errors import InvalidRecord, load_json_state

__all__ = ["Alert", "EntityRules", "RuleState", "alert_id"]

_OPS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le}
_REMEMBER = 32  # alert ids remembered per rule and entity


def alert_id(rule: str, entity: str, start: int) -> str:
    """Deterministic alert id from the rule, the entity and the start window."""
    return hashlib.sha1(f"{rule}|{entity}|{start}".encode()).hexdigest()[:20]


@dataclass(frozen=True, slots=True)
class Alert:
    """An alert state change: raised, then cleared (same id)."""

    id: str
    rule: str
    entity: str
    metric: str | None
    severity: str
    state: Literal["raised", "cleared"]
    start: int
    raised_at: float
    cleared_at: float | None
    value: float | None
    message: str
    scope: str

    def as_dict(self) -> dict[str, object]:
        return {"id": self.id, "rule": self.rule, "entity": self.entity, "metric": self.metric,
                "severity": self.severity, "state": self.state, "start": self.start,
                "raised_at": self.raised_at, "cleared_at": self.cleared_at,
                "value": self.value, "message": self.message, "scope": self.scope}

    def to_bytes(self) -> bytes:
        return orjson.dumps(self.as_dict())

    @classmethod
    def from_bytes(cls, data: bytes) -> Alert:
        """Decode ``to_bytes`` output (a ``<ns>.alerts`` value), typed.

        Raises:
            InvalidRecord: ``data`` is not an alert (nothing else, whatever the bytes).
        """
        try:
            w = _alert_decoder.decode(data)
        except _UNDECODABLE as exc:
            raise InvalidRecord.undecodable(
                "an alert (JSON object with id, rule, entity, state...)", exc) from exc
        return cls(w.id, w.rule, w.entity, w.metric, w.severity, w.state, w.start,
                   w.raised_at, w.cleared_at, w.value, w.message, w.scope)


class _AlertWire(msgspec.Struct):
    """The fields of ``Alert.to_bytes``."""

    id: str
    rule: str
    entity: str
    metric: str | None
    severity: str
    state: Literal["raised", "cleared"]
    start: int
    raised_at: float
    cleared_at: float | None
    value: float | None
    message: str
    scope: str


_alert_decoder = msgspec.json.Decoder(_AlertWire)


@dataclass
class RuleState:
    """One rule's memory for one entity."""

    since: float | None = None      # event time the condition started to hold
    active: str | None = None       # id of the raised alert, if any
    active_start: int = 0
    raised_at: float = 0.0
    last_time: float | None = None  # newest event time seen by this rule
    last_value: float | None = None
    seen_at: float | None = None    # wall-clock arrival of the newest event (absence)
    done: list[list[str]] = field(default_factory=list)  # [id, state] already emitted
    skipped: int = 0

    def emitted(self, aid: str, state: str) -> bool:
        return [aid, state] in self.done

    def remember(self, aid: str, state: str) -> None:
        self.done.append([aid, state])
        del self.done[:-_REMEMBER]


def _message(rule: RuleSpec, entity: str, value: float | None) -> str:
    text = rule.message or f"{rule.id} at {{entity}}"
    try:
        return text.format(entity=entity, metric=rule.metric, value=value if value is not None else float("nan"))
    except (KeyError, ValueError, IndexError):
        return text


@dataclass
class EntityRules:
    """Every rule's state for one entity; ``evaluate`` per event, ``check_absence`` per tick."""

    entity: str
    states: dict[str, RuleState] = field(default_factory=dict)

    def _state(self, rule: RuleSpec) -> RuleState:
        st = self.states.get(rule.id)
        if st is None:
            st = self.states[rule.id] = RuleState()
        return st

    def _applies(self, rule: RuleSpec, type: str | None) -> bool:
        return self.entity.startswith(rule.entity_prefix) and (
            rule.event_type is None or rule.event_type == type)

    def _emit(self, out: list[Alert], st: RuleState, rule: RuleSpec, state: Literal["raised", "cleared"],
              t: float, value: float | None) -> None:
        aid = st.active or ""
        if st.emitted(aid, state):
            return
        st.remember(aid, state)
        out.append(Alert(aid, rule.id, self.entity, rule.metric, rule.severity, state,
                         st.active_start, st.raised_at, t if state == "cleared" else None,
                         value, _message(rule, self.entity, value), rule.scope))

    def _raise(self, out: list[Alert], st: RuleState, rule: RuleSpec, start_t: float, t: float,
               value: float | None) -> None:
        start = window_start(start_t, max(1, int(rule.for_s)))
        aid = alert_id(rule.id, self.entity, start)
        st.active, st.active_start, st.raised_at = aid, start, t
        self._emit(out, st, rule, "raised", t, value)

    def _clear(self, out: list[Alert], st: RuleState, rule: RuleSpec, t: float, value: float | None) -> None:
        if st.active is not None:
            self._emit(out, st, rule, "cleared", t, value)
        st.active = None

    def evaluate(self, rules: Sequence[RuleSpec], *, t: float, values: Mapping[str, float],
                 type: str | None = None, now: float | None = None) -> list[Alert]:
        """Feed one event (event time ``t``; ``now`` = wall clock at arrival)."""
        out: list[Alert] = []
        for rule in rules:
            if not self._applies(rule, type):
                continue
            st = self._state(rule)
            if rule.kind == "absence":
                if st.last_time is None or t > st.last_time:
                    st.last_time = t
                    st.seen_at = now if now is not None else t
                    self._clear(out, st, rule, t, None)
                continue
            v = values.get(rule.metric or "")
            if v is None:
                continue
            v = float(v)
            if st.last_time is not None and t <= st.last_time:
                st.skipped += 1  # replayed, redelivered or out of order: never re-evaluated
                continue
            if rule.kind == "threshold":
                cond = _OPS[rule.op](v, rule.value)
                shown = v
            else:  # rate
                if st.last_value is None or st.last_time is None:
                    cond, shown = False, 0.0
                else:
                    shown = (v - st.last_value) / (t - st.last_time) * rule.rate_per_s
                    cond = _OPS[rule.op](shown, rule.value)
            st.last_time, st.last_value = t, v
            if cond:
                if st.since is None:
                    st.since = t
                if st.active is None and t - st.since >= rule.for_s:
                    self._raise(out, st, rule, st.since, t, shown)
            else:
                st.since = None
                self._clear(out, st, rule, t, shown)
        return out

    def check_absence(self, rules: Sequence[RuleSpec], now: float) -> list[Alert]:
        """Raise absence alerts for rules whose entity has been silent ``for_s`` (wall clock)."""
        out: list[Alert] = []
        for rule in rules:
            if rule.kind != "absence" or not self._applies(rule, None):
                continue
            st = self.states.get(rule.id)
            if st is None or st.seen_at is None or st.active is not None or st.last_time is None:
                continue
            if now - st.seen_at >= rule.for_s:
                self._raise(out, st, rule, st.last_time, now, None)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"e": self.entity, "s": {
            k: [s.since, s.active, s.active_start, s.raised_at, s.last_time, s.last_value,
                s.seen_at, s.done, s.skipped] for k, s in self.states.items()}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EntityRules:
        """From ``to_dict`` output (a ``p`` key of older versions is ignored); raises what a
        wrong shape raises (``JSON_SHAPE_ERRORS``)."""
        er = cls(d["e"], {})
        for k, v in d["s"].items():
            er.states[k] = RuleState(*v)
        return er

    def to_bytes(self) -> bytes:
        return orjson.dumps(self.to_dict())

    @classmethod
    def from_bytes(cls, data: bytes) -> EntityRules:
        """Decode ``to_bytes`` output (a state changelog record).

        Raises:
            InvalidRecord: ``data`` is not the rule states of an entity (nothing else, whatever
                the bytes).
        """
        return load_json_state(data, cls.from_dict, "the rule states of an entity")
