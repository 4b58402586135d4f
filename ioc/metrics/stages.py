"""Collector of ``ioc worker``'s batch stages: reads their counters at scrape time.

Per stage (``stage`` = the stage's name: validate, aggregate, kpis, rules, tiles):
records and events in, batches, busy seconds, state entries per table, late events,
held updates, dead letters by reason. The tiles agent's stages add their own: the view
facts the tiles stage forwarded, and what the views stage's ``GlobalViews`` skipped,
removed and holds; the scorecard_tiles stage, the records it skipped undecoded (its
dead-letter-free path). Stages that read the same topics share one
consumer (``streams.engine.combine``): what belongs to that consumer (records out,
commit failures, the last restore, its group's lag) carries the consumer's name, the
stage names joined by ``+`` (``aggregate+kpis+rules``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..events import DEAD_LETTER_REASONS
from ._registry import snapshot_items

__all__ = ["StagesCollector", "stage_groups"]

# ``GlobalViews.counters()`` keys, by what happened to the fact (fixed: bounded labels)
_VIEWS_SKIPPED = ("stale", "unshown")
_VIEWS_REMOVED = ("expired_periods", "unlisted", "expired_alerts", "evicted")


def _stages(app: Any) -> list[Any]:
    return list(getattr(app, "_ioc_stages", None) or [])


def _runners(app: Any) -> list[Any]:
    return list(getattr(app, "_ioc_runners", None) or [])


def _events_in(st: Any) -> int:
    route = st.counters.get("route")  # validate: a raw record holds many events
    if route is not None:
        return int(route.valid + route.dead)
    agg = st.counters.get("aggregate")
    if agg is not None:
        return int(agg.events)
    return int(st.metrics.records)  # the other stages read one event per record


class StagesCollector(Collector):
    """Metrics of the stages hosted by the Faust ``app`` (``streams.engine.host_stage``)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def collect(self) -> Iterator[Metric]:
        stages, runners = _stages(self.app), _runners(self.app)
        lab = ["stage"]
        rin = CounterMetricFamily("ioc_stage_records_in", "Kafka records consumed", labels=lab)
        ein = CounterMetricFamily("ioc_stage_events_in", "events in the records consumed",
                                  labels=lab)
        batches = CounterMetricFamily("ioc_stage_batches", "batches processed", labels=lab)
        busy = CounterMetricFamily("ioc_stage_busy_seconds", "seconds spent processing "
                                   "batches", labels=lab)
        late = CounterMetricFamily("ioc_late_events", "events behind their entity's "
                                   "watermark by more than the allowed lateness (dead-lettered)",
                                   labels=lab)
        held = CounterMetricFamily("ioc_held_updates", "updates a throttle held back "
                                   "(superseded by a newer one or put off by the rate budget)",
                                   labels=lab)
        entries = GaugeMetricFamily("ioc_state_entries", "keys held in a state table",
                                    labels=["stage", "table"])
        forwarded = CounterMetricFamily("ioc_views_facts_forwarded", "KPI values and alert "
                                        "states forwarded to <ns>.views as view facts",
                                        labels=lab)
        skipped = CounterMetricFamily("ioc_views_facts_skipped", "view facts not applied: "
                                      "a redelivered or older copy (stale), or a KPI value "
                                      "no tile shows (unshown)", labels=["stage", "reason"])
        removed = CounterMetricFamily("ioc_views_facts_removed", "view facts that left the "
                                      "views (and their state), by why", labels=["stage", "reason"])
        facts = GaugeMetricFamily("ioc_views_facts", "view facts held by the views", labels=lab)
        undecodable = CounterMetricFamily("ioc_undecodable_skipped", "records that did not "
                                          "decode, skipped without a dead letter", labels=lab)
        for st in stages:
            m = st.metrics
            rin.add_metric([st.name], m.records)
            ein.add_metric([st.name], _events_in(st))
            batches.add_metric([st.name], m.batches)
            busy.add_metric([st.name], m.busy_s)
            agg = st.counters.get("aggregate")
            if agg is not None:
                late.add_metric([st.name], agg.late)
            throttle = st.counters.get("throttle")
            if throttle is not None:
                held.add_metric([st.name], throttle.coalesced
                                + getattr(throttle, "budget_held", 0)
                                + getattr(throttle, "held", 0))
            for t in st.tables:
                entries.add_metric([st.name, t.name], len(t.data))
            tiles = st.counters.get("tiles")
            if tiles is not None:
                forwarded.add_metric([st.name], tiles.forwarded)
            views = st.counters.get("views")
            if views is not None:
                c = views.counters()
                for reason in _VIEWS_SKIPPED:
                    skipped.add_metric([st.name, reason], c[reason])
                for reason in _VIEWS_REMOVED:
                    removed.add_metric([st.name, reason], c[reason])
                facts.add_metric([st.name], c["facts"])
            board = st.counters.get("leaderboard")
            if board is not None:
                undecodable.add_metric([st.name], board.undecodable)
        out = CounterMetricFamily("ioc_stage_records_out", "records produced and "
                                  "acknowledged (outputs, dead letters, changelogs)", labels=lab)
        commits = CounterMetricFamily("ioc_commit_failures", "offset commits that failed",
                                      labels=lab)
        restore = GaugeMetricFamily("ioc_state_restore_seconds", "seconds the last restore "
                                    "of newly assigned partitions took", labels=lab)
        restored = CounterMetricFamily("ioc_state_restored", "what restores read: changelog "
                                       "records, and entries loaded from local snapshots",
                                       labels=["stage", "source"])
        fallbacks = CounterMetricFamily("ioc_state_snapshot_fallbacks", "partitions read from "
                                        "the changelog's start although a snapshot existed "
                                        "(damaged, or its offset outside the changelog)",
                                        labels=lab)
        dead = CounterMetricFamily("ioc_dead_letters", "records sent to <ns>.dlq (and "
                                   "acknowledged), by stage and reason",
                                   labels=["stage", "reason"])
        names = {st.name for st in stages}
        # Every (stage, reason) from the start at 0: rate() over a series that appears
        # already holding its first count misses that count.
        by: dict[tuple[str, str], int] = {
            (n, reason): 0 for n in names for reason in (*DEAD_LETTER_REASONS, "other")}
        for r in runners:
            name = r.stage.name
            out.add_metric([name], r.stage.metrics.outputs)
            commits.add_metric([name], r.stage.metrics.commit_failures)
            if r.restore_s is not None:
                restore.add_metric([name], r.restore_s)
            restored.add_metric([name, "changelog"], r.stage.metrics.restored)
            restored.add_metric([name, "snapshot"], r.stage.metrics.snapshot_entries)
            fallbacks.add_metric([name], r.stage.metrics.snapshot_fallbacks)
            for (stage_b, reason_b), n in snapshot_items(r.dead_letters):
                stage = stage_b.decode("utf-8", "replace")
                reason = reason_b.decode("utf-8", "replace")
                key = (stage if stage in names else name,
                       reason if reason in DEAD_LETTER_REASONS else "other")
                by[key] = by.get(key, 0) + n
        for (stage, reason), n in sorted(by.items()):
            dead.add_metric([stage, reason], n)
        yield from (rin, ein, out, batches, busy, dead, late, held, commits, entries, restore,
                    restored, fallbacks, forwarded, skipped, removed, facts, undecodable)


def stage_groups(app: Any) -> list[tuple[str, list[str]]]:
    """``(group, topics)`` of each stage consumer of ``app``, then of the Faust agents'
    consumer (group ``app.conf.id``: probe, vision), for ``ConsumerLag``."""
    out = [(r.group, list(r.stage.topics)) for r in _runners(app)]
    agents = getattr(app, "agents", None)
    if agents:
        topics = sorted({t for a in list(agents.values())
                         for t in getattr(a.channel, "topics", ())})
        if topics:
            out.append((str(app.conf.id), topics))
    return out
