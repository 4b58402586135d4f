"""E-government history (pure, deterministic): 2020 and 2021 events of the province's units.

``egov_history(scale)`` yields dossier, result and document events, in time order, for
the provincial agencies, districts and communes of ``UNITS`` over 2020 and 2021, with
each event's historical time. The counts are allocated exactly (largest remainder, no
sampling), so at any ``scale`` the province's shares are the published ones within
rounding (``PUBLISHED``), every district and provincial agency signs more than 80% of
its documents, and ``RISING_DISTRICT`` is last of the districts in 2020 and third in
2021 on the total score of ``deploy/scorecards.example.yaml``. Event ids are a function
of ``(scale, seed, year, unit, type, index)``: publishing the same history twice sends
the same ids. Figures and design: docs/scorecards.md ("Demo data").
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from ..events import Event

__all__ = ["DISTRICTS", "HISTORY_YEARS", "PROCEDURES", "PUBLISHED", "RISING_DISTRICT", "UNITS",
           "Unit", "YearFigures", "egov_history", "history_counts", "largest_remainder"]

PROVINCE = "province"
PROCEDURES = ("birth-registration", "land-use-certificate", "business-registration",
              "construction-permit", "judicial-record")
_PROCEDURE_WEIGHTS = (0.3, 0.25, 0.2, 0.15, 0.1)
HISTORY_YEARS = (2020, 2021)


@dataclass(frozen=True, slots=True)
class YearFigures:
    """A year's province-wide published figures (full scale)."""

    dossiers: int          # all dossiers received
    online: int            # of which online
    postal_share: float    # share of results returned by public postal service


# 10,996 of 229,083 = 4.80%; 57,646 of 219,187 = 26.30% (the totals are chosen to give the
# published shares; tests/unit/test_scorecard.py uses the same).
PUBLISHED = {2020: YearFigures(229_083, 10_996, 0.30), 2021: YearFigures(219_187, 57_646, 0.60)}
RESULTS_PER_DOSSIER = 0.3    # results returned, per dossier received (volume only)
DOCUMENTS_PER_DOSSIER = 0.3  # outgoing documents, per dossier received


@dataclass(frozen=True, slots=True)
class Unit:
    """A reporting unit (the event entity) and its target shares per year (0..1).

    ``online`` and ``postal`` of districts are kept as given; the other units' are
    scaled together so the province totals are the published ones.
    """

    entity: str
    admin_level: str   # province | district | commune
    weight: float      # relative dossier volume
    online: dict[int, float]
    postal: dict[int, float]
    signed: dict[int, float]


DISTRICTS = tuple(f"district-{i}" for i in range(1, 10))
RISING_DISTRICT = "district-7"
# district -> ((online, postal, signed) 2020, (online, postal, signed) 2021), percent.
# Scored with the example's rules (online linear to 20% / 40%, postal thresholds 30/45/60,
# signed bands): 2020 district-7 scores 1.5 + 0 + 20 = 21.5, every other district at least
# 3.5 + 0 + 20; 2021 district-1 20 + 10 + 20 = 50, district-2 19 + 10 + 20 = 49, district-7
# 17 + 10 + 20 = 47, every other district at most 13 + 10 + 20 = 43.
_DISTRICT_SHARES: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "district-1": ((8.0, 38.0, 93.0), (40.0, 68.0, 95.0)),
    "district-2": ((7.0, 35.0, 91.0), (38.0, 68.0, 94.0)),
    "district-3": ((6.0, 33.0, 89.0), (26.0, 62.0, 92.0)),
    "district-4": ((5.5, 31.0, 88.0), (24.0, 58.0, 90.0)),
    "district-5": ((5.0, 28.0, 87.0), (22.0, 55.0, 90.0)),
    "district-6": ((4.5, 26.0, 86.0), (20.0, 52.0, 89.0)),
    "district-7": ((1.5, 22.0, 85.0), (34.0, 66.0, 90.0)),
    "district-8": ((4.0, 25.0, 86.0), (19.0, 50.0, 88.0)),
    "district-9": ((3.5, 24.0, 85.0), (18.0, 48.0, 88.0)),
}
AGENCY_NAMES = ("agency-planning", "agency-health", "agency-education", "agency-transport",
                "agency-finance", "agency-justice", "agency-labour", "agency-environment")
