"""Kafka plumbing: the only package that imports a Kafka client library.

- ``admin``: the topic catalogue (create, check, delete a namespace's topics);
- ``clients``: client options and producers from settings, for each library;
- ``partitioner``: ``partition_for(key, n)``, the Java client's default partitioner;
- ``membership``: when a consumer has been outside its group for too long;
- ``rdkafka``, ``aio``, ``kafka_python``: the classes of confluent-kafka (librdkafka),
  aiokafka and kafka-python that the rest of the code uses. Import them where a
  client is made: importing a client library costs tens of milliseconds.

docs/architecture.md ("Kafka clients") says which library does what and why.
"""

from .admin import TopicReport, delete_namespace_topics, ensure_topics
from .clients import (
    acked_producer,
    admin_client,
    aiokafka_kwargs,
    discard_producer,
    kafka_python_kwargs,
    rdkafka_conf,
)
from .partitioner import partition_for

__all__ = [
    "TopicReport",
    "acked_producer",
    "admin_client",
    "aiokafka_kwargs",
    "delete_namespace_topics",
    "discard_producer",
    "ensure_topics",
    "kafka_python_kwargs",
    "partition_for",
    "rdkafka_conf",
]
