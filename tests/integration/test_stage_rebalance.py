"""Stage state moves between workers: aggregate totals survive a leave and a join.

Two real ``ioc worker --agents aggregate`` processes share the stage group
``<app id>.aggregate``. One stops gracefully (SIGTERM), so the survivor takes its
partitions and must rebuild their windows from the changelog
``<ns>.state.streams.agg-windows``; later a third worker joins (another rebalance:
partitions move from the survivor to it, with their state) and the last events close
every window. Every closed window must equal the pure core's result over the same
events: none missing, none counted twice, none emitted twice.

The windows straddle the moves (60 s windows across the boundaries, one 3600 s window
per entity and metric over the whole run), and every entity has events 120 s behind
its watermark (in the first test, right after each move), so a lost, stale or doubled
state shows up as a wrong count, a conflicting second close, or a late event counted
as applied.

The first test moves partitions between bursts (the group is idle at each rebalance);
the second while events flow (batches in flight when partitions are revoked).
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from typing import Any

import orjson
import pytest
from kafka import KafkaProducer

from ioc.aggregate import rollup_key
from ioc.config import Settings
from ioc.events import Event, encode_event
from ioc.kafka import acked_producer, ensure_topics, kafka_python_kwargs
from ioc.kafka.clients import admin_client
from ioc.topics import spec, topic_name
from streams.engine import key_partition
from tests.conftest import Proc
from tests.integration.pipeline_fixtures import (
    TopicTail,
    consumed_all,
    publish,
    read_topic,
    wait_for,
)
from tests.integration.test_pipeline_aggregate import LATENESS, T0, expected

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(240)]

PER_ENTITY_PER_BURST = 150  # one event per entity every 2 s: 300 s of event time a burst
BURSTS = 3
LATE_AT = {100, PER_ENTITY_PER_BURST, 2 * PER_ENTITY_PER_BURST}  # 120 s behind the watermark
ENV = {"IOC_STREAMS__AGGREGATE__WINDOW_SIZES_S": "[10, 60, 3600]",
       "IOC_STREAMS__AGGREGATE__ALLOWED_LATENESS_S": str(LATENESS)}
WORKER = ["worker", "--agents", "aggregate", "--loglevel", "info"]

Window = tuple[int, float, float, float]


def entities(per_partition: int = 10) -> list[str]:
    """``per_partition`` entity ids for each partition of ``<ns>.events`` (murmur2 of the key)."""
    n = spec("events").partitions
    by_part: dict[int, list[str]] = {p: [] for p in range(n)}
    i = 0
    while any(len(v) < per_partition for v in by_part.values()):
        name = f"rb-{i:03d}"
        got = by_part[key_partition(name.encode(), n)]
        if len(got) < per_partition:
            got.append(name)
        i += 1
    return [e for p in range(n) for e in by_part[p]]


def bursts(names: list[str]) -> list[list[Event]]:
    """Interleaved events of ``names`` in ``BURSTS`` bursts; the last ends with a marker per
    entity two hours on, which closes every earlier window."""
    out: list[list[Event]] = []
    for b in range(BURSTS):
        burst = []
        for i in range(b * PER_ENTITY_PER_BURST, (b + 1) * PER_ENTITY_PER_BURST):
            for k, name in enumerate(names):
                t = T0 + 2 * i + k * 0.01 - (120 if i in LATE_AT else 0)
                burst.append(Event(id=f"{name}-{i}", source="test", type="air.quality", entity=name,
                                   time=t, values={"pm25": float((i * 7 + k) % 97),
                                                   "no2": float((i + 3 * k) % 13)}))
        out.append(burst)
    end = T0 + 2 * BURSTS * PER_ENTITY_PER_BURST + 7200
    out[-1].extend(Event(id=f"{name}-end", source="test", type="air.quality", entity=name,
                         time=end, values={"pm25": 0.0}) for name in names)
    return out


def stage_group(s: Settings) -> str:
    app_id = s.streams.app_id or f"{s.namespace}-streams"
    return f"{app_id}.aggregate"


def members(s: Settings) -> tuple[str, dict[str, set[int]]]:
    """The stage group's state and each member's partitions of ``<ns>.events``."""
    admin = admin_client(s.kafka)
    topic = topic_name(s.namespace, "events")
    try:
        g = admin.describe_groups([stage_group(s)])[stage_group(s)]
    finally:
        admin.close()
    out: dict[str, set[int]] = {}
    for m in g.get("members") or ():
        parts: set[int] = set()
        a = m.get("member_assignment") or {}
        for tp in a.get("assigned_partitions") or ():
            if tp["topic"] == topic:
                parts.update(tp["partitions"])
        out[str(m["member_id"])] = parts
    return str(g.get("group_state")), out


def fail_if_dead(*procs: Proc) -> None:
    for p in procs:
        assert p.alive(), f"worker {p.pid} died:\n{p.output()[-4000:]}"


def stable_with(s: Settings, n: int, *procs: Proc) -> dict[str, set[int]] | None:
    """The members' partitions once the group is stable with ``n`` members sharing all of
    ``<ns>.events`` (each owning some), else None; fails if one of ``procs`` died."""
    fail_if_dead(*procs)
    state, mem = members(s)
    every = set(range(spec("events").partitions))
    if state != "Stable" or len(mem) != n or any(not p for p in mem.values()):
        return None
    if set().union(*mem.values()) != every or sum(len(p) for p in mem.values()) != len(every):
        return None
    return mem


def restored(log: str) -> set[int]:
    """Partitions the worker's aggregate stage logged as restored (with records or entries)
    from its changelog or local snapshots (streams.engine.StageRunner.assigned)."""
    out: set[int] = set()
    for m in re.finditer(r"stage aggregate: restored \S+ partitions \[([\d, ]*)\]: "
                         r"(\d+) changelog record\(s\) read, (\d+) entries from snapshots", log):
        if int(m.group(2)) + int(m.group(3)):
            out.update(int(p) for p in m.group(1).split(",") if p.strip())
    return out


class Rollups:
    """Reads ``<ns>.rollups`` as it grows: closed windows, their emissions and any
    'updated' rollup that follows the window's close."""

    def __init__(self, s: Settings) -> None:
        self.tail = TopicTail(s, "rollups")
        self.closed: dict[str, Window] = {}
        self.emitted: Counter[str] = Counter()
        self.conflicts: list[tuple[str, Window, Window]] = []
        self.after_close: list[str] = []

    def collect(self) -> int:
        """Take what is new; return the number of distinct windows closed so far."""
        self._take()
        return len(self.closed)

    def drain(self) -> int:
        """Collect until a poll brings nothing new (once the outputs are all written)."""
        while self._take():
            pass
        return len(self.closed)

    def _take(self) -> int:
        records = self.tail.poll()
        for r in records:
            d = orjson.loads(r.value)
            k = rollup_key(d["entity"], d["metric"], d["size"], d["start"])
            if d["state"] != "closed":
                if k in self.closed:
                    self.after_close.append(k)
                continue
            v = (d["count"], d["sum"], d["min"], d["max"])
            if k in self.closed and self.closed[k] != v:
                self.conflicts.append((k, self.closed[k], v))
            self.closed[k] = v
            self.emitted[k] += 1
        return len(records)


