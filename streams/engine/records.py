"""Records as the stages see them, and the outbox a stage queues its outputs in."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, NamedTuple

from ioc.errors import InvalidEvent
from ioc.events import Event, decode_event
from ioc.kafka import partition_for
from ioc.kafka.rdkafka import Producer

__all__ = ["Headers", "Outbox", "Record", "SendFailed", "TopicPartition", "decode_events",
           "key_partition"]

Headers = list[tuple[str, bytes]]


class TopicPartition(NamedTuple):
    """A topic partition as the stages see it (hashable, comparable)."""

    topic: str
    partition: int


class Record:
    """A consumed record, with the attributes the stages read (like aiokafka's)."""

    __slots__ = ("headers", "key", "offset", "partition", "topic", "value")

    def __init__(self, topic: str, partition: int, offset: int, key: bytes | None,
                 value: bytes | None, headers: Sequence[tuple[str, bytes]]) -> None:
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.key = key
        self.value = value
        self.headers = headers

    @classmethod
    def of(cls, m: Any) -> Record:
        return cls(m.topic(), m.partition(), m.offset(), m.key(), m.value(), m.headers() or ())


@functools.lru_cache(maxsize=65536)
def key_partition(key: bytes | None, partitions: int) -> int:
    """The partition the Java client's default partitioner gives ``key`` (murmur2), cached.

    kafka-python, aiokafka and librdkafka's ``murmur2_random`` agree on it. Keyless
    records go to partition 0.
    """
    return partition_for(key, partitions) if key is not None else 0


class SendFailed(Exception):
    """Some records of an outbox were not acknowledged (the reason is the message)."""


class Outbox:
    """Output records of one batch, sent together by ``send``."""

    __slots__ = ("records",)

    def __init__(self) -> None:
        self.records: list[tuple[str, bytes | None, bytes | None, int | None, Headers | None]] = []

    def add(self, topic: str, key: bytes | None, value: bytes | None, *,
            partition: int | None = None, headers: Headers | None = None) -> None:
        """Queue a record; ``partition`` None means the key's partition."""
        self.records.append((topic, key, value, partition, headers))

    def __len__(self) -> int:
        return len(self.records)

    def send(self, producer: Producer, *, timeout_s: float = 30.0,
             partitions: dict[str, int] | None = None) -> None:
        """Produce every record and wait until the broker acknowledged all of them.

        Raises:
            SendFailed: a record was refused, or not acknowledged within ``timeout_s``.
            KafkaException: the producer is unusable (a fatal idempotence error, say).
        """
        counts = partitions if partitions is not None else {}
        errors: list[str] = []

        def failed(err: Any, _msg: Any) -> None:
            if err is not None:
                errors.append(str(err))

        produce = producer.produce
        for topic, key, value, part, headers in self.records:
            if part is None:
                n = counts.get(topic)
                if n is None:
                    md = producer.list_topics(topic, timeout=10).topics.get(topic)
                    if md is None or md.error is not None or not md.partitions:
                        raise SendFailed(f"topic {topic} has no partitions "
                                         f"({md.error if md is not None else 'unknown'})")
                    n = counts[topic] = len(md.partitions)
                part = key_partition(key, n)
            while True:
                try:
                    if headers:
                        produce(topic, value, key, part, on_delivery=failed,
                                headers=headers)  # type: ignore[arg-type]
                    else:
                        produce(topic, value, key, part, on_delivery=failed)
                    break
                except BufferError:  # librdkafka's queue is full: let it drain
                    producer.poll(0.05)
        left = producer.flush(timeout_s)
        if left:
            raise SendFailed(f"{left} record(s) not acknowledged within {timeout_s:.0f} s")
        if errors:
            raise SendFailed(f"{len(errors)} record(s) refused, first: {errors[0]}")


def decode_events(records: Sequence[Record]) -> list[Event | InvalidEvent]:
    """``decode_event`` of each record's value: the ``Event``, or the ``InvalidEvent`` it
    raised (whatever the bytes, a missing value included), one per record, in order.

    No cache: ``combine`` calls it once per batch for every stage that reads
    ``<ns>.events`` (``Stage.of_events``); a stage run alone calls it itself.
    """
    out: list[Event | InvalidEvent] = []
    append = out.append
    for r in records:
        try:
            append(decode_event(r.value))  # type: ignore[arg-type]
        except InvalidEvent as exc:
            append(exc)
    return out
