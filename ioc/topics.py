"""The topic catalogue: every topic the system uses, under a namespace prefix.

Topic names are ``<namespace>.<suffix>``; a replay or a test uses its own namespace
and never touches live topics. ``ioc topics ensure`` creates or checks them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["CATALOGUE", "TopicSpec", "spec", "topic_name"]

_DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """What a topic is for and how it is configured."""

    suffix: str
    partitions: int
    key: str
    value_format: str
    cleanup_policy: Literal["delete", "compact", "compact,delete"]
    retention_ms: int | None
    description: str
    max_message_bytes: int | None = None

    def name(self, namespace: str) -> str:
        return topic_name(namespace, self.suffix)

    def configs(self) -> dict[str, str]:
        """Topic-level configs passed to CreateTopics and checked by ``ensure``."""
        out: dict[str, str] = {"cleanup.policy": self.cleanup_policy}
        if self.retention_ms is not None:
            out["retention.ms"] = str(self.retention_ms)
        if self.max_message_bytes is not None:
            out["max.message.bytes"] = str(self.max_message_bytes)
        if "compact" in self.cleanup_policy:
            # Keep the latest tile/KPI quickly visible to a new reader without dirty segments
            # piling up: compact segments older than a minute when they are 10% dirty.
            out["min.cleanable.dirty.ratio"] = "0.1"
            out["segment.ms"] = str(10 * 60 * 1000)
        return out


CATALOGUE: tuple[TopicSpec, ...] = (
    TopicSpec("events.raw", 4, "source id", "JSON event envelope (or NGSI-LD mapped)", "delete",
              7 * _DAY_MS, "events as published, before validation"),
    TopicSpec("events", 4, "entity id", "JSON canonical event", "delete", 7 * _DAY_MS,
              "validated canonical events"),
    TopicSpec("dlq", 1, "original key", "original bytes; reason/topic/partition/offset in headers",
              "delete", 30 * _DAY_MS, "dead letters: everything rejected, with the reason"),
    TopicSpec("rollups", 4, "entity|metric|window", "JSON window aggregate", "delete", 7 * _DAY_MS,
              "event-time window aggregates (count/sum/min/max/mean/last)"),
    TopicSpec("kpis", 2, "kpi id|group|period", "JSON KPI value", "compact", None,
              "latest value of each KPI per group and period"),
    TopicSpec("scorecards", 1, "indicator|period|period key|drill path",
              "JSON scorecard counts (ioc.scorecard.LeafCount)", "compact", None,
              "numerator and denominator per scorecard indicator, period and drill path; "
              "one partition: the leaderboard stage sees every unit"),
    TopicSpec("alerts", 2, "alert id", "JSON alert state (raised/cleared)", "compact", None,
              "alert states, latest per alert"),
    TopicSpec("views", 1, "kpi|<kpi value key> or alert|<alert id>",
              "'<kind> <source partition> <offset>' line, then the KPI value or alert JSON",
              "compact", None,
              "merge topic of the global views: the tiles stage forwards every KPI value and "
              "alert here; one partition, so one views stage owns them all "
              "(docs/aggregation.md, Global views)"),
    TopicSpec("alerts.actions", 2, "alert id (screen:<name> for a preset switch)",
              "JSON action record (ioc.wall.workflow.ActionRecord)", "delete", 30 * _DAY_MS,
              "operator actions at the wall (ack/assign/comment/close, preset switches); "
              "every wall replica folds it into the alerts' workflow state"),
    TopicSpec("camera.frames", 4, "camera id", "JPEG bytes; seq/event time in headers", "delete",
              3600 * 1000, "sampled, resized camera frames", max_message_bytes=4 * 1024 * 1024),
    TopicSpec("camera.health", 2, "camera id", "JSON health event", "delete", 7 * _DAY_MS,
              "camera online/offline/fps-drop/tamper state changes"),
    TopicSpec("detections", 4, "camera id", "JSON analytics result per frame", "delete",
              7 * _DAY_MS, "motion, people, line crossings and tamper per camera"),
    TopicSpec("wall.tiles", 2, "tile id", "JSON tile; image tiles carry JPEG bytes", "compact",
              None, "latest version of every wall tile", max_message_bytes=4 * 1024 * 1024),
    TopicSpec("system.probe", 1, "probe id", "JSON", "delete", _DAY_MS,
              "end-to-end health probe: the worker echoes it to system.probe.reply"),
    TopicSpec("system.probe.reply", 1, "probe id", "JSON", "delete", _DAY_MS,
              "replies of the worker's probe agent"),
)

_BY_SUFFIX = {t.suffix: t for t in CATALOGUE}


def topic_name(namespace: str, suffix: str) -> str:
    """``<namespace>.<suffix>``, e.g. ``ioc.wall.tiles``."""
    return f"{namespace}.{suffix}"


def spec(suffix: str) -> TopicSpec:
    """The catalogue entry for ``suffix``; KeyError names the known suffixes."""
    try:
        return _BY_SUFFIX[suffix]
    except KeyError:
        raise KeyError(f"no topic {suffix!r} in the catalogue; known: {sorted(_BY_SUFFIX)}") from None
