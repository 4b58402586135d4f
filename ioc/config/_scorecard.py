"""Settings of the e-government scorecards: indicators, areas, drill levels, targets.

An indicator is a ratio of two event counts (``numerator`` and ``denominator``, each a
predicate over event type and attributes), scored by a rule (``linear`` to the period's
target, ``thresholds`` or ``bands``) out of ``max_score`` points. Indicators belong to
areas whose maxima total 100 points. Counts are kept per calendar period (month,
quarter, year) and per drill path (one value per level, e.g. province / administrative
level / agency / procedure, read from event attributes or the event's entity).
A target is set per period key, for every unit or per unit of ``target_level`` (the
administrative level: 90% provincial, 80% district, 60% commune). How to define one, with the province's three: docs/scorecards.md.
"""

from __future__ import annotations

from itertools import pairwise
from typing import Annotated, Any, Literal

from pydantic import Field, PlainValidator, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from ._base import Section

__all__ = [
    "AreaSpec",
    "Band",
    "DrillLevel",
    "EventPredicate",
    "IndicatorSpec",
    "ReaderSettings",
    "ScorecardSettings",
    "ScoringRule",
    "Step",
]

Period = Literal["month", "quarter", "year"]
_PERIODS: tuple[Period, ...] = ("month", "quarter", "year")
_ID = r"^[a-z][a-z0-9_]{0,63}$"
# A target's period key: '2025' (year), '2021-Q3' (quarter) or '2021-03' (month).
_PERIOD_KEY = r"^\d{4}(-Q[1-4]|-(0[1-9]|1[0-2]))?$"


def _target_value(v: Any) -> float | dict[str, float]:
    """A period's target: a number (every unit), or a mapping of level -> number."""
    def number(x: Any, where: str) -> float:
        if isinstance(x, bool) or not isinstance(x, int | float):
            raise PydanticCustomError(
                "target", "{where}expected a target ratio (a number), got {got}",
                {"where": where, "got": repr(x)[:40]})
        return float(x)

    if isinstance(v, dict):
        if not v:
            raise PydanticCustomError(
                "target", "expected a number or a mapping of level -> target ratio, got an "
                "empty mapping")
        out = {}
        for k, x in v.items():
            if not isinstance(k, str) or not k:
                raise PydanticCustomError("target", "a level is a non-empty name, got {got}",
                                          {"got": repr(k)[:40]})
            out[k] = number(x, f"level {k!r}: ")
        return out
    return number(v, "")


# A period's target: a number for every unit, or level (a unit of the section's
# target_level, e.g. 'district') -> number. Checked here so that a bad value is reported
# at the period key's path, not once per member of a union.
TargetValue = Annotated[float | dict[str, float], PlainValidator(_target_value)]


class EventPredicate(Section):
    """Which events count: ``event_type``, and attributes among the listed values."""

    event_type: str = Field(min_length=1, description="event type, e.g. 'egov.dossier'")
    where: dict[str, list[str]] = Field(
        default_factory=dict,
        description="attribute -> accepted values (all must hold); booleans are written "
                    "'true'/'false', numbers as text; empty: every event of the type")
    count_value: str = Field("count", description="values key added per event (missing = 1)")

    @field_validator("where")
    @classmethod
    def _values_given(cls, v: dict[str, list[str]]) -> dict[str, list[str]]:
        empty = sorted(k for k, vals in v.items() if not vals)
        if empty:
            raise ValueError(f"attributes {empty} list no accepted values (expected at least one)")
        return v


class Step(Section):
    """A threshold: a ratio at or above ``at`` earns ``points``."""

    at: float
    points: float = Field(ge=0)


