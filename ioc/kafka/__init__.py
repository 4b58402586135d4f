"""Kafka plumbing: admin (topic catalogue) and client factories built from settings."""

from .admin import TopicReport, delete_namespace_topics, ensure_topics
from .clients import (
    acked_producer,
    admin_client,
    aiokafka_kwargs,
    discard_producer,
    kafka_python_kwargs,
    rdkafka_conf,
)

__all__ = [
    "TopicReport",
    "acked_producer",
    "admin_client",
    "aiokafka_kwargs",
    "delete_namespace_topics",
    "discard_producer",
    "ensure_topics",
    "kafka_python_kwargs",
    "rdkafka_conf",
]
