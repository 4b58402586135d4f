"""Rate limit of 'updated' rollups: latest wins per window, bounded in keys and in rate."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

__all__ = ["TokenBucket", "UpdateThrottle"]

T = TypeVar("T")


class TokenBucket:
    """At most ``per_s`` takes a second, with bursts of at most one second's worth.

    Starts full at the first call; refills continuously with the ``now`` it is given.
    """

    def __init__(self, per_s: float) -> None:
        self.per_s = per_s
        self.tokens = per_s
        self.refilled: float | None = None

    def _level(self, now: float) -> float:
        """The tokens there are at ``now`` (refilled since the last take, capped)."""
        if self.refilled is None:
            return self.tokens
        return min(self.per_s, self.tokens + max(0.0, now - self.refilled) * self.per_s)

    def available(self, now: float) -> int:
        """How many ``take`` calls would succeed now (takes nothing)."""
        return int(self._level(now))

    def take(self, now: float) -> bool:
        self.tokens = self._level(now)
        self.refilled = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class UpdateThrottle(Generic[T]):
    """Let an item through at most once per ``min_interval_s`` per key; keep the latest.

    ``offer`` returns the item when it may go now, else keeps it pending (replacing an
    older pending item of the same key). ``due`` returns the pending items whose interval
    has passed, oldest key first.

    Two bounds:

    * ``max_per_s`` (None: none): at most this many items a second in total, over all
      keys (a token bucket holding one second's worth). When many keys are busy the
      items wait longer instead (latest wins, counted in ``coalesced``): the update rate
      of a window then stretches beyond ``min_interval_s``, so the cost downstream
      (rollups produced, tiles rebuilt, rows upserted) stays bounded however many
      windows are open. Closed windows do not pass through here.
    * ``max_pending``: at most this many keys wait; beyond that an item is let through
      at once (counted in ``overflow``) rather than dropped, since a rollup must not be
      lost.
    """

    def __init__(self, *, min_interval_s: float = 0.2, max_pending: int = 100_000,
                 max_per_s: float | None = None) -> None:
        self.min_interval_s = min_interval_s
        self.max_pending = max_pending
        self.max_per_s = max_per_s
        self.bucket = TokenBucket(max_per_s) if max_per_s is not None else None
        self.pending: dict[Hashable, T] = {}
        self.last: dict[Hashable, float] = {}
        self.overflow = 0
        self.coalesced = 0
        self.budget_held = 0

    def _take(self, now: float) -> bool:
        return self.bucket is None or self.bucket.take(now)

    def offer(self, key: Hashable, item: T, now: float) -> T | None:
        if now - self.last.get(key, -1e18) >= self.min_interval_s:
            if self._take(now):
                self.last[key] = now
                self.pending.pop(key, None)
                return item
            self.budget_held += 1
        if key in self.pending:
            self.coalesced += 1
        elif len(self.pending) >= self.max_pending:
            self.overflow += 1
            return item
        self.pending[key] = item
        return None

    def due(self, now: float) -> list[T]:
        # Scan only as far as the budget goes: under load it is spent most of the time,
        # and thousands of windows wait.
        budget = self.bucket.available(now) if self.bucket is not None else len(self.pending)
        if budget < 1:
            return []
        out = []
        ready = []
        for k in self.pending:
            if now - self.last.get(k, -1e18) >= self.min_interval_s:
                ready.append(k)
                if len(ready) >= budget:
                    break
        for key in ready:
            if not self._take(now):
                break
            out.append(self.pending.pop(key))
            self.last[key] = now
        return out

    def drop_where(self, pred: Callable[[T], bool]) -> int:
        """Drop the held items for which ``pred`` is true (and their timers); how many."""
        keys = [k for k, item in self.pending.items() if pred(item)]
        for k in keys:
            self.forget(k)
        return len(keys)

    def forget(self, key: Hashable) -> None:
        """The key is finished (window closed): drop its pending item and its timer."""
        self.pending.pop(key, None)
        self.last.pop(key, None)
