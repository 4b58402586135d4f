"""Rate limit of 'updated' rollups: latest wins per window, bounded."""

from __future__ import annotations

from typing import Generic, TypeVar

__all__ = ["UpdateThrottle"]

T = TypeVar("T")


class UpdateThrottle(Generic[T]):
    """Let an item through at most once per ``min_interval_s`` per key; keep the latest.

    ``offer`` returns the item when it may go now, else keeps it pending (replacing an
    older pending item of the same key). ``due`` returns the pending items whose interval
    has passed. At most ``max_pending`` keys wait; beyond that an item is let through at
    once (counted in ``overflow``) rather than dropped, since a rollup must not be lost.
    """

    def __init__(self, *, min_interval_s: float = 0.2, max_pending: int = 100_000) -> None:
        self.min_interval_s = min_interval_s
        self.max_pending = max_pending
        self.pending: dict[str, T] = {}
        self.last: dict[str, float] = {}
        self.overflow = 0
        self.coalesced = 0

    def offer(self, key: str, item: T, now: float) -> T | None:
        if now - self.last.get(key, -1e18) >= self.min_interval_s:
            self.last[key] = now
            self.pending.pop(key, None)
            return item
        if key in self.pending:
            self.coalesced += 1
        elif len(self.pending) >= self.max_pending:
            self.overflow += 1
            return item
        self.pending[key] = item
        return None

    def due(self, now: float) -> list[T]:
        out = []
        for key in [k for k in self.pending if now - self.last.get(k, -1e18) >= self.min_interval_s]:
            out.append(self.pending.pop(key))
            self.last[key] = now
        return out

    def forget(self, key: str) -> None:
        """The key is finished (window closed): drop its pending item and its timer."""
        self.pending.pop(key, None)
        self.last.pop(key, None)
