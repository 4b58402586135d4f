"""``Stage``: what one stage does with a batch, its timers, state and counters;
``combine``: several stages on one consumer, the records of ``<ns>.events`` decoded once
for all the stages that read them."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ioc.errors import InvalidEvent
from ioc.events import Event

from .records import Outbox, Record, TopicPartition, decode_events
from .table import StateTable

__all__ = ["EventsProcess", "Stage", "StageMetrics", "combine"]

# ``process_events(records, events, out)``: ``events[i]`` is ``records[i]`` decoded
EventsProcess = Callable[[list[Record], list[Event | InvalidEvent], Outbox], None]


@dataclass
class StageMetrics:
    """Counters of a stage, logged every minute."""

    records: int = 0
    batches: int = 0
    outputs: int = 0
    flush_retries: int = 0
    state_writes: int = 0
    commit_failures: int = 0
    restored: int = 0
    internal_errors: int = 0  # records dead-lettered as internal_error
    rewinds: int = 0  # failed batches (states back to the last commit, re-read one by one)
    tick_errors: int = 0
    snapshot_entries: int = 0  # state entries loaded from local snapshots at restores
    snapshot_fallbacks: int = 0  # partitions read in full although a snapshot existed
    snapshots_written: int = 0
    snapshot_errors: int = 0  # snapshot files that could not be written
    snapshot_s: float = 0.0  # seconds spent writing snapshots
    kept: int = 0  # table partitions revoked and assigned again, kept in memory (no restore)
    consumer_restarts: int = 0  # consumers replaced after a fatal error (fenced, say)
    busy_s: float = 0.0

    def line(self) -> str:
        return " ".join(f"{k}={round(v, 3) if isinstance(v, float) else v}"
                        for k, v in self.__dict__.items())


@dataclass
class Stage:
    """One stage: its topics, what it does with a batch, its timers and its state.

    ``process(records, out)`` gets ``Record``s (per partition in offset order) and
    queues outputs; ``tick(now, out)`` runs every ``tick_every_s`` between batches
    (wall-clock timers); ``on_assigned(topic partitions)`` after the tables of newly
    assigned partitions are restored; ``on_revoked(topic partitions)`` after the batch
    in flight is committed, so the stage can forget what it holds for partitions that
    now belong to another worker (held-back outputs included). All of them run in the
    stage's thread.

    A stage that reads ``<ns>.events`` is made with ``Stage.of_events``: its work is
    ``process_events(records, events, out)``, given each record decoded
    (``decode_events``), and its ``process`` decodes, then calls it. ``combine``
    decodes a batch once and hands the same list to each such stage.
    """

    name: str
    topics: list[str]
    process: Callable[[list[Any], Outbox], None]
    tables: list[StateTable] = field(default_factory=list)
    tick: Callable[[float, Outbox], None] | None = None
    tick_every_s: float = 0.05
    on_assigned: Callable[[set[TopicPartition]], None] | None = None
    on_revoked: Callable[[set[TopicPartition]], None] | None = None
    batch_max: int = 5000
    within_s: float = 0.01
    commit_every_s: float = 0.2
    metrics: StageMetrics = field(default_factory=StageMetrics)
    # named counter objects of the stage's own (``RouteCounts``, ``AggregateMetrics``, an
    # ``UpdateThrottle``...), read at scrape time by ``ioc.metrics.stages``
    counters: dict[str, Any] = field(default_factory=dict)
    process_events: EventsProcess | None = None

    @classmethod
    def of_events(cls, name: str, topics: list[str], process_events: EventsProcess,
                  **kw: Any) -> Stage:
        """A stage whose work is ``process_events(records, events, out)`` (``kw``: the
        other fields); its ``process(records, out)`` decodes the records itself."""
        def process(records: list[Any], out: Outbox) -> None:
            process_events(records, decode_events(records), out)

        return cls(name, topics, process, process_events=process_events, **kw)


def combine(stages: Sequence[Stage]) -> Stage:
    """One stage that runs ``stages`` (which read the same topics) on one consumer.

    Each record is fetched and unpacked once for all of them, and decoded once
    (``decode_events``) for those made with ``Stage.of_events``, which all get the same
    list; each keeps its own process function, tables and timer, and its own metrics:
    ``records`` and ``batches`` as if it ran alone, ``busy_s`` its own work plus an equal
    share of the decode (so the stages' ``busy_s`` add up to the batches' time). The
    consumer group is named after all of them (``aggregate+kpis+rules``).
    """
    if len(stages) == 1:
        return stages[0]
    due = [0.0] * len(stages)
    readers = sum(st.process_events is not None for st in stages)

    def process(records: list[Any], out: Outbox) -> None:
        t0 = time.perf_counter()
        events = decode_events(records) if readers else []
        share = (time.perf_counter() - t0) / readers if readers else 0.0
        for st in stages:
            m = st.metrics
            t0 = time.perf_counter()
            if st.process_events is not None:
                st.process_events(records, events, out)
                m.busy_s += share
            else:
                st.process(records, out)
            m.busy_s += time.perf_counter() - t0
            m.records += len(records)
            m.batches += 1

    def tick(now: float, out: Outbox) -> None:
        mono = time.monotonic()
        for i, st in enumerate(stages):
            if st.tick is not None and mono >= due[i]:
                due[i] = mono + st.tick_every_s
                st.tick(now, out)

    def on_assigned(tps: set[TopicPartition]) -> None:
        for st in stages:
            if st.on_assigned is not None:
                st.on_assigned(tps)

    def on_revoked(tps: set[TopicPartition]) -> None:
        for st in stages:
            if st.on_revoked is not None:
                st.on_revoked(tps)

    ticking = [st.tick_every_s for st in stages if st.tick is not None]
    return Stage(
        "+".join(st.name for st in stages), list(stages[0].topics), process,
        tables=[t for st in stages for t in st.tables],
        tick=tick if ticking else None, tick_every_s=min(ticking, default=1.0),
        on_assigned=on_assigned, on_revoked=on_revoked,
        batch_max=max(st.batch_max for st in stages),
        within_s=min(st.within_s for st in stages),
        commit_every_s=min(st.commit_every_s for st in stages))
