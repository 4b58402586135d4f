"""Batch stages: the event-rate agents on plain aiokafka consumers, hosted by the Faust worker.

Faust's per-message path (consumer-thread hand-off, one ``Event`` and one ack per
record, the stream iterator) capped a worker at ~1,300-1,750 events/s on this 2-core
machine however the agent batched its own work (docs/performance.md). The agents that
see every event (validate, aggregate, kpis, rules) and the tiles agent therefore run as
*stages*: one task of the Faust worker each (started and stopped with it, so ``ioc
worker`` and the app factory are unchanged), with a consumer of its own, and this loop::

    records = consumer.getmany(max batch_max, waiting at most within_s)
    stage.process(records, outbox)         (pure work; outputs go to the outbox)
    stage.tick(now, outbox)                (timers: throttled updates, absence checks)
    outbox.flush()                         (one produce batch per partition; wait for acks;
                                            retry with backoff and a new producer while the
                                            broker refuses)
    consumer.commit(offsets of the batch)  (only now, at most every commit_every_s)

State lives in ``StateTable``s: a dict per stage whose every change is also written,
in the same flush as the outputs, to a compacted changelog topic
``<ns>.state.<app>.<table>`` in the partition of the source record (so a partition's
state moves with it). When partitions are assigned, the table is rebuilt from that
topic before any record of theirs is fetched; when they are revoked, their state is
dropped after the batch in flight is flushed and committed. The states remember the
last applied (partition, offset) so records redelivered after a crash (kill -9 between
a flush and its commit) are skipped, not counted twice: exactly-once totals over
at-least-once Kafka, as with the Faust tables this replaces.

Bounded: a batch is at most ``batch_max`` records; the outbox holds one batch's
outputs; while a flush is refused the stage fetches nothing more (the rest waits in
Kafka). A bug in ``process`` crashes the worker (logged with the batch's offsets)
rather than skipping records silently.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import faust
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError as AIOKafkaError
from aiokafka.partitioner import murmur2

from ioc.config import Settings
from ioc.errors import InvalidEvent
from ioc.events import decode_event
from ioc.kafka import ensure_topics
from ioc.kafka.clients import aiokafka_kwargs
from ioc.topics import TopicSpec

__all__ = ["Outbox", "Stage", "StageMetrics", "StateTable", "combine", "decoded_events", "host_stage"]

log = logging.getLogger(__name__)

Headers = list[tuple[str, bytes]]


@functools.lru_cache(maxsize=65536)
def key_partition(key: bytes | None, partitions: int) -> int:
    """The partition aiokafka's default partitioner gives ``key`` (murmur2), cached.

    aiokafka's murmur2 is pure Python (~10 µs) and entities repeat. Keyless records go
    to partition 0.
    """
    return (murmur2(key) & 0x7FFFFFFF) % partitions if key is not None else 0


class Outbox:
    """Output records of one batch, sent together by ``flush``."""

    __slots__ = ("records",)

    def __init__(self) -> None:
        self.records: list[tuple[str, bytes | None, bytes | None, int | None, Headers | None]] = []

    def add(self, topic: str, key: bytes | None, value: bytes | None, *,
            partition: int | None = None, headers: Headers | None = None) -> None:
        """Queue a record; ``partition`` None means the key's partition."""
        self.records.append((topic, key, value, partition, headers))

    def __len__(self) -> int:
        return len(self.records)

    async def send(self, producer: AIOKafkaProducer) -> None:
        """Send every record, one aiokafka batch per (topic, partition); wait for all acks.

        Building batches directly costs a few µs a record, against a few hundred µs
        through Faust's ``producer.send`` on a busy machine.
        """
        groups: dict[tuple[str, int], list[tuple[bytes | None, bytes | None, Headers | None]]] = {}
        counts: dict[str, int] = {}
        for topic, key, value, part, headers in self.records:
            if part is None:
                n = counts.get(topic)
                if n is None:
                    n = counts[topic] = len(await producer.partitions_for(topic))
                part = key_partition(key, n)
            groups.setdefault((topic, part), []).append((key, value, headers))
        futs = []
        for (topic, part), recs in groups.items():
            batch = producer.create_batch()
            for key, value, headers in recs:
                if batch.append(key=key, value=value, timestamp=None, headers=headers or []) is None:
                    futs.append(await producer.send_batch(batch, topic, partition=part))
                    batch = producer.create_batch()
                    if batch.append(key=key, value=value, timestamp=None,
                                    headers=headers or []) is None:
                        raise ValueError(f"a record of {len(value or b'')} bytes does not fit in "
                                         f"an empty batch for {topic}[{part}]")
            futs.append(await producer.send_batch(batch, topic, partition=part))
        await asyncio.gather(*futs)


