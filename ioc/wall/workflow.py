"""An alert's operator workflow, pure: acknowledge, assign, comment, close.

The workflow of one alert is folded from its actions in order (:func:`apply`), the way
every wall replica folds the ``<ns>.alerts.actions`` partition that holds them, so all
replicas reach the same state. :func:`check` decides whether a new action is allowed
*now* (the server refuses the others before they are stored); :func:`apply` is total
(an action that is no longer allowed when it is folded, because another replica's
action came first, changes nothing), so a rebuild never fails on its own history.

Transitions::

    open --ack--> acked            (first ack wins; a second ack is refused)
    open|acked --assign(to)--> assigned_to = to   (re-assigning is allowed)
    any --comment(text)--> one more comment (the last ``MAX_COMMENTS`` are kept here;
                                             every one is in the audit table)
    open|acked --close--> closed   (a close also acknowledges, by the closer)
    closed: only comments

An :class:`ActionRecord` is the stored form (JSON, the topic's value and the audit
table's row), with the action id that makes storing it idempotent. An action sent with
the client's ``idempotency_key`` gets an id derived from it (:meth:`ActionRecord.retry_id`),
so a retry of it (after an ``unavailable`` answer) is the same record: folded once,
one audit row.
"""

from __future__ import annotations

import hashlib
import math
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import orjson

from ..errors import InvalidRecord

__all__ = [
    "ACTIONS",
    "MAX_COMMENTS",
    "MAX_COMMENT_CHARS",
    "ActionRecord",
    "AlertWorkflow",
    "WorkflowBook",
    "apply",
    "check",
]

Action = Literal["ack", "assign", "comment", "close"]
ACTIONS: tuple[Action, ...] = ("ack", "assign", "comment", "close")
MAX_COMMENT_CHARS = 500
MAX_COMMENTS = 20
MAX_NAME_CHARS = 64
MAX_ALERT_ID_CHARS = 120


@dataclass(frozen=True, slots=True)
class Comment:
    by: str
    at: float
    text: str


@dataclass(frozen=True, slots=True)
class AlertWorkflow:
    """What operators did with one alert."""

    acked_by: str | None = None
    acked_at: float | None = None
    assigned_to: str | None = None
    comments: tuple[Comment, ...] = ()
    closed: bool = False
    closed_by: str | None = None
    closed_at: float | None = None
    updated_at: float = 0.0

    @property
    def acked(self) -> bool:
        return self.acked_by is not None

    def as_message(self) -> dict[str, Any]:
        """The ``state`` of an ``alert_state`` message (docs/wall.md, protocol v2)."""
        return {"acked_by": self.acked_by, "acked_at": self.acked_at,
                "assigned_to": self.assigned_to,
                "comments": [{"by": c.by, "at": c.at, "text": c.text} for c in self.comments],
                "closed": self.closed, "closed_by": self.closed_by,
                "closed_at": self.closed_at}


@dataclass(frozen=True, slots=True)
class ActionRecord:
    """One stored operator action (or a preset switch, ``action == "preset"``).

    ``alert`` is the alert id (for a preset switch: the screen name, ``preset`` the
    preset or None); ``by`` the operator's name from the token; ``at`` the server's
    time; ``screen``/``server`` where it was made.
    """

    id: str
    action: str
    alert: str
    by: str
    at: float
    to: str | None = None
    text: str | None = None
    screen: str = ""
    server: str = ""
    preset: str | None = None

    @classmethod
    def new(cls, action: str, alert: str, by: str, *, at: float, id: str | None = None,
            **kw: Any) -> ActionRecord:
        """A record with ``id`` (default: a random one)."""
        return cls(id or uuid.uuid4().hex, action, alert, by, at, **kw)

    @staticmethod
    def retry_id(key: str, by: str, action: str, alert: str, to: str | None = None,
                 text: str | None = None) -> str:
        """The id of an action sent with idempotency key ``key``: the same for a retry
        (same operator, action, alert, assignee and text), another for anything else,
        so a key reused for another action or by another operator merges nothing."""
        h = hashlib.sha256()
        for part in (key, by, action, alert, to or "", text or ""):
            h.update(part.encode())
            h.update(b"\x00")
        return "k" + h.hexdigest()[:40]

    @property
    def key(self) -> bytes:
        """The Kafka key: the alert id (a preset switch: ``screen:<name>``)."""
        return (f"screen:{self.alert}" if self.action == "preset" else self.alert).encode()

    def to_bytes(self) -> bytes:
        return orjson.dumps({"id": self.id, "action": self.action, "alert": self.alert,
                             "by": self.by, "at": self.at, "to": self.to, "text": self.text,
                             "screen": self.screen, "server": self.server,
                             "preset": self.preset})

    @classmethod
    def from_bytes(cls, data: bytes | None) -> ActionRecord:
        """Decode a ``<ns>.alerts.actions`` value.

        Raises:
            InvalidRecord: anything but an action record (nothing else, whatever the bytes).
        """
        try:
            d = orjson.loads(data)  # type: ignore[arg-type]
        except (orjson.JSONDecodeError, TypeError) as exc:
            raise InvalidRecord("undecodable", f"expected an action record (JSON object), got: {exc}") from exc
        if not isinstance(d, dict):
            raise InvalidRecord("undecodable", f"expected an action record (JSON object), got "
                                f"{type(d).__name__}")

        def text(name: str, *, limit: int, optional: bool = False) -> str | None:
            v = d.get(name)
            if v is None and optional:
                return None
            if not isinstance(v, str) or len(v) > limit or (not v and not optional):
                raise InvalidRecord("undecodable", f"action record {name}: expected a string of at most "
                                    f"{limit} characters, got {str(v)[:40]!r}")
            return v

        at = d.get("at")
        if isinstance(at, bool) or not isinstance(at, int | float) or not math.isfinite(at):
            raise InvalidRecord("undecodable", f"action record at: expected a finite number, got {str(at)[:40]!r}")
        action = text("action", limit=16)
        if action not in (*ACTIONS, "preset"):
            raise InvalidRecord("undecodable", f"action record action: expected one of "
                                f"{[*ACTIONS, 'preset']}, got {action!r}")
        return cls(
            id=text("id", limit=64) or "", action=action or "",
            alert=text("alert", limit=MAX_ALERT_ID_CHARS) or "",
            by=text("by", limit=MAX_NAME_CHARS) or "", at=float(at),
            to=text("to", limit=MAX_NAME_CHARS, optional=True),
            text=text("text", limit=MAX_COMMENT_CHARS, optional=True),
            screen=text("screen", limit=64, optional=True) or "",
            server=text("server", limit=128, optional=True) or "",
            preset=text("preset", limit=64, optional=True),
        )


