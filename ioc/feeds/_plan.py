"""Replay timing (pure): recorded series become live events shifted to now.

A ``FeedPlan`` walks every series from a start point; one second of wall time covers
``speed`` seconds of the recording. An event's time is the wall-clock time at which it
is due (so the wall sees fresh data), its id says which recorded point it was.
E-government events (dossiers, results, documents) are drawn per unit at a rate; their
2020/2021 history is ``._history``.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from ..events import Event
from ._sources import Series

__all__ = ["AGENCIES", "EgovGenerator", "FeedPlan"]

from ._history import AGENCY_NAMES as AGENCIES  # the provincial agencies


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
    """Dossier, result and document events of the province's units at about ``rate`` per
    second in total (the live, current-year stream).

    The units are those of the history (``ioc.feeds._history.UNITS``: provincial
    agencies, districts, communes), drawn by volume, each at around its 2021 shares, so
    rankings differ. Attributes: ``province``, ``admin_level``, ``procedure`` and the
    type's own, as the history's. Ids are ``<source>:<start>:<n>`` (``start``: the wall
    second the stream began), so a restarted feed does not reuse its previous run's ids.
    """

    def __init__(self, *, rate: float = 5.0, seed: int = 7, source: str = "egov-sim") -> None:
        from ._history import PROCEDURES, PROVINCE, UNITS

        self.rate = rate
        self.rnd = random.Random(seed)
        self.source = source
        self.units = UNITS
        self.weights = [u.weight for u in UNITS]
        self.procedures = PROCEDURES
        self.province = PROVINCE
        self.shares = {u.entity: (u.online[2021], u.postal[2021], u.signed[2021]) for u in UNITS}
        self.n = 0

    def events(self, start_wall: float) -> Iterator[tuple[float, Event]]:
        due = start_wall
        run = int(start_wall)
        while True:
            due += self.rnd.expovariate(self.rate) if self.rate > 0 else 3600.0
            unit = self.rnd.choices(self.units, self.weights)[0]
            online, postal, signed = self.shares[unit.entity]
            kind = self.rnd.random()
            attrs: dict[str, str | bool]
            self.n += 1
            if kind < 0.5:
                typ, attrs = "egov.dossier", {"channel": "online" if self.rnd.random() < online else "counter"}
            elif kind < 0.8:
                r = self.rnd.random()
                ch = "postal" if r < postal else ("online" if r < postal + 0.1 else "counter")
                typ, attrs = "egov.result", {"return_channel": ch}
            else:
                typ, attrs = "egov.document", {"signed": self.rnd.random() < signed}
            attrs.update(province=self.province, admin_level=unit.admin_level,
                         procedure=self.rnd.choice(self.procedures))
            yield due, Event(id=f"{self.source}:{run}:{self.n}", source=self.source, type=typ,
                             entity=unit.entity, time=due, values={"count": 1.0},
                             attributes=dict(attrs))