def consumed(s: Settings, rollups: Rollups, *procs: Proc) -> bool:
    """True once the stage group committed the end of ``<ns>.events`` (so its outputs are
    all written); fails if a worker died. Collects the rollups meanwhile."""
    fail_if_dead(*procs)
    rollups.collect()
    return consumed_all(s)


def check_closed_windows(s: Settings, rollups: Rollups, every: list[Event], n_entities: int) -> None:
    """Each window closed once, with the totals of the pure core; late events dead-lettered."""
    want, want_late = expected(every)
    got = rollups.closed
    assert rollups.conflicts == [], f"windows closed twice with different totals: {rollups.conflicts[:3]}"
    dup = {k: n for k, n in rollups.emitted.items() if n > 1}
    assert not dup, f"{len(dup)} windows closed more than once: {sorted(dup.items())[:5]}"
    assert set(got) == set(want), (f"missing {sorted(set(want) - set(got))[:5]}, "
                                   f"unexpected {sorted(set(got) - set(want))[:5]}")
    bad = [(k, got[k], want[k]) for k in want if got[k][0] != want[k][0]
           or abs(got[k][1] - want[k][1]) > 1e-6 or got[k][2:] != want[k][2:]]
    assert bad == [], f"{len(bad)} windows differ (key, got, expected): {bad[:3]}"
    hours = [k for k in want if "|3600|" in k]
    assert len(hours) == 2 * n_entities  # one hour window per entity and metric spans the run
    applied = len(every) - n_entities - want_late  # the end markers' windows stay open
    assert sum(v[0] for k, v in got.items() if "|pm25|10|" in k) == applied
    assert sum(v[0] for k, v in got.items() if "|pm25|3600|" in k) == applied
    late = set()
    for r in read_topic(s, "dlq", timeout=15):
        h = dict(r.headers)
        if h.get("dlq.reason") == b"late":
            late.add((h["dlq.partition"], h["dlq.offset"]))
    assert len(late) == want_late, f"expected {want_late} late events dead-lettered, got {len(late)}"