def check(state: AlertWorkflow | None, action: str, *, to: str | None = None,
          text: str | None = None) -> str | None:
    """Why ``action`` is not allowed on an alert in ``state`` now, or None when it is."""
    st = state or AlertWorkflow()
    if action not in ACTIONS:
        return f"action: expected one of {list(ACTIONS)}, got {action!r}"
    if action == "comment":
        if not text or not text.strip() or len(text) > MAX_COMMENT_CHARS:
            return f"text: expected 1-{MAX_COMMENT_CHARS} characters"
        return None
    if st.closed:
        return f"the alert is closed (by {st.closed_by}); only comments are allowed"
    if action == "ack" and st.acked:
        return f"already acknowledged by {st.acked_by}"
    if action == "assign" and (not to or not to.strip() or len(to) > MAX_NAME_CHARS):
        return f"to: expected an operator name of 1-{MAX_NAME_CHARS} characters"
    return None


def apply(state: AlertWorkflow | None, rec: ActionRecord) -> AlertWorkflow:
    """The state after ``rec``; an action :func:`check` would refuse changes nothing."""
    st = state or AlertWorkflow()
    if check(st, rec.action, to=rec.to, text=rec.text) is not None:
        return st
    if rec.action == "ack":
        return replace(st, acked_by=rec.by, acked_at=rec.at, updated_at=rec.at)
    if rec.action == "assign":
        return replace(st, assigned_to=rec.to, updated_at=rec.at)
    if rec.action == "comment":
        comments = (*st.comments, Comment(rec.by, rec.at, rec.text or ""))[-MAX_COMMENTS:]
        return replace(st, comments=comments, updated_at=rec.at)
    # close: also an acknowledgement when nobody acknowledged before
    return replace(st, closed=True, closed_by=rec.by, closed_at=rec.at,
                   acked_by=st.acked_by or rec.by,
                   acked_at=st.acked_at if st.acked else rec.at, updated_at=rec.at)


@dataclass
class WorkflowBook:
    """Workflow state per alert id, folded from action records; bounded.

    ``fold`` ignores an action id it has already folded (a producer retry, the same
    record read twice); at most ``seen_ids`` ids are remembered. Beyond ``max_alerts``
    states, the oldest closed one (else the oldest) is forgotten, counted in
    ``evicted``.
    """

    max_alerts: int = 10_000
    seen_ids: int = 100_000
    states: OrderedDict[str, AlertWorkflow] = field(default_factory=OrderedDict)
    evicted: int = 0
    duplicates: int = 0
    _seen: OrderedDict[str, None] = field(default_factory=OrderedDict)

    def get(self, alert: str) -> AlertWorkflow | None:
        return self.states.get(alert)

    def folded(self, action_id: str) -> bool:
        """Whether a record with this id was folded (among the last ``seen_ids``)."""
        return action_id in self._seen

    def fold(self, rec: ActionRecord) -> AlertWorkflow | None:
        """Apply ``rec``; the new state when it changed, else None (duplicate, no-op)."""
        if rec.id in self._seen:
            self.duplicates += 1
            return None
        self._seen[rec.id] = None
        while len(self._seen) > self.seen_ids:
            self._seen.popitem(last=False)
        old = self.states.get(rec.alert)
        new = apply(old, rec)
        if new == old or (old is None and new == AlertWorkflow()):
            return None
        self.states[rec.alert] = new
        self.states.move_to_end(rec.alert)
        while len(self.states) > self.max_alerts:
            victim = next((k for k, s in self.states.items() if s.closed), None)
            self.states.pop(victim if victim is not None else next(iter(self.states)))
            self.evicted += 1
        return new
