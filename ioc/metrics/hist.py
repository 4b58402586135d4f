"""A plain histogram for hot paths: ``observe(v)`` is a bisect and two additions.

The services keep these next to their own counters (no registry, no lock, no
``prometheus_client`` import on the hot path); the collectors of ``ioc.metrics`` export
them at scrape time as Prometheus histograms. One writer (the thread that observes),
any number of readers: a scrape may see a bucket one observation ahead of the sum,
which Prometheus tolerates.
"""

from __future__ import annotations

import itertools
from bisect import bisect_left
from collections.abc import Sequence

__all__ = ["LATENCY_BUCKETS_S", "SIZE_BUCKETS_BYTES", "Histogram"]

#: Seconds, for request, batch and frame latencies (1 ms .. 30 s).
LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                     5.0, 10.0, 30.0)
#: Bytes, for message sizes (1 KiB .. 16 MiB).
SIZE_BUCKETS_BYTES = tuple(float(2**k) for k in range(10, 25, 2))


class Histogram:
    """Counts of observations per bucket (upper bounds ``bounds``, plus +Inf) and their sum.

    Args:
        bounds: increasing, finite upper bounds (a value equal to a bound falls in it,
            as Prometheus' ``le`` says).

    Raises:
        ValueError: ``bounds`` is empty or not strictly increasing.
    """

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float] = LATENCY_BUCKETS_S) -> None:
        b = tuple(float(x) for x in bounds)
        if not b or any(y <= x for x, y in itertools.pairwise(b)):
            raise ValueError(f"histogram bounds must be non-empty and strictly increasing, "
                             f"got {b!r}")
        self.bounds = b
        self.counts = [0] * (len(b) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        """Count ``value`` in the first bucket whose bound is >= it (+Inf otherwise)."""
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[str, float]]:
        """``(le, observations <= le)`` per bucket, ending with ``("+Inf", count)``."""
        counts = list(self.counts)  # one copy: a consistent set of buckets
        out: list[tuple[str, float]] = []
        total = 0
        for bound, n in zip((*self.bounds, float("inf")), counts, strict=True):
            total += n
            out.append(("+Inf" if bound == float("inf") else repr(bound), float(total)))
        return out
