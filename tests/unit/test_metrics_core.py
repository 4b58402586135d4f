"""Unit: ioc.metrics' registry, endpoint, histogram, lag cache and the sink's collector."""

from __future__ import annotations

import socket
import time
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ioc.config import load_settings
from ioc.errors import ConfigError
from ioc.metrics import ConsumerLag, Histogram, start_metrics
from ioc.metrics.sink import SinkCollector, sink_groups
from ioc.storage.sink import SinkMetrics
from ioc.storage.sink_tables import sink_tables
from tests.fixtures.metrics import scrape


def _settings(**metrics: object):
    return load_settings(env={}, overrides={"metrics": metrics} if metrics else None)


@settings(max_examples=300, deadline=None)
@given(bounds=st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=8,
                       unique=True).map(sorted),
       values=st.lists(st.floats(-2e6, 2e6, allow_nan=False), max_size=50))
def test_histogram_buckets_are_prometheus_le_buckets(bounds, values):
    h = Histogram(bounds)
    for v in values:
        h.observe(v)
    cum = h.cumulative()
    assert [le for le, _ in cum][-1] == "+Inf"
    for (le, n), b in zip(cum, [*bounds, float("inf")], strict=True):
        assert n == sum(1 for v in values if v <= b), (le, b)
    assert h.count == len(values)
    assert h.sum == pytest.approx(sum(values), abs=1e-6 * (1 + sum(map(abs, values))))


def test_histogram_refuses_bounds_that_do_not_increase():
    with pytest.raises(ValueError, match="strictly increasing"):
        Histogram([1.0, 1.0])
    with pytest.raises(ValueError):
        Histogram([])


def test_metrics_off_by_settings_and_per_service_but_a_port_flag_wins():
    assert start_metrics(_settings(enabled=False), "sink", announce=False) is None
    assert start_metrics(_settings(sink=None), "sink", announce=False) is None
    ep = start_metrics(_settings(enabled=False), "sink", port=0, announce=False)
    assert ep is not None
    try:
        s = scrape(ep.url)
        assert s.labels("ioc_build_info")[0]["service"] == "sink"
    finally:
        ep.close()


def test_port_zero_in_settings_binds_a_free_loopback_port_and_prints_it(capsys):
    ep = start_metrics(_settings(feeds=0), "feeds")
    assert ep is not None
    try:
        assert ep.port > 0 and ep.url == f"http://127.0.0.1:{ep.port}/metrics"
        assert f"metrics on {ep.url}" in capsys.readouterr().err
        assert "process_cpu_seconds_total" in scrape(ep.url).names()
    finally:
        ep.close()


def test_a_busy_port_is_a_config_error_naming_the_key():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(ConfigError) as info:
            start_metrics(_settings(gateway=port), "gateway", announce=False)
    assert info.value.problems[0][0] == "metrics.gateway"
    assert "in use" in info.value.problems[0][1] and str(port) in info.value.problems[0][1]


def test_two_services_in_one_process_have_registries_of_their_own():
    a = start_metrics(_settings(), "worker", port=0, announce=False)
    b = start_metrics(_settings(), "wall", port=0, announce=False)
    assert a is not None and b is not None
    try:
        assert scrape(a.url).labels("ioc_build_info")[0]["service"] == "worker"
        assert scrape(b.url).labels("ioc_build_info")[0]["service"] == "wall"
    finally:
        a.close()
        b.close()


def test_consumer_lag_exports_the_cache_and_hides_stale_values():
    lag = ConsumerLag(_settings(), lambda: [], stale_s=30.0)  # not started: no Kafka here
    now = time.monotonic()
    lag.values[("g", "t", 0)] = (7, now)
    lag.values[("g", "t", 1)] = (9, now - 31.0)
    (fam,) = list(lag.collect())
    assert fam.name == "ioc_consumer_lag"
    assert [(s.labels["partition"], s.value) for s in fam.samples] == [("0", 7.0)]
    lag.close()  # never started: returns at once