class _DecodedBatch:
    """The events of the batch last decoded, so stages sharing a consumer decode once."""

    records: list[Any] | None = None
    decoded: list[Any] = []


def decoded_events(records: list[Any]) -> list[Any]:
    """``decode_event`` of each record's value (an ``Event`` or the ``InvalidEvent``).

    Combined stages get the very same list object, so the second and third stage of
    ``aggregate+kpis+rules`` reuse the first one's work (one decode per event, not three).
    """
    if _DecodedBatch.records is records:
        return _DecodedBatch.decoded
    out: list[Any] = []
    for r in records:
        try:
            out.append(decode_event(r.value))
        except InvalidEvent as exc:
            out.append(exc)
    _DecodedBatch.records, _DecodedBatch.decoded = records, out
    return out


class StateTable:
    """Per-key state bytes of the partitions a stage owns, backed by a compacted topic.

    ``data`` maps key -> value bytes (the ``StateCache`` of the agents reads it);
    ``put`` changes it and queues the changelog record in the same outbox as the
    outputs, so both are acknowledged before the source offsets are committed.
    """

    def __init__(self, name: str, source: str, partitions: int) -> None:
        self.name = name
        self.source = source  # the input topic whose partitions this state follows
        self.partitions = partitions
        self.data: dict[bytes, bytes] = {}
        self.where: dict[bytes, int] = {}
        self.topic = ""  # set by the runner from topic_spec

    def topic_spec(self, namespace: str, app_id: str) -> TopicSpec:
        """``<ns>.state.<app>.<name>``: ``<app>`` is the app id without ``<ns>-``."""
        app = app_id.removeprefix(f"{namespace}-")
        return TopicSpec(f"state.{app}.{self.name}", self.partitions, "state key",
                         "state bytes", "compact", None, f"changelog of the stage state {self.name}")

    def put(self, key: bytes, value: bytes, partition: int, out: Outbox) -> None:
        self.data[key] = value
        self.where[key] = partition
        out.add(self.topic, key, value, partition=partition)

    def items_of(self, partition: int) -> list[tuple[bytes, bytes]]:
        return [(k, v) for k, v in self.data.items() if self.where.get(k) == partition]

    def drop(self, partitions: Iterable[int]) -> int:
        gone = set(partitions)
        keys = [k for k, p in self.where.items() if p in gone]
        for k in keys:
            self.data.pop(k, None)
            self.where.pop(k, None)
        return len(keys)

    async def restore(self, settings: Settings, partitions: Sequence[int]) -> int:
        """Read this table's changelog partitions from the start to their end."""
        if not partitions:
            return 0
        c = AIOKafkaConsumer(enable_auto_commit=False, group_id=None,
                             **aiokafka_kwargs(settings.kafka))
        await c.start()
        n = 0
        try:
            tps = [TopicPartition(self.topic, p) for p in partitions]
            c.assign(tps)
            await c.seek_to_beginning(*tps)
            ends = await c.end_offsets(tps)
            todo = {tp for tp in tps if ends[tp] > 0}
            while todo:
                for tp, recs in (await c.getmany(*todo, timeout_ms=500, max_records=10_000)).items():
                    for r in recs:
                        n += 1
                        if r.value is None:
                            self.data.pop(r.key, None)
                            self.where.pop(r.key, None)
                        else:
                            self.data[r.key] = r.value
                            self.where[r.key] = tp.partition
                for tp in list(todo):
                    if await c.position(tp) >= ends[tp]:
                        todo.discard(tp)
        finally:
            await c.stop()
        return n


@dataclass
class StageMetrics:
    """Counters of a stage, logged every minute."""

    records: int = 0
    batches: int = 0
    outputs: int = 0
    flush_retries: int = 0
    commit_failures: int = 0
    restored: int = 0
    busy_s: float = 0.0

    def line(self) -> str:
        return " ".join(f"{k}={round(v, 3) if isinstance(v, float) else v}"
                        for k, v in self.__dict__.items())


