"""Targets that differ by the unit's level (scorecards.target_level), pure.

The province's 2025 targets (deploy/scorecards.example.yaml): 90% of provincial, 80% of
district and 60% of commune dossiers received online. A unit at or below the
administrative level takes its level's target; the province as a whole, above it, the
indicator's default. Progress, the linear score, the NGSI-LD entities and the wall's
target tiles follow.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from ioc.config import load_settings
from ioc.config._scorecard import IndicatorSpec
from ioc.scorecard import LeafCount, build_scorecard, kpi_entities, target_for
from ioc.scorecard._score import target_depth, unit_level
from ioc.scorecard._tiles import target_tiles

ROOT = Path(__file__).resolve().parents[2]
TZ = ZoneInfo("Asia/Ho_Chi_Minh")
CFG = load_settings(ROOT / "deploy" / "scorecards.example.yaml", env={}).scorecards
NOW = datetime(2026, 6, 1, tzinfo=TZ).timestamp()  # 2025 is closed
DOSSIERS = CFG.indicator("dossiers_online")
assert DOSSIERS is not None
LEVEL_TARGET = {"province": 90.0, "district": 80.0, "commune": 60.0}
# (admin level, agency) -> (online, dossiers) in 2025: each at 72%
UNITS = {("province", "agency-planning"): (720, 1000), ("district", "district-7"): (720, 1000),
         ("commune", "commune-01"): (360, 500)}


def spec(targets: dict, target: float | None = None) -> IndicatorSpec:
    return IndicatorSpec.model_validate({
        "id": "x", "label": "X", "area": "a", "max_score": 20,
        "numerator": {"event_type": "e", "where": {"k": ["y"]}},
        "denominator": {"event_type": "e"}, "targets": targets, "target": target})


def rows_2025(period: str = "year", key: str = "2025") -> list[LeafCount]:
    return [LeafCount("dossiers_online", period, key, ("province", lv, agency, "p1"), num, den)
            for (lv, agency), (num, den) in UNITS.items()]


def test_the_provinces_2025_targets_per_level():
    assert CFG.target_level == "admin_level"
    assert DOSSIERS.targets["2025"] == LEVEL_TARGET
    for lv, t in LEVEL_TARGET.items():
        assert target_for(DOSSIERS, "2025", lv) == t
        assert target_for(DOSSIERS, "2025-Q3", lv) == t  # a quarter takes its year's
    # the province as a whole (above the level) has no 2025 target of its own, nor a default
    assert target_for(DOSSIERS, "2025") is None
    # the years with one number keep it for every level
    assert {target_for(DOSSIERS, "2021", lv) for lv in (None, *LEVEL_TARGET)} == {40.0}


def test_precedence_period_first_then_the_units_level_then_the_default():
    s = spec({"2025": {"district": 80, "commune": 60}, "2025-03": 50,
              "2025-Q2": {"commune": 65}}, target=70)
    assert target_for(s, "2025-03", "district") == 50      # the month's own number
    assert target_for(s, "2025-Q2", "commune") == 65       # the quarter's own level
    assert target_for(s, "2025-Q2", "district") == 80      # the quarter lacks it: the year's
    assert target_for(s, "2025-Q2", "province") == 70      # nobody lists it: the default
    assert target_for(s, "2025", None) == 70               # a unit above the level
    assert target_for(s, "2024", "district") == 70         # a year without an entry


def test_units_are_scored_against_their_levels_target():
    cards = build_scorecard(CFG, rows_2025(), period="year", period_key="2025", level="agency",
                            tz=TZ, now=NOW)
    by = {c.unit[1]: c.indicators[0] for c in cards}
    assert set(by) == set(LEVEL_TARGET)
    for lv, r in by.items():
        assert r.ratio == 72.0 and r.target == LEVEL_TARGET[lv]
        assert r.progress == pytest.approx(72.0 / LEVEL_TARGET[lv])
        assert r.score == pytest.approx(min(20.0, 20 * 72.0 / LEVEL_TARGET[lv]))
    # the commune (60%) reached its target, the district (80%) and the province's agency
    # (90%) did not: the same share ranks equal on the ratio, not on the score
    assert by["commune"].score == 20 and by["district"].score == pytest.approx(18.0)
    # the administrative level and the procedures below an agency take the same target
    for level in ("admin_level", "procedure"):
        for c in build_scorecard(CFG, rows_2025(), period="year", period_key="2025",
                                 level=level, tz=TZ, now=NOW):
            assert c.indicators[0].target == LEVEL_TARGET[c.unit[1]]
    # the province as a whole is above the level: no target, no linear points, no progress
    [prov] = build_scorecard(CFG, rows_2025(), period="year", period_key="2025",
                             level="province", tz=TZ, now=NOW)
    r = prov.indicators[0]
    assert (r.ratio, r.target, r.progress, r.score) == (72.0, None, None, 0.0)


def test_the_export_and_the_target_tiles_carry_each_units_target():
    cards = build_scorecard(CFG, rows_2025(), period="year", period_key="2025", level="agency",
                            tz=TZ, now=NOW)
    ents = [e for e in kpi_entities(CFG, cards, namespace="ioc", tz=TZ, now=NOW)
            if e["indicator"] == "dossiers_online"]
    got = {e["drillPath"]["admin_level"]: e for e in ents}
    for lv, t in LEVEL_TARGET.items():
        assert got[lv]["target"] == t and got[lv]["businessTarget"] == f"{t:g}% in 2025"
        assert got[lv]["progress"] == round(72.0 / t, 4)
    tiles = {t.payload["unit"]: t.payload for t in target_tiles(CFG, cards, now=NOW, version=1)
             if t.payload["indicator"] == "dossiers_online"}
    assert {u: p["target"] for u, p in tiles.items()} == {
        "agency-planning": 90, "district-7": 80, "commune-01": 60}
    assert tiles["commune-01"]["progress"] == 1.2
    # the wall's province tile: the province as a whole, no 2025 target
    [prov] = build_scorecard(CFG, rows_2025(), period="year", period_key="2025",
                             level="province", tz=TZ, now=NOW)
    [tile] = [t for t in target_tiles(CFG, [prov], now=NOW, version=1)
              if t.id == "target:dossiers_online:province"]
    assert tile.payload["target"] is None and "of target -%" in tile.payload["text"]
    [e] = [e for e in kpi_entities(CFG, [prov], namespace="ioc", tz=TZ, now=NOW)
           if e["indicator"] == "dossiers_online"]
    assert e["target"] is None and "businessTarget" not in e


def test_without_a_target_level_every_unit_has_the_periods_number():
    cfg = CFG.model_copy(update={"target_level": None})
    assert target_depth(cfg) is None and unit_level(("province", "district"), None) is None
    [c] = build_scorecard(cfg, rows_2025("year", "2021"), period="year", period_key="2021",
                          level="province", tz=TZ, now=NOW)
    assert c.indicators[0].target == 40


level_names = st.sampled_from(["province", "district", "commune"])
period_keys = st.sampled_from(["2025", "2025-Q1", "2025-Q2", "2025-01", "2025-05", "2024"])
entries = st.one_of(st.floats(0, 100), st.dictionaries(level_names, st.floats(0, 100),
                                                       min_size=1))


@settings(max_examples=300, deadline=None)
@given(targets=st.dictionaries(period_keys, entries), default=st.one_of(st.none(), st.floats(0, 100)),
       key=period_keys, level=st.one_of(st.none(), level_names))
def test_a_target_is_the_most_specific_that_applies(targets, default, key, level):
    assume(targets or default is not None)  # a linear rule needs one
    s = spec(targets, default)
    got = target_for(s, key, level)
    # it comes from the period's own entry, its year's, or the default, in that order ...
    candidates = []
    for k in dict.fromkeys((key, key[:4])):
        e = targets.get(k)
        if isinstance(e, float):
            candidates.append(e)
        elif e is not None and level in e:
            candidates.append(e[level])
    assert got == (candidates[0] if candidates else default)
    # ... and a number for the period is every level's target
    if isinstance(targets.get(key), float):
        assert {target_for(s, key, lv) for lv in (None, "province", "district", "commune")} == {
            targets[key]}


@settings(max_examples=100, deadline=None)
@given(shares=st.lists(st.tuples(level_names, st.integers(1, 400), st.integers(0, 400)),
                       min_size=1, max_size=8),
       depth=st.sampled_from(["province", "admin_level", "agency", "procedure"]))
def test_every_unit_of_a_scorecard_has_its_levels_target(shares, depth):
    rows = [LeafCount("dossiers_online", "year", "2025", ("province", lv, f"a{n}", "p1"),
                      min(num, den), den) for n, (lv, den, num) in enumerate(shares)]
    for c in build_scorecard(CFG, rows, period="year", period_key="2025", level=depth, tz=TZ,
                             now=NOW):
        r = c.indicators[0]
        want = LEVEL_TARGET[c.unit[1]] if len(c.unit) > 1 else None
        assert r.target == want
        if want is not None and r.ratio is not None:
            assert r.progress == pytest.approx(r.ratio / want)
            assert 0 <= r.score <= 20
