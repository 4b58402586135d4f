"""``StateTable``: the per-key state of the partitions a stage owns, backed by a
compacted changelog topic and local snapshots (``streams.engine.snapshot``)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from ioc.config import Settings
from ioc.errors import InvalidRecord
from ioc.events import LogThrottle
from ioc.kafka import rdkafka_conf
from ioc.kafka.rdkafka import OFFSET_BEGINNING, Consumer, KafkaException
from ioc.kafka.rdkafka import TopicPartition as RdTopicPartition
from ioc.topics import TopicSpec

from .records import Outbox
from .snapshot import VERSION as SNAPSHOT_VERSION
from .snapshot import Snapshot, SnapshotStore

__all__ = ["StateTable", "watermark_high", "watermarks"]

log = logging.getLogger(__name__)
_state_log = LogThrottle(10.0)
_MISSING = object()


def watermark_high(c: Any, tp: Any, *, within_s: float = 30.0) -> int:
    """The high watermark of ``tp`` (``watermarks``)."""
    return watermarks(c, tp, within_s=within_s)[1]


def watermarks(c: Any, tp: Any, *, within_s: float = 30.0) -> tuple[int, int]:
    """The (low, high) watermarks of ``tp``, retrying retriable broker errors for ``within_s``
    (a partition without a leader yet, as just after a broker start: NOT_LEADER...).

    Raises:
        KafkaException: a non-retriable error, or still failing after ``within_s``.
    """
    from ioc.kafka.rdkafka import KafkaError

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

    def delete(self, key: bytes, partition: int, out: Outbox) -> None:
        """Forget ``key`` now: its changelog gets a tombstone (compaction removes the key;
        a restore drops it)."""
        self._remember(key)
        self.changed.pop(key, None)
        self.data.pop(key, None)
        self.cache.pop(key, None)
        self.where.pop(key, None)
        self.dirty.add(partition)
        out.add(self.topic, key, None, partition=partition)

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
                lo, hi = watermarks(c, RdTopicPartition(self.topic, p))
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
