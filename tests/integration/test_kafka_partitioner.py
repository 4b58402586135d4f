"""ioc.kafka.partition_for agrees with where the three clients really put a key."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator

import pytest

from ioc.config import Settings
from ioc.kafka import (
    acked_producer,
    admin_client,
    aiokafka_kwargs,
    kafka_python_kwargs,
    partition_for,
)

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(120)]

PARTITIONS = 7  # a count none of the catalogue's topics has
KEYS = [f"entity-{i}".encode() for i in range(60)] + [b"", b"\x00\xff", "café".encode()]


@pytest.fixture
def topic(stack: Settings) -> Iterator[tuple[Settings, str]]:
    from kafka.admin import NewTopic

    name = f"tpart{secrets.token_hex(4)}.keys"
    admin = admin_client(stack.kafka)
    try:
        admin.create_topics([NewTopic(name, PARTITIONS, stack.kafka.replication_factor)])
        yield stack, name
        admin.delete_topics([name])
    finally:
        admin.close()


def test_librdkafka_kafka_python_and_aiokafka_put_keys_where_partition_for_says(topic):
    settings, name = topic
    want = {k: partition_for(k, PARTITIONS) for k in KEYS}
    assert len(set(want.values())) == PARTITIONS  # the keys spread over every partition

    # acked_producer reports failed deliveries only: none may come.
    failed: list[str] = []
    producer = acked_producer(settings.kafka)
    for k in KEYS:
        producer.produce(name, key=k, value=b"rd", on_delivery=lambda err, _m: failed.append(str(err)))
    assert producer.flush(30) == 0
    assert failed == []
    producer.close()

    from ioc.kafka.kafka_python import KafkaProducer

    kp = KafkaProducer(**kafka_python_kwargs(settings.kafka))
    try:
        got_kp = {k: kp.send(name, key=k, value=b"kp").get(timeout=30).partition for k in KEYS}
    finally:
        kp.close(timeout=5)

    async def aio() -> dict[bytes, int]:
        from ioc.kafka.aio import AIOKafkaProducer

        p = AIOKafkaProducer(**aiokafka_kwargs(settings.kafka))
        await p.start()
        try:
            return {k: (await p.send_and_wait(name, key=k, value=b"aio")).partition for k in KEYS}
        finally:
            await p.stop()

    got_aio = asyncio.run(aio())
    assert got_kp == want
    assert got_aio == want
    # librdkafka does not say where a record went: read every record back.
    from ioc.kafka.kafka_python import KafkaConsumer, TopicPartition

    c = KafkaConsumer(enable_auto_commit=False, **kafka_python_kwargs(settings.kafka))
    try:
        tps = [TopicPartition(name, p) for p in range(PARTITIONS)]
        c.assign(tps)
        c.seek_to_beginning(*tps)
        ends = c.end_offsets(tps)
        assert sum(ends.values()) == 3 * len(KEYS)
        seen: dict[tuple[bytes, bytes], int] = {}
        while any(c.position(tp) < ends[tp] for tp in tps):
            for tp, recs in c.poll(timeout_ms=200).items():
                for r in recs:
                    seen[(r.value, r.key)] = tp.partition
    finally:
        c.close()
    for client in (b"rd", b"kp", b"aio"):
        assert {k: p for (v, k), p in seen.items() if v == client} == want, client