@dataclass
class Stage:
    """One stage: its topics, what it does with a batch, its timers and its state.

    ``process(records, out)`` gets aiokafka ``ConsumerRecord``s (per partition in
    offset order) and queues outputs; ``tick(now, out)`` runs every ``tick_every_s``
    between batches (wall-clock timers); ``on_assigned(topic partitions)`` after the
    tables of newly assigned partitions are restored; ``on_revoked(topic partitions)``
    after the batch in flight is committed, so the stage can forget what it holds for
    partitions that now belong to another worker (held-back outputs included).
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


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, runner: StageRunner) -> None:
        self.runner = runner

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self.runner.revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self.runner.assigned(set(assigned))


class StageRunner:
    """The consume -> process -> flush -> commit loop of one ``Stage``."""

    def __init__(self, settings: Settings, app_id: str, stage: Stage) -> None:
        self.settings = settings
        self.stage = stage
        self.group = f"{app_id}.{stage.name}"
        self.specs = [t.topic_spec(settings.namespace, app_id) for t in stage.tables]
        for t, ts in zip(stage.tables, self.specs, strict=True):
            t.topic = ts.name(settings.namespace)
        self.lock = asyncio.Lock()
        self.owned: set[TopicPartition] = set()
        self.pending: dict[TopicPartition, int] = {}
        self.last_commit = time.monotonic()
        self.consumer: AIOKafkaConsumer | None = None
        self.producer: AIOKafkaProducer | None = None

    async def assigned(self, tps: set[TopicPartition]) -> None:
        async with self.lock:
            for t in self.stage.tables:
                t.drop(tp.partition for tp in self.owned - tps if tp.topic == t.source)
                new = sorted(tp.partition for tp in tps - self.owned if tp.topic == t.source)
                n = await t.restore(self.settings, new)
                self.stage.metrics.restored += n
                if n:
                    log.info("stage %s: restored %d record(s) of %s for partitions %s",
                             self.stage.name, n, t.topic, new)
            self.owned = set(tps)
            if self.stage.on_assigned is not None:
                self.stage.on_assigned(set(tps))

    async def revoked(self, tps: set[TopicPartition]) -> None:
        async with self.lock:  # the batch in flight is flushed and committed first
            await self.commit(force=True)
            for t in self.stage.tables:
                t.drop(tp.partition for tp in tps if tp.topic == t.source)
            self.owned -= tps
            if self.stage.on_revoked is not None:
                self.stage.on_revoked(set(tps))

    def _new_producer(self) -> AIOKafkaProducer:
        return AIOKafkaProducer(acks="all", enable_idempotence=True,
                                **aiokafka_kwargs(self.settings.kafka))

    async def _replace_producer(self) -> None:
        """Stop the producer and start a new one (a new idempotent producer id).

        After a broker restart an idempotent producer can keep failing with
        OutOfOrderSequenceNumber forever; a new producer id starts clean. Re-sending the
        outbox is at-least-once: the sink's keys and the states' origin/offset marks
        absorb what was already written.
        """
        old, self.producer = self.producer, None
        if old is not None:
            try:
                await asyncio.wait_for(old.stop(), 10)
            except (Exception, asyncio.CancelledError) as exc:  # it failed already
                log.debug("stage %s: stopping the old producer: %r", self.stage.name, exc)
        producer = self._new_producer()
        try:
            await producer.start()
        except (TimeoutError, AIOKafkaError, OSError):
            await producer.stop()
            raise
        self.producer = producer

    async def flush(self, out: Outbox) -> None:
        """Send the outbox until every record is acknowledged (backoff while refused).

        A failed attempt replaces the producer before the next one, so a producer that
        the broker no longer accepts (after a restart, say) does not stall the stage.
        """
        delay = 0.2
        while True:
            try:
                if self.producer is None:
                    await self._replace_producer()
                assert self.producer is not None
                await out.send(self.producer)
                self.stage.metrics.outputs += len(out)
                out.records.clear()
                return
            except (TimeoutError, AIOKafkaError, OSError) as exc:
                self.stage.metrics.flush_retries += 1
                log.warning("stage %s: sending %d record(s) failed (%s: %s); new producer, "
                            "retrying in %.1f s", self.stage.name, len(out),
                            type(exc).__name__, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
                try:
                    await self._replace_producer()
                except (TimeoutError, AIOKafkaError, OSError) as exc2:
                    log.warning("stage %s: no new producer yet (%s)", self.stage.name, exc2)

    async def commit(self, *, force: bool = False) -> None:
        if not self.pending or self.consumer is None:
            return
        if not force and time.monotonic() - self.last_commit < self.stage.commit_every_s:
            return
        offsets, self.pending = self.pending, {}
        self.last_commit = time.monotonic()
        try:
            await self.consumer.commit(offsets)
        except AIOKafkaError as exc:
            # Rebalanced away: the new owner re-reads from the last commit and the
            # states' (partition, offset) marks skip what was already applied.
            self.stage.metrics.commit_failures += 1
            log.warning("stage %s: offset commit failed (%s)", self.stage.name, exc)

    async def run(self, app: faust.App | None = None) -> None:
        st = self.stage
        kw = aiokafka_kwargs(self.settings.kafka)
        if self.specs:
            report = await asyncio.to_thread(ensure_topics, self.settings, self.specs)
            if not report.success:
                raise RuntimeError(f"stage {st.name}: " + "; ".join(report.lines()))
        self.producer = self._new_producer()
        self.consumer = AIOKafkaConsumer(
            group_id=self.group, enable_auto_commit=False, auto_offset_reset="earliest",
            max_poll_records=st.batch_max, fetch_max_wait_ms=max(1, int(st.within_s * 1000)),
            session_timeout_ms=int(self.settings.streams.session_timeout_s * 1000),
            heartbeat_interval_ms=int(min(3.0, self.settings.streams.session_timeout_s / 3) * 1000),
            **kw)
        await self.producer.start()
        await self.consumer.start()
        self.consumer.subscribe(st.topics, listener=_Listener(self))
        log.info("stage %s: group %s on %s", st.name, self.group, ", ".join(st.topics))
        out = Outbox()
        m = st.metrics
        next_tick = time.monotonic()
        last_log = time.monotonic()
        try:
            while True:
                data = await self.consumer.getmany(timeout_ms=max(1, int(st.within_s * 1000)),
                                                   max_records=st.batch_max)
                async with self.lock:
                    t0 = time.perf_counter()
                    records = [r for recs in data.values() for r in recs]
                    if records:
                        try:
                            st.process(records, out)
                        except Exception:
                            where = {f"{tp.topic}[{tp.partition}]": (recs[0].offset, recs[-1].offset)
                                     for tp, recs in data.items()}
                            log.exception("stage %s: processing a batch failed (offsets %s)",
                                          st.name, where)
                            raise
                        m.records += len(records)
                        m.batches += 1
                        for tp, recs in data.items():
                            self.pending[tp] = recs[-1].offset + 1
                    now = time.monotonic()
                    if st.tick is not None and now >= next_tick:
                        next_tick = now + st.tick_every_s
                        st.tick(time.time(), out)
                    if out.records:
                        await self.flush(out)
                    await self.commit()
                    m.busy_s += time.perf_counter() - t0
                if time.monotonic() - last_log > 60:
                    last_log = time.monotonic()
                    log.info("stage %s: %s", st.name, m.line())
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if app is not None:
                await app.crash(exc)
            raise
        finally:
            try:
                if out.records:
                    await asyncio.wait_for(self.flush(out), 10)
                await asyncio.wait_for(self.commit(force=True), 10)
            except (Exception, asyncio.CancelledError) as exc:  # shutting down: best effort
                log.warning("stage %s: final flush/commit failed: %r", st.name, exc)
            await self.consumer.stop()
            if self.producer is not None:
                await self.producer.stop()
            log.info("stage %s stopped: %s", st.name, m.line())


def combine(stages: Sequence[Stage]) -> Stage:
    """One stage that runs ``stages`` (which read the same topics) on one consumer.

    Each record is fetched and unpacked once for all of them; each keeps its own
    process function, tables and timer. The consumer group is named after all of them
    (``aggregate+kpis+rules``).
    """
    if len(stages) == 1:
        return stages[0]
    due = [0.0] * len(stages)

    def process(records: list[Any], out: Outbox) -> None:
        for st in stages:
            t0 = time.perf_counter()
            st.process(records, out)
            st.metrics.busy_s += time.perf_counter() - t0
            st.metrics.records += len(records)
            st.metrics.batches += 1

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


def host_stage(app: faust.App, settings: Settings, stage: Stage) -> None:
    """Run ``stage`` in the Faust worker (started and stopped with it).

    Stages of one app that read exactly the same topics share one consumer
    (``combine``); the first call registers the one task that runs them all.
    """
    stages: list[Stage] | None = getattr(app, "_ioc_stages", None)
    if stages is not None:
        stages.append(stage)
        return
    stages = [stage]
    app._ioc_stages = stages  # type: ignore[attr-defined]
    app_id = app.conf.id

    async def run_stages() -> None:
        groups: dict[tuple[str, ...], list[Stage]] = {}
        for st in stages:
            groups.setdefault(tuple(sorted(st.topics)), []).append(st)
        runners = [StageRunner(settings, app_id, combine(g)) for g in groups.values()]
        await asyncio.gather(*(r.run(app) for r in runners))

    app.task(run_stages)
