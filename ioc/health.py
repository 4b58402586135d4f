"""Health checks used by ``ioc health`` and ``make up``: broker, database, a live worker."""

from __future__ import annotations

import time

import orjson

from .config import Settings
from .errors import KafkaError
from .kafka.clients import kafka_python_kwargs
from .topics import topic_name

__all__ = ["check_database", "check_kafka", "probe_worker"]


def check_kafka(settings: Settings) -> str:
    from .kafka import admin_client

    admin = admin_client(settings.kafka)
    try:
        topics = admin.list_topics()
        ours = [t for t in topics if t.startswith(settings.namespace + ".")]
        return f"{','.join(settings.kafka.bootstrap_servers)}, {len(ours)} topic(s) in namespace {settings.namespace!r}"
    finally:
        admin.close()


def check_database(settings: Settings) -> str:
    from .storage import connect, detect_features

    with connect(settings.database, autocommit=True) as conn:
        features = detect_features(conn, "off" if settings.database.timescaledb == "off" else "auto")
        return features.describe()


def probe_worker(settings: Settings, *, timeout: float, probe_id: str) -> float:
    """Send a probe and wait for a worker's echo; return the round-trip time in seconds.

    Raises:
        KafkaError: no echo within ``timeout`` (no worker running, or it is stuck).
    """
    from .kafka.kafka_python import KafkaConsumer, KafkaProducer, TopicPartition

    reply_topic = topic_name(settings.namespace, "system.probe.reply")
    kw = kafka_python_kwargs(settings.kafka)
    consumer = KafkaConsumer(enable_auto_commit=False, **kw)
    producer = KafkaProducer(acks="all", **kw)
    try:
        parts = consumer.partitions_for_topic(reply_topic)
        if not parts:
            raise KafkaError(f"topic {reply_topic} does not exist: run 'ioc topics ensure'")
        tps = [TopicPartition(reply_topic, p) for p in parts]
        consumer.assign(tps)
        consumer.seek_to_end(*tps)
        for tp in tps:
            consumer.position(tp)
        t0 = time.monotonic()
        producer.send(
            topic_name(settings.namespace, "system.probe"),
            key=probe_id.encode(),
            value=orjson.dumps({"id": probe_id, "sent": time.time()}),
        ).get(timeout=timeout)
        while time.monotonic() - t0 < timeout:
            for records in consumer.poll(timeout_ms=200).values():
                for r in records:
                    if r.key == probe_id.encode():
                        return time.monotonic() - t0
        raise KafkaError(f"no worker echoed the probe within {timeout:.0f} s (is 'ioc worker' running?)")
    finally:
        producer.close(timeout=5)
        consumer.close()