def test_stage_state_moves_with_partitions_on_leave_and_join(fresh_namespace, spawn):
    t_start = time.monotonic()
    s = fresh_namespace("rbl")
    names = entities()
    assert len(names) == 40
    parts = bursts(names)
    every = [e for b in parts for e in b]
    want, want_late = expected(every)
    assert want_late == len(LATE_AT) * len(names)
    rollups = Rollups(s)

    def settled(*procs: Proc) -> bool:
        return consumed(s, rollups, *procs)

    # Two workers share the stage group; each owns two of the four partitions.
    w1 = spawn(WORKER, settings=s, env=ENV, name="w1")
    w2 = spawn(WORKER, settings=s, env=ENV, name="w2")
    before = wait_for(lambda: stable_with(s, 2, w1, w2), timeout=60, every=0.5,
                      what="two workers sharing the stage group")
    print(f"both workers in the group after {time.monotonic() - t_start:.1f} s: {before}")
    publish(s, parts[0])
    wait_for(lambda: settled(w1, w2), timeout=60, every=0.3, what="burst 1 consumed")
    closed1 = rollups.drain()
    assert 0 < closed1 < len(want)

    # w2 leaves gracefully: the survivor restores w2's partitions from the changelog.
    t_stop = time.monotonic()
    assert w2.stop(timeout=30) in (0, -15), w2.output()[-4000:]
    assert not w2.alive()
    publish(s, parts[1])
    alone = wait_for(lambda: stable_with(s, 1, w1), timeout=60, every=0.3,
                     what="the survivor owning every partition")
    survivor = next(iter(alone))
    moved = before[next(m for m in before if m != survivor)] if survivor in before else set()
    wait_for(lambda: settled(w1), timeout=60, every=0.3, what="burst 2 consumed by the survivor")
    closed2 = rollups.drain()
    print(f"w2 stopped; survivor caught up burst 2 in {time.monotonic() - t_stop:.1f} s; "
          f"moved partitions {sorted(moved)}")
    assert closed1 < closed2 < len(want)
    assert moved, f"the survivor is a member of neither assignment: {before} -> {alone}"

    # A third worker joins: partitions move from the survivor to it, with their state.
    t_join = time.monotonic()
    w3 = spawn(WORKER, settings=s, env=ENV, name="w3")
    after = wait_for(lambda: stable_with(s, 2, w1, w3), timeout=60, every=0.3,
                     what="the new worker sharing the stage group")
    joined = set().union(*(p for m, p in after.items() if m != survivor))
    assert joined and survivor in after, after
    publish(s, parts[2])
    wait_for(lambda: settled(w1, w3), timeout=60, every=0.3, what="burst 3 consumed")
    print(f"w3 joined with partitions {sorted(joined)}; burst 3 consumed "
          f"{time.monotonic() - t_join:.1f} s after it started")
    time.sleep(1.0)  # anything emitted after the commit (a duplicate close) would show up now
    rollups.drain()
    rollups.tail.close()
    fail_if_dead(w1, w3)

    check_closed_windows(s, rollups, every, len(names))
    assert rollups.after_close == [], (
        f"'updated' rollups after the window closed: {rollups.after_close[:5]}")
    # The state came from the changelog: each new owner logged restoring its partitions.
    assert moved <= restored(w1.output()), (
        f"the survivor did not restore the partitions {sorted(moved)} it took over:\n"
        + "\n".join(ln for ln in w1.output().splitlines() if "restored" in ln))
    assert joined <= restored(w3.output()), (
        f"the new worker did not restore its partitions {sorted(joined)}:\n"
        + "\n".join(ln for ln in w3.output().splitlines() if "restored" in ln))
    assert w3.stop(timeout=30) in (0, -15) and w1.stop(timeout=30) in (0, -15)
    print(f"{len(want)} closed windows checked; {closed1} after burst 1, {closed2} after burst 2; "
          f"total {time.monotonic() - t_start:.1f} s")


