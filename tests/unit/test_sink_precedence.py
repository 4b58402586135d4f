"""Which sink tables wait while a first table is behind (pure: ``Precedence``)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ioc.storage._sink_precedence import Precedence
from ioc.storage.sink import SinkOptions, behind_after


def _run_of_holds(held: bool, now: float, since: float | None, hold_s: float
                  ) -> float | None:
    """When the run of holds that ``held`` at ``now`` belongs to began (None: not held),
    asserting that it is shorter than ``hold_s``; ``since``: the run's start before."""
    if not held:
        return None
    since = now if since is None else since
    assert now - since < hold_s
    return since


def test_others_wait_while_a_first_table_is_behind_and_go_once_it_caught_up() -> None:
    p = Precedence(["events"], hold_s=90.0)
    assert not p.hold("rollups", 0.0)  # nothing behind
    p.report("events", True)
    assert p.behind == {"events"}
    assert p.hold("rollups", 1.0) and p.hold("alerts", 1.0) and p.hold("rollups", 50.0)
    assert not p.hold("events", 50.0)  # a first table never waits
    p.report("events", False)
    assert not p.hold("rollups", 51.0) and not p.behind


def test_only_first_tables_reports_count() -> None:
    p = Precedence(["events"], hold_s=90.0)
    p.report("rollups", True)
    assert not p.behind and not p.hold("alerts", 0.0)


def test_a_hold_lasts_at_most_hold_s_then_the_table_is_free_for_as_long() -> None:
    p = Precedence(["events"], hold_s=10.0)
    p.report("events", True)  # and it never catches up
    assert p.hold("rollups", 0.0) and p.hold("rollups", 9.9)
    assert not p.hold("rollups", 10.0)  # held 10 s: free now ...
    assert not p.hold("rollups", 19.9)  # ... for 10 s
    assert p.hold("rollups", 20.0)  # then held again, from 20 s
    assert p.hold("rollups", 29.0) and not p.hold("rollups", 30.0)


def test_a_new_hold_counts_from_its_own_start() -> None:
    p = Precedence(["events"], hold_s=10.0)
    p.report("events", True)
    assert p.hold("rollups", 0.0) and p.hold("rollups", 8.0)
    p.report("events", False)
    assert not p.hold("rollups", 9.0)  # the hold ended: its clock is reset
    p.report("events", True)
    assert p.hold("rollups", 15.0) and p.hold("rollups", 24.0)
    assert not p.hold("rollups", 25.0)


def test_settling_the_others_wait_while_the_first_table_has_settle_rows_to_store() -> None:
    p = Precedence(["events"], hold_s=90.0, settle_s=120.0, settle_rows=2500)
    p.report("events", True, pending=300_000, now=0.0)
    assert p.hold("rollups", 1.0)
    p.report("events", False, pending=800, now=30.0)  # caught up: settling until 150 s
    assert p.settling(30.0) == {"events"} and not p.behind
    assert not p.hold("rollups", 31.0)  # little to store: the others drain
    p.report("events", None, pending=2500, now=40.0)  # they slowed it: it falls behind
    assert p.hold("rollups", 40.0) and p.hold("alerts", 40.5)
    p.report("events", None, pending=1200, now=42.0)
    assert not p.hold("rollups", 42.0)
    p.report("events", None, pending=9000, now=150.0)  # settled: only "behind" holds
    assert not p.settling(150.0) and not p.hold("rollups", 150.0)


def test_settling_begins_only_when_a_first_table_stops_being_behind() -> None:
    p = Precedence(["events"], hold_s=90.0, settle_s=120.0, settle_rows=2500)
    p.report("events", False, pending=9000, now=0.0)  # never behind: no settling
    assert not p.settling(0.0) and not p.hold("rollups", 1.0)
    p.report("events", True, now=5.0)
    p.report("events", False, pending=100)  # no clock given: no settling either
    assert not p.settling(6.0)
    q = Precedence(["events"], hold_s=90.0)  # settle_s 0: the behaviour before
    q.report("events", True, now=0.0)
    q.report("events", False, pending=9000, now=1.0)
    assert not q.settling(1.0) and not q.hold("rollups", 2.0)


