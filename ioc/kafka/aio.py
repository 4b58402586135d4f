"""aiokafka, the client of the asyncio services, behind ``ioc.kafka``.

Used where one asyncio event loop owns the data and a blocking client would need a
thread of its own: the wall server's tile source and action log, the HTTP gateway's
producer, and record/replay (whose producer is about ten times faster than
kafka-python's, ``ioc.replay.kafka_io``). It is also Faust's client, which Faust
imports itself. Options come from ``ioc.kafka.clients.aiokafka_kwargs``.

``KafkaError`` here is aiokafka's error root, not ``ioc.errors.KafkaError``, which is
what our code raises (``raise KafkaError(...) from exc``).

Importing this module bounds how often an aiokafka client forces a metadata update
(``backoff_forced_metadata_updates``): unbounded, a producer spins a core while the
broker is away. ``streams.app`` imports it for Faust's clients.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaError

__all__ = ["AIOKafkaConsumer", "AIOKafkaProducer", "ConsumerRecord", "KafkaError",
           "TopicPartition", "assign_from_beginning", "backoff_forced_metadata_updates"]


def backoff_forced_metadata_updates() -> None:
    """Make ``AIOKafkaClient.force_metadata_update`` wait out the client's
    ``retry_backoff_ms`` since the last forced update before it forces another.
    Idempotent; applied when this module is imported.

    Why: aiokafka 0.14's producer forces an update on every pass of its sender loop
    while it holds records for a partition whose leader it does not know, and waits for
    nothing else. With the broker stopped (a refused connection fails at once on
    loopback), or restarting (its answers name no leader yet), each update returns at
    once: the loop spun a core, in the gateway and in Faust's producer of a worker
    (docs/reliability.md, "Python clients that spin while the broker is away"). The
    Java client waits ``retry.backoff.ms`` there. Callers still get the update's
    result, at most one backoff later.
    """
    orig = AIOKafkaClient.force_metadata_update
    if getattr(orig, "_ioc_backoff", False):
        return

    def force_metadata_update(self: Any) -> Any:
        loop = asyncio.get_running_loop()
        wait = getattr(self, "_ioc_md_forced_at", -1e9) + self._retry_backoff - loop.time()
        if wait <= 0:
            self._ioc_md_forced_at = loop.time()
            return orig(self)
        pending = getattr(self, "_ioc_md_later", None)
        if pending is None or pending.done():  # one deferred update per client at a time

            async def later() -> Any:
                await asyncio.sleep(wait)
                self._ioc_md_forced_at = loop.time()
                return await orig(self)

            pending = self._ioc_md_later = asyncio.ensure_future(later())
        return asyncio.shield(pending)

    force_metadata_update._ioc_backoff = True  # type: ignore[attr-defined]
    AIOKafkaClient.force_metadata_update = force_metadata_update  # type: ignore[method-assign]


backoff_forced_metadata_updates()


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
