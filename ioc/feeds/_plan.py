"""Replay timing (pure): recorded series become live events shifted to now.

A ``FeedPlan`` walks every series from a start point; one second of wall time covers
``speed`` seconds of the recording. An event's time is the wall-clock time at which it
is due (so the wall sees fresh data), its id says which recorded point it was.
E-government events (dossiers, results, documents) are drawn per agency at a rate.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from ..events import Event
from ._sources import Series

__all__ = ["AGENCIES", "EgovGenerator", "FeedPlan"]

AGENCIES = ("agency-planning", "agency-health", "agency-education", "agency-transport",
            "agency-finance", "agency-justice", "agency-labour", "agency-environment")


@dataclass
class FeedPlan:
    """Merge series into one time-ordered stream of (due wall time, Event)."""

    series: Sequence[Series]
    speed: float = 300.0
    source: str = "feed-sim"
    loop: bool = True

    def events(self, start_wall: float) -> Iterator[tuple[float, Event]]:
        if self.speed <= 0:
            raise ValueError(f"speed must be > 0, got {self.speed}")
        heap: list[tuple[float, int, int, int]] = []  # due, series index, point index, lap
        for si, s in enumerate(self.series):
            if s.points:
                heap.append((start_wall, si, 0, 0))
        heapq.heapify(heap)
        lap_offset = [0.0] * len(self.series)
        while heap:
            due, si, pi, lap = heapq.heappop(heap)
            s = self.series[si]
            t_rec, values = s.points[pi]
            yield due, Event(id=f"{s.entity}:{lap}:{pi}", source=self.source, type=s.type,
                             entity=s.entity, time=due, values=dict(values))
            if pi + 1 < len(s.points):
                gap = (s.points[pi + 1][0] - t_rec) / self.speed
                heapq.heappush(heap, (due + max(gap, 0.0), si, pi + 1, lap))
            elif self.loop:
                lap_offset[si] += s.span_s
                heapq.heappush(heap, (due + 1.0, si, 0, lap + 1))


class EgovGenerator:
    """Dossier, result and document events by agency at about ``rate`` per second in total.

    Each agency has its own share of dossiers received online (around 26%), results
    returned by public postal service and documents signed, so rankings differ.
    """

    def __init__(self, *, rate: float = 5.0, seed: int = 7, source: str = "egov-sim") -> None:
        self.rate = rate
        self.rnd = random.Random(seed)
        self.source = source
        self.shares = {a: (self.rnd.uniform(0.12, 0.42), self.rnd.uniform(0.2, 0.6),
                           self.rnd.uniform(0.5, 0.95)) for a in AGENCIES}
        self.n = 0

    def events(self, start_wall: float) -> Iterator[tuple[float, Event]]:
        due = start_wall
        while True:
            due += self.rnd.expovariate(self.rate) if self.rate > 0 else 3600.0
            agency = self.rnd.choice(AGENCIES)
            online, postal, signed = self.shares[agency]
            kind = self.rnd.random()
            attrs: dict[str, str | bool]
            self.n += 1
            if kind < 0.5:
                typ, attrs = "egov.dossier", {"channel": "online" if self.rnd.random() < online else "counter"}
            elif kind < 0.8:
                r = self.rnd.random()
                ch = "postal" if r < postal else ("online" if r < postal + 0.2 else "counter")
                typ, attrs = "egov.result", {"return_channel": ch}
            else:
                typ, attrs = "egov.document", {"signed": self.rnd.random() < signed}
            yield due, Event(id=f"{self.source}:{self.n}", source=self.source, type=typ,
                             entity=agency, time=due, values={"count": 1.0},
                             attributes=dict(attrs))
