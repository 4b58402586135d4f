"""Replay pacing with a fake clock (no sleeping)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ioc.replay.timing import ReplayPacer, parse_speed

S = 1_000_000_000  # ns per second


class FakeClock:
    """Time moves only when the test sleeps."""

    def __init__(self) -> None:
        self.t = 100.0

    def sleep(self, s: float) -> None:
        assert s >= 0
        self.t += s


def release_times(pacer: ReplayPacer, stamps: list[int], clock: FakeClock,
                  work: float = 0.0) -> list[float]:
    out = []
    for ts in stamps:
        wait = pacer.delay(ts, clock.t)
        clock.sleep(wait)
        assert pacer.delay(ts, clock.t) == 0.0  # asking again after the sleep: due
        out.append(clock.t)
        clock.sleep(work)
    return out


def test_1x_keeps_the_gaps():
    clock = FakeClock()
    got = release_times(ReplayPacer(1.0), [10 * S, 10 * S + S // 2, 13 * S, 13 * S], clock)
    assert [round(t - got[0], 9) for t in got] == [0.0, 0.5, 3.0, 3.0]


@pytest.mark.parametrize("speed", [0.25, 2.0, 10.0])
def test_speed_scales_the_gaps(speed):
    clock = FakeClock()
    got = release_times(ReplayPacer(speed), [0, S, 3 * S], clock)
    assert [round(t - got[0], 9) for t in got] == [0.0, 1 / speed, 3 / speed]


def test_max_speed_never_waits():
    clock = FakeClock()
    got = release_times(ReplayPacer(math.inf), [0, 100 * S, 200 * S], clock)
    assert got == [100.0, 100.0, 100.0]


def test_slow_consumer_is_late_not_faster_later():
    clock = FakeClock()
    pacer = ReplayPacer(1.0)
    got = release_times(pacer, [0, S, 2 * S, 10 * S], clock, work=1.5)
    # each send takes 1.5 s: records 1 and 2 go late, record 3 is on schedule again
    assert [round(t - got[0], 9) for t in got] == [0.0, 1.5, 3.0, 10.0]
    assert pacer.max_lag_s == pytest.approx(1.0)


def test_backwards_time_never_reorders():
    clock = FakeClock()
    got = release_times(ReplayPacer(1.0), [5 * S, 7 * S, 6 * S, 8 * S], clock)
    assert [round(t - got[0], 9) for t in got] == [0.0, 2.0, 2.0, 3.0]


def test_max_gap_shortens_idle_periods_and_restart_reanchors():
    clock = FakeClock()
    pacer = ReplayPacer(1.0, max_gap_s=2.0)
    got = release_times(pacer, [0, S, 3600 * S, 3601 * S], clock)
    assert [round(t - got[0], 9) for t in got] == [0.0, 1.0, 3.0, 4.0]
    pacer.restart()
    t0 = clock.t
    assert pacer.delay(0, clock.t) == 0.0 and clock.t == t0


@given(st.lists(st.integers(0, 10**12), min_size=1, max_size=50),
       st.sampled_from([0.25, 1.0, 3.0]))
def test_release_times_are_monotonic(stamps, speed):
    clock = FakeClock()
    got = release_times(ReplayPacer(speed), stamps, clock)
    assert got == sorted(got)
    span = (max(stamps) - stamps[0]) / 1e9 / speed
    assert got[-1] - got[0] == pytest.approx(max(span, 0.0), abs=1e-6)


@pytest.mark.parametrize(("text", "value"), [("max", math.inf), ("1", 1.0), ("0.25", 0.25),
                                             ("4x", 4.0), ("1000", 1000.0)])
def test_parse_speed(text, value):
    assert parse_speed(text) == value


@pytest.mark.parametrize("text", ["0.1", "fast", "1001", "-1"])
def test_parse_speed_refuses(text):
    with pytest.raises(ValueError, match=r"expected 'max' or a number from 0\.25 to 1000"):
        parse_speed(text)