COMMUNES = tuple(f"commune-{i:02d}" for i in range(1, 13))


def _units(seed: int = 16) -> tuple[Unit, ...]:
    rnd = random.Random(f"egov-units:{seed}")
    out = []
    for a in AGENCY_NAMES:
        out.append(Unit(a, "province", rnd.uniform(0.9, 1.5),
                        {2020: rnd.uniform(0.04, 0.08), 2021: rnd.uniform(0.24, 0.34)},
                        {2020: rnd.uniform(0.28, 0.40), 2021: rnd.uniform(0.58, 0.72)},
                        {2020: rnd.uniform(0.86, 0.96), 2021: rnd.uniform(0.88, 0.97)}))
    for d in DISTRICTS:
        w = rnd.uniform(1.3, 1.7)
        (o0, p0, s0), (o1, p1, s1) = _DISTRICT_SHARES[d]
        out.append(Unit(d, "district", w, {2020: o0 / 100, 2021: o1 / 100},
                        {2020: p0 / 100, 2021: p1 / 100}, {2020: s0 / 100, 2021: s1 / 100}))
    for c in COMMUNES:
        out.append(Unit(c, "commune", rnd.uniform(0.35, 0.65),
                        {2020: rnd.uniform(0.02, 0.05), 2021: rnd.uniform(0.18, 0.28)},
                        {2020: rnd.uniform(0.25, 0.35), 2021: rnd.uniform(0.50, 0.65)},
                        {2020: rnd.uniform(0.55, 0.75), 2021: rnd.uniform(0.60, 0.78)}))
    return tuple(out)


UNITS = _units()


def largest_remainder(total: int, weights: Sequence[float]) -> list[int]:
    """``total`` split into integers proportional to ``weights`` (ties to the first);
    they sum to ``total``. All zero weights: all to the first."""
    if total <= 0 or not weights:
        return [0] * len(weights)
    s = sum(weights)
    if s <= 0:
        return [total] + [0] * (len(weights) - 1)
    exact = [total * w / s for w in weights]
    base = [int(x) for x in exact]
    rest = total - sum(base)
    order = sorted(range(len(weights)), key=lambda i: (-(exact[i] - base[i]), i))
    for i in order[:rest]:
        base[i] += 1
    return base


def _split_fixed(total: int, dens: Sequence[int], shares: Sequence[float],
                 fixed: Sequence[bool]) -> list[int]:
    """Numerators per unit summing to ``total``: fixed units get round(share * den), the
    others share what is left in proportion to share * den (never above their den)."""
    out = [round(s * d) if f else 0 for s, d, f in zip(shares, dens, fixed, strict=True)]
    left = max(0, total - sum(out))
    free = [i for i, f in enumerate(fixed) if not f]
    alloc = largest_remainder(left, [shares[i] * dens[i] for i in free])
    for i, n in zip(free, alloc, strict=True):
        out[i] = min(n, dens[i])
    return out


# (year, type, entity) -> (numerator, denominator)
Counts = dict[tuple[int, str, str], tuple[int, int]]


