"""Demo feed timing and sources (pure: files read, nothing sent)."""

from __future__ import annotations

from pathlib import Path

from ioc.events import validate_event
from ioc.feeds import EgovGenerator, FeedPlan, Series, load_series, synthetic_series


def test_plan_shifts_recorded_times_to_now_at_speed():
    s = Series("road-1", "traffic.flow", [(1000.0, {"speed": 50}), (1300.0, {"speed": 60}),
                                          (1600.0, {"speed": 70})])
    out = list(FeedPlan([s], speed=100, loop=False).events(5000.0))
    assert [(due, e.time, e.values["speed"]) for due, e in out] == [
        (5000.0, 5000.0, 50), (5003.0, 5003.0, 60), (5006.0, 5006.0, 70)]
    assert len({e.id for _, e in out}) == 3


def test_plan_merges_series_in_time_order_and_loops():
    a = Series("a", "x.y", [(0.0, {"v": 1}), (10.0, {"v": 2})])
    b = Series("b", "x.y", [(0.0, {"v": 1}), (5.0, {"v": 2})])
    it = FeedPlan([a, b], speed=1).events(0.0)
    got = [next(it) for _ in range(6)]
    dues = [d for d, _ in got]
    assert dues == sorted(dues)
    assert len({e.id for _, e in got}) == 6  # a looped lap gets new ids


def test_egov_events_are_valid_envelopes():
    it = EgovGenerator(rate=100).events(1.7e9)
    events = [next(it)[1] for _ in range(300)]
    for e in events:
        validate_event({"id": e.id, "source": e.source, "type": e.type, "entity": e.entity,
                        "time": e.time, "values": e.values, "attributes": e.attributes})
    assert {e.type for e in events} == {"egov.dossier", "egov.result", "egov.document"}


def test_recorded_series_skip_missing_values(shared_data: Path):
    series = {s.entity: s for s in load_series(shared_data)}
    assert {"air-uci-1", "air-beijing-1", "road-6005", "noise-1"} <= set(series)
    uci = series["air-uci-1"]
    assert all(v != -200.0 for _, vals in uci.points for v in vals.values())
    assert any("occupancy" in v and "speed" in v for _, v in series["road-6005"].points)


def test_synthetic_fallback_without_data(tmp_path: Path):
    assert load_series(tmp_path) == []
    synth = synthetic_series(hours=2)
    assert {s.type for s in synth} == {"air.quality", "traffic.flow", "noise.level"}
