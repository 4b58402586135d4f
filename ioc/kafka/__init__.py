"""Kafka plumbing: admin (topic catalogue) and client factories built from settings."""

from .admin import TopicReport, delete_namespace_topics, ensure_topics
from .clients import admin_client, aiokafka_kwargs, kafka_python_kwargs, rdkafka_conf

__all__ = [
    "TopicReport",
    "admin_client",
    "aiokafka_kwargs",
    "delete_namespace_topics",
    "ensure_topics",
    "kafka_python_kwargs",
    "rdkafka_conf",
]
