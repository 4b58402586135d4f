"""Create or check the catalogue's topics for a namespace."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ..config import Settings
from ..topics import TopicSpec
from .clients import admin_client

__all__ = ["PARTITIONS_DIFFER", "TopicReport", "delete_namespace_topics", "ensure_topics"]

PARTITIONS_DIFFER = (
    "partitions: expected {want}, found {found} (expected: topics.partitions, else the "
    "catalogue); a live topic's partition count cannot be changed in place: the keys would move to other "
    "partitions, away from their state and their order. Keep {found} (set "
    "topics.partitions.{suffix}: {found}), or create a new namespace with the new count and "
    "replay into it (docs/operations.md, Partition counts)")
"""The reason ``ensure_topics`` gives when a topic's partition count differs."""


@dataclass
class TopicReport:
    """What ``ensure_topics`` did: created, already fine, or mismatched (with reasons)."""

    created: list[str] = field(default_factory=list)
    ok: list[str] = field(default_factory=list)
    mismatched: dict[str, list[str]] = field(default_factory=dict)

    @property
    def success(self) -> bool:
        return not self.mismatched

    def lines(self) -> list[str]:
        out = [f"created   {t}" for t in self.created]
        out += [f"ok        {t}" for t in self.ok]
        for t, why in self.mismatched.items():
            out.append(f"MISMATCH  {t}: " + "; ".join(why))
        return out


def ensure_topics(
    settings: Settings, specs: Iterable[TopicSpec] | None = None, *, create: bool = True,
    settle_s: float = 10.0,
) -> TopicReport:
    """Create missing topics of ``settings.namespace``; report existing ones that differ.

    ``specs`` defaults to the whole catalogue with the partition counts of
    ``settings.topics``. Topics are created with ``settings.kafka.replication_factor``
    replicas (the broker's ``min.insync.replicas`` applies). A mismatch (partitions,
    replication factor, cleanup policy, retention) is reported, never "fixed" by deleting
    data: changing them on a live topic is an operator's decision. A partition count in
    particular cannot change in place (keys would move away from their state); the
    report says so. A topic that exists but is not set up yet (created a moment ago by
    another process: no partitions or configs described) is described again for up to
    ``settle_s`` seconds before it is compared.
    """
    from kafka.admin import ConfigResource, ConfigResourceType, NewTopic

    ns = settings.namespace
    specs = list(settings.topics.catalogue() if specs is None else specs)
    report = TopicReport()
    admin = admin_client(settings.kafka)
    try:
        existing = set(admin.list_topics())
        missing = [s for s in specs if s.name(ns) not in existing]
        if missing and create:
            from kafka.errors import TopicAlreadyExistsError

            for s in missing:
                try:
                    admin.create_topics(
                        [NewTopic(s.name(ns), s.partitions, settings.kafka.replication_factor,
                                  topic_configs=s.configs())]
                    )
                    report.created.append(s.name(ns))
                except TopicAlreadyExistsError:
                    # Created a moment ago (by us or another process): check it like the rest.
                    existing.add(s.name(ns))
        elif missing:
            for s in missing:
                report.mismatched[s.name(ns)] = ["missing"]
        present = [s for s in specs if s.name(ns) in existing]
        # A topic another process created a moment ago may still be being set up: no
        # partitions and no configs in its description yet. Describe such topics again
        # (for at most settle_s) before calling them different.
        deadline = time.monotonic() + settle_s
        while present:
            described = {d["name"]: d for d in admin.describe_topics([s.name(ns) for s in present])}
            configs = admin.describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, s.name(ns)) for s in present]
            )["topic"]
            settling = []
            for s in present:
                name = s.name(ns)
                d = described.get(name, {})
                have = configs.get(name, {})
                if (not d.get("partitions") or "cleanup.policy" not in have) and \
                        time.monotonic() < deadline:
                    settling.append(s)
                    continue
                why = _differences(s, d, have, settings.kafka.replication_factor)
                if why:
                    report.mismatched[name] = why
                else:
                    report.ok.append(name)
            present = settling
            if present:
                time.sleep(0.5)
    finally:
        admin.close()
    return report


def _differences(s: TopicSpec, described: dict[str, Any], have: dict[str, Any],
                 replication_factor: int) -> list[str]:
    """What differs between topic ``s`` as specified and as described (empty: none)."""
    why = []
    partitions = described.get("partitions") or []
    if len(partitions) != s.partitions:
        why.append(PARTITIONS_DIFFER.format(want=s.partitions, found=len(partitions),
                                            suffix=s.suffix))
    rf = {len(p.get("replica_nodes", ())) for p in partitions}
    if rf and rf != {replication_factor}:
        why.append(f"replication factor: expected {replication_factor}"
                   f" (kafka.replication_factor), found {','.join(map(str, sorted(rf)))}")
    for key in ("cleanup.policy", "retention.ms"):
        want = s.configs().get(key)
        got = have.get(key, {}).get("value")
        if want is not None and got != want:
            why.append(f"{key}: expected {want}, found {got}")
    return why


def delete_namespace_topics(settings: Settings) -> list[str]:
    """Delete every topic whose name starts with ``<namespace>.`` or ``<namespace>-``.

    Used to clean up test and replay namespaces; refuses the default live namespace.
    """
    ns = settings.namespace
    if ns == "ioc":
        raise ValueError("refusing to delete the topics of the live namespace 'ioc'")
    admin = admin_client(settings.kafka)
    try:
        names = [t for t in admin.list_topics() if t.startswith((f"{ns}.", f"{ns}-"))]
        if names:
            admin.delete_topics(names)
        return names
    finally:
        admin.close()
