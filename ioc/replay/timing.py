"""Replay timing as a pure class: when is the next record due?

No clock, no sleep in here: the caller passes ``now`` and sleeps for what ``delay``
returns, so the class is tested with a fake clock.
"""

from __future__ import annotations

import math

__all__ = ["MAX_SPEED", "MIN_SPEED", "ReplayPacer", "parse_speed"]

MIN_SPEED = 0.25
MAX_SPEED = 1000.0


def parse_speed(text: str) -> float:
    """``"max"`` -> ``inf``; otherwise a factor between 0.25 and 1000 (``"2"``, ``"0.5x"``).

    Raises:
        ValueError: saying what was expected and what arrived.
    """
    s = text.strip().lower()
    if s in ("max", "inf"):
        return math.inf
    s = s.removesuffix("x")
    try:
        v = float(s)
    except ValueError:
        raise ValueError(f"speed: expected 'max' or a number from {MIN_SPEED} to {MAX_SPEED:g}, "
                         f"got {text!r}") from None
    if not MIN_SPEED <= v <= MAX_SPEED:
        raise ValueError(f"speed: expected 'max' or a number from {MIN_SPEED} to {MAX_SPEED:g}, got {v:g}")
    return v


class ReplayPacer:
    """Keeps the recording's inter-record timing, scaled by ``speed``.

    The first record is due at once; record ``i`` is due ``(t_i - t_0) / speed`` seconds
    after the first one was released. Record times that go backwards (several partitions
    interleaved) never make a record due before the previous one: the running maximum of
    record times is used, so release order is file order. ``max_gap_s`` shortens idle
    gaps of the recording (at record scale) to at most that long; ``None`` keeps them.
    ``speed=inf`` releases everything at once.
    """

    def __init__(self, speed: float = 1.0, *, max_gap_s: float | None = None) -> None:
        if not (speed == math.inf or MIN_SPEED <= speed <= MAX_SPEED):
            raise ValueError(f"speed: expected {MIN_SPEED}..{MAX_SPEED:g} or inf, got {speed}")
        if max_gap_s is not None and max_gap_s < 0:
            raise ValueError(f"max_gap_s: expected >= 0 or None, got {max_gap_s}")
        self.speed = speed
        self.max_gap_ns = None if max_gap_s is None else int(max_gap_s * 1e9)
        self._wall0: float | None = None
        self._rec0 = 0
        self._last = 0
        self._skipped_ns = 0
        self.max_lag_s = 0.0

    def restart(self) -> None:
        """Forget the anchor (next loop of ``--loop``): the next record is due at once."""
        self._wall0 = None
        self._skipped_ns = 0

    def delay(self, record_ns: int, now: float) -> float:
        """Seconds to wait at wall time ``now`` before releasing a record stamped ``record_ns``.

        Returns 0 when the record is due (or late: ``max_lag_s`` keeps the worst lateness).
        Call once per record, in release order.
        """
        if self.speed == math.inf:
            return 0.0
        if self._wall0 is None:
            self._wall0 = now
            self._rec0 = self._last = record_ns
            return 0.0
        if record_ns > self._last:
            gap = record_ns - self._last
            if self.max_gap_ns is not None and gap > self.max_gap_ns:
                self._skipped_ns += gap - self.max_gap_ns
            self._last = record_ns
        due = self._wall0 + (self._last - self._rec0 - self._skipped_ns) / 1e9 / self.speed
        wait = due - now
        if wait <= 1e-6:  # float rounding after a sleep of exactly the wait: due
            self.max_lag_s = max(self.max_lag_s, -wait)
            return 0.0
        return wait