def test_settling_holds_are_bounded_by_hold_s_in_a_row_too() -> None:
    p = Precedence(["events"], hold_s=10.0, settle_s=300.0, settle_rows=2500)
    p.report("events", True, now=0.0)
    p.report("events", False, pending=50_000, now=1.0)  # still much to store
    assert p.hold("rollups", 1.0) and p.hold("rollups", 10.9)
    assert not p.hold("rollups", 11.0) and not p.hold("rollups", 20.9)
    assert p.hold("rollups", 21.0)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.floats(0.0, 5.0), st.sampled_from([True, False, None]),
                          st.integers(0, 100_000)), min_size=1, max_size=200),
       st.floats(0.5, 30.0), st.floats(0.0, 200.0))
def test_settling_never_holds_longer_than_hold_s_nor_with_little_to_store(
        steps: list[tuple[float, bool | None, int]], hold_s: float, settle_s: float) -> None:
    p = Precedence(["events"], hold_s=hold_s, settle_s=settle_s, settle_rows=2500)
    now, since, behind = 0.0, None, False
    for dt, b, pending in steps:
        now += dt
        p.report("events", b, pending=pending, now=now)
        behind = behind if b is None else b
        held = p.hold("rollups", now)
        if not behind and pending < 2500:
            assert not held
        since = _run_of_holds(held, now, since, hold_s)


def test_settling_the_others_write_at_most_settle_duty_of_the_time() -> None:
    p = Precedence(["events"], hold_s=90.0, settle_s=120.0, settle_rows=2500,
                   settle_duty=0.5)
    assert p.pause_after("rollups", 2.0, 1.0) == 0.0  # nothing settling: full pace
    p.report("events", True)
    assert p.pause_after("rollups", 2.0, 2.0) == 0.0  # behind: held, not paced
    p.report("events", False, pending=0, now=10.0)
    assert p.pause_after("rollups", 2.0, 11.0) == pytest.approx(2.0)  # duty 0.5: w s
    assert p.pause_after("events", 2.0, 11.0) == 0.0  # a first table never waits
    assert p.pause_after("rollups", 0.0, 11.0) == 0.0
    assert p.pause_after("rollups", 500.0, 11.0) == 90.0  # at most hold_s
    assert p.pause_after("rollups", 2.0, 130.0) == 0.0  # settled: full pace again
    q = Precedence(["events"], hold_s=90.0, settle_s=120.0, settle_duty=0.25)
    q.report("events", True)
    q.report("events", False, now=0.0)
    assert q.pause_after("alerts", 1.0, 1.0) == pytest.approx(3.0)
    one = Precedence(["events"], hold_s=90.0, settle_s=120.0)  # duty 1 (the default)
    one.report("events", True)
    one.report("events", False, now=0.0)
    assert one.pause_after("alerts", 1.0, 1.0) == 0.0


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.floats(0.0, 5.0), st.sampled_from([True, False, None]),
                          st.one_of(st.just(0.0), st.floats(1e-6, 1e4))),
                min_size=1, max_size=100),
       st.floats(0.01, 1.0), st.floats(0.5, 30.0), st.floats(0.0, 200.0))
def test_a_pause_keeps_the_writes_within_their_duty_and_never_exceeds_hold_s(
        steps: list[tuple[float, bool | None, float]], duty: float, hold_s: float,
        settle_s: float) -> None:
    p = Precedence(["events"], hold_s=hold_s, settle_s=settle_s, settle_duty=duty)
    now = 0.0
    for dt, behind, wrote_s in steps:
        now += dt
        p.report("events", behind, now=now)
        pause = p.pause_after("rollups", wrote_s, now)
        assert 0.0 <= pause <= hold_s
        if p.settling(now) and pause < hold_s:  # the write's share of write + pause
            assert wrote_s == 0 or wrote_s / (wrote_s + pause) == pytest.approx(duty)
        if not p.settling(now):
            assert pause == 0.0


