"""The demo e-government history reproduces the province's published figures, scored with
the pure scorecard functions over counts made from the generated events (no Kafka)."""

from __future__ import annotations

from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ioc.config import load_settings
from ioc.events import Event
from ioc.feeds import EgovGenerator
from ioc.feeds._history import (
    DISTRICTS,
    PUBLISHED,
    RISING_DISTRICT,
    egov_history,
    history_counts,
    largest_remainder,
)
from ioc.scorecard import LeafCount, ScorecardCounts, build_scorecard, period_key

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = load_settings(ROOT / "deploy" / "scorecards.example.yaml", env={})
CFG = EXAMPLE.scorecards
TZ = ZoneInfo(EXAMPLE.streams.timezone)
INDICATOR = {"egov.dossier": "dossiers_online", "egov.result": "results_postal",
             "egov.document": "documents_signed"}
LEVEL_OF = {u: "district" for u in DISTRICTS}


def leaves_from_events(events: list[Event]) -> list[LeafCount]:
    """The stage's counting (ScorecardCounts per entity), as leaf counts."""
    per_entity: dict[str, ScorecardCounts] = {}
    for e in events:
        sc = per_entity.setdefault(e.entity, ScorecardCounts(e.entity))
        sc.add(CFG, TZ, type=e.type, t=float(e.time), values=e.values, attributes=e.attributes)
    return [sc.leaf(k, (), 0.0) for sc in per_entity.values() for k in sc.counts]


def leaves_from_counts(scale: float) -> list[LeafCount]:
    """Year leaves straight from ``history_counts`` (province/level/unit/all)."""
    from ioc.feeds._history import UNITS

    level = {u.entity: u.admin_level for u in UNITS}
    return [LeafCount(INDICATOR[typ], "year", str(year), ("province", level[ent], ent, "all"),
                      float(num), float(den))
            for (year, typ, ent), (num, den) in history_counts(scale).items()]


def province_ratio(leaves: list[LeafCount], indicator: str, year: str,
                   levels: tuple[str, ...] = ("province", "district", "commune")) -> float:
    num = sum(lf.numerator for lf in leaves if lf.indicator == indicator and lf.period == "year"
              and lf.period_key == year and lf.path[1] in levels)
    den = sum(lf.denominator for lf in leaves if lf.indicator == indicator and lf.period == "year"
              and lf.period_key == year and lf.path[1] in levels)
    return round(num / den * 100, 1)


def district_ranks(leaves: list[LeafCount], year: str) -> dict[str, int | None]:
    cards = build_scorecard(CFG, leaves, leaves, period="year", period_key=year, level="agency",
                            tz=TZ, now=2e9)
    return {c.name: c.rank for c in cards if c.unit[:2] == ("province", "district")}


def check_figures(leaves: list[LeafCount]) -> None:
    assert province_ratio(leaves, "dossiers_online", "2020") == 4.8
    assert province_ratio(leaves, "dossiers_online", "2021") == 26.3
    # published in whole percent; one result is up to 0.14% of the results at 1/100
    assert round(province_ratio(leaves, "results_postal", "2020")) == 30
    assert round(province_ratio(leaves, "results_postal", "2021")) == 60
    for year in ("2020", "2021"):
        assert province_ratio(leaves, "documents_signed", year, ("province", "district")) > 80
        # every district and provincial agency on its own, too
        per_unit: dict[tuple[str, ...], list[float]] = {}
        for lf in leaves:
            if (lf.indicator == "documents_signed" and lf.period == "year"
                    and lf.period_key == year and lf.path[1] in ("province", "district")):
                c = per_unit.setdefault(lf.path[:3], [0.0, 0.0])
                c[0] += lf.numerator
                c[1] += lf.denominator
        assert len(per_unit) == 17
        assert all(num / den > 0.8 for num, den in per_unit.values()), per_unit
    r2020, r2021 = district_ranks(leaves, "2020"), district_ranks(leaves, "2021")
    assert len(r2020) == len(DISTRICTS) == len(r2021)
    assert r2020[RISING_DISTRICT] == len(DISTRICTS)  # last, alone
    assert sorted(r2020.values()).count(len(DISTRICTS)) == 1
    assert r2021[RISING_DISTRICT] == 3


def test_generated_events_reproduce_the_published_figures():
    events = list(egov_history(0.02))
    check_figures(leaves_from_events(events))
    # province-wide dossier counts at 1/50 (229,083 -> 4,582; 219,187 -> 4,384)
    leaves = leaves_from_events(events)
    dossiers = {y: sum(lf.denominator for lf in leaves if lf.indicator == "dossiers_online"
                       and lf.period == "year" and lf.period_key == y) for y in ("2020", "2021")}
    assert dossiers == {"2020": 4582.0, "2021": 4384.0}


def test_the_rising_district_gains_places_and_months_add_up():
    leaves = leaves_from_events(list(egov_history(0.01)))
    cards = build_scorecard(CFG, leaves, leaves, period="year", period_key="2021", level="agency",
                            tz=TZ, now=2e9)
    d7 = next(c for c in cards if c.name == RISING_DISTRICT)
    assert d7.rank == 3 and d7.rank_change == len(DISTRICTS) - 3
    # a month, its quarter and its year agree
    for ind in INDICATOR.values():
        year = sum(lf.denominator for lf in leaves if lf.indicator == ind and lf.period == "year"
                   and lf.period_key == "2021")
        months = sum(lf.denominator for lf in leaves if lf.indicator == ind
                     and lf.period == "month" and lf.period_key.startswith("2021-"))
        assert year == months > 0
        assert not [lf for lf in leaves if lf.period_key.startswith(("2019", "2022"))]