class Feeder(threading.Thread):
    """Publishes events in chunks with a pause between them; ``hold_at`` (an index) is
    not passed until ``release`` is set, so the rest flows only after, say, a join."""

    def __init__(self, s: Settings, events: list[Event], *, chunk: int, pause: float,
                 slow: tuple[int, int, float], hold_at: int) -> None:
        super().__init__(daemon=True)
        self.s, self.events, self.chunk, self.pause = s, events, chunk, pause
        self.slow, self.hold_at = slow, hold_at  # (from, to, pause) and the gate
        self.sent = 0
        self.release = threading.Event()
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            producer = KafkaProducer(acks="all", linger_ms=5, **kafka_python_kwargs(self.s.kafka))
            topic = topic_name(self.s.namespace, "events")
            try:
                while self.sent < len(self.events) and not self.stop.is_set():
                    if self.sent >= self.hold_at and not self.release.wait(0.1):
                        continue
                    for e in self.events[self.sent:self.sent + self.chunk]:
                        producer.send(topic, key=e.entity.encode(), value=encode_event(e))
                    producer.flush(timeout=30)
                    self.sent = min(len(self.events), self.sent + self.chunk)
                    lo, hi, slow = self.slow
                    time.sleep(slow if lo <= self.sent < hi else self.pause)
            finally:
                producer.close(timeout=10)
        except BaseException as exc:  # reported by the test thread
            self.error = exc


def test_stage_state_moves_while_events_flow(fresh_namespace, spawn):
    """A worker leaves and another joins while events are being published and processed:
    revocation happens with batches in flight and offsets not yet committed."""
    t_start = time.monotonic()
    s = fresh_namespace("rbf")
    names = entities()
    every = [e for b in bursts(names) for e in b]
    body, ends = every[:-len(names)], every[-len(names):]
    q = len(body) // 4
    rollups = Rollups(s)

    w1 = spawn(WORKER, settings=s, env=ENV, name="w1")
    w2 = spawn(WORKER, settings=s, env=ENV, name="w2")
    before = wait_for(lambda: stable_with(s, 2, w1, w2), timeout=60, every=0.5,
                      what="two workers sharing the stage group")
    # ~1,000 events/s, slower (~500/s) in the third quarter, during which w3 joins; the
    # last quarter waits for the join, so some events always reach the new owner.
    feeder = Feeder(s, body, chunk=100, pause=0.1, slow=(2 * q, 3 * q, 0.2), hold_at=3 * q)
    feeder.start()

    def sent(n: int, *procs: Proc) -> bool:
        fail_if_dead(*procs)
        assert feeder.error is None, feeder.error
        rollups.collect()
        return feeder.sent >= n

    try:
        wait_for(lambda: sent(q, w1, w2), timeout=60, every=0.05, what="a quarter published")
        at_stop = feeder.sent
        assert w2.stop(timeout=30) in (0, -15), w2.output()[-4000:]
        wait_for(lambda: sent(2 * q, w1), timeout=60, every=0.05, what="half published")
        at_spawn = feeder.sent
        w3 = spawn(WORKER, settings=s, env=ENV, name="w3")
        after = wait_for(lambda: sent(0, w1, w3) and stable_with(s, 2, w1, w3), timeout=60,
                         every=0.2, what="the new worker sharing the stage group")
        at_join = feeder.sent
        feeder.release.set()
        wait_for(lambda: sent(len(body), w1, w3), timeout=60, every=0.1, what="all published")
    finally:
        feeder.release.set()
        feeder.stop.set()
        feeder.join(30)
    assert feeder.error is None, feeder.error
    publish(s, ends)
    print(f"w2 stopped after {at_stop}, w3 started after {at_spawn} and in the group after "
          f"{at_join} of {len(body)} events")
    wait_for(lambda: consumed(s, rollups, w1, w3), timeout=60, every=0.3,
             what="every event consumed")
    time.sleep(1.0)
    rollups.drain()
    rollups.tail.close()
    fail_if_dead(w1, w3)
    check_closed_windows(s, rollups, every, len(names))
    survivor = next(iter(set(before) & set(after)), None)
    assert survivor is not None, f"the survivor is a member of neither assignment: {before} -> {after}"
    moved = set().union(*(p for m, p in before.items() if m != survivor))
    joined = set().union(*(p for m, p in after.items() if m != survivor))
    assert moved <= restored(w1.output()) and joined <= restored(w3.output()), (
        f"moved {sorted(moved)} to the survivor, {sorted(joined)} to the new worker; restored:\n"
        + "\n".join(ln for w in (w1, w3) for ln in w.output().splitlines() if "restored" in ln))
    # The revoked worker drops its held-back updates of the partitions it lost
    # (streams/aggregate.py on_revoked), so none can land after the new owner's close.
    assert rollups.after_close == [], (
        f"'updated' rollups after the window closed: {rollups.after_close[:5]}")
    assert w3.stop(timeout=30) in (0, -15) and w1.stop(timeout=30) in (0, -15)
    print(f"{len(rollups.closed)} closed windows checked; total {time.monotonic() - t_start:.1f} s")


