"""Pure window maths: partial aggregates, tumbling windows, lateness, serialisation."""

from __future__ import annotations

import math
import random

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from ioc.aggregate import Agg, EntityWindows, Rollup, window_start

values = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)
times = st.floats(min_value=1.6e9, max_value=1.6e9 + 1e5, allow_nan=False)
obs = st.lists(st.tuples(values, times), min_size=1, max_size=60)


def fold(items: list[tuple[float, float]]) -> Agg:
    a = Agg()
    for v, t in items:
        a.add(v, t)
    return a


def same(a: Agg, b: Agg) -> None:
    assert (a.count, a.min, a.max, a.last, a.last_time) == (b.count, b.min, b.max, b.last, b.last_time)
    assert math.isclose(a.sum, b.sum, rel_tol=1e-9, abs_tol=1e-6)


@given(obs, st.integers(min_value=1, max_value=8), st.randoms(use_true_random=False))
def test_merging_partials_in_any_order_gives_the_same_totals(items, parts, rnd):
    chunks: list[list[tuple[float, float]]] = [[] for _ in range(parts)]
    for it in items:
        chunks[rnd.randrange(parts)].append(it)
    partials = [fold(c) for c in chunks]
    rnd.shuffle(partials)
    merged = Agg()
    for p in partials:
        merged = merged.merge(p) if rnd.random() < 0.5 else p.merge(merged)
    same(merged, fold(items))
    assert merged.count == len(items)
    assert merged.min == min(v for v, _ in items) and merged.max == max(v for v, _ in items)


@given(obs)
def test_add_order_does_not_change_the_aggregate(items):
    shuffled = list(items)
    random.Random(7).shuffle(shuffled)
    same(fold(items), fold(shuffled))


@given(st.floats(min_value=0, max_value=1e10, allow_nan=False), st.sampled_from([1, 10, 60, 3600]))
def test_window_start_holds_the_time(t, size):
    s = window_start(t, size)
    assert s % size == 0 and s <= t < s + size


def test_windows_per_size_metric_stamped_with_start_and_closed_after_lateness():
    ew = EntityWindows("air-1")
    t0 = 1_700_000_000.0  # a multiple of 10 and 60? 1_700_000_000 % 60 == 20
    assert ew.add(t0 + 1, {"pm25": 10, "no2": 1}, [10, 60], 5) is not None
    ew.add(t0 + 3, {"pm25": 20}, [10, 60], 5)
    assert ew.close_due(5) == []
    w10 = ew.windows[("pm25", 10, window_start(t0 + 1, 10))]
    assert (w10.count, w10.sum, w10.min, w10.max, w10.last, w10.mean) == (2, 30, 10, 20, 20, 15)
    ew.add(t0 + 16, {"pm25": 5}, [10, 60], 5)  # watermark t0+16 >= end(t0+10)+5 -> closes
    closed = ew.close_due(5)
    assert [(r.metric, r.size, r.start, r.agg.count) for r in closed] == [
        ("no2", 10, 1_700_000_000, 1), ("pm25", 10, 1_700_000_000, 2)]
    assert all(r.state == "closed" for r in closed)


def test_late_event_is_counted_not_applied():
    ew = EntityWindows("s")
    ew.add(1000.0, {"v": 1}, [10], 30)
    assert ew.add(969.0, {"v": 1}, [10], 30) is None  # 31 s behind the watermark
    assert ew.late == 1
    assert ew.add(971.0, {"v": 2}, [10], 30) is not None  # within lateness: applied
    assert ew.windows[("v", 10, 970)].count == 1


def test_redelivered_offsets_are_recognised_and_state_round_trips():
    from streams.engine.applied import Tracked

    ew = EntityWindows("s")
    ew.add(1000.0, {"v": 1.5}, [10, 60], 30)
    tr = Tracked(ew)
    tr.marks.mark(2, 41)
    back = Tracked.decoder(EntityWindows.from_dict, "windows")(tr.to_bytes())
    a = back.marks
    assert a.seen(2, 41) and a.seen(2, 3) and not a.seen(2, 42) and not a.seen(1, 41)
    assert back.state.windows == ew.windows and back.state.watermark == ew.watermark
    assert EntityWindows.from_bytes(ew.to_bytes()) == ew  # the domain state alone


def test_changelog_values_of_the_earlier_format_restore_with_their_marks():
    """Before the marks left the domain classes, they were keys of its dict: p, o, r."""
    from ioc.kpi import KpiCounts
    from ioc.rules import EntityRules
    from streams.engine.applied import Tracked

    old_w = (b'{"e":"s","wm":1000.0,"late":0,"n":1,"p":2,"o":41,"r":[[3,7,1]],'
             b'"w":[["v",10,1000,1,1.5,1.5,1.5,1.5,1000.0]]}')
    tw = Tracked.decoder(EntityWindows.from_dict, "windows")(old_w)
    assert tw.state.applied == 1 and tw.state.windows[("v", 10, 1000)].count == 1
    assert tw.marks.seen(2, 41) and tw.marks.seen(9, 9, (3, 7, 0))
    assert orjson.loads(tw.to_bytes()) == orjson.loads(old_w)  # one format, old and new
    old_k = b'{"g":"a","p":1,"o":9,"r":[],"c":[["k","day","2026-12-01",1.0,2.0]]}'
    tk = Tracked.decoder(KpiCounts.from_dict, "counts")(old_k)
    assert tk.state.counts == {("k", "day", "2026-12-01"): [1.0, 2.0]}
    assert tk.marks.seen(1, 9) and not tk.marks.seen(1, 10)
    assert EntityRules.from_bytes(b'{"e":"x","p":3,"s":{}}') == EntityRules("x")


@settings(max_examples=50)
@given(st.lists(st.tuples(st.floats(min_value=0, max_value=500, allow_nan=False),
                          st.integers(min_value=0, max_value=100)), min_size=1, max_size=80))
def test_every_event_is_in_a_window_or_counted_late(events):
    ew = EntityWindows("s")
    emitted = 0
    for t, v in events:
        ew.add(1e9 + t, {"m": float(v)}, [10], 20)
        emitted += sum(r.agg.count for r in ew.close_due(20))
    still_open = sum(a.count for a in ew.windows.values())
    assert emitted + still_open + ew.late == len(events)


def test_rollup_bytes_round_trip_including_an_empty_aggregate():
    r = Rollup("sensor|1", "pm25", 10, 1_795_000_000, Agg(3, 30.0, 5.0, 15.0, 10.0, 1.5), "updated")
    assert Rollup.from_bytes(r.to_bytes()) == r
    empty = Rollup.from_bytes(Rollup("e", "m", 60, 0, Agg(), "closed").to_bytes())
    assert (empty.state, empty.agg.count, empty.agg.min, empty.agg.max) == ("closed", 0, math.inf,
                                                                            -math.inf)
    assert math.isnan(empty.agg.last) and empty.agg.mean is None
