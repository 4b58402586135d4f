"""kafka-python, the blocking client outside the event-rate paths, behind ``ioc.kafka``.

Used where a plain blocking client does the job and an event loop would only add
ceremony: the admin client (``ioc.kafka.admin``, ``admin_client``: topics, partition
counts), the publisher library (``ioc.publish``), the camera capture publisher
(``ioc.cameras_cli``), the demo tiles, the worker probe (``ioc.health``) and the replay
comparison. Options come from ``ioc.kafka.clients.kafka_python_kwargs``.

``KafkaError`` here is kafka-python's error root, not ``ioc.errors.KafkaError``, which
is what our code raises (``raise KafkaError(...) from exc``).
"""

from __future__ import annotations

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError

__all__ = ["KafkaConsumer", "KafkaError", "KafkaProducer", "TopicPartition"]
