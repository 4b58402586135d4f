"""The validate agent: ``<ns>.events.raw`` -> ``<ns>.events`` (valid) | ``<ns>.dlq``.

A batch stage (``streams.engine``): the routing is ``ioc.events.route_raw`` (pure); a
batch's input offsets are committed only after every output record of the batch has
been acknowledged by the broker; a failed send is retried (with backoff), so nothing
is lost. Delivery is at-least-once: after a crash a batch may be re-emitted, which the
sink absorbs (unique on source, id, time); each valid event carries its raw origin in
the header ``ioc.raw`` (``ioc.events.raw_origin``), by which the window and KPI states
recognise re-emitted events and skip them (docs/aggregation.md).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from ioc.config import Settings
from ioc.events import LogThrottle
from ioc.events._route import RouteCounts, Routed, route_raw
from ioc.topics import topic_name

from .agent_spec import AgentSpec
from .engine import Outbox, Stage

__all__ = ["VALIDATE"]

log = logging.getLogger(__name__)


def build(settings: Settings) -> list[Stage]:
    """The validate stage (Sans-I/O: records in, an ``Outbox`` out), with fresh state."""
    ns = settings.namespace
    counts = RouteCounts()
    every_30s = LogThrottle(30.0)
    every_30s.allow("counts")  # the first line 30 s from now
    names: dict[str, str] = {}

    def process(records: list[Any], out: Outbox) -> None:
        now = time.time()
        routed: list[Routed] = []
        for m in records:
            routed.extend(route_raw(m.value, m.key, list(m.headers or ()), topic=m.topic,
                                    partition=m.partition, offset=m.offset, now=now))
        for r in routed:
            topic = names.get(r.suffix)
            if topic is None:
                topic = names[r.suffix] = topic_name(ns, r.suffix)
            out.add(topic, r.key, r.value, headers=r.headers)
        counts.add(routed)
        if every_30s.allow("counts") is not None:
            log.info("validate: valid=%d dead=%d reasons=%s", counts.valid, counts.dead,
                     counts.reasons)

    # a raw record may hold up to 1,000 events: fewer records per batch than the others
    return [Stage("validate", [topic_name(ns, "events.raw")], process,
                                    batch_max=500, within_s=0.01, counters={"route": counts})]


VALIDATE = AgentSpec.of_stages("validate", build,
                     "events.raw -> events (valid) | dlq (reason, topic, partition, offset)")