# -- incremental (cooperative-sticky) assignment, on real StageRunners in this process --

COOP_PARTS = spec("events").partitions
COOP_KEYS = [b"coop-%02d" % i for i in range(40)]


class CountingRun:
    """A real ``StageRunner`` (in a thread) counting records per key in one ``StateTable``;
    records what its rebalance callbacks were given and which partitions it restored."""

    def __init__(self, s: Settings, name: str) -> None:
        from streams.engine import Outbox, Stage, StageRunner, StateTable

        self.src = topic_name(s.namespace, "events")
        self.table = table = StateTable("coopcounts", self.src, COOP_PARTS)
        self.assigned: list[set[int]] = []  # on_assigned calls (added partitions)
        self.revoked: list[set[int]] = []  # on_revoked calls
        self.restores: list[list[int]] = []  # partitions each table restore was asked for
        self.failed: list[BaseException] = []

        def process(records: list[Any], out: Outbox) -> None:
            for r in records:
                n = table.get(r.key, int, lambda _e: 0, "")
                table.change(r.key, b"%d" % (n + 1), r.partition)

        restore = table.restore

        def recording_restore(settings: Settings, partitions: Any, **kw: Any) -> int:
            if partitions:
                self.restores.append(sorted(partitions))
            return restore(settings, partitions, **kw)

        table.restore = recording_restore  # type: ignore[method-assign]
        self.stage = Stage(
            "coopcount", [self.src], process, tables=[table], batch_max=200, within_s=0.05,
            commit_every_s=0.3,
            on_assigned=lambda tps: self.assigned.append({tp.partition for tp in tps}),
            on_revoked=lambda tps: self.revoked.append({tp.partition for tp in tps}))
        self.runner = StageRunner(s, f"{s.namespace}-cooptest", self.stage)
        assert ensure_topics(s, self.runner.specs).success
        self.thread = threading.Thread(target=self._run, daemon=True, name=f"coop-{name}")
        self.thread.start()

    def _run(self) -> None:
        try:
            self.runner.run_sync()
        except BaseException as exc:  # the test fails on it
            self.failed.append(exc)

    def owned(self) -> set[int]:
        return {tp.partition for tp in set(self.runner.owned)}

    def stop(self) -> None:
        self.runner.stopping.set()
        self.thread.join(60)
        assert not self.thread.is_alive() and not self.failed, self.failed


