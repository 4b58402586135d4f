"""When a consumer that keeps polling has been outside its group for too long.

Seen after broker stops: librdkafka consumers that polled for minutes with no member id
and never sent a JoinGroup again (docs/reliability.md, "Broker stop"). The owner of such
a consumer replaces it (the sink) or fails its stage (the batch stages), so something
must decide *when*, without firing while the broker is simply away or while a group
forms for the first time.

The rule (pure; the caller passes the monotonic clock and what it saw):

- a consumer that has never had a member id gets ``first_join_s`` to get one (a first
  join under load, an initial rebalance delay);
- a consumer that had one and lost it gets ``rejoin_s``, counted from the later of the
  moment it lost its id and the last time the broker was seen unreachable. The owner
  reports that with ``broker_down``: an error event its poll returned, and a metadata
  probe (``list_topics`` with a short timeout) that failed; it probes every
  ``probe_every_s`` while the consumer is outside its group (``probe_due``), because
  librdkafka reports a broker it cannot reach once, not at every reconnect attempt.
  So the bound runs from when the broker answers again, not from when it went away: a
  30 s broker stop no longer uses up the bound while nothing could join.
- the bound counts only time the owner was watching: when ``overdue`` was not called
  for more than ``gap_s`` (the owner's loop was blocked: a commit that waited out a
  broker stop, a send retried until the broker was back), nothing is known about that
  time (no error event was read, no probe made), so the bound counts afresh from the
  first call after the gap. Seen in a broker-stop run: the sink's events loop waited
  40 s in a commit while the broker was away; its first check after it replaced the
  consumer at once (the last broker-down sighting was from before the wait), and the
  new consumer then waited out the abandoned one's session (~10 s) to get partitions.
"""

from __future__ import annotations

__all__ = ["MembershipWatch"]


class MembershipWatch:
    """Tracks one consumer's membership as seen by its own poll loop.

    Invariant: ``overdue`` returns a value only while the consumer has no member id and
    the applicable bound has passed since the latest of (id lost or first seen without
    one, last error event, the first call after a gap of more than ``gap_s`` between
    two calls).
    """

    __slots__ = ("_had_member", "_last_call", "_last_error", "_last_probe", "_outside_since",
                 "first_join_s", "gap_s", "probe_every_s", "rejoin_s")

    def __init__(self, *, first_join_s: float = 60.0, rejoin_s: float = 12.0,
                 probe_every_s: float = 2.0, gap_s: float = 5.0) -> None:
        if first_join_s <= 0 or rejoin_s <= 0 or gap_s <= 0:
            raise ValueError(f"expected positive bounds, got first_join_s={first_join_s}, "
                             f"rejoin_s={rejoin_s}, gap_s={gap_s}")
        self.first_join_s = first_join_s
        self.rejoin_s = rejoin_s
        self.probe_every_s = probe_every_s
        self.gap_s = gap_s
        self._last_probe = float("-inf")
        self._had_member = False
        self._outside_since: float | None = None
        self._last_error: float | None = None
        self._last_call: float | None = None

    def broker_down(self, now: float) -> None:
        """The broker was seen unreachable at ``now`` (an error event, a failed probe)."""
        self._last_error = now

    def probe_due(self, now: float) -> bool:
        """Whether to probe the broker now: only while outside the group, every
        ``probe_every_s``. Returning True counts as the probe having been made."""
        if self._outside_since is None or now - self._last_probe < self.probe_every_s:
            return False
        self._last_probe = now
        return True

    def reset(self) -> None:
        """A new consumer replaced the old one: it starts as never joined."""
        self._had_member = False
        self._outside_since = None
        self._last_error = None
        self._last_call = None

    def overdue(self, has_member: bool, now: float) -> float | None:
        """Seconds outside the group when the bound has passed, else None."""
        if self._last_call is not None and now - self._last_call > self.gap_s:
            # not watched in between: count afresh from now (as if the broker was seen
            # away just now; it may have been, for all the owner could tell)
            self._last_error = now if self._last_error is None else max(self._last_error, now)
        self._last_call = now
        if has_member:
            self._had_member = True
            self._outside_since = None
            return None
        if self._outside_since is None:
            self._outside_since = now
            return None
        start = self._outside_since
        if self._last_error is not None and self._last_error > start:
            start = self._last_error
        bound = self.rejoin_s if self._had_member else self.first_join_s
        if now - start > bound:
            return now - self._outside_since
        return None
