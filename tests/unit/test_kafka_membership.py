"""MembershipWatch: when a polling consumer outside its group is given up (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ioc.kafka.membership import MembershipWatch


def test_a_member_is_never_overdue() -> None:
    w = MembershipWatch(first_join_s=60, rejoin_s=20, probe_every_s=2)
    assert all(w.overdue(True, t) is None for t in range(0, 1000, 7))


def test_first_join_gets_the_long_bound() -> None:
    w = MembershipWatch(first_join_s=60, rejoin_s=20, probe_every_s=2)
    for t in range(60):  # checked every second
        assert w.overdue(False, float(t)) is None
    assert w.overdue(False, 61.0) == pytest.approx(61.0)


def test_a_lost_member_id_gets_the_short_bound_from_the_last_broker_down() -> None:
    w = MembershipWatch(first_join_s=60, rejoin_s=20, probe_every_s=2)
    assert w.overdue(True, 0.0) is None
    assert w.overdue(False, 5.0) is None  # id lost at 5 s (broker stopped)
    for t in range(6, 36, 3):  # the broker away until 35 s: an error event per reconnect
        w.broker_down(float(t))
        assert w.overdue(False, float(t)) is None
    for t in range(34, 54):  # checked every second
        assert w.overdue(False, float(t)) is None  # up to 20 s after the last error (33 s)
    assert w.overdue(False, 54.0) == pytest.approx(49.0)  # 21 s after it: given up


def test_rejoining_clears_and_reset_forgets_the_past_membership() -> None:
    w = MembershipWatch(first_join_s=60, rejoin_s=20, probe_every_s=2)
    w.overdue(True, 0.0)
    w.overdue(False, 1.0)
    assert w.overdue(True, 10.0) is None
    assert w.overdue(False, 11.0) is None
    w.reset()  # a new consumer: never joined
    for t in range(12, 73):  # checked every second
        assert w.overdue(False, float(t)) is None  # within first_join_s
    assert w.overdue(False, 73.0) is not None


def test_bounds_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        MembershipWatch(first_join_s=0)


def test_time_not_watched_does_not_count() -> None:
    """A loop blocked 40 s (a commit waiting out a broker stop) gets the whole bound
    from its first check after the wait, not an immediate replacement."""
    w = MembershipWatch(first_join_s=60, rejoin_s=12, probe_every_s=2, gap_s=5)
    assert w.overdue(True, 0.0) is None
    assert w.overdue(False, 1.0) is None  # id lost; the last broker-down sighting:
    w.broker_down(2.0)
    # ... then the loop is blocked from 2 s to 42 s
    assert w.overdue(False, 42.0) is None  # 40 s outside, but 0 s watched
    assert w.overdue(False, 50.0) is None  # another gap (8 s): counts afresh again
    for t in (52.0, 55.0, 58.0, 61.0):
        assert w.overdue(False, t) is None
    assert w.overdue(False, 62.5) == pytest.approx(61.5)  # 12.5 s watched since 50 s


def test_calls_closer_than_the_gap_keep_counting() -> None:
    w = MembershipWatch(first_join_s=60, rejoin_s=12, probe_every_s=2, gap_s=5)
    w.overdue(True, 0.0)
    w.overdue(False, 1.0)
    for t in range(5, 13, 4):  # every 4 s: within the gap
        assert w.overdue(False, float(t)) is None
    assert w.overdue(False, 13.5) == pytest.approx(12.5)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["member", "none", "error"]),
                          st.floats(0, 30, allow_nan=False)), max_size=60))
def test_never_overdue_before_the_bound_since_the_later_of_loss_and_last_error(
        steps: list[tuple[str, float]]) -> None:
    w = MembershipWatch(first_join_s=60, rejoin_s=20, probe_every_s=2, gap_s=5)
    now, outside_since, last_error, had = 0.0, None, None, False
    last_call: float | None = None
    for kind, dt in steps:
        now += dt
        if kind == "error":
            w.broker_down(now)
            last_error = now
            continue
        got = w.overdue(kind == "member", now)
        if last_call is not None and now - last_call > 5:
            last_error = now if last_error is None else max(last_error, now)
        last_call = now
        if kind == "member":
            had, outside_since = True, None
            assert got is None
            continue
        if outside_since is None:
            outside_since = now
            assert got is None
            continue
        start = max(outside_since, last_error if last_error is not None else outside_since)
        bound = 20 if had else 60
        assert (got is not None) == (now - start > bound)


def test_probes_only_while_outside_and_not_more_often_than_asked() -> None:
    w = MembershipWatch(first_join_s=60, rejoin_s=20, probe_every_s=2)
    w.overdue(True, 0.0)
    assert not w.probe_due(0.5)  # a member: nothing to probe
    w.overdue(False, 1.0)
    assert w.probe_due(1.0)
    assert not w.probe_due(2.5)
    assert w.probe_due(3.1)
    w.overdue(True, 4.0)
    assert not w.probe_due(9.0)


def test_fatal_consumer_errors_are_told_apart_and_explained() -> None:
    """librdkafka's _FATAL event (a fenced static member) has fatal() False: still fatal."""
    from ioc.kafka.clients import fatal_consumer_error, is_fatal
    from ioc.kafka.rdkafka import KafkaError

    fenced = KafkaError(KafkaError._FATAL, "Fatal error: Broker: Static consumer fenced by "
                        "other consumer with same group.instance.id")
    assert is_fatal(fenced)
    assert not is_fatal(KafkaError(KafkaError._TRANSPORT, "Connection refused"))
    assert not is_fatal(KafkaError(KafkaError._ALL_BROKERS_DOWN))
    text = fatal_consumer_error(fenced, "stage validate", "ns-streams.validate")
    assert "kafka.group_instance_id" in text and "ns-streams.validate" in text
    other = fatal_consumer_error(KafkaError(KafkaError._FATAL, "something else"), "sink x", "g")
    assert "group_instance_id" not in other and "something else" in other
