"""The validate agent: ``<ns>.events.raw`` -> ``<ns>.events`` (valid) | ``<ns>.dlq``.

Records are taken in batches (``stream.take_events``) so Faust's per-event cost is
paid once per batch; the routing itself is ``ioc.events.route_raw`` (pure). A batch's
input offsets are acknowledged only after every output record of the batch has been
acknowledged by the broker; a failed send is retried (with backoff) rather than
acknowledged, so nothing is lost. Delivery is at-least-once: after a crash a batch
may be re-emitted, which the sink absorbs (unique on source, id, time).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from typing import Any

import faust
from aiokafka.partitioner import murmur2

from ioc.config import Settings
from ioc.events._route import RouteCounts, Routed, route_raw
from ioc.topics import topic_name

from .agent_spec import AgentSpec

__all__ = ["VALIDATE"]

log = logging.getLogger(__name__)

TAKE_MAX = 500  # raw records per batch (each may hold up to 1,000 events)
TAKE_WITHIN_S = 0.05


@functools.lru_cache(maxsize=65536)
def _partition(key: bytes | None, partitions: int) -> int:
    # aiokafka's murmur2 is pure Python (~10 µs); entities repeat, so cache it (bounded).
    return (murmur2(key) & 0x7FFFFFFF) % partitions if key is not None else 0


async def _send_batches(producer: Any, ns: str, routed: list[Routed]) -> None:
    """Send records as one aiokafka batch per partition and wait for every ack.

    Faust's ``producer.send`` costs a few hundred µs per record on a busy 2-core
    machine (hooks, futures per message); building batches directly costs a few µs.
    Partitions come from the same murmur2 key hash as aiokafka's default partitioner,
    so keys land where a plain ``send(key=...)`` would put them.
    """
    groups: dict[tuple[str, int], list[Routed]] = {}
    counts: dict[str, int] = {}
    for r in routed:
        topic = topic_name(ns, r.suffix)
        n = counts.get(topic)
        if n is None:
            n = counts[topic] = len(await producer.partitions_for(topic))
        part = _partition(r.key, n)
        groups.setdefault((topic, part), []).append(r)
    futs = []
    for (topic, part), records in groups.items():
        batch = producer.create_batch()
        for r in records:
            if batch.append(key=r.key, value=r.value, timestamp=None, headers=r.headers) is None:
                futs.append(await producer.send_batch(batch, topic, partition=part))
                batch = producer.create_batch()
                if batch.append(key=r.key, value=r.value, timestamp=None,
                                headers=r.headers) is None:
                    raise ValueError(f"a record of {len(r.value)} bytes does not fit in an "
                                     f"empty batch for {topic}[{part}]")
        futs.append(await producer.send_batch(batch, topic, partition=part))
    await asyncio.gather(*futs)


async def _send_all(app: faust.App, ns: str, routed: list[Routed]) -> None:
    """Send every record and wait for all acknowledgements; retry until they are."""
    delay = 0.2
    while True:
        try:
            # The aiokafka producer Faust started (and will stop): no second connection.
            await _send_batches(app.producer._ensure_producer(), ns, routed)  # type: ignore[attr-defined]
            return
        except Exception as exc:  # broker errors come in several wrappers; retry all
            log.warning("validate: sending %d record(s) failed (%s: %s); retrying in %.1f s",
                        len(routed), type(exc).__name__, exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)


def _register(app: faust.App, settings: Settings) -> None:
    ns = settings.namespace
    raw = app.topic(topic_name(ns, "events.raw"), value_serializer="raw", key_serializer="raw")
    counts = RouteCounts()
    last = [time.monotonic()]

    @app.agent(raw, name=f"{ns}.validate")
    async def validate(stream):  # type: ignore[no-untyped-def]
        async for events in stream.take_events(TAKE_MAX, within=TAKE_WITHIN_S):
            now = time.time()
            routed: list[Routed] = []
            for ev in events:
                m = ev.message
                routed.extend(route_raw(m.value, m.key, list(m.headers or ()), topic=m.topic,
                                        partition=m.partition, offset=m.offset, now=now))
            await _send_all(app, ns, routed)
            counts.add(routed)
            if time.monotonic() - last[0] > 30:
                last[0] = time.monotonic()
                log.info("validate: valid=%d dead=%d reasons=%s", counts.valid, counts.dead,
                         counts.reasons)


VALIDATE = AgentSpec("validate", _register,
                     "events.raw -> events (valid) | dlq (reason, topic, partition, offset)")
