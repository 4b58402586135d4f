"""``StageRunner``: the consume -> process -> flush -> commit loop of one stage in a
thread of its own; ``host_stage``: run stages in the Faust worker."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import faust

from ioc.config import Settings, default_state_dir
from ioc.events import LogThrottle, dead_letter_headers, internal_error_message
from ioc.kafka import acked_producer, discard_producer, ensure_topics, rdkafka_conf
from ioc.kafka.clients import fatal_consumer_error, is_fatal, refenced
from ioc.kafka.membership import MembershipWatch
from ioc.kafka.rdkafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer
from ioc.kafka.rdkafka import TopicPartition as RdTopicPartition
from ioc.topics import topic_name

from .records import Outbox, Record, SendFailed, TopicPartition
from .snapshot import SnapshotStore, SnapshotWriter
from .stage import Stage, combine
from .table import watermark_high

__all__ = ["FIRST_JOIN_S", "REJOIN_S", "StageRunner", "host_stage"]

log = logging.getLogger(__name__)



# A stage consumer outside its group while polling fails its stage after REJOIN_S from
# when the broker answers again, FIRST_JOIN_S when it never joined (ioc/kafka/membership.py).
# Longer than the sink's 12 s: failing a stage restarts its worker and re-reads its
# state, where the sink only replaces one consumer.
REJOIN_S = 20.0
FIRST_JOIN_S = 60.0


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
        self.pending: dict[TopicPartition, int] = {}  # processed, states not yet written
        # offsets whose states are written, committed asynchronously and not yet confirmed
        # (``_on_commit``); a revoke commits them again, synchronously, before letting go
        self.inflight: dict[TopicPartition, int] = {}
        self.last_commit = time.monotonic()
        self.consumer: Consumer | None = None
        self._watermarks: Consumer | None = None  # no group: changelog watermarks only
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
        # local snapshots of the tables (streams.engine.snapshot): written after a checkpoint
        # at most every snapshot_every_s (only partitions whose changelog moved), and
        # when partitions are revoked or the stage stops
        ss = settings.streams
        self.snapshots = SnapshotStore(
            ss.state_dir or (ss.data_dir or default_state_dir() / "faust" / app_id) / "snapshots")
        self.snapshot_writer = SnapshotWriter(self.snapshots)
        self.snapshot_every_s = ss.snapshot_every_s
        self.last_snapshot = time.monotonic()
        self.dropped_foreign = 0  # fetched records of partitions no longer owned (dropped)
        self._nudge_until = 0.0  # until then, no record yet since a rebalance callback
        self._lost_at: float | None = None  # when partitions were last lost (_on_lost)
        self._session_lost_at: float | None = None  # the last on_lost (session timed out)
        self._replaced_at: float | None = None  # the last replacement fenced by another

    # -- rebalance callbacks (librdkafka calls them inside consume(), in our thread) --
    # Incremental (cooperative-sticky): on_assign gets only the partitions added to this
    # member (possibly none), on_revoke only those taken away; what a rebalance leaves in
    # place is neither paused nor restored. The client calls incremental_(un)assign with
    # the same list after each callback returns.

    def _on_assign(self, _consumer: Any, parts: list[Any]) -> None:
        if self._lost_at is not None and parts:
            # the one line an operator sees for how long the stage was without them
            log.warning("stage %s: %d partition(s) assigned again, %.1f s after "
                        "partitions were lost", self.stage.name, len(parts),
                        time.monotonic() - self._lost_at)
            self._lost_at = None
        self._guarded(self.assigned, parts)
        self._nudge_until = time.monotonic() + 1.0

    def _on_revoke(self, _consumer: Any, parts: list[Any]) -> None:
        self._guarded(self.revoked, parts)
        self._nudge_until = time.monotonic() + 1.0

    def _nudge(self) -> None:
        """Wake the fetchers of the partitions kept through a rebalance callback.

        librdkafka (2.16) pauses them while a callback runs and resumes them without
        waking the broker threads, which then sleep up to 1 s before fetching again
        (seen: 0.5-1.1 s without a record after each callback, on every member; the
        eager protocol stops everything anyway). Any request to the partitions' leaders
        wakes those threads: a ListOffsets of the owned partitions, every 50 ms until a
        record arrives, for at most 1 s after a callback.
        """
        if self.consumer is None or not self.owned:
            return
        with contextlib.suppress(KafkaException):  # only a wake-up: the fetch resumes later
            self.consumer.offsets_for_times(
                [RdTopicPartition(tp.topic, tp.partition, -1) for tp in self.owned],
                timeout=1.0)

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
        self._lost_at = self._session_lost_at = time.monotonic()
        self._forget(tps)

    def assigned(self, tps: set[TopicPartition]) -> None:
        """``tps`` are added to what this stage owns: their tables are restored (local
        snapshot + changelog tail) before anything of theirs is fetched. The partitions
        already owned are left as they are (counted in ``kept`` per table partition)."""
        new_tps = tps - self.owned
        if not new_tps:
            return  # a rebalance that moved nothing to this member
        t0 = time.perf_counter()
        for t in self.stage.tables:
            new = sorted({tp.partition for tp in new_tps if tp.topic == t.source})
            self.stage.metrics.kept += sum(1 for tp in self.owned if tp.topic == t.source)
            t.drop(new)  # nothing of theirs should be there; a restore starts clean
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
        if self.stage.tables:
            self.restore_s = time.perf_counter() - t0
            log.info("stage %s: restore of %d new partition(s) took %.2f s (%d kept)",
                     self.stage.name, len(new_tps), self.restore_s, len(self.owned))
        self.owned |= new_tps
        if self.stage.on_assigned is not None:
            self.stage.on_assigned(set(new_tps))

    def _changelog_high(self, topic: str, partition: int) -> int:
        # Asked on a client of its own: on the group's consumer, inside a revoke callback
        # (the revoked partitions' snapshots), it stalled the fetch of the partitions kept
        # for ~1 s (librdkafka 2.16, cooperative-sticky; outside the callback it did not).
        if self._watermarks is None:
            conf = rdkafka_conf(self.settings.kafka, "consumer")
            conf.update({"group.id": f"{self.group}.watermarks", "enable.auto.commit": False})
            self._watermarks = Consumer(conf)
        return watermark_high(self._watermarks, RdTopicPartition(topic, partition),
                              within_s=10.0)

    def revoked(self, tps: set[TopicPartition]) -> None:
        """``tps`` go to another member: write the changed states and commit (everything
        pending: cheaper than picking), snapshot ``tps`` for their next owner, then drop
        them. Called between batches (their outputs are flushed); the other owned
        partitions are kept and go on right after."""
        self.stage.metrics.kept += sum(
            1 for t in self.stage.tables for tp in self.owned - tps if tp.topic == t.source)
        self.checkpoint(Outbox(), wait=True)
        self.write_snapshots(tps)
        # on disk before the group goes on: their next owner may be a worker on this host
        if not self.snapshot_writer.wait(30.0):
            log.warning("stage %s: snapshots of revoked partitions still being written "
                        "after 30 s", self.stage.name)
        self._forget(tps)

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

    def _forget(self, tps: set[TopicPartition]) -> None:
        """Let go of ``tps``: their table states, careful marks and offsets not committed
        are dropped (a revoke has committed them; a lost partition is another's)."""
        for tp in tps:
            self.careful_until.pop(tp, None)
            self.pending.pop(tp, None)
            self.inflight.pop(tp, None)
        for t in self.stage.tables:
            t.drop(tp.partition for tp in tps if tp.topic == t.source)
        self.owned -= tps
        if self.stage.on_revoked is not None:
            self.stage.on_revoked(set(tps))

    # -- producing --

    def _replace_consumer(self, err: Any, out: Outbox) -> None:
        """After a fatal error of the consumer: send what is queued, let go of every
        owned partition as if lost (states dropped, nothing committed: the consumer that
        could commit is gone), close the old consumer in a thread of its own and
        subscribe a new one. The partitions come back (to this member, with static
        membership: at once) and are restored and re-read from the committed offsets:
        at-least-once, as after a worker restart, without the restart."""
        why = fatal_consumer_error(err, f"stage {self.stage.name}", self.group)
        now = time.monotonic()
        # librdkafka's own rejoin fences us right after our session timed out on our
        # side, which on_lost reports in the same consume() call, just before: not
        # another process with our name (seen twice within a minute on a starved
        # machine after a broker restart, which then ended the worker)
        own_rejoin, again = refenced(now, self._session_lost_at, self._replaced_at)
        if again is not None:
            # twice in a row: not librdkafka's one-off, but two live processes with the
            # same group.instance.id fencing each other (each replacement would fence
            # the other's consumer at once): fail the stage rather than loop
            raise KafkaException(f"{why}; again {again:.0f} s after the "
                                 f"last replacement: exiting")
        if not own_rejoin:
            self._replaced_at = now
        log.error("%s; replacing the consumer (%d replacement(s) so far%s)", why,
                  self.stage.metrics.consumer_restarts,
                  "; its session had timed out: librdkafka's own rejoin" if own_rejoin else "")
        self.stage.metrics.consumer_restarts += 1
        if out.records:
            self.flush(out)
        self._forget(set(self.owned))
        old = self.consumer
        if old is not None:
            threading.Thread(target=_close_quietly, args=(old, self.stage.name), daemon=True,
                             name=f"stage-{self.stage.name}-close").start()
        self.consumer = Consumer(self._consumer_conf())
        self.consumer.subscribe(self.stage.topics, on_assign=self._on_assign,
                                on_revoke=self._on_revoke, on_lost=self._on_lost)
        self._lost_at = time.monotonic()

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

    def checkpoint(self, out: Outbox, *, wait: bool = False) -> None:
        """Write the changed states (after ``out``, the outputs), then commit the input
        (``commit``: asynchronously unless ``wait``).

        The order keeps the changelogs and the committed offsets consistent: a crash
        before the commit replays from the previous one, on the states written then.
        """
        for t in self.stage.tables:
            self.stage.metrics.state_writes += t.write_changes(out)
        if out.records:
            self.flush(out)
        self.commit(wait=wait)
        self.last_commit = time.monotonic()
        if self.last_commit - self.last_snapshot >= self.snapshot_every_s:
            self.write_snapshots()

    def commit(self, *, wait: bool = False) -> None:
        """Commit ``pending`` (offsets whose states are written), asynchronously: a
        synchronous commit during a rebalance was seen blocking the stage ~2 s (librdkafka
        holds it until the group has re-formed, then fails it with ILLEGAL_GENERATION),
        and with incremental assignment the stage goes on processing through rebalances.
        A commit that fails is retried with the next one (``_on_commit``). With ``wait``
        (a revoke, the stop) the unconfirmed ones are committed again and waited for.
        """
        if self.consumer is None:
            return
        offsets, self.pending = self.pending, {}
        if wait:
            for tp, o in self.inflight.items():
                if o > offsets.get(tp, -1):
                    offsets[tp] = o
        if not offsets:
            return
        parts = [RdTopicPartition(tp.topic, tp.partition, off) for tp, off in offsets.items()]
        if not wait:
            self.inflight.update(offsets)
            try:
                self.consumer.commit(offsets=parts, asynchronous=True)
            except KafkaException as exc:  # not even queued (no coordinator, say)
                self._commit_failed(offsets, exc)
            return
        try:
            done = self.consumer.commit(offsets=parts, asynchronous=False) or []
        except KafkaException as exc:
            self._commit_failed(offsets, exc)
            return
        self._on_commit(None, done)

    def _on_commit(self, err: Any, parts: list[Any]) -> None:
        """An asynchronous commit completed (librdkafka calls this inside consume())."""
        failed: dict[TopicPartition, int] = {}
        for p in parts:
            tp = TopicPartition(p.topic, p.partition)
            if err is not None or p.error is not None:
                failed[tp] = p.offset
            elif self.inflight.get(tp, -1) <= p.offset:
                self.inflight.pop(tp, None)
        if failed:
            self._commit_failed(failed, err or next(p.error for p in parts if p.error))

    def _commit_failed(self, offsets: dict[TopicPartition, int], exc: Any) -> None:
        """Put back the offsets of partitions still owned (unless a newer one is queued),
        so that the next commit carries them. A partition revoked meanwhile was committed
        by its revoke (which waits); one lost is the new owner's, whose states' offset
        marks skip what was applied twice."""
        self.stage.metrics.commit_failures += 1
        for tp, o in offsets.items():
            if self.inflight.get(tp) == o:
                del self.inflight[tp]
            if tp in self.owned and o > self.pending.get(tp, -1):
                self.pending[tp] = o
        self._throttled("commit", logging.WARNING, "stage %s: offset commit failed (%s); "
                        "retried with the next one", self.stage.name, exc)

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
        """Drop the work since the last checkpoint: states of the owned partitions
        restored from their changelogs (as of that checkpoint), consumer positions back
        to its offsets (committed, or whose commit is still under way). What was sent
        since then is sent again (at-least-once, as after a crash; the sink's keys and
        the states' offset marks absorb it)."""
        tps = set(self.owned)
        self.pending = {}
        written = dict(self.inflight)  # checkpointed, their commit not yet confirmed
        self._forget(tps)
        self.inflight.update(written)
        careful = dict(self.careful_until)
        self.assigned(tps)
        self.careful_until.update(careful)
        if self.consumer is None or not tps:
            return
        committed = self.consumer.committed(
            [RdTopicPartition(tp.topic, tp.partition) for tp in sorted(tps)], timeout=10)
        for c in committed:
            off = max(c.offset, written.get(TopicPartition(c.topic, c.partition), -1))
            self.consumer.seek(RdTopicPartition(
                c.topic, c.partition, off if off >= 0 else OFFSET_BEGINNING))

    def _owned_only(self, records: list[Record], last: dict[TopicPartition, int]
                    ) -> tuple[list[Record], dict[TopicPartition, int]]:
        """Drop fetched records of partitions revoked meanwhile: their new owner reads
        them from the committed offset; processing them here would change states already
        dropped and commit offsets of a partition we no longer own."""
        owned = self.owned
        kept = [r for r in records if TopicPartition(r.topic, r.partition) in owned]
        self.dropped_foreign += len(records) - len(kept)
        self._throttled("foreign", logging.INFO, "stage %s: %d fetched record(s) of "
                        "partitions no longer owned dropped (%d so far)", self.stage.name,
                        len(records) - len(kept), self.dropped_foreign)
        return kept, {tp: o for tp, o in last.items() if tp in owned}

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
            "group.id": self.group, "enable.auto.commit": False, "on_commit": self._on_commit,
            "auto.offset.reset": "earliest", "enable.partition.eof": False,
            "session.timeout.ms": int(ss.session_timeout_s * 1000),
            "heartbeat.interval.ms": int(min(3.0, ss.session_timeout_s / 3) * 1000),
            "fetch.wait.max.ms": max(1, int(st.within_s * 1000)),
            # incremental: a rebalance revokes and restores only the partitions that
            # move; the others are processed on without a pause (docs/aggregation.md,
            # "Assignment"). A group cannot mix it with eager (range) members: a worker
            # of either kind waits outside the group until the other kind has left.
            "partition.assignment.strategy": "cooperative-sticky",
        })
        if self.settings.kafka.group_instance_id:
            # static membership: after a broker restart (this consumer's session timed
            # out on its side) it rejoins as itself, at once, instead of waiting for the
            # group to expire the member it was (docs/reliability.md, "Static membership")
            conf["group.instance.id"] = self.settings.kafka.group_instance_id
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
        nudged = 0.0
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
                fatal = None
                for msg in msgs:
                    err = msg.error()
                    if err is not None:
                        if is_fatal(err):
                            fatal = err
                            break
                        membership.broker_down(time.monotonic())
                        if err.code() == KafkaError.INCONSISTENT_GROUP_PROTOCOL:
                            # JoinGroup refused every 2 s while the group has members of
                            # another assignment strategy; we join once they have left
                            self._throttled("protocol", logging.WARNING, "stage %s: group "
                                            "%s has members with another partition "
                                            "assignment strategy (workers of an earlier "
                                            "version, eager 'range'?); waiting outside "
                                            "the group until they have left (%s)", st.name,
                                            self.group, err)
                        else:
                            log.warning("stage %s: consumer: %s", st.name, err)
                        continue
                    r = Record.of(msg)
                    records.append(r)
                    last[TopicPartition(r.topic, r.partition)] = r.offset
                if fatal is not None:
                    # the consumer is unusable for good (fenced: with static membership,
                    # librdkafka's own rejoin after a session timeout fences a commit
                    # still under way, librdkafka issue 3437): a new one, at once
                    self._replace_consumer(fatal, out)
                    consume = self.consumer.consume
                    membership.reset()
                    continue
                if last and not last.keys() <= self.owned:
                    records, last = self._owned_only(records, last)
                if self._nudge_until:
                    if records or now > self._nudge_until:
                        self._nudge_until = 0.0
                    elif not msgs and now - nudged >= 0.05:
                        nudged = now
                        self._nudge()
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
            self.checkpoint(out, wait=True)
            self.write_snapshots()
            self.snapshot_writer.wait(60.0)
        finally:
            try:
                self.consumer.close()  # leaves the group (on_revoke: nothing pending now)
            except Exception as exc:  # shutting down: best effort
                log.warning("stage %s: closing the consumer: %r", st.name, exc)
            if self._watermarks is not None:
                self._watermarks.close()
                self._watermarks = None
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


def _close_quietly(consumer: Consumer, stage: str) -> None:
    """Close a consumer given up after a fatal error (in a thread: it may take a while)."""
    try:
        consumer.close()
    except Exception as exc:  # it failed for good already
        log.debug("stage %s: closing the replaced consumer: %r", stage, exc)


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
