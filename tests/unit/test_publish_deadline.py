"""Publisher: one batch waits at most ``ack_timeout_s`` in all (pure: a fake producer)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import KafkaError as RdKafkaError
from confluent_kafka import KafkaException

from ioc.config import Settings
from ioc.errors import KafkaError
from ioc.publish import Publisher

EVENT = {"id": "e1", "source": "s1", "type": "noise.level", "entity": "m1",
         "time": 1.7e9, "values": {"db": 40.0}}


class _StoppedBroker:
    """A librdkafka producer whose broker has stopped: nothing is ever acknowledged
    (until ``purge``, which fails what it holds, as librdkafka's does)."""

    def __init__(self) -> None:
        self.sent = 0
        self.held: list[Callable[[Any, Any], None]] = []
        self.purged = False

    def produce(self, topic: str, value: bytes, key: bytes,
                on_delivery: Callable[[Any, Any], None]) -> None:
        self.sent += 1
        self.held.append(on_delivery)

    def flush(self, timeout: float) -> int:
        if self.purged:
            for report in self.held:
                report(RdKafkaError(RdKafkaError._PURGE_QUEUE), None)
            self.held.clear()
            return 0
        time.sleep(timeout)
        return len(self.held)

    def poll(self, timeout: float) -> int:
        time.sleep(timeout)
        return 0

    def purge(self) -> None:
        self.purged = True


def _fake(monkeypatch: Any, cls: type = _StoppedBroker) -> list[Any]:
    made: list[Any] = []

    def new(self: Publisher) -> Any:
        made.append(cls())
        return made[-1]

    monkeypatch.setattr(Publisher, "_new_producer", new)
    return made


def test_a_batch_never_acknowledged_fails_within_ack_timeout(monkeypatch: Any) -> None:
    """The whole batch shares one deadline: it fails after one ``ack_timeout_s``, not one
    per record, and the producer is dropped (its records purged: nothing lingers)."""
    made = _fake(monkeypatch)
    pub = Publisher(Settings(), ack_timeout_s=0.6)
    events = [dict(EVENT, id=f"e{i}", source=f"s{i % 3}", time=1.7e9 + i) for i in range(30)]
    t0 = time.monotonic()
    with pytest.raises(KafkaError, match=r"3 of 3 record\(s\) \(30 event\(s\)\) were not "
                                         r"acknowledged.*resending is safe"):
        pub.send_many(events)
    took = time.monotonic() - t0
    assert made[0].sent == 3  # one record per source
    assert 0.55 <= took < 1.15, took
    assert made[0].purged and not made[0].held
    pub.send_many([])  # nothing to send: no new producer needed
    assert len(made) == 1


class _Refusing(_StoppedBroker):
    """``produce`` itself fails (e.g. a fatal idempotence error)."""

    def produce(self, topic: str, value: bytes, key: bytes,
                on_delivery: Callable[[Any, Any], None]) -> None:
        raise KafkaException(RdKafkaError(RdKafkaError._FATAL))


def test_a_send_that_fails_is_our_kafka_error_and_drops_the_producer(monkeypatch: Any) -> None:
    made = _fake(monkeypatch, _Refusing)
    pub = Publisher(Settings(), ack_timeout_s=0.6)
    for _ in range(2):
        with pytest.raises(KafkaError, match="resending is safe"):
            pub.send_many([EVENT])
    assert len(made) == 2  # a new producer for the second attempt


class _Full(_StoppedBroker):
    """The local queue is full for good: ``produce`` raises BufferError."""

    def produce(self, topic: str, value: bytes, key: bytes,
                on_delivery: Callable[[Any, Any], None]) -> None:
        raise BufferError("Local: Queue full")


def test_a_full_local_queue_is_waited_out_at_most_ack_timeout(monkeypatch: Any) -> None:
    _fake(monkeypatch, _Full)
    pub = Publisher(Settings(), ack_timeout_s=0.4)
    t0 = time.monotonic()
    with pytest.raises(KafkaError, match=r"BufferError.*resending is safe"):
        pub.send(EVENT)
    assert 0.35 <= time.monotonic() - t0 < 1.0


class _Acking(_StoppedBroker):
    """A broker that acknowledges everything at the next flush."""

    def flush(self, timeout: float) -> int:
        for report in self.held:
            report(None, None)
        self.held.clear()
        return 0


def test_acknowledged_events_are_returned_in_order_and_invalid_ones_listed(
        monkeypatch: Any) -> None:
    _fake(monkeypatch, _Acking)
    pub = Publisher(Settings(), ack_timeout_s=1.0)
    res = pub.send_many([EVENT, {"id": "bad"}, dict(EVENT, id="e2", source="s2")])
    assert res.accepted == ["e1", "e2"]
    assert [(r.index, r.id) for r in res.rejected] == [(1, "bad")]


def test_the_publishers_producer_is_bounded() -> None:
    """Records time out with the batch (``message.timeout.ms`` = ack_timeout_s), and a
    lost connection is retried at least every second (librdkafka: up to 10 s; the
    kafka-python clients left: up to 30 s)."""
    from ioc.kafka.clients import kafka_python_kwargs

    assert kafka_python_kwargs(Settings().kafka)["reconnect_backoff_max_ms"] == 1000
    pub = Publisher.__new__(Publisher)
    pub.settings, pub.ack_timeout_s = Settings(), 7.5
    pub._options = {"linger.ms": 5, "batch.size": 1, "compression.type": "none"}
    conf = pub._conf()
    assert conf["message.timeout.ms"] == 7500
    assert conf["reconnect.backoff.max.ms"] == 1000
    assert (conf["acks"], conf["enable.idempotence"]) == ("all", True)
    assert conf["partitioner"] == "murmur2_random"  # the other clients' partitioner


@pytest.mark.timeout(30)
def test_no_broker_is_a_kafka_error_within_the_bound() -> None:
    s = Settings()
    s = s.model_copy(update={"kafka": s.kafka.model_copy(
        update={"bootstrap_servers": ["127.0.0.1:9"]})})
    t0 = time.monotonic()
    with pytest.raises(KafkaError, match=r"no Kafka broker answered at 127\.0\.0\.1:9"):
        Publisher(s, ack_timeout_s=1.5)
    assert time.monotonic() - t0 < 5