def test_history_is_deterministic_time_ordered_and_attributed():
    a = list(egov_history(0.01))
    b = list(egov_history(0.01))
    assert [e.id for e in a] == [e.id for e in b]
    assert [e.attributes for e in a] == [e.attributes for e in b]
    assert len({e.id for e in a}) == len(a)
    times = [float(e.time) for e in a]
    assert times == sorted(times)
    for e in a[:500]:
        assert e.attributes["province"] == "province"
        assert e.attributes["admin_level"] in ("province", "district", "commune")
        assert isinstance(e.attributes["procedure"], str)
    # the same month (so quarter and year) whatever streams.timezone is
    zones = [ZoneInfo(z) for z in ("UTC", "Asia/Ho_Chi_Minh", "Pacific/Kiritimati", "Etc/GMT+12")]
    for e in a[::7]:
        assert len({period_key(float(e.time), "month", z) for z in zones}) == 1, e
    # other ids at another scale or seed
    assert not {e.id for e in a} & {e.id for e in egov_history(0.01, seed=1)}


@settings(max_examples=100, deadline=None)
@given(st.floats(min_value=0.01, max_value=1.0, allow_nan=False))
def test_figures_hold_at_any_scale(scale):
    check_figures(leaves_from_counts(scale))
    counts = history_counts(scale)
    for year, fig in PUBLISHED.items():
        assert sum(d for (y, t, _), (_, d) in counts.items()
                   if y == year and t == "egov.dossier") == round(fig.dossiers * scale)


@given(st.integers(0, 10_000), st.lists(st.floats(0, 100), min_size=1, max_size=30))
@settings(max_examples=300, deadline=None)
def test_largest_remainder_sums_to_total(total, weights):
    parts = largest_remainder(total, weights)
    assert len(parts) == len(weights) and all(p >= 0 for p in parts)
    assert sum(parts) == (total if weights else 0)


def test_bad_scale_is_refused():
    with pytest.raises(ValueError, match="scale"):
        history_counts(0)
    with pytest.raises(ValueError, match="scale"):
        list(egov_history(1.5))


def test_live_stream_carries_the_same_attributes():
    gen = EgovGenerator(rate=50.0, seed=3)
    events = [e for _, (_, e) in zip(range(400), gen.events(1_800_000_000.0), strict=False)]
    assert {e.type for e in events} == set(INDICATOR)
    levels = {e.attributes["admin_level"] for e in events}
    assert levels == {"province", "district", "commune"}
    assert all(e.attributes["province"] == "province" and "procedure" in e.attributes
               for e in events)
    leaves = leaves_from_events(events)
    assert {lf.period_key for lf in leaves if lf.period == "year"} == {"2027"}


class FakePublisher:
    """Accepts every event; fails (KafkaError) on the batch numbers in ``fail_on``."""

    def __init__(self, fail_on: set[int] = frozenset()) -> None:  # type: ignore[assignment]
        self.ids: list[str] = []
        self.calls = 0
        self.fail_on = fail_on

    def send_many(self, events):  # type: ignore[no-untyped-def]
        from ioc.errors import KafkaError
        from ioc.publish import PublishResult

        self.calls += 1
        if self.calls in self.fail_on:
            raise KafkaError("broker down")
        self.ids.extend(e.id for e in events)
        return PublishResult(accepted=[e.id for e in events])


def test_history_publishing_resumes_from_its_marker(tmp_path, monkeypatch):
    import orjson

    from ioc.feeds import cli
    from ioc.metrics.feeds import FeedCounts

    monkeypatch.setattr(cli.time, "sleep", lambda s: None)
    everything = [e.id for e in egov_history(0.01)]
    marker = tmp_path / "mark.json"
    # a first run stopped after 3 acknowledged batches of 1000
    marker.write_bytes(orjson.dumps({"scale": 0.01, "seed": 2021, "sent": 3000, "done": False}))
    pub, counts = FakePublisher(fail_on={2}), FeedCounts()
    assert cli._publish_history(pub, counts, 0.01, 2021, 1000, marker) == (len(everything) - 3000, 0)
    assert pub.ids == everything[3000:]  # the failed batch was sent again, nothing twice
    assert orjson.loads(marker.read_bytes()) == {"scale": 0.01, "seed": 2021,
                                                 "sent": len(everything), "done": True}
    assert counts.published["egov"] == len(everything) - 3000 and counts.errors["egov"] == 1000
    # done: nothing more; another scale: nothing either (no second history)
    again = FakePublisher()
    assert cli._publish_history(again, FeedCounts(), 0.01, 2021, 1000, marker) == (0, 0)
    assert cli._publish_history(again, FeedCounts(), 0.02, 2021, 1000, marker) == (0, 0)
    assert again.calls == 0
    # without a marker every run publishes all of it, same ids
    fresh = FakePublisher()
    cli._publish_history(fresh, FeedCounts(), 0.01, 2021, 5000, None)
    assert fresh.ids == everything


def test_a_broken_marker_is_reported(tmp_path):
    import click

    from ioc.feeds import cli

    bad = tmp_path / "mark.json"
    bad.write_text('{"scale": 0.01}')
    with pytest.raises(click.ClickException, match="expected a JSON object with scale"):
        cli._publish_history(FakePublisher(), None, 0.01, 2021, 100, bad)