def publish_keys(s: Settings, n: int, sent: Counter[bytes], *, start: int = 0) -> None:
    p = acked_producer(s.kafka)
    topic = topic_name(s.namespace, "events")
    for i in range(start, start + n):
        key = COOP_KEYS[(i * 7) % len(COOP_KEYS)]
        p.produce(topic, b"x", key)
        sent[key] += 1
        if i % 200 == 0:
            p.poll(0)
    assert p.flush(30) == 0


def owned_by(*runs: CountingRun, timeout: float = 60) -> list[set[int]]:
    """Until the runs own every partition between them, none twice, each some."""
    every = set(range(COOP_PARTS))
    deadline = time.monotonic() + timeout
    while True:
        for r in runs:
            assert not r.failed, r.failed
        owned = [r.owned() for r in runs]
        if (all(owned) and sum(map(len, owned)) == COOP_PARTS
                and set().union(*owned) == every):
            return owned
        assert time.monotonic() < deadline, f"owned {owned}"
        time.sleep(0.05)


def counted(*runs: CountingRun, want: Counter[bytes], timeout: float = 60) -> None:
    """Until the runs' tables together hold exactly ``want`` (each key once)."""
    expect = {k: b"%d" % n for k, n in want.items()}
    deadline = time.monotonic() + timeout
    while True:
        got: dict[bytes, bytes] = {}
        for r in runs:
            assert not r.failed, r.failed
            for k, v in list(r.table.data.items()):
                got[k] = v
        if got == expect and not any(r.table.changed for r in runs):
            return
        assert time.monotonic() < deadline, (
            f"counts differ: {[(k, got.get(k), v) for k, v in expect.items() if got.get(k) != v][:5]}")
        time.sleep(0.1)


def test_incremental_assignment_moves_only_what_moves(fresh_namespace, tmp_path):
    """Runner 1 owns every partition with state; runner 2 joins: runner 1 is revoked only
    the partitions runner 2 gets, restores nothing, and keeps the state of the rest as the
    very same objects. Events flow while runner 2 leaves: runner 1 restores only the
    partitions it gets back. Every count is exact (no loss, no double count)."""
    settings = fresh_namespace("coop")
    s = settings.model_copy(update={"streams": settings.streams.model_copy(
        update={"state_dir": tmp_path / "state"})})
    sent: Counter[bytes] = Counter()
    publish_keys(s, 1200, sent)
    r1 = CountingRun(s, "r1")
    assert owned_by(r1) == [set(range(COOP_PARTS))]
    counted(r1, want=sent)
    m1 = r1.stage.metrics
    assert r1.restores == [list(range(COOP_PARTS))]  # the first assignment: every partition
    restored0, entries0 = m1.restored, m1.snapshot_entries
    before = dict(r1.table.data)
    records0 = m1.records

    # runner 2 joins: with cooperative-sticky only the partitions that move are revoked
    r2 = CountingRun(s, "r2")
    own1, own2 = owned_by(r1, r2)
    time.sleep(1.0)  # a further rebalance round, if any, would show up in the callbacks
    assert owned_by(r1, r2) == [own1, own2]
    print(f"\nr2 joined: r1 keeps {sorted(own1)}, r2 gets {sorted(own2)}; r1 revoked "
          f"{r1.revoked}, assigned {r1.assigned}, restores {r1.restores}; r2 restores "
          f"{r2.restores}")
    assert r1.revoked == [own2], "r1 was revoked exactly the partitions r2 got, once"
    assert r1.assigned == [set(range(COOP_PARTS))], "nothing new for r1"
    assert r1.restores == [list(range(COOP_PARTS))], "r1 restored nothing at the join"
    assert (m1.restored, m1.snapshot_entries) == (restored0, entries0)
    assert m1.kept == len(own1)  # the table partitions that stayed through the revoke
    kept_keys = [k for k in before if key_partition(k, COOP_PARTS) in own1]
    assert kept_keys
    assert all(r1.table.data[k] is before[k] for k in kept_keys), "kept in memory, not reloaded"
    assert not any(key_partition(k, COOP_PARTS) in own2 for k in r1.table.data)
    assert r2.restores == [sorted(own2)] and r2.revoked == []
    assert m1.records == records0  # nothing re-read

    more: Counter[bytes] = Counter()
    publish_keys(s, 900, more, start=1200)
    sent.update(more)
    counted(r1, r2, want=sent)

    # events flow while runner 2 leaves: runner 1 restores only what it gets back
    third: Counter[bytes] = Counter()
    feeder = threading.Thread(target=publish_keys, args=(s, 1500, third),
                              kwargs={"start": 2100}, daemon=True)
    n_restores = len(r1.restores)
    feeder.start()
    time.sleep(0.3)
    r2.stop()
    feeder.join(60)
    assert not feeder.is_alive() and sum(third.values()) == 1500
    sent.update(third)
    assert owned_by(r1) == [set(range(COOP_PARTS))]
    counted(r1, want=sent)
    print(f"r2 left: r1 assigned {r1.assigned[1:]}, restores {r1.restores[n_restores:]}, "
          f"kept {m1.kept}; r2 revoked {r2.revoked}")
    assert r1.assigned[1:] == [own2], "r1 got back exactly r2's partitions"
    assert r1.restores[n_restores:] == [sorted(own2)], "and restored only those"
    assert m1.kept == 2 * len(own1)
    assert r1.revoked == [own2]
    assert r2.revoked == [own2]  # its close revoked what it owned, after a checkpoint
    r1.stop()
    # what the changelog holds is what was counted: no state lost in the moves
    full = changelog_state(s, r1.table.topic)
    assert full == {k: b"%d" % n for k, n in sent.items()}


