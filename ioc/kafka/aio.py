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
           "TopicPartition"]
