"""Counters and collector of ``ioc feeds run`` (``feed``: ``sensors`` or ``egov``)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from ._registry import snapshot_items

__all__ = ["FEEDS", "FeedCollector", "FeedCounts"]

#: The feeds of ``ioc feeds run``: the label values of ``feed``.
FEEDS = ("sensors", "egov")


@dataclass
class FeedCounts:
    """Events per feed: published (acknowledged), rejected by validation, and not
    acknowledged by the broker on an attempt (``errors``; the batch is retried)."""

    published: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FEEDS, 0))
    rejected: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FEEDS, 0))
    errors: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FEEDS, 0))

    @staticmethod
    def add(d: dict[str, int], feed: str, n: int = 1) -> None:
        d[feed] = d.get(feed, 0) + n


class FeedCollector(Collector):
    def __init__(self, counts: FeedCounts) -> None:
        self.counts = counts

    def collect(self) -> Iterator[Metric]:
        c = self.counts
        for name, doc, d in (
                ("ioc_feed_events_published", "events published and acknowledged", c.published),
                ("ioc_feed_events_rejected", "events the publisher refused (invalid)", c.rejected),
                ("ioc_feed_publish_errors", "events of batches the broker did not acknowledge "
                 "on an attempt (the batch is sent again)", c.errors)):
            fam = CounterMetricFamily(name, doc, labels=["feed"])
            for feed, n in sorted(snapshot_items(d)):
                fam.add_metric([feed if feed in FEEDS else "other"], n)
            yield fam
