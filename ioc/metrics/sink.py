"""Collector of ``ioc sink``: reads each table runner's ``SinkMetrics`` at scrape time."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..events import DEAD_LETTER_REASONS
from ._registry import histogram_family

__all__ = ["SinkCollector", "sink_groups"]


class SinkCollector(Collector):
    """Metrics of the table sinks of one process.

    ``runners`` is the list ``run_sinks(on_start=...)`` fills (empty until they start):
    each has ``spec`` (``table``), ``metrics`` (``SinkMetrics``) and ``_paused``.
    """

    def __init__(self, runners: Sequence[Any]) -> None:
        self.runners = runners

    def collect(self) -> Iterator[Metric]:
        runners = list(self.runners)
        rows = CounterMetricFamily("ioc_sink_rows_written", "rows new in the table (not "
                                   "already there), committed", labels=["table"])
        fallbacks = CounterMetricFamily("ioc_sink_copy_fallbacks", "batches the unique key "
                                        "sent from the direct COPY to staging + merge",
                                        labels=["table"])
        down = CounterMetricFamily("ioc_sink_database_down_seconds", "seconds the sink "
                                   "waited for an unreachable database", labels=["table"])
        paused = GaugeMetricFamily("ioc_sink_paused", "1 while the sink's partitions are "
                                   "paused (database down), else 0", labels=["table"])
        dead = CounterMetricFamily("ioc_dead_letters", "records sent to <ns>.dlq (and "
                                   "acknowledged), by stage and reason",
                                   labels=["stage", "reason"])
        now = time.monotonic()
        # Every reason from the start at 0: rate() over a series that appears already
        # holding its first count misses that count. Summed over the tables' runners.
        by_reason: dict[str, int] = dict.fromkeys((*DEAD_LETTER_REASONS, "other"), 0)
        for r in runners:
            m, table = r.metrics, r.spec.table
            rows.add_metric([table], m.rows_inserted)
            fallbacks.add_metric([table], m.direct_fallbacks)
            since = m.down_since
            down.add_metric([table], m.paused_s + (now - since if since is not None else 0.0))
            paused.add_metric([table], 1.0 if r._paused else 0.0)
            for reason, n in dict(m.dead_letters).items():
                key = reason if reason in DEAD_LETTER_REASONS else "other"
                by_reason[key] = by_reason.get(key, 0) + n
        yield rows
        yield fallbacks
        yield histogram_family("ioc_sink_batch_seconds", "seconds to write one batch "
                               "(COPY, merge, commit)", ["table"],
                               [([r.spec.table], r.metrics.write_seconds) for r in runners])
        for reason, n in sorted(by_reason.items()):
            dead.add_metric(["sink", reason], n)
        yield down
        yield paused
        yield dead


def sink_groups(runners: Sequence[Any]) -> list[tuple[str, list[str]]]:
    """``(group, [topic])`` of each runner, for ``ConsumerLag``."""
    return [(r.group, [r.topic]) for r in list(runners)]
