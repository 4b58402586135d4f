"""kafka-python, the client of short-lived command-line work, behind ``ioc.kafka``.

Used where a command makes a client, does one job and exits, with no event loop and
no rate to keep: the admin client (``ioc.kafka.admin``: topics), ``ioc publish``, the
camera capture publisher, the demo tiles, the worker probe (``ioc.health``) and the
replay comparison. Options come from ``ioc.kafka.clients.kafka_python_kwargs``.

``KafkaError`` here is kafka-python's error root, not ``ioc.errors.KafkaError``, which
is what our code raises (``raise KafkaError(...) from exc``).
"""

from __future__ import annotations

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError

__all__ = ["KafkaConsumer", "KafkaError", "KafkaProducer", "TopicPartition"]
