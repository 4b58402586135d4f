"""aiokafka, the client of the asyncio services, behind ``ioc.kafka``.

Used where one asyncio event loop owns the data and a blocking client would need a
thread of its own: the wall server's tile source and action log, the HTTP gateway's
producer, and record/replay (whose producer is about ten times faster than
kafka-python's, ``ioc.replay.kafka_io``). It is also Faust's client, which Faust
imports itself. Options come from ``ioc.kafka.clients.aiokafka_kwargs``.

``KafkaError`` here is aiokafka's error root, not ``ioc.errors.KafkaError``, which is
what our code raises (``raise KafkaError(...) from exc``).
"""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

__all__ = ["AIOKafkaConsumer", "AIOKafkaProducer", "ConsumerRecord", "KafkaError",
           "TopicPartition", "assign_from_beginning"]


async def assign_from_beginning(consumer: AIOKafkaConsumer, topic: str, namespace: str
                                ) -> tuple[list[TopicPartition], dict[TopicPartition, int]]:
    """Assign every partition of ``topic`` to a started ``consumer`` (no group) at its
    beginning, for a replica that rebuilds its state from the whole topic.

    Returns the partitions and their end offsets at that moment.

    Raises:
        ioc.errors.KafkaError: the topic does not exist (after one metadata refresh).
    """
    from ..errors import KafkaError as IOCKafkaError

    parts = consumer.partitions_for_topic(topic)
    if not parts:
        await consumer._client.force_metadata_update()
        parts = consumer.partitions_for_topic(topic)
    if not parts:
        raise IOCKafkaError(f"topic {topic} does not exist; "
                            f"run `ioc -n {namespace} topics ensure`")
    tps = [TopicPartition(topic, p) for p in sorted(parts)]
    consumer.assign(tps)
    await consumer.seek_to_beginning(*tps)
    end = await consumer.end_offsets(tps)
    return tps, end