def _runner(table_index: int, **metrics: object) -> SimpleNamespace:
    spec = sink_tables()[table_index]
    m = SinkMetrics()
    for k, v in metrics.items():
        setattr(m, k, v)
    return SimpleNamespace(spec=spec, metrics=m, _paused=False, group=f"t-sink-{spec.name}",
                           topic=f"t.{spec.topic_suffix}")


def test_sink_collector_reads_the_runners_at_scrape_time():
    from prometheus_client import CollectorRegistry, generate_latest

    from tests.fixtures.metrics import Scrape

    runners: list[SimpleNamespace] = []
    reg = CollectorRegistry()
    reg.register(SinkCollector(runners))
    assert "ioc_sink_rows_written_total" not in Scrape(generate_latest(reg).decode()).names()
    r = _runner(0, rows_inserted=5, paused_s=2.0)
    runners.append(r)
    table = r.spec.table
    s = Scrape(generate_latest(reg).decode())
    assert s.value("ioc_sink_rows_written_total", table=table) == 5
    assert s.value("ioc_sink_paused", table=table) == 0
    assert s.value("ioc_sink_database_down_seconds_total", table=table) == 2.0
    # the database goes down: paused, the outage counts while it lasts
    r._paused = True
    r.metrics.down_since = time.monotonic() - 3.0
    r.metrics.rows_inserted += 10
    r.metrics.write_seconds.observe(0.02)
    r.metrics.dead_letters["db_refused"] = 2
    r.metrics.dead_letters["a reason nobody declared"] = 1
    s = Scrape(generate_latest(reg).decode())
    assert s.value("ioc_sink_rows_written_total", table=table) == 15
    assert s.value("ioc_sink_paused", table=table) == 1
    assert s.value("ioc_sink_database_down_seconds_total", table=table) >= 5.0
    assert s.value("ioc_sink_batch_seconds_count", table=table) == 1
    assert s.value("ioc_sink_batch_seconds_bucket", table=table, le="0.025") == 1
    assert s.value("ioc_dead_letters_total", stage="sink", reason="db_refused") == 2
    assert s.value("ioc_dead_letters_total", stage="sink", reason="other") == 1
    assert sink_groups(runners) == [(r.group, [r.topic])]


def test_sink_dead_letters_exist_at_zero_and_sum_over_tables():
    """rate() needs a series before its first count; two tables, one series per reason."""
    from prometheus_client import CollectorRegistry, generate_latest

    from ioc.events import DEAD_LETTER_REASONS
    from tests.fixtures.metrics import Scrape

    runners = [_runner(0), _runner(1)]
    reg = CollectorRegistry()
    reg.register(SinkCollector(runners))
    s = Scrape(generate_latest(reg).decode())
    for reason in DEAD_LETTER_REASONS:
        assert s.value("ioc_dead_letters_total", stage="sink", reason=reason) == 0
    runners[0].metrics.dead_letters["sink_unreadable"] = 2
    runners[1].metrics.dead_letters["sink_unreadable"] = 3
    text = generate_latest(reg).decode()
    lines = [ln for ln in text.splitlines()
             if ln.startswith("ioc_dead_letters_total{") and '"sink_unreadable"' in ln]
    assert len(lines) == 1, lines  # one series, not one per table
    assert Scrape(text).value("ioc_dead_letters_total", stage="sink",
                              reason="sink_unreadable") == 5


def test_a_client_that_sends_nothing_is_dropped_and_does_not_hold_up_scrapes(monkeypatch):
    from ioc.metrics import _server

    monkeypatch.setattr(_server._Handler, "timeout", 0.5)
    ep = start_metrics(_settings(), "camera", port=0, announce=False)
    assert ep is not None
    try:
        with socket.create_connection(("127.0.0.1", ep.port), timeout=10) as slow:
            assert "ioc_build_info" in scrape(ep.url).names()  # served meanwhile
            assert slow.recv(100) == b""  # closed by the server (recv would time out at 10 s)
    finally:
        ep.close()