def changelog_state(s: Settings, changelog: str) -> dict[bytes, bytes]:
    """Every partition of ``changelog`` read from its start (no snapshots)."""
    from streams.engine import StateTable

    t = StateTable("coopcounts", topic_name(s.namespace, "events"), COOP_PARTS)
    t.topic = changelog
    t.restore(s, list(range(COOP_PARTS)))
    return t.data


def group_size(s: Settings, group: str) -> int:
    admin = admin_client(s.kafka)
    try:
        return len(admin.describe_groups([group])[group].get("members") or ())
    finally:
        admin.close()


def test_a_cooperative_worker_waits_for_the_eager_ones_to_leave(fresh_namespace, tmp_path,
                                                                monkeypatch):
    """Rolling upgrade from eager (``range``) stage consumers: a new (cooperative-sticky)
    member cannot join a group that has eager members (the broker refuses its JoinGroup
    with INCONSISTENT_GROUP_PROTOCOL every ~2 s). It must not fail (its membership watch
    sees the refusals as the broker being unavailable to it, with the bounds shortened
    here to show it) nor take any partition; once the old member has left it joins, owns
    every partition and the counts are exact."""
    import streams.engine.runner as runner_mod

    monkeypatch.setattr(runner_mod, "FIRST_JOIN_S", 3.0)
    monkeypatch.setattr(runner_mod, "REJOIN_S", 3.0)
    settings = fresh_namespace("coopup")
    s = settings.model_copy(update={"streams": settings.streams.model_copy(
        update={"state_dir": tmp_path / "state"})})
    sent: Counter[bytes] = Counter()
    publish_keys(s, 800, sent)
    conf = runner_mod.StageRunner._consumer_conf

    def eager(self: Any) -> dict[str, Any]:
        c = conf(self)
        c["partition.assignment.strategy"] = "range"
        return c

    # the old worker: same stage, same group, the previous version's strategy (its
    # consumer is made in its thread: the patch stays until it owns the partitions)
    monkeypatch.setattr(runner_mod.StageRunner, "_consumer_conf", eager)
    old = CountingRun(s, "old")
    assert owned_by(old) == [set(range(COOP_PARTS))]
    monkeypatch.setattr(runner_mod.StageRunner, "_consumer_conf", conf)
    new = CountingRun(s, "new")
    more: Counter[bytes] = Counter()
    t_wait = time.monotonic()
    while time.monotonic() - t_wait < 8.0:  # well past the (shortened) join bounds
        assert not new.failed and not old.failed, (new.failed, old.failed)
        assert new.owned() == set()
        # the group holds the eager member alone (the consumers are not thread-safe to
        # ask from here: the broker is)
        assert group_size(s, new.runner.group) == 1
        time.sleep(0.5)
    publish_keys(s, 400, more, start=800)
    sent.update(more)
    counted(old, want=sent)
    assert new.restores == [] and new.stage.metrics.records == 0
    t_stop = time.monotonic()
    old.stop()
    assert owned_by(new, timeout=30) == [set(range(COOP_PARTS))]
    took = time.monotonic() - t_stop
    counted(new, want=sent)
    print(f"\nnew member outside the group for {t_stop - t_wait:.1f} s beside the eager one; "
          f"owned every partition {took:.1f} s after the eager one left")
    assert took < 15
    new.stop()