def test_hold_s_must_be_positive() -> None:
    with pytest.raises(ValueError, match="hold_s"):
        Precedence(["events"], hold_s=0.0)
    with pytest.raises(ValueError, match="settle_s"):
        Precedence(["events"], hold_s=1.0, settle_s=-1.0)
    for duty in (0.0, -0.5, 1.5):
        with pytest.raises(ValueError, match="settle_duty"):
            Precedence(["events"], hold_s=1.0, settle_duty=duty)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.floats(0.0, 5.0), st.booleans()), min_size=1, max_size=200),
       st.floats(0.5, 30.0))
def test_no_table_is_held_longer_than_hold_s_in_a_row_nor_while_nothing_is_behind(
        steps: list[tuple[float, bool]], hold_s: float) -> None:
    p = Precedence(["events"], hold_s=hold_s)
    now, since = 0.0, None
    for dt, behind in steps:
        now += dt
        p.report("events", behind)
        held = p.hold("rollups", now)
        if not behind:
            assert not held
        since = _run_of_holds(held, now, since, hold_s)


def test_only_a_full_batch_at_the_drain_size_says_behind() -> None:
    o = SinkOptions(batch_rows=5000, drain_batch_rows=20_000)
    assert behind_after(20_000, filled=True, options=o) is True
    assert behind_after(5000, filled=True, options=o) is None  # a burst: no change
    assert behind_after(10_000, filled=True, options=o) is None
    assert behind_after(20_000, filled=False, options=o) is False
    assert behind_after(5000, filled=False, options=o) is False


def test_the_lag_decides_when_it_is_known() -> None:
    o = SinkOptions(batch_rows=5000, drain_batch_rows=20_000)
    # A batch that did not fill (slow to read on a busy machine) with 100,000 records
    # still to read: behind, not caught up (the fault suite's drain let go too soon).
    assert behind_after(20_000, filled=False, options=o, lag=100_000) is True
    assert behind_after(5000, filled=True, options=o, lag=20_000) is True
    assert behind_after(20_000, filled=True, options=o, lag=4999) is False
    assert behind_after(20_000, filled=True, options=o, lag=0) is False
    assert behind_after(20_000, filled=False, options=o, lag=10_000) is None  # between
    assert behind_after(20_000, filled=False, options=o, lag=None) is False  # the batch


@given(st.integers(0, 10**7), st.integers(1, 10**5), st.integers(1, 10**5),
       st.booleans(), st.integers(1, 10**5))
def test_behind_by_lag_is_monotonic(lag: int, rows: int, extra: int, filled: bool,
                                    cap: int) -> None:
    o = SinkOptions(batch_rows=rows, drain_batch_rows=rows + extra)
    got = behind_after(cap, filled=filled, options=o, lag=lag)
    assert got is (True if lag >= o.drain_batch_rows else False if lag < rows else None)


class _TP:
    def __init__(self, partition: int, offset: int) -> None:
        self.partition, self.offset = partition, offset


class _Consumer:
    """The three librdkafka calls ``_lag_of`` makes, over fixed numbers."""

    def __init__(self, positions: dict[int, int], highs: dict[int, int],
                 fail: bool = False) -> None:
        self.positions, self.highs, self.fail = positions, highs, fail

    def assignment(self) -> list[_TP]:
        if self.fail:
            raise RuntimeError("closed")
        return [_TP(p, -1) for p in self.positions]

    def position(self, tps: list[_TP]) -> list[_TP]:
        return [_TP(t.partition, self.positions[t.partition]) for t in tps]

    def get_watermark_offsets(self, tp: _TP, cached: bool = False) -> tuple[int, int]:
        assert cached  # never a request to the broker
        return (0, self.highs[tp.partition])


