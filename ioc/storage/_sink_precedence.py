"""Which sink tables go first while they are behind (pure: the caller passes the time).

After a database outage every table of ``ioc sink`` has a backlog, and their writers
share the sink's process and the database: drained together, each gets a share of
both, so the events table (the record an operator queries) is current only when the
derived tables (rollups, alerts, detections... re-emitted at several times its row
rate in the fault suite) are too. With a ``Precedence``, the other tables wait while a
*first* table is behind, then drain after it.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["Precedence"]


class Precedence:
    """The tables of ``first`` go first while one of them is behind.

    The runner of a first table says after each batch whether it is behind
    (``report``). The runner of any other table asks ``hold`` before it starts a batch,
    and again while it waits: True while a first table is behind, but at most
    ``hold_s`` in a row; after a hold that long it is not held again for ``hold_s``, so
    a first table that never catches up (more input than the database takes) leaves
    the others half of the time, never none. No I/O, no clock of its own.
    """

    def __init__(self, first: Iterable[str], hold_s: float) -> None:
        if hold_s <= 0:
            raise ValueError(f"hold_s must be > 0, got {hold_s}")
        self.first = frozenset(first)
        self.hold_s = hold_s
        self._behind: set[str] = set()
        self._held_since: dict[str, float] = {}
        self._free_until: dict[str, float] = {}

    def report(self, name: str, behind: bool) -> None:
        """A runner of table ``name`` is (``behind``) or is not behind its topic; only
        the first tables' reports count."""
        if name not in self.first:
            return
        if behind:
            self._behind.add(name)
        else:
            self._behind.discard(name)

    @property
    def behind(self) -> frozenset[str]:
        """The first tables behind now."""
        return frozenset(self._behind)

    def hold(self, name: str, now: float) -> bool:
        """Whether table ``name`` waits at ``now`` (never a first table)."""
        if name in self.first or not self._behind or now < self._free_until.get(name, now):
            self._held_since.pop(name, None)
            return False
        since = self._held_since.setdefault(name, now)
        if now - since >= self.hold_s:
            del self._held_since[name]
            self._free_until[name] = now + self.hold_s
            return False
        return True