def history_counts(scale: float, units: Sequence[Unit] = UNITS) -> Counts:
    """The events per year, type and unit at ``scale``: (numerator, denominator), the
    numerator being online dossiers, postal results or signed documents.

    Raises:
        ValueError: ``scale`` not in (0, 1].
    """
    if not 0 < scale <= 1:
        raise ValueError(f"scale must be in (0, 1], got {scale}")
    out: Counts = {}
    fixed = [u.admin_level == "district" for u in units]
    for year in HISTORY_YEARS:
        fig = PUBLISHED[year]
        d_total = round(fig.dossiers * scale)
        dossiers = largest_remainder(d_total, [u.weight for u in units])
        online = _split_fixed(round(fig.online * scale), dossiers,
                              [u.online[year] for u in units], fixed)
        r_total = round(d_total * RESULTS_PER_DOSSIER)
        results = largest_remainder(r_total, [u.weight for u in units])
        postal = _split_fixed(round(r_total * fig.postal_share), results,
                              [u.postal[year] for u in units], fixed)
        docs = largest_remainder(round(d_total * DOCUMENTS_PER_DOSSIER), [u.weight for u in units])
        for k, u in enumerate(units):
            out[(year, "egov.dossier", u.entity)] = (online[k], dossiers[k])
            out[(year, "egov.result", u.entity)] = (postal[k], results[k])
            out[(year, "egov.document", u.entity)] = (round(u.signed[year] * docs[k]), docs[k])
    return out


# An event is at least this far from its UTC month's bounds, so it falls in the same
# calendar month (and year) in every time zone (UTC-12 to UTC+14).
_MARGIN_S = 14 * 3600.0


def _month_starts(year: int) -> list[float]:
    return [datetime(year + (m == 13), 1 if m == 13 else m, 1, tzinfo=UTC).timestamp()
            for m in range(1, 14)]


def _attributes(typ: str, hit: bool, rnd: random.Random) -> dict[str, str | bool]:
    if typ == "egov.dossier":
        return {"channel": "online" if hit else "counter"}
    if typ == "egov.result":
        return {"return_channel": "postal" if hit else ("online" if rnd.random() < 0.3 else "counter")}
    return {"signed": hit}


def egov_history(scale: float, *, seed: int = 2021, source: str = "egov-history",
                 units: Sequence[Unit] = UNITS) -> Iterator[Event]:
    """Every event of ``history_counts(scale)``, in time order, one month in memory at a time.

    Each unit's year is spread over the months (largest remainder), its numerator events
    likewise; within a month events get a seeded time (at least 14 h from the month's
    bounds in UTC, so the month is the same whatever ``streams.timezone``) and
    procedure. Attributes:
    ``province``, ``admin_level``, ``procedure`` and the type's own (``channel``,
    ``return_channel``, ``signed``); values ``{"count": 1}``; entity: the unit.

    Raises:
        ValueError: ``scale`` not in (0, 1].
    """
    counts = history_counts(scale, units)
    tag = f"{source}:{seed}:{scale:g}"
    by_entity = {u.entity: u for u in units}
    types = ("egov.dossier", "egov.result", "egov.document")
    for year in HISTORY_YEARS:
        starts = _month_starts(year)
        # per (type, unit): numerator and denominator per month
        per_month: dict[tuple[str, str], tuple[list[int], list[int]]] = {}
        for u in units:
            for typ in types:
                num, den = counts[(year, typ, u.entity)]
                per_month[(typ, u.entity)] = (largest_remainder(num, [1.0] * 12),
                                       largest_remainder(den, [1.0] * 12))
        index = {key: 0 for key in per_month}
        for m in range(12):
            rnd = random.Random(f"{tag}:{year}:{m}")
            lo, hi = starts[m] + _MARGIN_S, starts[m + 1] - _MARGIN_S
            batch: list[tuple[float, Event]] = []
            for (typ, ent), (nums, dens) in per_month.items():
                u = by_entity[ent]
                for j in range(dens[m]):
                    hit = j < nums[m]
                    t = lo + rnd.random() * (hi - lo)
                    attrs: dict[str, str | bool] = {
                        "province": PROVINCE, "admin_level": u.admin_level,
                        "procedure": rnd.choices(PROCEDURES, _PROCEDURE_WEIGHTS)[0],
                        **_attributes(typ, hit, rnd)}
                    i = index[(typ, ent)]
                    index[(typ, ent)] = i + 1
                    batch.append((t, Event(id=f"{tag}:{year}:{u.entity}:{typ}:{i}", source=source,
                                           type=typ, entity=u.entity, time=t,
                                           values={"count": 1.0}, attributes=dict(attrs))))
            batch.sort(key=lambda x: (x[0], x[1].id))
            for _, e in batch:
                yield e