def static_impostor(s: Settings, group: str, topic: str, instance: str, *,
              strategy: str | None = "cooperative-sticky", timeout: float = 60) -> None:
    """A consumer that joins ``group`` with the static ``instance`` id of a live member
    (the broker then fences that member: a fatal error on its side), polls until it has
    partitions, then closes (a static member does not leave its group)."""
    from ioc.kafka import rdkafka_conf
    from ioc.kafka.rdkafka import Consumer

    conf = rdkafka_conf(s.kafka, "consumer")
    conf.update({"group.id": group, "group.instance.id": instance,
                 "enable.auto.commit": False, "session.timeout.ms": 10_000})
    if strategy is not None:
        conf["partition.assignment.strategy"] = strategy
    c = Consumer(conf)
    try:
        c.subscribe([topic])
        deadline = time.monotonic() + timeout
        while not c.assignment():
            assert time.monotonic() < deadline, "the impostor got no partitions"
            c.poll(0.2)
    finally:
        c.close()


def test_a_fenced_static_member_replaces_its_consumer_and_counts_exactly(fresh_namespace,
                                                                         tmp_path):
    """With ``kafka.group_instance_id`` set, a consumer that joins with the same id fences
    the runner's consumer (as librdkafka's own rejoin after a session timeout does, with a
    commit under way: librdkafka issue 3437). The runner replaces its consumer at once
    (no worker restart, no membership bound), takes its partitions back from the
    impostor, and its counts stay exact. Fenced a second time within a minute, the
    stage fails with the reason instead."""
    settings = fresh_namespace("fence")
    s = settings.model_copy(update={
        "streams": settings.streams.model_copy(update={"state_dir": tmp_path / "state"}),
        "kafka": settings.kafka.model_copy(update={"group_instance_id": "fence-w1"})})
    sent: Counter[bytes] = Counter()
    publish_keys(s, 1200, sent)
    r1 = CountingRun(s, "r1")
    assert owned_by(r1) == [set(range(COOP_PARTS))]
    counted(r1, want=sent)
    assert r1.runner.stage.metrics.consumer_restarts == 0

    static_impostor(s, r1.runner.group, r1.src, "fence-w1")
    deadline = time.monotonic() + 60
    while r1.runner.stage.metrics.consumer_restarts == 0:
        assert not r1.failed, r1.failed
        assert time.monotonic() < deadline, "the runner's consumer was never replaced"
        time.sleep(0.1)
    more: Counter[bytes] = Counter()
    publish_keys(s, 900, more, start=1200)
    sent.update(more)
    assert owned_by(r1) == [set(range(COOP_PARTS))]
    counted(r1, want=sent)
    assert r1.runner.stage.metrics.consumer_restarts == 1
    assert changelog_state(s, r1.table.topic) == {k: b"%d" % n for k, n in sent.items()}

    # fenced again within REFENCED_S: two live processes with one id, not a one-off;
    # the stage fails (its worker exits) instead of fencing the other in a loop
    static_impostor(s, r1.runner.group, r1.src, "fence-w1")
    r1.thread.join(60)
    assert not r1.thread.is_alive()
    assert len(r1.failed) == 1 and "after the last replacement" in str(r1.failed[0]), r1.failed
    assert "kafka.group_instance_id" in str(r1.failed[0])
    assert r1.runner.stage.metrics.consumer_restarts == 1
