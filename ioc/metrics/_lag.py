"""``ioc_consumer_lag{group, topic, partition}``: high watermark minus committed offset.

A scrape never talks to Kafka: a daemon thread refreshes a cache every ``refresh_s``
(5 s) and the collector reads it. The thread uses a consumer of its own per group
(``group.id`` of the group it watches, never subscribed, so it never joins the group
or commits; it only asks for the group's committed offsets and the partitions' high
watermarks), so the service's own consumers are never called from another thread.
Every request has a timeout (``timeout_s``); a value not refreshed for ``stale_s``
(60 s: the broker is unreachable, say) is no longer exported rather than shown frozen.

A partition with no committed offset yet counts from its low watermark (the groups
here start at ``earliest``). Every member of a group reports the lag of all the group's
partitions, so several workers export the same series: use ``max by (group, topic,
partition)`` across instances.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from ..config import Settings

__all__ = ["ConsumerLag", "GroupsFn"]

log = logging.getLogger("ioc.metrics")

#: What to watch: ``(group id, topics)`` pairs, asked again at every refresh (a worker's
#: stages start after its metrics endpoint).
GroupsFn = Callable[[], Iterable[tuple[str, Sequence[str]]]]


class ConsumerLag(Collector):
    """The lag of the groups ``groups()`` names, refreshed in a thread of its own
    (from ``start()``)."""

    def __init__(self, settings: Settings, groups: GroupsFn, *, refresh_s: float = 5.0,
                 timeout_s: float = 1.0, stale_s: float = 60.0) -> None:
        self.settings = settings
        self.groups = groups
        self.refresh_s = refresh_s
        self.timeout_s = timeout_s
        self.stale_s = stale_s
        # (group, topic, partition) -> (lag, monotonic time of the refresh)
        self.values: dict[tuple[str, str, int], tuple[int, float]] = {}
        self._partitions: dict[str, tuple[list[int], float]] = {}
        self._consumers: dict[str, Any] = {}
        self._stop = threading.Event()
        self.refreshes = 0  # completed refresh rounds (tests wait on it)
        self._thread = threading.Thread(target=self._run, name="metrics-lag", daemon=True)

    def start(self) -> None:
        """Start the refresher thread (``start_metrics`` does, once it serves)."""
        if not self._thread.is_alive():
            self._thread.start()

    # -- the collector (the scrape thread): reads the cache only ----------------------

    def collect(self) -> Iterator[Metric]:
        g = GaugeMetricFamily("ioc_consumer_lag", "records of the partition not yet "
                              "committed by the group (high watermark - committed offset)",
                              labels=["group", "topic", "partition"])
        now = time.monotonic()
        for (group, topic, part), (lag, at) in sorted(self.values.copy().items()):
            if now - at <= self.stale_s:
                g.add_metric([group, topic, str(part)], float(lag))
        yield g

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.timeout_s * 3 + 1)
        if not self._thread.is_alive():
            for c in self._consumers.values():
                try:
                    c.close()
                except Exception as exc:  # closing at exit: nothing more to do
                    log.debug("closing a lag consumer: %r", exc)
            self._consumers.clear()

    # -- the refresher thread -----------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.refresh()
            except Exception as exc:  # never let the thread die: try again next round
                log.warning("consumer lag: refresh failed: %s: %s", type(exc).__name__, exc)
            self.refreshes += 1
            self._stop.wait(self.refresh_s)

    def _consumer(self, group: str) -> Any:
        c = self._consumers.get(group)
        if c is None:
            from ..kafka.clients import rdkafka_conf
            from ..kafka.rdkafka import Consumer

            conf = rdkafka_conf(self.settings.kafka, "consumer")
            conf.update({"group.id": group, "enable.auto.commit": False,
                         "client.id": f"{self.settings.kafka.client_id}-metrics"})
            c = self._consumers[group] = Consumer(conf)
        return c

    def _partitions_of(self, c: Any, topic: str) -> list[int]:
        hit = self._partitions.get(topic)
        if hit is not None and time.monotonic() - hit[1] < 60.0:
            return hit[0]
        md = c.list_topics(topic, timeout=self.timeout_s).topics.get(topic)
        parts = sorted(md.partitions) if md is not None and md.error is None else []
        self._partitions[topic] = (parts, time.monotonic())
        return parts

    def refresh(self) -> None:
        """One round: committed offsets and watermarks of every watched partition."""
        from ..kafka.rdkafka import KafkaException, TopicPartition

        for group, topics in list(self.groups()):
            c = self._consumer(group)
            for topic in topics:
                if self._stop.is_set():
                    return
                try:
                    parts = self._partitions_of(c, topic)
                    if not parts:
                        continue
                    committed = c.committed([TopicPartition(topic, p) for p in parts],
                                            timeout=self.timeout_s)
                    for tp in committed:
                        lo, hi = c.get_watermark_offsets(TopicPartition(topic, tp.partition),
                                                         timeout=self.timeout_s, cached=False)
                        done = tp.offset if tp.offset >= 0 else lo
                        self.values[(group, topic, tp.partition)] = (max(0, hi - done),
                                                                     time.monotonic())
                except KafkaException as exc:
                    log.debug("consumer lag of %s on %s: %s", group, topic, exc)
