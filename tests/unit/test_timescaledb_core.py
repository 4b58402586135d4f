"""The pure parts of the TimescaleDB path: the use/create/plain decision and the hours
the rollups sink refreshes in ``rollups_1h`` (no database)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ioc.aggregate._storage import hourly_refresh_ranges
from ioc.errors import StorageError
from ioc.storage import PRELOAD_HINT, TimescaleState, timescale_plan

NOW = datetime(2026, 12, 1, 20, 17, tzinfo=UTC)
H = timedelta(hours=1)


@pytest.mark.parametrize(("mode", "created", "available", "preloaded", "want"), [
    ("auto", True, True, True, "use"),
    ("auto", False, True, True, "create"),
    ("auto", False, False, False, "plain"),
    ("auto", False, True, False, "plain"),  # installed, not preloaded: warn, plain tables
    ("on", True, True, True, "use"),
    ("on", False, True, True, "create"),
    ("off", True, True, False, "plain"),
    ("off", False, True, True, "plain"),
])
def test_plan(mode, created, available, preloaded, want):
    action, problem = timescale_plan(mode, TimescaleState(created, available, preloaded))
    assert action == want
    if (mode, available, preloaded) == ("auto", True, False):
        assert problem is not None and "shared_preload_libraries = 'timescaledb'" in problem
    if action != "plain" or mode == "off":
        assert problem is None


def test_on_without_preload_names_the_postgresql_conf_line():
    with pytest.raises(StorageError) as ei:
        timescale_plan("on", TimescaleState(False, True, False))
    assert "database.timescaledb is 'on'" in str(ei.value) and PRELOAD_HINT in str(ei.value)
    with pytest.raises(StorageError, match="not installed"):
        timescale_plan("on", TimescaleState(False, False, False))


@pytest.mark.parametrize("mode", ["auto", "on"])
def test_created_but_not_preloaded_fails_in_auto_too(mode):
    # TimescaleDB's event triggers would make even a plain create table fail FATAL.
    with pytest.raises(StorageError, match="created in this database but the server does not"):
        timescale_plan(mode, TimescaleState(True, True, False))


def test_refresh_only_hours_the_policy_may_have_materialised():
    live = [NOW - timedelta(minutes=m) for m in (1, 30, 59, 90)]  # 20:16 .. 18:47
    assert hourly_refresh_ranges(live, now=NOW) == [(datetime(2026, 12, 1, 18, tzinfo=UTC),
                                                     datetime(2026, 12, 1, 19, tzinfo=UTC))]
    assert hourly_refresh_ranges([NOW - timedelta(minutes=50)], now=NOW) == []


def test_replayed_history_is_coalesced_and_cut():
    base = datetime(2026, 11, 1, tzinfo=UTC)
    starts = [base + timedelta(minutes=m) for m in range(0, 20 * 24 * 60, 7)]  # 20 days
    got = hourly_refresh_ranges(starts, now=NOW, max_span=timedelta(days=7))
    assert got == [(base, base + timedelta(days=7)),
                   (base + timedelta(days=7), base + timedelta(days=14)),
                   (base + timedelta(days=14), base + timedelta(days=20))]


def test_far_apart_hours_get_their_own_windows_up_to_the_limit():
    a, b, c = (datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 6, 1, 5, tzinfo=UTC),
               datetime(2026, 6, 1, 7, tzinfo=UTC))
    assert hourly_refresh_ranges([a, b, c], now=NOW, max_ranges=3) == [
        (a, a + H), (b, b + H), (c, c + H)]
    # two windows at most: cut at the widest gap (a | b..c)
    assert hourly_refresh_ranges([a, b, c], now=NOW, max_ranges=2) == [(a, a + H), (b, c + H)]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(min_value=-400 * 24 * 60, max_value=0), max_size=60),
       st.integers(min_value=1, max_value=5), st.integers(min_value=1, max_value=10))
def test_ranges_cover_every_old_hour_and_nothing_open(minutes, max_ranges, span_days):
    starts = [NOW + timedelta(minutes=m) for m in minutes]
    span = timedelta(days=span_days)
    got = hourly_refresh_ranges(starts, now=NOW, max_ranges=max_ranges, max_span=span)
    for lo, hi in got:
        assert lo.minute == 0 and hi.minute == 0 and lo < hi <= lo + span
        assert hi <= NOW - H  # never an hour the policy leaves to the live part
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(got))  # sorted, disjoint
    # at most max_ranges windows, each cut into ceil(length / span) pieces
    assert len(got) <= max_ranges + 401 // span_days + 1
    for s in starts:
        hour = s.replace(minute=0, second=0, microsecond=0)
        if hour + H <= NOW - H:
            assert any(lo <= hour < hi for lo, hi in got), s