class Band(Section):
    """A band: a ratio in [``lower``, ``upper``) earns ``points``."""

    lower: float
    upper: float
    points: float = Field(ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> Band:
        if self.upper <= self.lower:
            raise ValueError(f"band upper {self.upper} must be above lower {self.lower}")
        return self


class ScoringRule(Section):
    """How a ratio becomes points out of the indicator's ``max_score``.

    ``linear``: ``max_score * (ratio - floor) / (target - floor)``, clipped to
    [0, max_score], with the period's target. ``thresholds``: the points of the highest
    step reached (0 below the first). ``bands``: the points of the band holding the
    ratio (0 outside every band).
    """

    rule: Literal["linear", "thresholds", "bands"] = "linear"
    floor: float = Field(0.0, description="linear: the ratio that scores 0")
    steps: list[Step] = Field(default_factory=list, description="thresholds: ascending 'at'")
    bands: list[Band] = Field(default_factory=list, description="bands: not overlapping")

    @model_validator(mode="after")
    def _rule_has_its_parts(self) -> ScoringRule:
        if self.rule == "thresholds":
            ats = [s.at for s in self.steps]
            if not ats:
                raise ValueError("rule 'thresholds' needs at least one step")
            if ats != sorted(set(ats)):
                raise ValueError(f"steps must have strictly ascending 'at', got {ats}")
        if self.rule == "bands":
            if not self.bands:
                raise ValueError("rule 'bands' needs at least one band")
            b = sorted(self.bands, key=lambda x: x.lower)
            for lo, hi in pairwise(b):
                if hi.lower < lo.upper:
                    raise ValueError(f"bands [{lo.lower}, {lo.upper}) and [{hi.lower}, "
                                     f"{hi.upper}) overlap")
        return self


class IndicatorSpec(Section):
    """One scored indicator: numerator/denominator counts, a rule, targets."""

    id: str = Field(pattern=_ID)
    label: str = Field(min_length=1, max_length=120)
    short_label: str | None = Field(
        None, max_length=32, description="title on wall tiles (default: label, if it fits)")
    area: str = Field(description="id of the area the indicator's points go to")
    numerator: EventPredicate
    denominator: EventPredicate
    unit: str = "%"
    scale: float = Field(100.0, gt=0, description="ratio multiplied by this (100 for percent)")
    decimals: int = Field(1, ge=0, le=6)
    max_score: float = Field(gt=0, le=100)
    scoring: ScoringRule = Field(default_factory=ScoringRule)
    target: float | None = Field(
        None, description="the default target ratio: of every period without its own, and of "
                          "every unit whose level the period's per-level targets do not list "
                          "(the province as a whole)")
    targets: dict[Annotated[str, Field(pattern=_PERIOD_KEY)], TargetValue] = Field(
        default_factory=dict,
        description="period key ('2025', '2021-Q3', '2021-03') -> target ratio, or -> "
                    "{level: target ratio} with levels the units of scorecards.target_level "
                    "({province: 90, district: 80, commune: 60}); a month or quarter without "
                    "its own (or without the unit's level) takes its year's, then 'target'")
    min_denominator: float | None = Field(
        None, ge=0, description="flag 'low_denominator' below this (default: the section's)")
    higher_is_better: bool = Field(True, description="ranking order of the ratio")

    @model_validator(mode="after")
    def _linear_has_a_target(self) -> IndicatorSpec:
        if self.scoring.rule == "linear" and self.target is None and not self.targets:
            raise ValueError(f"indicator {self.id!r}: rule 'linear' needs a target or targets")
        for what, pts in (("steps", [s.points for s in self.scoring.steps]),
                          ("bands", [b.points for b in self.scoring.bands])):
            over = [p for p in pts if p > self.max_score]
            if over:
                raise ValueError(f"indicator {self.id!r}: {what} award {over} points, above "
                                 f"max_score {self.max_score}")
        return self


class AreaSpec(Section):
    """A group of indicators (transparency, online service...) worth ``max_points``."""

    id: str = Field(pattern=_ID)
    label: str = Field(min_length=1, max_length=120)
    max_points: float = Field(ge=0, le=100)


class DrillLevel(Section):
    """One level of drill-down: where a unit's id at this level comes from."""

    id: str = Field(pattern=_ID)
    label: str = ""
    source: Literal["attribute", "entity"] = Field(
        "attribute", description="'entity': the event's entity id (an agency); else the attribute")
    attribute: str | None = Field(None, description="the event attribute (source 'attribute')")
    default: str = Field(
        "all", min_length=1, max_length=100,
        description="the unit of events without the attribute (e.g. one province)")
    units: list[Annotated[str, Field(min_length=1, max_length=100)]] | None = Field(
        None, min_length=1,
        description="the units this level can have, when they are a closed set (the "
                    "administrative levels: [province, district, commune]); needed by the "
                    "target level, whose per-level targets must name them (events are counted "
                    "whatever their unit)")

    @field_validator("units")
    @classmethod
    def _units_unique(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and len(set(v)) != len(v):
            raise ValueError(f"units listed twice: {sorted({u for u in v if v.count(u) > 1})}")
        return v

    @model_validator(mode="after")
    def _attribute_named(self) -> DrillLevel:
        if self.source == "attribute" and not self.attribute:
            raise ValueError(f"level {self.id!r} with source 'attribute' needs 'attribute'")
        return self


class ReaderSettings(Section):
    """A read-only client of the scorecard export (``ioc gateway key`` makes the hash)."""

    key_sha256: str = Field(pattern=r"^[0-9a-f]{64}$",
                            description="hex SHA-256 of the reader's API key")


def _levels() -> list[DrillLevel]:
    return [
        DrillLevel(id="province", label="Province", attribute="province", default="province"),
        DrillLevel(id="admin_level", label="Administrative level", attribute="admin_level",
                   default="province"),
        DrillLevel(id="agency", label="Agency", source="entity"),
        DrillLevel(id="procedure", label="Procedure", attribute="procedure", default="all"),
    ]


class ScorecardSettings(Section):
    """The e-government scorecards (``scorecards`` stage, sink table, gateway export)."""

    enabled: bool = Field(True, description="the scorecards stage counts events")
    periods: list[Period] = Field(default_factory=lambda: list(_PERIODS), min_length=1)
    levels: list[DrillLevel] = Field(default_factory=_levels, min_length=1,
                                     description="drill-down levels, outermost first")
    areas: list[AreaSpec] = Field(default_factory=list)
    indicators: list[IndicatorSpec] = Field(default_factory=list)
    expected_units: list[list[Annotated[str, Field(min_length=1, max_length=200)]]] = Field(
        default_factory=list,
        description="units that must report, as drill paths from the outermost level "
                    "(['province', 'district', 'district-7']): listed with 'no_data' in a "
                    "period they did not report in, even if they never reported at all")
    min_denominator: float = Field(
        30.0, ge=0, description="a unit counting fewer events is flagged 'low_denominator'")
    provisional_days: float = Field(
        15.0, ge=0, le=366,
        description="a period is 'provisional' until this many days after its end "
                    "(late reports still change it)")
    keep_periods: int = Field(
        400, ge=1, le=10_000,
        description="period keys kept per indicator and period kind in the stage's state "
                    "(oldest dropped first); a late event for an older one is not counted")
    max_rows: int = Field(50_000, ge=1, le=1_000_000,
                          description="most count rows the export reads for one request")
    export_timeout_s: float = Field(10.0, gt=0, le=120,
                                    description="the export's database work must end within this")
    export_max_concurrent: int = Field(
        4, ge=1, le=100,
        description="export requests reading the database at once per gateway process; more "
                    "are answered 503 + Retry-After at once (each holds a connection)")
    tile_period: Period = Field("year", description="the period kind the wall's leaderboards show "
                                                    "(the latest period key stored)")
    tile_period_key: str | None = Field(
        None, description="show this period key of tile_period ('2021', '2021-Q3', '2021-07') "
                          "instead of the latest stored one (null: the latest, provisional "
                          "while it runs)")
    tile_level: str | None = Field(
        None, description="the drill level the leaderboards rank (default: the one before the "
                          "last, e.g. agency above procedure)")
    target_level: str | None = Field(
        None, description="the drill level whose units per-level targets name (the "
                          "administrative level); it must list its 'units'. A unit at or below "
                          "it takes its level's target, a unit above it (the province as a "
                          "whole) the indicator's default")
    tile_rows: int = Field(10, ge=1, le=100, description="units listed per leaderboard tile")
    tile_every_s: float = Field(5.0, gt=0, le=3600,
                                description="leaderboard tiles are rebuilt at most this often")
    readers: dict[str, ReaderSettings] = Field(
        default_factory=dict,
        description="reader id -> hashed key; empty: nobody may read the export")

    @model_validator(mode="after")
    def _consistent(self) -> ScorecardSettings:
        # Problems across keys are reported at the path of the key at fault (areas.2.id,
        # indicators.0.area), all at once, like field errors.
        problems: list[tuple[tuple[str | int, ...], str, Any]] = []
        for what, ids in (("areas", [a.id for a in self.areas]),
                          ("indicators", [i.id for i in self.indicators]),
                          ("levels", [lv.id for lv in self.levels])):
            seen: set[str] = set()
            for n, i in enumerate(ids):
                if i in seen:
                    problems.append(((what, n, "id"), "duplicate id", i))
                seen.add(i)
        if self.areas:
            total = sum(a.max_points for a in self.areas)
            if abs(total - 100.0) > 1e-9:
                problems.append((("areas",), f"the areas' max_points total {total:g}, "
                                 "expected 100", total))
        areas = {a.id: a for a in self.areas}
        per_area: dict[str, float] = {}
        for n, ind in enumerate(self.indicators):
            if ind.area not in areas:
                problems.append((("indicators", n, "area"), "not an area id (expected one of "
                                 f"{sorted(areas)})", ind.area))
            per_area[ind.area] = per_area.get(ind.area, 0.0) + ind.max_score
        for n, a in enumerate(self.areas):
            pts = per_area.get(a.id, 0.0)
            if pts > a.max_points + 1e-9:
                problems.append((("areas", n, "max_points"), f"area {a.id!r}: its indicators' "
                                 f"max_score total {pts:g}, above its max_points "
                                 f"{a.max_points:g}", a.max_points))
        for n, u in enumerate(self.expected_units):
            if not 1 <= len(u) <= len(self.levels):
                problems.append((("expected_units", n), f"a drill path of 1 to {len(self.levels)} "
                                 f"units (one per level, outermost first), got {len(u)}", u))
        if self.tile_period_key is not None:
            from ..scorecard._periods import previous_period

            try:
                previous_period(self.tile_period, self.tile_period_key)
            except ValueError:
                problems.append((("tile_period_key",), f"not a key of tile_period "
                                 f"{self.tile_period!r} (e.g. '2021', '2021-Q3', '2021-07')",
                                 self.tile_period_key))
        if self.tile_level is not None and self.tile_level not in {lv.id for lv in self.levels}:
            problems.append((("tile_level",), "not a level id (expected one of "
                             f"{[lv.id for lv in self.levels]})", self.tile_level))
        problems += self._target_problems()
        if problems:
            raise ValidationError.from_exception_data(type(self).__name__, [
                InitErrorDetails(type=PydanticCustomError("scorecard", msg), loc=loc, input=got)
                for loc, msg, got in problems])
        return self

    def _target_problems(self) -> list[tuple[tuple[str | int, ...], str, Any]]:
        """Per-level targets name units of target_level, which lists them."""
        problems: list[tuple[tuple[str | int, ...], str, Any]] = []
        ids = [lv.id for lv in self.levels]
        units: list[str] | None = None
        if self.target_level is not None:
            if self.target_level not in ids:
                problems.append((("target_level",), f"not a level id (expected one of {ids})",
                                 self.target_level))
            else:
                n = ids.index(self.target_level)
                units = self.levels[n].units
                if units is None:
                    problems.append((("levels", n, "units"), f"the target level "
                                     f"{self.target_level!r} lists no units (expected e.g. "
                                     "[province, district, commune]: per-level targets name "
                                     "them)", None))
        for n, ind in enumerate(self.indicators):
            for key, t in ind.targets.items():
                if not isinstance(t, dict):
                    continue
                loc: tuple[str | int, ...] = ("indicators", n, "targets", key)
                if self.target_level is None:
                    problems.append((loc, "per-level targets need scorecards.target_level "
                                     f"(the drill level whose units they name, one of {ids})",
                                     t))
                elif units is not None:
                    problems += [((*loc, lv), f"not a unit of the target level "
                                  f"{self.target_level!r} (expected one of {units})", lv)
                                 for lv in t if lv not in units]
        return problems

    @property
    def leaderboard_level(self) -> str:
        """``tile_level``, else the level before the last (the only one if there is one)."""
        if self.tile_level is not None:
            return self.tile_level
        return self.levels[max(0, len(self.levels) - 2)].id

    def indicator(self, id: str) -> IndicatorSpec | None:
        return next((i for i in self.indicators if i.id == id), None)
