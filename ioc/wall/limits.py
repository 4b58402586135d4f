"""Per-connection request limit (token bucket), pure: the clock is passed in."""

from __future__ import annotations

__all__ = ["RequestBucket"]


class RequestBucket:
    """At most ``per_s`` requests a second on average, bursts of ``burst``.

    Starts full. ``refused_in_a_row`` counts refusals since the last accepted request
    (the server closes a connection that keeps sending past its limit).
    """

    __slots__ = ("burst", "per_s", "refused_in_a_row", "tokens", "updated")

    def __init__(self, per_s: float, burst: int) -> None:
        if per_s <= 0 or burst < 1:
            raise ValueError(f"expected per_s > 0 and burst >= 1, got {per_s}, {burst}")
        self.per_s = per_s
        self.burst = burst
        self.tokens = float(burst)
        self.updated: float | None = None
        self.refused_in_a_row = 0

    def take(self, now: float) -> bool:
        """Take one token at monotonic time ``now``; False (and counted) when none is left."""
        if self.updated is not None:
            self.tokens = min(self.burst, self.tokens + max(0.0, now - self.updated) * self.per_s)
        self.updated = now
        if self.tokens < 1:
            self.refused_in_a_row += 1
            return False
        self.tokens -= 1
        self.refused_in_a_row = 0
        return True
