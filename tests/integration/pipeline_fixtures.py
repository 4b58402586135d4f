"""Helpers of the pipeline tests: publish canonical events fast, read topics back, wait."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

import orjson
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from ioc.config import Settings
from ioc.events import Event, encode_event
from ioc.kafka import kafka_python_kwargs
from ioc.topics import topic_name

PIPELINE_AGENTS = "aggregate,kpis,rules,tiles"


def publish(settings: Settings, events: Iterable[Event], *, suffix: str = "events") -> tuple[int, float]:
    """Produce canonical events keyed by entity (acks=all, batched); return (count, seconds)."""
    producer = KafkaProducer(acks="all", linger_ms=20, batch_size=256 * 1024,
                             compression_type=None, **kafka_python_kwargs(settings.kafka))
    topic = topic_name(settings.namespace, suffix)
    t0 = time.perf_counter()
    n = 0
    try:
        for e in events:
            producer.send(topic, key=e.entity.encode(), value=encode_event(e))
            n += 1
        producer.flush(timeout=120)
    finally:
        producer.close(timeout=10)
    return n, time.perf_counter() - t0


def read_topic(settings: Settings, suffix: str, *, timeout: float = 5.0) -> list[Any]:
    """Every record currently in ``<ns>.<suffix>`` (from the start to the current end)."""
    kw = kafka_python_kwargs(settings.kafka)
    consumer = KafkaConsumer(enable_auto_commit=False, **kw)
    topic = topic_name(settings.namespace, suffix)
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in parts]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        out: list[Any] = []
        deadline = time.monotonic() + timeout
        while any(consumer.position(tp) < ends[tp] for tp in tps) and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=200, max_records=50_000).values():
                out.extend(records)
        return out
    finally:
        consumer.close()


def wait_for(check: Callable[[], Any], *, timeout: float, every: float = 1.0,
             alive: Callable[[], bool] | None = None, what: str = "condition") -> Any:
    """Poll ``check`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        if alive is not None and not alive():
            raise AssertionError(f"worker died while waiting for {what}")
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; last check gave {last!r}")


class TopicTail:
    """Reads a topic from the start, incrementally: ``poll()`` returns only new records."""

    def __init__(self, settings: Settings, suffix: str) -> None:
        self.topic = topic_name(settings.namespace, suffix)
        self.consumer = KafkaConsumer(enable_auto_commit=False, **kafka_python_kwargs(settings.kafka))
        parts = self.consumer.partitions_for_topic(self.topic) or set()
        self.tps = [TopicPartition(self.topic, p) for p in sorted(parts)]
        self.consumer.assign(self.tps)
        self.consumer.seek_to_beginning(*self.tps)

    def poll(self, timeout_ms: int = 300) -> list[Any]:
        out: list[Any] = []
        for records in self.consumer.poll(timeout_ms=timeout_ms, max_records=100_000).values():
            out.extend(records)
        return out

    def close(self) -> None:
        self.consumer.close()


class ClosedWindows:
    """Closed windows seen on ``<ns>.rollups``: rollup key -> (count, sum, min, max).

    ``conflicts`` lists every window closed twice with different totals.
    """

    def __init__(self, settings: Settings) -> None:
        self.tail = TopicTail(settings, "rollups")
        self.got: dict[str, tuple[int, float, float, float]] = {}
        self.conflicts: list[object] = []

    def collect(self) -> int:
        """Read what is new; return how many windows have closed so far."""
        from ioc.aggregate import rollup_key

        for r in self.tail.poll():
            d = orjson.loads(r.value)
            if d["state"] != "closed":
                continue
            k = rollup_key(d["entity"], d["metric"], d["size"], d["start"])
            v = (d["count"], d["sum"], d["min"], d["max"])
            if k in self.got and self.got[k] != v:
                self.conflicts.append((k, self.got[k], v))
            self.got[k] = v
        return len(self.got)


def consumed_all(settings: Settings, suffix: str = "events") -> bool:
    """True when every stage group of the worker app that reads ``<ns>.<suffix>`` has
    committed its end (stage groups are named ``<app id>.<stage names>``)."""
    from ioc.kafka.clients import admin_client

    topic = topic_name(settings.namespace, suffix)
    app_id = settings.streams.app_id or f"{settings.namespace}-streams"
    admin = admin_client(settings.kafka)
    consumer = KafkaConsumer(enable_auto_commit=False, **kafka_python_kwargs(settings.kafka))
    try:
        groups = [g["group_id"] for g in admin.list_groups()
                  if str(g["group_id"]).startswith(f"{app_id}.")]
        offsets = admin.list_group_offsets(groups) if groups else {}
        readers = [o for o in offsets.values() if any(tp.topic == topic for tp in o)]
        if not readers:
            return False
        tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        ends = consumer.end_offsets(tps)
        return all((o[tp].offset if tp in o else 0) >= end
                   for o in readers for tp, end in ends.items())
    finally:
        consumer.close()
        admin.close()
