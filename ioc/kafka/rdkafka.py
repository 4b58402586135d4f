"""confluent-kafka (librdkafka), the client of the event-rate paths, behind ``ioc.kafka``.

Used where records move at event rate in a thread of their own: the batch stages
(``streams.engine``), the sink (``ioc.storage.sink``) and the consumer-lag collector
(``ioc.metrics``). librdkafka moves a record for a fraction of the Python clients' CPU
and its blocking calls release the GIL (docs/dependencies.md). Options and producers
come from ``ioc.kafka.clients`` (``rdkafka_conf``, ``acked_producer``).

Importing this module imports confluent_kafka (~80 ms): import it where a client is
made, not at the top of a module that may never make one.

``KafkaError`` here is librdkafka's error (a code and its constants, carried by
``KafkaException``), not ``ioc.errors.KafkaError``, which is what our code raises.
"""

from __future__ import annotations

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

__all__ = ["OFFSET_BEGINNING", "OFFSET_END", "Consumer", "KafkaError", "KafkaException",
           "Message", "Producer", "TopicPartition"]
