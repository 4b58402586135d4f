"""Which sink tables wait while a first table is behind (pure: ``Precedence``)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ioc.storage._sink_precedence import Precedence
from ioc.storage.sink import SinkOptions, behind_after


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


def test_hold_s_must_be_positive() -> None:
    with pytest.raises(ValueError, match="hold_s"):
        Precedence(["events"], hold_s=0.0)


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
        if held:
            since = now if since is None else since
            assert now - since < hold_s
        else:
            since = None


def test_only_a_full_batch_at_the_drain_size_says_behind() -> None:
    o = SinkOptions(batch_rows=5000, drain_batch_rows=20_000)
    assert behind_after(20_000, filled=True, options=o) is True
    assert behind_after(5000, filled=True, options=o) is None  # a burst: no change
    assert behind_after(10_000, filled=True, options=o) is None
    assert behind_after(20_000, filled=False, options=o) is False
    assert behind_after(5000, filled=False, options=o) is False
