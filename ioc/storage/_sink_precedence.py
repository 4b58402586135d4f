"""Which sink tables go first while they are behind (pure: the caller passes the time).

After a database outage every table of ``ioc sink`` has a backlog, and their writers
share the sink's process and the database: drained together, each gets a share of
both, so the events table (the record an operator queries) is current only when the
derived tables (rollups, alerts, detections... re-emitted at several times its row
rate in the fault suite) are too. With a ``Precedence``, the other tables wait while a
*first* table is behind, then drain after it. Draining, they take the CPU and the
database the first table needs to stay current (seen on 2 cores: its writes ten times
slower beside them, its backlog back above two seconds of input): so for ``settle_s``
after a first table caught up, they also wait whenever its records still to store
reach ``settle_rows``, and drain in the time it leaves them; and they write at most
``settle_duty`` of that time (``pause_after``): drained at full pace between two such
waits, they still slowed its writes sixfold and left the workers short of CPU, the
pipeline's backlog above two seconds of input for another ~10 s (docs/reliability.md,
session 12). That duty is the others' together (``start_write``, ``paced_until``): each
at its own duty, two large tables (rollups, alerts) wrote ~65% of the time between them
and the events' writes slowed to a fifth of their rate (session 13).
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
    the others half of the time, never none. For ``settle_s`` after a first table
    stopped being behind (it is *settling*), ``hold`` is also True while the last
    ``pending`` it reported is ``settle_rows`` or more (the same bound in a row
    applies). While a first table is settling, the other tables write one at a time
    (``start_write``: the others wait until it ends, at most ``hold_s``) and after each
    write all of them wait (``pause_after``, ``paced_until``): their writes together
    take at most ``settle_duty`` of the time. No I/O, no clock of its own.
    """

    def __init__(self, first: Iterable[str], hold_s: float, *, settle_s: float = 0.0,
                 settle_rows: int = 0, settle_duty: float = 1.0) -> None:
        if hold_s <= 0:
            raise ValueError(f"hold_s must be > 0, got {hold_s}")
        if settle_s < 0 or settle_rows < 0:
            raise ValueError(f"settle_s and settle_rows must be >= 0, got {settle_s}, "
                             f"{settle_rows}")
        if not 0 < settle_duty <= 1:
            raise ValueError(f"settle_duty must be in (0, 1], got {settle_duty}")
        self.first = frozenset(first)
        self.hold_s = hold_s
        self.settle_s = settle_s
        self.settle_rows = settle_rows
        self.settle_duty = settle_duty
        self._behind: set[str] = set()
        self._held_since: dict[str, float] = {}
        self._free_until: dict[str, float] = {}
        self._pending: dict[str, int] = {}
        self._settle_until: dict[str, float] = {}
        self._others_paced_until = 0.0
        self._writing: tuple[str, float] | None = None  # (table, since): start_write

    def report(self, name: str, behind: bool | None, *, pending: int | None = None,
               now: float | None = None) -> None:
        """A runner of table ``name`` is (``behind``) or is not behind its topic (None:
        no change), with ``pending`` records still to store when known; only the first
        tables' reports count. ``now``: when a table stops being behind, its settling
        begins (without it, no settling)."""
        if name not in self.first:
            return
        if pending is not None:
            self._pending[name] = pending
        if behind:
            self._behind.add(name)
        elif behind is False and name in self._behind:
            self._behind.discard(name)
            if now is not None and self.settle_s > 0:
                self._settle_until[name] = now + self.settle_s

    def settling(self, now: float) -> frozenset[str]:
        """The first tables settling at ``now``: caught up less than ``settle_s`` ago."""
        return frozenset(n for n, until in self._settle_until.items() if now < until)

    def pause_after(self, name: str, wrote_s: float, now: float) -> float:
        """Seconds the other tables wait after a write of table ``name`` that took
        ``wrote_s`` and ended at ``now``: while a first table is settling, ``wrote_s *
        (1 - settle_duty) / settle_duty`` (so their writes take at most ``settle_duty``
        of the time), at most ``hold_s``; otherwise, and for a first table, 0. Every
        other table (``name`` too) waits until ``paced_until`` says. Ends the write
        ``start_write`` began (call it with ``wrote_s`` 0 for a write that failed)."""
        if self._writing is not None and self._writing[0] == name:
            self._writing = None
        if name in self.first or self.settle_duty >= 1 or not wrote_s > 0 or \
                not self.settling(now):
            return 0.0
        pause = min(wrote_s * (1 - self.settle_duty) / self.settle_duty, self.hold_s)
        self._others_paced_until = max(self._others_paced_until, now + pause)
        return pause

    def start_write(self, name: str, now: float) -> None:
        """Table ``name`` (not a first one) begins a write at ``now``: while a first
        table is settling, the other tables wait until it ends (``pause_after``), or
        for ``hold_s`` at most."""
        if name not in self.first and self.settle_duty < 1 and self.settling(now):
            self._writing = (name, now)

    def paced_until(self, name: str, now: float) -> float:
        """Until when table ``name`` waits before its next write, while a first table
        is settling: while another table's write runs (``start_write``), the latest
        end it may have (``hold_s`` after its start: ask again meanwhile); then until
        the end of the pause after the last write (``pause_after``). 0.0 (no wait)
        otherwise and for a first table."""
        if name in self.first or self.settle_duty >= 1 or not self.settling(now):
            return 0.0
        w = self._writing
        if w is not None and w[0] != name and now < w[1] + self.hold_s:
            return w[1] + self.hold_s
        return self._others_paced_until if now < self._others_paced_until else 0.0

    def _waiting_for(self, now: float) -> bool:
        if self._behind:
            return True
        return any(self._pending.get(n, 0) >= self.settle_rows for n in self.settling(now))

    @property
    def behind(self) -> frozenset[str]:
        """The first tables behind now."""
        return frozenset(self._behind)

    def hold(self, name: str, now: float) -> bool:
        """Whether table ``name`` waits at ``now`` (never a first table)."""
        if name in self.first or now < self._free_until.get(name, now) or \
                not self._waiting_for(now):
            self._held_since.pop(name, None)
            return False
        since = self._held_since.setdefault(name, now)
        if now - since >= self.hold_s:
            del self._held_since[name]
            self._free_until[name] = now + self.hold_s
            return False
        return True
