"""Batch stages: the event-rate agents on librdkafka consumers, hosted by the Faust worker.

Faust's per-message path (consumer-thread hand-off, one ``Event`` and one ack per
record, the stream iterator) capped a worker at ~1,300-1,750 events/s on this 2-core
machine however the agent batched its own work (docs/performance.md). The agents that
see every event (validate, aggregate, kpis, rules) and the tiles agent therefore run as
*stages*: each started and stopped with the Faust worker (so ``ioc worker`` and the app
factory are unchanged), with a consumer and a producer of its own (confluent-kafka:
librdkafka moves a record for a seventh of aiokafka's CPU, docs/dependencies.md), in a
thread of its own running this loop::

    records = consumer.consume(max batch_max, waiting at most within_s)
    stage.process(records, outbox)         (pure work; outputs go to the outbox)
    stage.tick(now, outbox)                (timers: throttled updates, absence checks)
    outbox.send(producer)                  (produce the outputs, then flush: wait for
                                            every acknowledgement; retry with backoff and
                                            a new producer while the broker refuses)
    every commit_every_s (1 s):            the states changed since the last commit go to
                                            their changelogs (acknowledged likewise), then
                                            consumer.commit(offsets processed so far)

librdkafka's blocking calls release the GIL, so the stages' Kafka I/O runs beside the
Faust event loop, and the rebalance callbacks (state restore, final commit) run in the
stage's own thread, between two batches.

State lives in ``StateTable``s: a dict per stage whose changed entries are written,
at each commit (after the outputs they led to), to a compacted changelog topic
``<ns>.state.<app>.<table>`` in the partition of the source record (so a partition's
state moves with it): one record per changed key per commit, however many batches
changed it. When partitions are assigned, the table is rebuilt before any record of
theirs is fetched: from a local snapshot of the partition (``streams._snapshot``, which
remembers the changelog offset it includes) and the changelog's tail after it, or from
the whole changelog when there is no usable snapshot. When they are revoked, the batch in
flight is flushed and committed and the partitions snapshotted; their state stays in
memory until the next assignment, which keeps those it gets back whose changelog nobody
wrote since (eager assignment revokes every partition at each rebalance) and drops the
rest. Snapshots are also written after a checkpoint, at most every ``snapshot_every_s``
(30 s), for the partitions written since, and when the stage stops. The states remember the
last applied (partition, offset) so records redelivered after a crash (kill -9 between
a flush and its commit) are skipped, not counted twice: exactly-once totals over
at-least-once Kafka, as with the Faust tables this replaces.

Bounded: a batch is at most ``batch_max`` records; the outbox holds one batch's
outputs; while a flush is refused the stage fetches nothing more (the rest waits in
Kafka).

Bad input is the stage's business: a record it cannot decode becomes a dead letter
(``ioc.events.dead_letter_headers``) in its ``process``. Anything ``process`` still
raises is taken for a bug of our own, and must neither stop the worker nor loop (a
restart would read the same record and fail again). The runner then *rewinds*: the
batch's outputs are discarded, the states go back to the last commit (the partitions
are dropped and restored from their changelogs, as after a rebalance) and the
consumer seeks back to the committed offsets; it re-reads from there *record by
record*, each in a transaction of the tables (``StateTable.begin``/``rollback``: the
stage works on copies of the states, so a record that fails half-way leaves nothing
behind). A record that raises again goes to ``<ns>.dlq`` with reason
``internal_error`` (exception type and where it was raised in ``dlq.message``), is
counted (``StageMetrics.internal_errors``) and logged (throttled); the stage goes on.
It stays record by record until it has passed the failing batch and
``careful_s`` passed without another failure. A failing ``tick`` is counted
(``tick_errors``), its outputs discarded, and logged (throttled). docs/reliability.md.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import faust

from ioc.config import Settings, default_state_dir
from ioc.errors import InvalidEvent, InvalidRecord
from ioc.events import LogThrottle, dead_letter_headers, decode_event, internal_error_message
from ioc.kafka import acked_producer, discard_producer, ensure_topics, partition_for, rdkafka_conf
from ioc.kafka.membership import MembershipWatch
from ioc.kafka.rdkafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer
from ioc.kafka.rdkafka import TopicPartition as RdTopicPartition
from ioc.topics import TopicSpec, topic_name

from ._snapshot import VERSION as SNAPSHOT_VERSION
from ._snapshot import Snapshot, SnapshotStore, SnapshotWriter

__all__ = ["Outbox", "Record", "SendFailed", "Stage", "StageMetrics", "StateTable", "TopicPartition", "combine",
           "decoded_events", "host_stage"]

log = logging.getLogger(__name__)

Headers = list[tuple[str, bytes]]


class TopicPartition(NamedTuple):
    """A topic partition as the stages see it (hashable, comparable)."""

    topic: str
    partition: int


class Record:
    """A consumed record, with the attributes the stages read (like aiokafka's)."""

    __slots__ = ("headers", "key", "offset", "partition", "topic", "value")

    def __init__(self, topic: str, partition: int, offset: int, key: bytes | None,
                 value: bytes | None, headers: Sequence[tuple[str, bytes]]) -> None:
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.key = key
        self.value = value
        self.headers = headers

    @classmethod
    def of(cls, m: Any) -> Record:
        return cls(m.topic(), m.partition(), m.offset(), m.key(), m.value(), m.headers() or ())


@functools.lru_cache(maxsize=65536)
def key_partition(key: bytes | None, partitions: int) -> int:
    """The partition the Java client's default partitioner gives ``key`` (murmur2), cached.

    kafka-python, aiokafka and librdkafka's ``murmur2_random`` agree on it. Keyless
    records go to partition 0.
    """
    return partition_for(key, partitions) if key is not None else 0


class SendFailed(Exception):
    """Some records of an outbox were not acknowledged (the reason is the message)."""


class Outbox:
    """Output records of one batch, sent together by ``send``."""

    __slots__ = ("records",)

    def __init__(self) -> None:
        self.records: list[tuple[str, bytes | None, bytes | None, int | None, Headers | None]] = []

    def add(self, topic: str, key: bytes | None, value: bytes | None, *,
            partition: int | None = None, headers: Headers | None = None) -> None:
        """Queue a record; ``partition`` None means the key's partition."""
        self.records.append((topic, key, value, partition, headers))

    def __len__(self) -> int:
        return len(self.records)

    def send(self, producer: Producer, *, timeout_s: float = 30.0,
             partitions: dict[str, int] | None = None) -> None:
        """Produce every record and wait until the broker acknowledged all of them.

        Raises:
            SendFailed: a record was refused, or not acknowledged within ``timeout_s``.
            KafkaException: the producer is unusable (a fatal idempotence error, say).
        """
        counts = partitions if partitions is not None else {}
        errors: list[str] = []

        def failed(err: Any, _msg: Any) -> None:
            if err is not None:
                errors.append(str(err))

        produce = producer.produce
        for topic, key, value, part, headers in self.records:
            if part is None:
                n = counts.get(topic)
                if n is None:
                    md = producer.list_topics(topic, timeout=10).topics.get(topic)
                    if md is None or md.error is not None or not md.partitions:
                        raise SendFailed(f"topic {topic} has no partitions "
                                         f"({md.error if md is not None else 'unknown'})")
                    n = counts[topic] = len(md.partitions)
                part = key_partition(key, n)
            while True:
                try:
                    if headers:
                        produce(topic, value, key, part, on_delivery=failed,
                                headers=headers)  # type: ignore[arg-type]
                    else:
                        produce(topic, value, key, part, on_delivery=failed)
                    break
                except BufferError:  # librdkafka's queue is full: let it drain
                    producer.poll(0.05)
        left = producer.flush(timeout_s)
        if left:
            raise SendFailed(f"{left} record(s) not acknowledged within {timeout_s:.0f} s")
        if errors:
            raise SendFailed(f"{len(errors)} record(s) refused, first: {errors[0]}")


_decoded = threading.local()
_state_log = LogThrottle(10.0)


# A stage consumer outside its group while polling fails its stage after REJOIN_S from
# when the broker answers again, FIRST_JOIN_S when it never joined (ioc/kafka/membership.py).
# Longer than the sink's 12 s: failing a stage restarts its worker and re-reads its
# state, where the sink only replaces one consumer.
REJOIN_S = 20.0
FIRST_JOIN_S = 60.0


def _watermark_high(c: Any, tp: Any, *, within_s: float = 30.0) -> int:
    """The high watermark of ``tp`` (``_watermarks``)."""
    return _watermarks(c, tp, within_s=within_s)[1]


def _watermarks(c: Any, tp: Any, *, within_s: float = 30.0) -> tuple[int, int]:
    """The (low, high) watermarks of ``tp``, retrying retriable broker errors for ``within_s``
    (a partition without a leader yet, as just after a broker start: NOT_LEADER...).

    Raises:
        KafkaException: a non-retriable error, or still failing after ``within_s``.
    """
    from ioc.kafka.rdkafka import KafkaError, KafkaException

    passing = {KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE,
               KafkaError.FENCED_LEADER_EPOCH, KafkaError.UNKNOWN_LEADER_EPOCH,
               KafkaError.REQUEST_TIMED_OUT, KafkaError._TIMED_OUT, KafkaError._TRANSPORT,
               KafkaError._ALL_BROKERS_DOWN,
               # a changelog topic created a moment ago, not yet in this client's metadata
               KafkaError._UNKNOWN_PARTITION, KafkaError.UNKNOWN_TOPIC_OR_PART,
               KafkaError._UNKNOWN_TOPIC}
    deadline = time.monotonic() + within_s
    while True:
        try:
            lo, hi = c.get_watermark_offsets(tp, timeout=10)
            return int(lo), int(hi)
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            retry = isinstance(err, KafkaError) and (err.code() in passing or err.retriable())
            if not retry or time.monotonic() > deadline:
                raise
            log.warning("watermark of %s[%d]: %s; retrying", tp.topic, tp.partition, err)
            time.sleep(0.5)


def decoded_events(records: list[Any]) -> list[Any]:
    """``decode_event`` of each record's value (an ``Event`` or the ``InvalidEvent``).

    Combined stages get the very same list object, so the second and third stage of
    ``aggregate+kpis+rules`` reuse the first one's work (one decode per event, not three).
    Remembered per thread: each stage runs in its own.
    """
    if getattr(_decoded, "records", None) is records:
        return _decoded.events  # type: ignore[no-any-return]
    out: list[Any] = []
    for r in records:
        try:
            out.append(decode_event(r.value))
        except InvalidEvent as exc:
            out.append(exc)
    _decoded.records, _decoded.events = records, out
    return out


class StateTable:
    """Per-key state of the partitions a stage owns, backed by a compacted topic.

    ``data`` maps key -> the bytes last written to (or restored from) the changelog
    ``<ns>.state.<app>.<name>``. A stage reads a state with ``get`` (decoded once, then
    kept) and hands back what it changed with ``change``; changed states are encoded and
    written to the changelog only when the runner commits (``write_changes``, every
    ``commit_every_s``, after the outputs of the batches since the last commit were
    acknowledged): one record per changed key per commit, not per batch. Between two
    commits a crash loses nothing: the restarted stage reads the changelog as of the
    last commit and the input from that commit's offsets.
    """

    def __init__(self, name: str, source: str, partitions: int, *,
                 cache_limit: int = 100_000) -> None:
        self.name = name
        self.source = source  # the input topic whose partitions this state follows
        self.partitions = partitions
        self.data: dict[bytes, bytes] = {}
        self.where: dict[bytes, int] = {}
        self.changed: dict[bytes, Any] = {}  # key -> object or bytes, not yet written
        self.cache: dict[bytes, tuple[bytes, Any]] = {}  # key -> (its bytes in data, decoded)
        self.cache_limit = cache_limit
        self.topic = ""  # set by the runner from topic_spec
        # key -> (changed, where, data) before the open transaction, or None (no transaction)
        self._journal: dict[bytes, tuple[Any, Any, Any]] | None = None
        self.undecodable = 0  # states that did not decode and were started anew
        # partition -> the changelog offset ``data`` includes (every record below it is
        # applied): set by ``restore``, advanced by ``snapshot`` for the partitions
        # written since (``dirty``) to the changelog's end once their writes are acknowledged
        self.offsets: dict[int, int] = {}
        self.dirty: set[int] = set()
        self.snapshot_offsets: dict[int, int] = {}  # partition -> offset of its last snapshot
        self.snapshot_entries = 0  # entries loaded from snapshots
        self.snapshot_fallbacks = 0  # partitions read in full: snapshot invalid or out of range
        self.restore_notes: dict[int, str] = {}  # partition -> how its last restore went

    def topic_spec(self, namespace: str, app_id: str) -> TopicSpec:
        """``<ns>.state.<app>.<name>``: ``<app>`` is the app id without ``<ns>-``."""
        app = app_id.removeprefix(f"{namespace}-")
        return TopicSpec(f"state.{app}.{self.name}", self.partitions, "state key",
                         "state bytes", "compact", None, f"changelog of the stage state {self.name}")

    def get(self, key: bytes, load: Callable[[bytes], Any], new: Callable[[str], Any],
            entity: str) -> Any:
        """The state of ``key``: as last changed, else ``load(bytes)``, else ``new(entity)``
        (also when ``load`` raises ``InvalidRecord``: counted in ``undecodable``, logged).

        Decoded states are kept while ``data`` still holds the very bytes they came from
        (the identity check makes a restore, which brings new bytes, invalidate them).
        In a transaction (``begin``) the stage gets a copy (decoded from the state's
        bytes), so what it changes reaches the table only through ``change``.
        """
        obj = self.changed.get(key)
        if obj is not None and not isinstance(obj, bytes):
            return obj if self._journal is None else load(obj.to_bytes())
        raw = obj if obj is not None else self.data.get(key)
        hit = self.cache.get(key)
        if hit is not None and raw is not None and hit[0] is raw and self._journal is None:
            return hit[1]
        if not raw:
            return new(entity)
        try:
            return load(raw)
        except InvalidRecord as exc:
            # A changelog record that does not decode (another version wrote it, or it
            # was damaged): the key starts over rather than failing every record of it.
            self.undecodable += 1
            if _state_log.allow(self.name) is not None:
                log.error("state %s: the state of %r does not decode (%s); starting it "
                          "anew (%d so far)", self.name, key[:80], exc, self.undecodable)
            return new(entity)

    def begin(self) -> None:
        """Open a transaction: ``get`` returns copies, ``change``/``put`` are journaled."""
        self._journal = {}

    def commit(self) -> None:
        """Keep what changed since ``begin``."""
        self._journal = None

    def rollback(self) -> None:
        """Undo every ``change``/``put`` since ``begin`` (their changelog records too,
        which the caller drops with the outputs of the failed record)."""
        journal, self._journal = self._journal, None
        for key, before in (journal or {}).items():
            maps: tuple[dict[bytes, Any], ...] = (self.changed, self.where, self.data)
            for d, v in zip(maps, before, strict=True):
                if v is _MISSING:
                    d.pop(key, None)
                else:
                    d[key] = v

    def _remember(self, key: bytes) -> None:
        if self._journal is not None and key not in self._journal:
            self._journal[key] = (self.changed.get(key, _MISSING),
                                  self.where.get(key, _MISSING), self.data.get(key, _MISSING))

    def change(self, key: bytes, obj: Any, partition: int) -> None:
        """``obj`` (bytes, or an object with ``to_bytes()``) is the new state of ``key``;
        it reaches the changelog at the next ``write_changes``."""
        self._remember(key)
        self.changed[key] = obj
        self.where[key] = partition

    def state_keys(self) -> list[bytes]:
        """Every key this table holds a state for (written or not yet)."""
        return [*self.data, *(k for k in self.changed if k not in self.data)]

    def write_changes(self, out: Outbox) -> int:
        """Queue the changelog records of the states changed since the last call."""
        if not self.changed:
            return 0
        if len(self.cache) + len(self.changed) > self.cache_limit:
            self.cache.clear()  # bounded: start over rather than grow
        n = len(self.changed)
        dirty = self.dirty
        for key, obj in self.changed.items():
            if isinstance(obj, bytes):
                raw = obj
            else:
                raw = obj.to_bytes()
                self.cache[key] = (raw, obj)
            self.data[key] = raw
            p = self.where[key]
            dirty.add(p)
            out.add(self.topic, key, raw, partition=p)
        self.changed.clear()
        return n

    def put(self, key: bytes, value: bytes, partition: int, out: Outbox) -> None:
        """Write ``value`` now: set it and queue its changelog record in ``out``."""
        self._remember(key)
        self.changed.pop(key, None)
        self.data[key] = value
        self.where[key] = partition
        self.dirty.add(partition)
        out.add(self.topic, key, value, partition=partition)

    def items_of(self, partition: int) -> list[tuple[bytes, bytes]]:
        return [(k, v) for k, v in self.data.items() if self.where.get(k) == partition]

    def drop(self, partitions: Iterable[int]) -> int:
        gone = set(partitions)
        for p in gone:
            self.offsets.pop(p, None)
            self.snapshot_offsets.pop(p, None)
            self.dirty.discard(p)
        keys = [k for k, p in self.where.items() if p in gone]
        for k in keys:
            self.data.pop(k, None)
            self.where.pop(k, None)
            self.changed.pop(k, None)
            self.cache.pop(k, None)
        return len(keys)

    def restore(self, settings: Settings, partitions: Sequence[int], *,
                timeout_s: float = 120.0, snapshots: SnapshotStore | None = None) -> int:
        """Rebuild ``partitions`` from the changelog (blocking); returns the changelog
        records read (the record re-read to check a snapshot not counted).

        Without ``snapshots`` each partition is read from its start to its end. With
        them, a partition whose snapshot is valid (``SnapshotStore.load``) and whose
        offset X lies within the changelog (low <= X <= high watermark) is loaded from
        the snapshot and read from X on; its record at X-1, the last one the snapshot
        includes, is read again and must equal the snapshot's entry of its key (else,
        as after a topic re-created and refilled, the partition is dropped and read in
        full). Every fallback from an existing snapshot is counted in
        ``snapshot_fallbacks``; ``restore_notes`` says per partition what happened.

        Raises:
            KafkaException: the broker did not answer.
            TimeoutError: the end was not reached within ``timeout_s``.
        """
        if not partitions:
            return 0
        conf = rdkafka_conf(settings.kafka, "consumer")
        conf.update({"group.id": f"{self.topic}.restore", "enable.auto.commit": False,
                     "enable.partition.eof": False})
        c = Consumer(conf)
        n = 0
        redo: list[int] = []
        try:
            ends: dict[int, int] = {}
            starts: list[Any] = []
            check: dict[int, int] = {}  # partition -> offset of the record a snapshot ends with
            for p in partitions:
                lo, hi = _watermarks(c, RdTopicPartition(self.topic, p))
                self.offsets[p] = hi
                self.dirty.discard(p)
                start = OFFSET_BEGINNING
                note = "full read"
                if snapshots is not None:
                    snap, why = snapshots.load(self.topic, p)
                    if snap is not None and not lo <= snap.offset <= hi:
                        why = (f"{snapshots.path(self.topic, p)}: offset {snap.offset} outside "
                               f"the changelog's [{lo}, {hi}] (topic re-created or truncated?)")
                        snap = None
                    if snap is not None:
                        for k, v in snap.entries:
                            self.data[k] = v
                            self.where[k] = p
                        self.snapshot_entries += len(snap.entries)
                        self.snapshot_offsets[p] = snap.offset
                        note = f"snapshot of {len(snap.entries)} entries at offset {snap.offset}"
                        start = snap.offset
                        if snap.offset - 1 >= lo:
                            start = check[p] = snap.offset - 1
                    elif why != "missing":
                        self.snapshot_fallbacks += 1
                        note = f"full read: {why}"
                self.restore_notes[p] = note
                if hi > 0 and start < hi:  # OFFSET_BEGINNING is negative
                    ends[p] = hi
                    starts.append(RdTopicPartition(self.topic, p, start))
            if not ends:
                return 0
            c.assign(starts)
            deadline = time.monotonic() + timeout_s
            while ends:
                # consume() waits its whole timeout unless 10,000 records are there: a
                # short one, or each restore of a short tail costs that wait
                for m in c.consume(10_000, 0.05):
                    if m.error() is not None:
                        log.warning("restoring %s: %s", self.topic, m.error())
                        continue
                    key, value, part, off = m.key(), m.value(), m.partition(), m.offset()
                    if key is None or part is None or off is None:
                        n += 1
                        continue
                    if part not in ends:
                        continue  # done, or being read again in full (redo)
                    if part in check:
                        first = check.pop(part)
                        if off == first:
                            mine = self.data.get(key) if self.where.get(key) == part else None
                            if mine != value:
                                self.snapshot_fallbacks += 1
                                self.restore_notes[part] = (
                                    f"full read: the snapshot's last record (offset {first}) "
                                    f"differs from the changelog's (topic re-created?)")
                                redo.append(part)
                                del ends[part]
                                c.pause([RdTopicPartition(self.topic, part)])
                                continue
                        else:
                            n += 1  # compacted away: the first record is a newer one
                    else:
                        n += 1
                    if value is None:
                        self.data.pop(key, None)
                        self.where.pop(key, None)
                    else:
                        self.data[key] = value
                        self.where[key] = part
                    if part in ends and off + 1 >= ends[part]:
                        del ends[part]
                if ends and time.monotonic() > deadline:
                    # the end offset may fall on a compacted-away record: check positions
                    pos = c.position([RdTopicPartition(self.topic, p) for p in ends])
                    left = {tp.partition for tp in pos if tp.offset < ends[tp.partition]}
                    if left:
                        raise TimeoutError(f"restoring {self.topic}: partitions {sorted(left)} "
                                           f"not read to their end within {timeout_s:.0f} s")
                    ends.clear()
                elif ends:
                    pos = c.position([RdTopicPartition(self.topic, p) for p in ends])
                    for tp in pos:
                        if tp.offset >= ends[tp.partition]:
                            del ends[tp.partition]
        finally:
            c.close()
        if redo:
            self.drop(redo)
            notes = {p: self.restore_notes[p] for p in redo}
            n += self.restore(settings, redo, timeout_s=timeout_s)
            self.restore_notes.update(notes)
        return n

    def snapshot(self, write: Callable[[Snapshot], object],
                 partitions: Iterable[int] | None = None, *, high: Callable[[int], int]) -> int:
        """Hand ``write`` (``SnapshotStore.write``, ``SnapshotWriter.submit``) the snapshot
        of each of ``partitions`` (default: every restored one) whose changelog offset
        moved since its last snapshot; returns how many.

        ``high(partition)`` is the changelog partition's high watermark: a partition
        written since its restore or last snapshot is taken to include the changelog up
        to it. Call this only when every change is written to the changelog and
        acknowledged (the runner does, right after a checkpoint's flush), by the owner
        of the partitions (no one else writes their changelog): a snapshot then holds
        exactly the changelog below its offset, nothing that could still be undone.
        A watermark that lags (below our last acknowledged write) only costs time: the
        restore's check of the record below the offset fails and reads in full.
        Partitions with changes not yet written are skipped.

        Raises:
            OSError: from ``write`` (the older snapshot stays).
            KafkaException: from ``high``.
        """
        wanted = [p for p in (self.offsets if partitions is None else partitions)
                  if p in self.offsets]
        for p in wanted:
            if p in self.dirty:
                self.offsets[p] = max(self.offsets[p], high(p))
                self.dirty.discard(p)
        todo = {p for p in wanted if self.offsets[p] != self.snapshot_offsets.get(p)}
        if self.changed:
            todo -= {self.where.get(k) for k in self.changed}  # type: ignore[misc]
        if not todo:
            return 0
        by: dict[int, list[tuple[bytes, bytes]]] = {p: [] for p in todo}
        data = self.data
        for k, p in self.where.items():
            entries = by.get(p)
            if entries is not None:
                v = data.get(k)
                if v is not None:
                    entries.append((k, v))
        for p in sorted(todo):
            off = self.offsets[p]
            write(Snapshot(SNAPSHOT_VERSION, self.topic, p, off, by[p]))
            self.snapshot_offsets[p] = off
        return len(todo)


_MISSING = object()


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


class StageRunner:
    """The consume -> process -> flush -> commit loop of one ``Stage`` (in a thread)."""

    def __init__(self, settings: Settings, app_id: str, stage: Stage) -> None:
        self.settings = settings
        self.stage = stage
        self.group = f"{app_id}.{stage.name}"
        self.specs = [t.topic_spec(settings.namespace, app_id) for t in stage.tables]
        for t, ts in zip(stage.tables, self.specs, strict=True):
            t.topic = ts.name(settings.namespace)
        self.owned: set[TopicPartition] = set()
        self.pending: dict[TopicPartition, int] = {}
        self.last_commit = time.monotonic()
        self.consumer: Consumer | None = None
        self.producer: Producer | None = None
        self.partitions: dict[str, int] = {}  # topic -> partition count, for keyed outputs
        self.stopping = threading.Event()
        self._callback_error: BaseException | None = None  # raised in a rebalance callback
        self.dlq = topic_name(settings.namespace, "dlq")
        # after a failed batch: record by record until past these offsets (per partition)
        # and ``careful_s`` after the last failure
        self.careful_until: dict[TopicPartition, int] = {}
        self.careful_s = 30.0
        self.last_failure = -1e9
        self._log_throttle = LogThrottle(10.0)
        # for /metrics (ioc.metrics.stages): acknowledged dead letters by (dlq.stage,
        # dlq.reason), and the seconds the last restore of new partitions took
        self.dead_letters: dict[tuple[bytes, bytes], int] = {}
        self.restore_s: float | None = None
        # local snapshots of the tables (streams._snapshot): written after a checkpoint
        # at most every snapshot_every_s (only partitions whose changelog moved), and
        # when partitions are revoked or the stage stops
        ss = settings.streams
        self.snapshots = SnapshotStore(
            ss.state_dir or (ss.data_dir or default_state_dir() / "faust" / app_id) / "snapshots")
        self.snapshot_writer = SnapshotWriter(self.snapshots)
        self.snapshot_every_s = 30.0
        self.last_snapshot = time.monotonic()
        # revoked partitions whose states stay in memory until the next assignment: those
        # assigned again whose changelog nobody wrote since are kept, not restored (eager
        # assignment revokes every partition at each rebalance)
        self.parked: set[TopicPartition] = set()

    # -- rebalance callbacks (librdkafka calls them inside consume(), in our thread) --

    def _on_assign(self, _consumer: Any, parts: list[Any]) -> None:
        self._guarded(self.assigned, parts)

    def _on_revoke(self, _consumer: Any, parts: list[Any]) -> None:
        self._guarded(self.revoked, parts)

    def _guarded(self, handler: Callable[[set[TopicPartition]], None], parts: list[Any]) -> None:
        """Run a rebalance handler; what it raises is re-raised after ``consume`` returns
        (librdkafka would swallow it)."""
        try:
            handler({TopicPartition(p.topic, p.partition) for p in parts})
        except BaseException as exc:
            self._callback_error = exc

    def _on_lost(self, _consumer: Any, parts: list[Any]) -> None:
        # The group went on without us (session timed out): another member may already
        # own these partitions, so commit nothing and forget their state.
        tps = {TopicPartition(p.topic, p.partition) for p in parts}
        log.warning("stage %s: partitions lost %s", self.stage.name, sorted(tps))
        self.pending = {tp: o for tp, o in self.pending.items() if tp not in tps}
        self._forget(tps)

    def assigned(self, tps: set[TopicPartition]) -> None:
        t0 = time.perf_counter()
        parked, self.parked = self.parked, set()
        for t in self.stage.tables:
            mine = {tp.partition for tp in tps if tp.topic == t.source}
            owned = {tp.partition for tp in self.owned if tp.topic == t.source}
            back = {tp.partition for tp in parked if tp.topic == t.source}
            keep = {p for p in back & mine if self._unchanged(t, p)}
            t.drop(((owned | back) - mine) | (back - keep))
            self.stage.metrics.kept += len(keep)
            if keep:
                log.info("stage %s: %s partitions %s kept in memory (their changelog "
                         "unchanged since they were revoked)", self.stage.name, t.topic,
                         sorted(keep))
            new = sorted(mine - owned - keep)
            if new and not self.snapshot_writer.wait(30.0):  # the newest files, if any
                log.warning("stage %s: snapshots still being written after 30 s; restoring "
                            "from the older ones", self.stage.name)
            entries0, fallbacks0 = t.snapshot_entries, t.snapshot_fallbacks
            n = t.restore(self.settings, new, snapshots=self.snapshots)
            m = self.stage.metrics
            m.restored += n
            m.snapshot_entries += t.snapshot_entries - entries0
            m.snapshot_fallbacks += t.snapshot_fallbacks - fallbacks0
            if new:
                log.info("stage %s: restored %s partitions %s: %d changelog record(s) "
                         "read, %d entries from snapshots", self.stage.name, t.topic, new, n,
                         t.snapshot_entries - entries0)
            for p in new:
                note = t.restore_notes.get(p, "")
                if note.startswith("full read: "):  # one line per partition and restore
                    log.warning("stage %s: %s[%d]: %s", self.stage.name, t.topic, p, note)
        if self.stage.tables and tps - self.owned:
            self.restore_s = time.perf_counter() - t0
            log.info("stage %s: restore of %d new partition(s) took %.2f s", self.stage.name,
                     len(tps - self.owned), self.restore_s)
        self.owned = set(tps)
        if self.stage.on_assigned is not None:
            self.stage.on_assigned(set(tps))

    def _unchanged(self, t: StateTable, p: int) -> bool:
        """Whether the changelog of ``t``'s partition ``p`` still ends where the table's
        state of it does (nobody wrote it since this stage last did, or restored it)."""
        if p not in t.offsets or p in t.dirty:
            return False
        try:
            return self._changelog_high(t.topic, p) == t.offsets[p]
        except KafkaException:
            return False

    def _changelog_high(self, topic: str, partition: int) -> int:
        assert self.consumer is not None
        return _watermark_high(self.consumer, RdTopicPartition(topic, partition), within_s=10.0)

    def revoked(self, tps: set[TopicPartition]) -> None:
        # Called between batches (their outputs are flushed): write the changed states
        # and commit before letting go; snapshot them, should they come back.
        self.checkpoint(Outbox())
        self.write_snapshots(tps)
        # on disk before the group goes on: their next owner may be a worker on this host
        if not self.snapshot_writer.wait(30.0):
            log.warning("stage %s: snapshots of revoked partitions still being written "
                        "after 30 s", self.stage.name)
        self._forget(tps, park=True)

    def write_snapshots(self, tps: set[TopicPartition] | None = None) -> None:
        """Snapshot the tables' partitions (``tps``, default all owned) whose changelog
        moved since their last snapshot. Only right after a checkpoint: every change is
        then in the changelog and acknowledged. A write that fails is counted and logged;
        the stage goes on (the older snapshot, or the changelog, restores it)."""
        if self.consumer is None or not self.stage.tables:
            return
        for t in self.stage.tables:
            parts = None if tps is None else [tp.partition for tp in tps if tp.topic == t.source]
            try:
                t.snapshot(self.snapshot_writer.submit, parts,
                           high=functools.partial(self._changelog_high, t.topic))
            except KafkaException as exc:  # no watermark: the next snapshot will do
                self._throttled("snapshot", logging.WARNING, "stage %s: no snapshot of %s "
                                "now (watermark: %s)", self.stage.name, t.topic, exc)
        self._snapshot_metrics()
        self.last_snapshot = time.monotonic()

    def _snapshot_metrics(self) -> None:
        w, m = self.snapshot_writer, self.stage.metrics
        m.snapshots_written, m.snapshot_errors, m.snapshot_s = w.written, w.errors, w.seconds

    def _forget(self, tps: set[TopicPartition], *, park: bool = False) -> None:
        """Let go of ``tps``; their table states are dropped, or with ``park`` kept aside
        until the next ``assigned`` (which keeps those it gets back unchanged)."""
        for tp in tps:
            self.careful_until.pop(tp, None)
        if park:
            self.parked |= tps
        else:
            gone = tps | (self.parked & tps)
            self.parked -= tps
            for t in self.stage.tables:
                t.drop(tp.partition for tp in gone if tp.topic == t.source)
        self.owned -= tps
        if self.stage.on_revoked is not None:
            self.stage.on_revoked(set(tps))

    # -- producing --

    def _replace_producer(self) -> None:
        """Drop the producer and make a new one (a new idempotent producer id).

        After a broker restart an idempotent producer can fail for good (a fatal
        sequence error); a new producer id starts clean. Re-sending the outbox is
        at-least-once: the sink's keys and the states' origin/offset marks absorb what
        was already written.
        """
        old, self.producer = self.producer, None
        if old is not None:
            discard_producer(old)
        self.producer = acked_producer(self.settings.kafka)

    def flush(self, out: Outbox) -> None:
        """Send the outbox until every record is acknowledged (backoff while refused).

        A failed attempt replaces the producer before the next one, so a producer that
        the broker no longer accepts (after a restart, say) does not stall the stage.
        """
        delay = 0.2
        # Outputs first, then the state changelogs, each phase acknowledged before the
        # next: a crash in between leaves the old state, so the restarted stage applies
        # the batch again and re-emits its outputs (at-least-once, absorbed downstream).
        # The other order could store a state that has emitted a closed window whose
        # rollup never reached the broker: lost for good.
        changelogs = {t.topic for t in self.stage.tables}
        outputs, states = Outbox(), Outbox()
        for rec in out.records:
            (states if rec[0] in changelogs else outputs).records.append(rec)
        phases = [ph for ph in (outputs, states) if ph.records]
        while phases:
            try:
                if self.producer is None:
                    self._replace_producer()
                assert self.producer is not None
                phases[0].send(self.producer, timeout_s=self.settings.kafka.request_timeout_s,
                               partitions=self.partitions)
                phases.pop(0)
                if phases:
                    continue
                self.stage.metrics.outputs += len(out)
                self._count_dead_letters(outputs.records)
                out.records.clear()
                return
            except (SendFailed, KafkaException) as exc:
                if self.stopping.is_set() and delay > 5:
                    raise
                self.stage.metrics.flush_retries += 1
                log.warning("stage %s: sending %d record(s) failed (%s: %s); new producer, "
                            "retrying in %.1f s", self.stage.name, len(out),
                            type(exc).__name__, exc, delay)
                time.sleep(delay)
                delay = min(delay * 2, 10.0)
                self._replace_producer()

    def _count_dead_letters(self, records: list[Any]) -> None:
        """Count the (acknowledged) records to ``<ns>.dlq`` by (dlq.stage, dlq.reason)."""
        dlq, counts = self.dlq, self.dead_letters
        for rec in [rec for rec in records if rec[0] == dlq]:  # one fast pass, then the few
            h = dict(rec[4] or ())  # the dlq.* headers come last: they win
            key = (h.get("dlq.stage", b""), h.get("dlq.reason", b""))
            counts[key] = counts.get(key, 0) + 1

    def checkpoint(self, out: Outbox) -> None:
        """Write the changed states (after ``out``, the outputs), then commit the input.

        The order keeps the changelogs and the committed offsets consistent: a crash
        before the commit replays from the previous one, on the states written then.
        """
        for t in self.stage.tables:
            self.stage.metrics.state_writes += t.write_changes(out)
        if out.records:
            self.flush(out)
        self.commit()
        self.last_commit = time.monotonic()
        if self.last_commit - self.last_snapshot >= self.snapshot_every_s:
            self.write_snapshots()

    def commit(self) -> None:
        if not self.pending or self.consumer is None:
            return
        offsets, self.pending = self.pending, {}
        try:
            self.consumer.commit(offsets=[RdTopicPartition(tp.topic, tp.partition, off)
                                          for tp, off in offsets.items()], asynchronous=False)
        except KafkaException as exc:
            # Rebalanced away: the new owner re-reads from the last commit and the
            # states' (partition, offset) marks skip what was already applied.
            self.stage.metrics.commit_failures += 1
            log.warning("stage %s: offset commit failed (%s)", self.stage.name, exc)

    # -- bugs: rewind, then record by record --

    def _throttled(self, key: str, level: int, msg: str, *args: Any,
                   exc_info: BaseException | None = None) -> None:
        held = self._log_throttle.allow(key)
        if held is None:
            return
        more = f" ({held} more since the last line)" if held else ""
        log.log(level, msg + more, *args, exc_info=exc_info)

    def _recover(self, exc: Exception, last: dict[TopicPartition, int]) -> None:
        """A batch raised: states back to the last commit, consumer back to its offsets,
        and the records up to ``last`` re-read one by one (``_process_careful``)."""
        st = self.stage
        st.metrics.rewinds += 1
        self.last_failure = time.monotonic()
        self._throttled(f"batch:{type(exc).__name__}", logging.ERROR,
                        "stage %s: processing a batch failed (last offsets %s); states back "
                        "to the last commit, re-reading it record by record", st.name,
                        {f"{tp.topic}[{tp.partition}]": o for tp, o in last.items()},
                        exc_info=exc)
        for tp, o in last.items():
            self.careful_until[tp] = max(o, self.careful_until.get(tp, -1))
        self.rewind()

    def rewind(self) -> None:
        """Drop the uncommitted work: states of the owned partitions restored from their
        changelogs (as of the last commit), consumer positions back to the committed
        offsets. What was sent since then is sent again (at-least-once, as after a
        crash; the sink's keys and the states' offset marks absorb it)."""
        tps = set(self.owned)
        self.pending = {}
        self._forget(tps)
        careful = dict(self.careful_until)
        self.assigned(tps)
        self.careful_until.update(careful)
        if self.consumer is None or not tps:
            return
        committed = self.consumer.committed(
            [RdTopicPartition(tp.topic, tp.partition) for tp in sorted(tps)], timeout=10)
        for c in committed:
            self.consumer.seek(RdTopicPartition(
                c.topic, c.partition, c.offset if c.offset >= 0 else OFFSET_BEGINNING))

    def _process_careful(self, records: list[Record], out: Outbox) -> None:
        """``process`` one record at a time, each in a transaction of the tables; a record
        that raises is dead-lettered as ``internal_error`` and leaves no state behind."""
        st = self.stage
        tables = st.tables
        for r in records:
            n0 = len(out.records)
            for t in tables:
                t.begin()
            try:
                st.process([r], out)
            except Exception as exc:
                del out.records[n0:]
                for t in tables:
                    t.rollback()
                self.last_failure = time.monotonic()
                self.dead_letter_bug(r, exc, out)
            else:
                for t in tables:
                    t.commit()
            tp = TopicPartition(r.topic, r.partition)
            until = self.careful_until.get(tp)
            if until is not None and r.offset >= until:
                del self.careful_until[tp]

    def dead_letter_bug(self, r: Record, exc: Exception, out: Outbox) -> None:
        """Send ``r`` to ``<ns>.dlq`` with reason ``internal_error``, count and log it."""
        st = self.stage
        st.metrics.internal_errors += 1
        message = internal_error_message(exc)
        out.add(self.dlq, r.key, r.value if r.value is not None else b"",
                headers=dead_letter_headers("internal_error", topic=r.topic,
                                            partition=r.partition, offset=r.offset,
                                            message=message, stage=st.name,
                                            headers=list(r.headers or ())))
        self._throttled(f"record:{type(exc).__name__}", logging.ERROR,
                        "stage %s: record %s[%d]@%d dead-lettered as internal_error: %s",
                        st.name, r.topic, r.partition, r.offset, message, exc_info=exc)

    def careful(self) -> bool:
        """True while records are processed one by one (after a failed batch)."""
        since = time.monotonic() - self.last_failure
        if self.careful_until and since > 10 * self.careful_s:
            self.careful_until.clear()  # those offsets never came back (retention): go on
        return bool(self.careful_until) or since < self.careful_s

    def _tick(self, out: Outbox) -> None:
        st = self.stage
        assert st.tick is not None
        n0 = len(out.records)
        try:
            st.tick(time.time(), out)
        except Exception as exc:  # a bug in a timer: its outputs go, the stage goes on
            del out.records[n0:]
            st.metrics.tick_errors += 1
            self._throttled(f"tick:{type(exc).__name__}", logging.ERROR,
                            "stage %s: tick failed (%d so far)", st.name,
                            st.metrics.tick_errors, exc_info=exc)

    # -- the loop --

    def _consumer_conf(self) -> dict[str, Any]:
        st, ss = self.stage, self.settings.streams
        conf = rdkafka_conf(self.settings.kafka, "consumer")
        conf.update({
            "group.id": self.group, "enable.auto.commit": False,
            "auto.offset.reset": "earliest", "enable.partition.eof": False,
            "session.timeout.ms": int(ss.session_timeout_s * 1000),
            "heartbeat.interval.ms": int(min(3.0, ss.session_timeout_s / 3) * 1000),
            "fetch.wait.max.ms": max(1, int(st.within_s * 1000)),
            # eager (the Java client's default): on_revoke gets every partition, after
            # which on_assign gets the new set; the state of each moves with it
            "partition.assignment.strategy": "range",
        })
        return conf

    def run_sync(self) -> None:
        """Run until ``stopping`` is set; raise what Kafka or a rebalance callback raised
        (what ``process`` raises is handled: ``_recover``)."""
        st = self.stage
        self.producer = acked_producer(self.settings.kafka)
        self.consumer = Consumer(self._consumer_conf())
        self.consumer.subscribe(st.topics, on_assign=self._on_assign,
                                on_revoke=self._on_revoke, on_lost=self._on_lost)
        log.info("stage %s: group %s on %s", st.name, self.group, ", ".join(st.topics))
        out = Outbox()
        m = st.metrics
        next_tick = time.monotonic()
        last_log = time.monotonic()
        consume = self.consumer.consume
        membership = MembershipWatch(first_join_s=FIRST_JOIN_S, rejoin_s=REJOIN_S)
        member_checked = 0.0
        try:
            while not self.stopping.is_set():
                msgs = consume(st.batch_max, st.within_s)
                if self._callback_error is not None:
                    raise self._callback_error
                now = time.monotonic()
                if now - member_checked >= 1.0:
                    # After a broker stop a librdkafka consumer was seen polling for
                    # minutes with no member id, never joining its group again: fail the
                    # stage (the worker exits; its supervisor restarts it).
                    member_checked = now
                    outside = membership.overdue(bool(self.consumer.memberid()), now)
                    if outside is not None:
                        raise KafkaException(
                            f"stage {st.name}: not a member of group {self.group} for "
                            f"{outside:.0f} s although polling; exiting so "
                            f"that a supervisor restarts the worker")
                    if membership.probe_due(now):
                        # Is the broker answering? The bound counts from when it does.
                        try:
                            self.consumer.list_topics(st.topics[0], timeout=1.0)
                        except KafkaException:
                            membership.broker_down(time.monotonic())
                t0 = time.perf_counter()
                records: list[Record] = []
                last: dict[TopicPartition, int] = {}
                for msg in msgs:
                    err = msg.error()
                    if err is not None:
                        if err.fatal():
                            raise KafkaException(err)
                        membership.broker_down(time.monotonic())
                        log.warning("stage %s: consumer: %s", st.name, err)
                        continue
                    r = Record.of(msg)
                    records.append(r)
                    last[TopicPartition(r.topic, r.partition)] = r.offset
                if records:
                    n0 = len(out.records)
                    try:
                        if self.careful():
                            self._process_careful(records, out)
                        else:
                            st.process(records, out)
                    except Exception as exc:
                        del out.records[n0:]
                        self._recover(exc, last)
                        continue
                    m.records += len(records)
                    m.batches += 1
                    for tp, o in last.items():
                        self.pending[tp] = o + 1
                now = time.monotonic()
                if st.tick is not None and now >= next_tick:
                    next_tick = now + st.tick_every_s
                    self._tick(out)
                if now - self.last_commit >= st.commit_every_s:
                    self.checkpoint(out)  # the outputs, then the states, then the offsets
                elif out.records:
                    self.flush(out)
                m.busy_s += time.perf_counter() - t0
                if now - last_log > 60:
                    last_log = now
                    log.info("stage %s: %s", st.name, m.line())
            # stopping: what is processed is sent and committed, then the group is left
            # (after the snapshots are on disk: the next owner may be on this host)
            self.checkpoint(out)
            self.write_snapshots()
            self.snapshot_writer.wait(60.0)
        finally:
            try:
                self.consumer.close()  # leaves the group (on_revoke: nothing pending now)
            except Exception as exc:  # shutting down: best effort
                log.warning("stage %s: closing the consumer: %r", st.name, exc)
            if self.producer is not None:
                self.producer.flush(5)
            if not self.snapshot_writer.close(60.0):
                log.warning("stage %s: snapshots not all written within 60 s", st.name)
            self._snapshot_metrics()
            log.info("stage %s stopped: %s", st.name, m.line())

    async def run(self, app: faust.App | None = None) -> None:
        """Run the stage's thread until cancelled (the worker stops) or it fails."""
        if self.specs:
            report = await asyncio.to_thread(ensure_topics, self.settings, self.specs)
            if not report.success:
                raise RuntimeError(f"stage {self.stage.name}: " + "; ".join(report.lines()))
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def settle(exc: BaseException | None) -> None:
            if done.done():
                return
            if exc is None:
                done.set_result(None)
            else:
                done.set_exception(exc)

        def main() -> None:
            error: BaseException | None = None
            try:
                self.run_sync()
            except BaseException as exc:  # handed to the event loop
                error = exc
            loop.call_soon_threadsafe(settle, error)

        thread = threading.Thread(target=main, name=f"stage-{self.stage.name}", daemon=True)
        thread.start()
        try:
            await asyncio.shield(done)
        except asyncio.CancelledError:
            self.stopping.set()
            await asyncio.to_thread(thread.join, 30)
            if thread.is_alive():
                log.warning("stage %s: still stopping after 30 s", self.stage.name)
            raise
        except Exception as exc:
            if app is not None:
                await app.crash(exc)
            raise


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
    stage.commit_every_s = settings.streams.commit_every_s
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
        app._ioc_runners = runners  # type: ignore[attr-defined]  # read by ioc.metrics.stages
        await asyncio.gather(*(r.run(app) for r in runners))

    app.task(run_stages)
