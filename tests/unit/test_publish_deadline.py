"""Publisher: one batch waits at most ``ack_timeout_s`` in all (pure: a fake producer)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from kafka.errors import KafkaTimeoutError

from ioc.config import Settings
from ioc.errors import KafkaError
from ioc.publish import Publisher


class _NeverAcked:
    """A future the broker never completes: ``get`` waits its timeout, then fails."""

    is_done = False

    def get(self, timeout: float) -> None:
        time.sleep(timeout)
        raise KafkaTimeoutError("Timeout waiting for future")


class _StoppedBroker:
    """A kafka-python producer whose broker has stopped: nothing is ever acknowledged."""

    def __init__(self) -> None:
        self.sent = 0

    def send(self, topic: str, key: bytes, value: bytes) -> _NeverAcked:
        self.sent += 1
        return _NeverAcked()

    def flush(self, timeout: float) -> None:
        time.sleep(timeout)
        raise KafkaTimeoutError("Timeout waiting for future")

    def close(self, timeout: float = 0) -> None:
        pass


def test_a_batch_never_acknowledged_fails_within_ack_timeout(monkeypatch: Any) -> None:
    """The flush and then every future shared one deadline: before, each future waited
    ``ack_timeout_s`` again after a flush that had timed out (twice as long to fail, and
    to be resent once the broker was back)."""
    fake = _StoppedBroker()
    monkeypatch.setattr(Publisher, "_new_producer", lambda self: fake)
    pub = Publisher(Settings(), ack_timeout_s=0.6)
    events = [{"id": f"e{i}", "source": f"s{i % 3}", "type": "noise.level",
               "entity": "m1", "time": 1.7e9 + i, "values": {"db": 40.0}} for i in range(30)]
    t0 = time.monotonic()
    with pytest.raises(KafkaError, match="not acknowledged"):
        pub.send_many(events)
    took = time.monotonic() - t0
    assert fake.sent >= 3  # one record per source at least: several futures waited on
    assert 0.55 <= took < 1.15, took  # one ack_timeout_s (0.6 s); before: 1.2 s or more


class _NoMetadata(_StoppedBroker):
    """``send`` itself fails: no metadata within max_block_ms while the broker is away."""

    def send(self, topic: str, key: bytes, value: bytes) -> _NeverAcked:
        raise KafkaTimeoutError("Failed to update metadata after 0.6 secs.")


def test_a_send_that_fails_is_our_kafka_error_and_drops_the_producer(monkeypatch: Any) -> None:
    made: list[_NoMetadata] = []

    def new(self: Publisher) -> _NoMetadata:
        made.append(_NoMetadata())
        return made[-1]

    monkeypatch.setattr(Publisher, "_new_producer", new)
    pub = Publisher(Settings(), ack_timeout_s=0.6)
    event = {"id": "e1", "source": "s1", "type": "noise.level", "entity": "m1",
             "time": 1.7e9, "values": {"db": 40.0}}
    for _ in range(2):
        with pytest.raises(KafkaError, match="resending is safe"):
            pub.send_many([event])
    assert len(made) == 2  # a new producer for the second attempt


def test_the_publishers_producer_blocks_and_backs_off_within_bounds(monkeypatch: Any) -> None:
    """send() waits for metadata at most ack_timeout_s (kafka-python: 60 s), and a lost
    connection is retried at least every second (kafka-python: up to 30 s)."""
    from ioc.kafka.clients import kafka_python_kwargs

    assert kafka_python_kwargs(Settings().kafka)["reconnect_backoff_max_ms"] == 1000
    captured: dict[str, Any] = {}

    class _Capture:
        def __init__(self, **kw: Any) -> None:
            captured.update(kw)

    import ioc.kafka.kafka_python as kp

    monkeypatch.setattr(kp, "KafkaProducer", _Capture)
    Publisher(Settings(), ack_timeout_s=7.5)
    assert captured["max_block_ms"] == 7500
    assert captured["reconnect_backoff_max_ms"] == 1000
