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
import logging
import time

import faust

from ioc.config import Settings
from ioc.events._route import RouteCounts, Routed, route_raw
from ioc.topics import topic_name

from .agent_spec import AgentSpec

__all__ = ["VALIDATE"]

log = logging.getLogger(__name__)

TAKE_MAX = 500  # raw records per batch (each may hold up to 1,000 events)
TAKE_WITHIN_S = 0.05


async def _send_all(app: faust.App, ns: str, routed: list[Routed]) -> None:
    """Send every record and wait for all acknowledgements; retry until they are."""
    delay = 0.2
    while True:
        try:
            futs = [await app.producer.send(topic_name(ns, r.suffix), r.key, r.value, None,
                                            None, r.headers) for r in routed]
            await asyncio.gather(*futs)
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