def test_lag_of_sums_high_minus_position_over_known_partitions() -> None:
    from ioc.storage.sink import _lag_of

    c = _Consumer({0: 100, 1: 50, 2: -1001, 3: 7}, {0: 150, 1: 50, 2: 900, 3: -1001})
    assert _lag_of(c) == 50  # type: ignore[arg-type]  # 2: no position, 3: no watermark
    assert _lag_of(_Consumer({0: -1001}, {0: 10})) is None  # type: ignore[arg-type]
    assert _lag_of(_Consumer({0: 5}, {0: 3})) == 0  # type: ignore[arg-type]  # never < 0
    assert _lag_of(_Consumer({0: 5}, {0: 3}, fail=True)) is None  # type: ignore[arg-type]


def test_settling_a_write_of_one_other_table_paces_all_of_them() -> None:
    p = Precedence(["events"], hold_s=90.0, settle_s=120.0, settle_duty=0.5)
    p.report("events", True)
    p.report("events", False, now=10.0)
    assert p.paced_until("alerts", 11.0) == 0.0  # nobody wrote yet
    p.pause_after("rollups", 2.0, 11.0)
    for other in ("rollups", "alerts", "detections"):
        assert p.paced_until(other, 11.5) == pytest.approx(13.0)
    assert p.paced_until("events", 11.5) == 0.0  # a first table never waits
    assert p.paced_until("alerts", 13.0) == 0.0  # the pause is over
    p.pause_after("alerts", 1.0, 12.0)  # a write that overlapped: the later end counts
    assert p.paced_until("rollups", 12.5) == pytest.approx(13.0)
    p.pause_after("alerts", 4.0, 125.0)
    assert p.paced_until("rollups", 125.5) == pytest.approx(129.0)
    assert p.paced_until("rollups", 130.5) == 0.0  # settled (130): full pace again


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["rollups", "alerts", "detections"]),
                          st.floats(1e-3, 5.0), st.floats(0.0, 2.0)),
                min_size=1, max_size=80),
       st.floats(0.05, 1.0))
def test_settling_the_others_together_write_at_most_settle_duty_of_the_time(
        writes: list[tuple[str, float, float]], duty: float) -> None:
    # Tables that write one at a time whenever paced_until lets them (each after a
    # think time of its own): their writes, together, take at most duty of the time.
    hold_s = 1e6  # no bound in the way of the duty
    p = Precedence(["events"], hold_s=hold_s, settle_s=1e9, settle_duty=duty)
    p.report("events", True)
    p.report("events", False, now=0.0)
    now, busy = 0.0, 0.0
    for name, wrote_s, think_s in writes:
        now += think_s
        now = max(now, p.paced_until(name, now))
        assert p.paced_until(name, now) == 0.0
        now += wrote_s
        busy += wrote_s
        p.pause_after(name, wrote_s, now)
    last = writes[-1][1]
    # after the last write its pause is still owed: count it in the elapsed time
    assert busy <= duty * (now + last * (1 - duty) / duty) + 1e-6 * busy


def test_settling_the_others_write_one_at_a_time_and_a_claim_is_bounded() -> None:
    p = Precedence(["events"], hold_s=90.0, settle_s=120.0, settle_duty=0.5)
    p.start_write("rollups", 0.0)  # nothing settling: no claim
    assert p.paced_until("alerts", 0.5) == 0.0
    p.report("events", True)
    p.report("events", False, now=10.0)
    p.start_write("events", 11.0)  # a first table never claims
    assert p.paced_until("alerts", 11.0) == 0.0
    p.start_write("rollups", 11.0)
    assert p.paced_until("alerts", 12.0) == pytest.approx(101.0)  # until it ends
    assert p.paced_until("rollups", 12.0) == 0.0  # not for itself
    assert p.paced_until("events", 12.0) == 0.0
    p.pause_after("rollups", 2.0, 13.0)  # ends the write: all wait 2 s
    assert p.paced_until("alerts", 13.5) == pytest.approx(15.0)
    p.start_write("alerts", 15.0)
    p.pause_after("alerts", 0.0, 15.5)  # a failed write: released, no pause
    assert p.paced_until("rollups", 15.5) == 0.0
    p.start_write("alerts", 20.0)  # a write that never ends holds the others hold_s
    assert p.paced_until("rollups", 109.0) == pytest.approx(110.0)
    assert p.paced_until("rollups", 110.0) == 0.0
