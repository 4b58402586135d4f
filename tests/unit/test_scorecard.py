"""Scorecards, pure: counting, scoring rules, areas, targets, rankings, flags, NGSI-LD.

The province's published figures: 10,996 dossiers received online in 2020 = 4.8%
(of 229,083), 57,646 in 2021 = 26.3% (of 219,187).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ioc.config import load_settings
from ioc.config._scorecard import IndicatorSpec, ScorecardSettings
from ioc.errors import InvalidRecord
from ioc.scorecard import (
    FLAGS,
    LeafCount,
    ScorecardCounts,
    build_scorecard,
    competition_ranks,
    indicator_score,
    kpi_entities,
    path_key,
    period_bounds,
    period_key,
    previous_period,
    rank_changes,
    target_for,
)

ROOT = Path(__file__).resolve().parents[2]
TZ = ZoneInfo("Asia/Ho_Chi_Minh")
EXAMPLE = load_settings(ROOT / "deploy" / "scorecards.example.yaml", env={})
CFG = EXAMPLE.scorecards
NOW = datetime(2022, 6, 1, tzinfo=TZ).timestamp()  # 2020 and 2021 are closed


def ind(**kw: object) -> IndicatorSpec:
    base: dict[str, object] = {
        "id": "x", "label": "X", "area": "a", "max_score": 10,
        "numerator": {"event_type": "e", "where": {"k": ["y"]}},
        "denominator": {"event_type": "e"}, "target": 50}
    base.update(kw)
    return IndicatorSpec.model_validate(base)


def leaf(indicator: str, key: str, path: tuple[str, ...], num: float, den: float,
         period: str = "year") -> LeafCount:
    return LeafCount(indicator, period, key, path, num, den)


# --- periods ---------------------------------------------------------------------

def test_period_keys_and_rollover():
    t = datetime(2021, 3, 31, 23, 30, tzinfo=TZ).timestamp()
    assert [period_key(t, p, TZ) for p in ("month", "quarter", "year")] == ["2021-03", "2021-Q1", "2021"]
    # the next hour is another month and quarter, the same year
    t2 = t + 3600
    assert [period_key(t2, p, TZ) for p in ("month", "quarter", "year")] == ["2021-04", "2021-Q2", "2021"]
    assert previous_period("month", "2021-01") == "2020-12"
    assert previous_period("quarter", "2021-Q1") == "2020-Q4"
    assert previous_period("year", "2021") == "2020"
    s, e = period_bounds("quarter", "2021-Q4", TZ)
    assert (s.month, e.year, e.month) == (10, 2022, 1)
    with pytest.raises(ValueError, match="2021-Q1"):
        previous_period("quarter", "2021-03")


# --- counting ----------------------------------------------------------------------

def test_counts_follow_predicates_and_drill_paths():
    sc = ScorecardCounts("district-3")
    t = datetime(2021, 5, 2, tzinfo=TZ).timestamp()
    hit = sc.add(CFG, TZ, type="egov.dossier", t=t, values={"count": 1.0},
                 attributes={"channel": "online", "admin_level": "district", "procedure": "p1"})
    sc.add(CFG, TZ, type="egov.dossier", t=t, values={}, attributes={"channel": "counter",
                                                                     "admin_level": "district"})
    sc.add(CFG, TZ, type="egov.document", t=t, values={}, attributes={"signed": True})
    sc.add(CFG, TZ, type="other.type", t=t, values={}, attributes={})
    assert len(hit) == 3  # month, quarter, year of one indicator
    p1 = ("province", "district", "district-3", "p1")
    assert sc.counts[("dossiers_online", "year", "2021", p1)] == [1.0, 1.0]
    assert sc.counts[("dossiers_online", "quarter", "2021-Q2", ("province", "district",
                                                                "district-3", "all"))] == [0.0, 1.0]
    # the boolean attribute matched 'true'
    assert sc.counts[("documents_signed", "month", "2021-05", ("province", "province",
                                                               "district-3", "all"))] == [1.0, 1.0]
    back = ScorecardCounts.from_bytes(sc.to_bytes())
    assert back.counts == sc.counts and back.entity == "district-3"
    with pytest.raises(InvalidRecord):
        ScorecardCounts.from_bytes(b"[1, 2")


def test_keep_bounds_the_period_keys():
    sc = ScorecardCounts("a", keep=2)
    for year in (2019, 2020, 2021):
        sc.add(CFG, TZ, type="egov.dossier", t=datetime(year, 6, 1, tzinfo=TZ).timestamp(),
               values={}, attributes={"channel": "online"})
    years = sorted({k[2] for k in sc.counts if k[0] == "dossiers_online" and k[1] == "year"})
    assert years == ["2020", "2021"]
    # a late event for a year already dropped is not counted again
    assert not sc.add(CFG, TZ, type="egov.dossier", t=datetime(2018, 6, 1, tzinfo=TZ).timestamp(),
                      values={}, attributes={"channel": "online"}) & {
        k for k in sc.counts if k[2] == "2018"}


def test_leaf_count_codec_and_path_key():
    lf = LeafCount("dossiers_online", "year", "2021", ("p", "a/b", "c%"), 3, 4, ("x", "y", "z"))
    assert LeafCount.from_bytes(lf.to_bytes()) == lf
    assert path_key(lf.path) == "p/a%2Fb/c%25"
    for bad in (b"", b"{}", b'{"indicator": 1}', b'{"indicator":"a","period":"year",'
                b'"period_key":"2021","path":"abc","numerator":1,"denominator":2}', b'{"indicator":"a","period":"year",'
                b'"period_key":"2021","path":["a"],"levels":["x","y"],"numerator":1,'
                b'"denominator":2}'):
        with pytest.raises(InvalidRecord):
            LeafCount.from_bytes(bad)


# --- the province's figures --------------------------------------------------------

def test_published_2020_and_2021_figures_scores_and_progress():
    rows = [leaf("dossiers_online", "2020", ("province", "province", "agency-a", "all"), 10_996, 229_083),
            leaf("dossiers_online", "2021", ("province", "province", "agency-a", "all"), 57_646, 219_187)]
    cards = {}
    for year in ("2020", "2021"):
        [c] = build_scorecard(CFG, rows, rows, period="year", period_key=year, level="province",
                              tz=TZ, now=NOW)
        cards[year] = c
    d20 = cards["2020"].indicators[0]
    d21 = cards["2021"].indicators[0]
    assert (d20.numerator, d20.denominator, d20.ratio) == (10_996, 229_083, 4.8)
    assert (d21.numerator, d21.denominator, d21.ratio) == (57_646, 219_187, 26.3)
    # linear to the year's target: 4.8 of 20 -> 4.8 points of 20; 26.3 of 40 -> 13.15
    assert d20.score == pytest.approx(20 * 4.8 / 20) and d20.target == 20
    assert d21.score == pytest.approx(20 * 26.3 / 40) and d21.progress == pytest.approx(26.3 / 40)
    # 2025: per administrative level (test_scorecard_targets.py); a month takes its year's
    spec = CFG.indicator("dossiers_online")
    assert spec is not None
    assert [target_for(spec, "2025-03", lv) for lv in ("province", "district", "commune")] == [
        90, 80, 60]
    # the other indicators reported nothing: flagged, 0 points, the total is this one
    assert "no_data" in cards["2021"].indicators[1].flags
    assert cards["2021"].total == pytest.approx(d21.score)
    assert cards["2021"].areas[2].points == pytest.approx(d21.score)  # 'online'


def test_postal_and_signature_rules():
    spec = CFG.indicator("results_postal")
    assert spec is not None
    assert [indicator_score(v, spec, 60) for v in (29.9, 30, 44, 45, 60, 99)] == [0, 4, 4, 7, 10, 10]
    signed = CFG.indicator("documents_signed")
    assert signed is not None
    assert [indicator_score(v, signed, 80) for v in (49, 50, 70, 80.0, 100.0)] == [0, 5, 12, 20, 20]


def district_rows(year: str, shares: dict[str, float], n: int = 1000) -> list[LeafCount]:
    return [leaf("dossiers_online", year, ("province", "district", d, "all"), round(n * s), n)
            for d, s in shares.items()]


def test_a_district_moves_from_last_to_third():
    y20 = district_rows("2020", {"d1": .19, "d2": .17, "d3": .15, "d4": .12, "d5": .05})
    y21 = district_rows("2021", {"d1": .40, "d2": .38, "d3": .20, "d4": .18, "d5": .35})
    cards = build_scorecard(CFG, y21, y20, period="year", period_key="2021", level="agency",
                            tz=TZ, now=NOW)
    by = {c.name: c for c in cards}
    assert by["d5"].rank == 3 and by["d5"].rank_change == 2  # was 5th
    assert by["d3"].rank == 4 and by["d3"].rank_change == -1
    assert [c.name for c in cards] == ["d1", "d2", "d5", "d3", "d4"]
    assert by["d5"].indicators[0].rank == 3 and by["d5"].indicators[0].rank_change == 2


def test_an_agency_that_reported_nothing_is_flagged_and_unranked():
    y20 = district_rows("2020", {"d1": .3, "d2": .2})
    y21 = district_rows("2021", {"d1": .3}) + district_rows("2021", {"d3": .5}, n=10)
    by = {c.name: c for c in build_scorecard(CFG, y21, y20, period="year", period_key="2021",
                                             level="agency", tz=TZ, now=NOW)}
    assert by["d2"].rank is None and by["d2"].total == 0
    assert all("no_data" in r.flags for r in by["d2"].indicators)
    assert "low_denominator" in by["d3"].indicators[0].flags  # 10 < 30
    assert by["d3"].rank == 1 and by["d3"].rank_change is None  # new this year


def test_the_open_period_is_provisional():
    rows = district_rows("2021", {"d1": .3})
    [c] = build_scorecard(CFG, rows, period="year", period_key="2021", level="agency", tz=TZ,
                          now=datetime(2022, 1, 10, tzinfo=TZ).timestamp())
    assert "provisional" in c.flags
    [c] = build_scorecard(CFG, rows, period="year", period_key="2021", level="agency", tz=TZ,
                          now=NOW)
    assert "provisional" not in c.flags


def test_ngsi_ld_key_performance_indicators():
    rows = district_rows("2021", {"d1": .4, "d2": .2})
    cards = build_scorecard(CFG, rows, period="year", period_key="2021", level="agency", tz=TZ,
                            now=NOW)
    ents = kpi_entities(CFG, cards, namespace="ioc", tz=TZ, now=NOW)
    assert len(ents) == 2 * (len(CFG.indicators) + 1)
    e = ents[0]
    assert e["type"] == "KeyPerformanceIndicator"
    assert e["id"].startswith("urn:ngsi-ld:KeyPerformanceIndicator:ioc:dossiers_online:2021:")
    assert e["calculationPeriod"] == {"from": "2021-01-01", "to": "2021-12-31"}
    assert e["calculationFrequency"] == "yearly" and e["kpiValue"] == 40.0
    assert (e["numerator"], e["denominator"], e["rank"]) == (400, 1000, 1)
    assert e["organization"] == "d1" and e["drillPath"]["admin_level"] == "district"
    assert len({x["id"] for x in ents}) == len(ents)
    total = ents[len(CFG.indicators)]
    assert total["indicator"] == "total" and total["maxScore"] == 100


# --- properties --------------------------------------------------------------------

values = st.one_of(st.none(), st.floats(-1e6, 1e6, allow_nan=False))


@settings(max_examples=300, deadline=None)
@given(value=values, target=st.one_of(st.none(), st.floats(-100, 1000)),
       floor=st.floats(-100, 100), max_score=st.floats(0.5, 100))
def test_linear_score_within_zero_and_max(value, target, floor, max_score):
    spec = ind(max_score=max_score, scoring={"rule": "linear", "floor": floor})
    s = indicator_score(value, spec, target)
    assert 0.0 <= s <= max_score


@settings(max_examples=300, deadline=None)
@given(value=values, ats=st.lists(st.floats(-100, 200), min_size=1, max_size=6, unique=True),
       pts=st.lists(st.floats(0, 10), min_size=6, max_size=6))
def test_threshold_score_within_zero_and_max_and_monotone(value, ats, pts):
    steps = [{"at": a, "points": p} for a, p in zip(sorted(ats), sorted(pts), strict=False)]
    spec = ind(scoring={"rule": "thresholds", "steps": steps})
    s = indicator_score(value, spec, None)
    assert 0.0 <= s <= 10
    if value is not None:
        assert indicator_score(value + 1, spec, None) >= s  # ascending points: monotone


@st.composite
def unit_rows(draw):
    n_units = draw(st.integers(1, 8))
    rows = []
    for year in ("2020", "2021"):
        for u in range(n_units):
            for spec in CFG.indicators:
                if draw(st.booleans()):
                    den = draw(st.integers(0, 500))
                    num = draw(st.integers(0, den)) if den else 0
                    rows.append(LeafCount(spec.id, "year", year,
                                          ("province", draw(st.sampled_from(["district", "commune"])),
                                           f"u{u}", "all"), num, den))
    return rows


@settings(max_examples=120, deadline=None)
@given(rows=unit_rows())
def test_scorecards_are_bounded_and_ranks_consistent(rows):
    cards = build_scorecard(CFG, rows, rows, period="year", period_key="2021", level="agency",
                            tz=TZ, now=NOW)
    prev = {c.unit: c for c in build_scorecard(CFG, rows, rows, period="year", period_key="2020",
                                               level="agency", tz=TZ, now=NOW)}
    for c in cards:
        assert 0.0 <= c.total <= 100.0 + 1e-9
        assert sum(a.points for a in c.areas) == pytest.approx(c.total)
        for a in c.areas:
            assert 0.0 <= a.points <= a.max_points + 1e-9
        for r in c.indicators:
            assert 0.0 <= r.score <= r.max_score
            assert set(r.flags) <= set(FLAGS)
            assert ("no_data" in r.flags) == (r.denominator <= 0) == (r.ratio is None)
        assert (c.rank is None) == all("no_data" in r.flags for r in c.indicators)
        if c.rank_change is not None:
            assert c.rank is not None and prev[c.unit].rank == c.rank + c.rank_change
    # within a parent: ranks are 1.. with ties sharing one; a higher total is never ranked below
    by_parent: dict[tuple[str, ...], list] = {}
    for c in cards:
        if c.rank is not None:
            by_parent.setdefault(c.unit[:-1], []).append(c)
    for group in by_parent.values():
        assert min(c.rank for c in group) == 1
        for a in group:
            for b in group:
                if a.total > b.total:
                    assert a.rank < b.rank
                if a.total == b.total:
                    assert a.rank == b.rank


@settings(max_examples=300, deadline=None)
@given(now=st.dictionaries(st.sampled_from([("p", f"u{i}") for i in range(6)]),
                           st.one_of(st.none(), st.integers(0, 5))),
       before=st.dictionaries(st.sampled_from([("p", f"u{i}") for i in range(6)]),
                              st.one_of(st.none(), st.integers(0, 5))))
def test_rank_changes_are_differences_of_ranks(now, before):
    rn, rb = competition_ranks(now), competition_ranks(before)
    for u, ch in rank_changes(rn, rb).items():
        if ch is None:
            assert rn[u] is None or rb.get(u) is None
        else:
            assert rb[u] - rn[u] == ch


# --- settings ----------------------------------------------------------------------

def test_example_scorecards_are_valid_and_areas_total_100():
    assert sum(a.max_points for a in CFG.areas) == 100
    assert [i.id for i in CFG.indicators] == ["dossiers_online", "results_postal", "documents_signed"]


def test_defaults_have_no_indicators():
    assert load_settings(env={}).scorecards.indicators == []
    assert isinstance(load_settings(env={}).scorecards, ScorecardSettings)


def test_an_expected_unit_that_never_reported_is_listed_with_no_data():
    cfg = CFG.model_copy(update={"expected_units": [["province", "district", "d9"],
                                                    ["province", "commune"]]})
    rows = district_rows("2021", {"d1": .3})
    by = {c.unit: c for c in build_scorecard(cfg, rows, period="year", period_key="2021",
                                             level="agency", tz=TZ, now=NOW)}
    d9 = by[("province", "district", "d9")]
    assert d9.rank is None and d9.flags == ("no_data",) and d9.total == 0
    assert by[("province", "district", "d1")].rank == 1
    # a path of another depth is a unit of its own level
    lv = {c.unit for c in build_scorecard(cfg, rows, period="year", period_key="2021",
                                          level="admin_level", tz=TZ, now=NOW)}
    assert lv == {("province", "district"), ("province", "commune")}
