"""A stage restarted on its local snapshots reads only the changelog's tail (real broker).

The real ``StageRunner`` (in a thread of this process, as in test_poison) runs a
counting stage on ``<ns>.events`` with one ``StateTable``; each run stops cleanly
(its final checkpoint and snapshots). Between runs the snapshot directory is set to
what a worker killed at a chosen moment would have left behind:

1. run 1 counts a first burst and snapshots it (files kept aside: S1);
2. run 2 counts a second burst (the changelog grows past S1's offsets);
3. S1 is put back (run 2 "crashed" before its next snapshot): run 3 must read exactly
   the changelog records run 2 wrote, and hold the same state as a full read;
4. three snapshots are damaged (truncated; an offset beyond the changelog's end, as
   after a topic re-creation; the right offset but a different last record): each
   falls back to a full read (counted), the state is still the full read's.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from ioc.config import Settings
from ioc.kafka import acked_producer, ensure_topics, rdkafka_conf
from ioc.metrics.stages import StagesCollector
from ioc.topics import spec, topic_name
from streams.engine import Outbox, Stage, StageRunner, StateTable, key_partition
from streams.engine.snapshot import Snapshot, SnapshotStore

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(180)]

PARTS = spec("events").partitions
KEYS = [b"snap-%02d" % i for i in range(40)]


class Run:
    """One start of the counting stage, until ``stop``."""

    def __init__(self, s: Settings) -> None:
        self.src = topic_name(s.namespace, "events")
        self.table = table = StateTable("snapcounts", self.src, PARTS)
        self.assigned = threading.Event()
        self.at_assign: dict[bytes, bytes] = {}

        def process(records: list[Any], out: Outbox) -> None:
            for r in records:
                n = table.get(r.key, int, lambda _e: 0, "")
                table.change(r.key, b"%d" % (n + 1), r.partition)

        def on_assigned(_tps: set[Any]) -> None:
            self.at_assign = dict(table.data)
            self.assigned.set()

        self.stage = Stage("snapcount", [self.src], process, tables=[table], batch_max=500,
                           within_s=0.05, commit_every_s=0.3, on_assigned=on_assigned)
        self.runner = StageRunner(s, f"{s.namespace}-snaptest", self.stage)
        assert ensure_topics(s, self.runner.specs).success
        self.failed: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, daemon=True, name="snap-stage")
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.assigned.wait(0.2):
            assert not self.failed, self.failed
            assert time.monotonic() < deadline, "no partitions assigned within 60 s"

    def _run(self) -> None:
        try:
            self.runner.run_sync()
        except BaseException as exc:  # the test fails on it in stop()
            self.failed.append(exc)

    def wait_records(self, n: int) -> None:
        deadline = time.monotonic() + 60
        while self.stage.metrics.records < n:
            assert not self.failed, self.failed
            assert time.monotonic() < deadline, f"{self.stage.metrics.records} of {n} records"
            time.sleep(0.1)

    def stop(self) -> None:
        self.runner.stopping.set()
        self.thread.join(60)
        assert not self.thread.is_alive() and not self.failed, self.failed


def publish(s: Settings, n: int, sent: Counter[bytes]) -> None:
    p = acked_producer(s.kafka)
    topic = topic_name(s.namespace, "events")
    for i in range(n):
        key = KEYS[(i * 7) % len(KEYS)]
        p.produce(topic, b"x", key)
        sent[key] += 1
        if i % 500 == 0:
            p.poll(0)
    assert p.flush(30) == 0


def highs(s: Settings, topic: str) -> dict[int, int]:
    from ioc.kafka.rdkafka import Consumer, TopicPartition

    conf = rdkafka_conf(s.kafka, "consumer")
    conf["group.id"] = f"{s.namespace}-snap-highs"
    c = Consumer(conf)
    try:
        return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                for p in range(PARTS)}
    finally:
        c.close()


def full_read(s: Settings, topic: str) -> dict[bytes, bytes]:
    t = StateTable("snapcounts", topic_name(s.namespace, "events"), PARTS)
    t.topic = topic
    t.restore(s, list(range(PARTS)))
    return t.data


def test_a_restart_on_snapshots_reads_only_the_tail_and_rebuilds_the_full_state(
        settings: Settings, tmp_path: Path):
    state_dir = tmp_path / "state"
    s = settings.model_copy(update={"streams": settings.streams.model_copy(
        update={"state_dir": state_dir})})
    sent: Counter[bytes] = Counter()
    store = SnapshotStore(state_dir)

    publish(s, 1200, sent)
    r1 = Run(s)
    r1.wait_records(1200)
    r1.stop()
    topic = r1.table.topic
    assert r1.stage.metrics.restored == 0 and r1.stage.metrics.snapshot_entries == 0
    assert r1.stage.metrics.snapshots_written == PARTS  # every owned partition, at the stop
    h1 = highs(s, topic)
    held = 0
    for p in range(PARTS):
        snap = store.load(topic, p)[0]
        assert snap is not None and snap.offset == h1[p], (p, snap, h1)
        held += len(snap.entries)
    assert held == len(KEYS)
    s1 = tmp_path / "s1"
    shutil.copytree(state_dir, s1)

    publish(s, 900, sent)
    r2 = Run(s)
    assert r2.stage.metrics.restored == 0  # run 1's snapshots are at the changelog's end
    assert r2.stage.metrics.snapshot_entries == len(KEYS)
    r2.wait_records(900)
    r2.stop()
    h2 = highs(s, topic)
    tail = sum(h2[p] - h1[p] for p in range(PARTS))
    assert tail > 0

    # run 2 "crashed" before its last snapshot: run 1's are what it left
    shutil.rmtree(state_dir)
    shutil.copytree(s1, state_dir)
    r3 = Run(s)
    m3 = r3.stage.metrics
    r3.stop()
    print(f"\nsnapshots: changelog {sum(h2.values())} records, tail {tail}; run 3 read "
          f"{m3.restored} changelog records, {m3.snapshot_entries} entries from snapshots")
    assert m3.restored == tail, "only the tail is read"
    assert m3.snapshot_entries == len(KEYS) and m3.snapshot_fallbacks == 0
    scraped = {(smp.name, tuple(smp.labels.values())): smp.value
               for fam in StagesCollector(SimpleNamespace(_ioc_stages=[r3.stage],
                                                          _ioc_runners=[r3.runner])).collect()
               for smp in fam.samples}
    assert scraped[("ioc_state_restored_total", ("snapcount", "changelog"))] == tail
    assert scraped[("ioc_state_restored_total", ("snapcount", "snapshot"))] == len(KEYS)
    assert scraped[("ioc_state_snapshot_fallbacks_total", ("snapcount",))] == 0
    want = {k: b"%d" % n for k, n in sent.items()}
    assert r3.at_assign == want
    assert full_read(s, topic) == want

    # damaged snapshots: each partition that had one falls back to a full read
    with_state = sorted(p for p in range(PARTS) if h2[p] > 0)
    assert len(with_state) >= 3, with_state
    a, b, c = with_state[:3]
    raw = store.path(topic, a).read_bytes()
    store.path(topic, a).write_bytes(raw[:len(raw) // 2])  # truncated
    sb = store.load(topic, b)[0]
    assert sb is not None
    store.write(Snapshot(sb.version, topic, b, h2[b] + 5, sb.entries))  # beyond the end
    sc = store.load(topic, c)[0]
    assert sc is not None and sc.offset == h2[c]
    # the right offset, but entries that differ from the changelog's last record (a
    # topic deleted and refilled to the same length would look like this)
    store.write(Snapshot(sc.version, topic, c, sc.offset, [(k, b"999") for k, _v in sc.entries]))
    r4 = Run(s)
    m4 = r4.stage.metrics
    r4.stop()
    assert m4.snapshot_fallbacks == 3
    assert m4.restored == h2[a] + h2[b] + h2[c], "the damaged partitions read in full, no more"
    assert r4.at_assign == want


def wait_owned(*runs: Run, want: int = PARTS) -> None:
    """Until the runs' stage consumers own ``want`` partitions between them, none twice."""
    deadline = time.monotonic() + 60
    while True:
        owned = [set(r.runner.owned) for r in runs]
        if sum(map(len, owned)) == want and len(set().union(*owned)) == want:
            return
        for r in runs:
            assert not r.failed, r.failed
        assert time.monotonic() < deadline, f"owned {owned}"
        time.sleep(0.1)


def test_a_rebalance_keeps_what_stays_and_moves_the_rest_on_snapshots(
        fresh_namespace: Any, tmp_path: Path):
    """Two stage consumers of one group on one host (one state dir). B joins: A is revoked
    every partition (eager) and assigned some again, which it keeps in memory (no
    restore); B restores its share from A's snapshots (no changelog record read). B
    leaves: A restores B's share from B's snapshots. The state is the full read's."""
    settings = fresh_namespace("snapreb")
    state_dir = tmp_path / "state"
    s = settings.model_copy(update={"streams": settings.streams.model_copy(
        update={"state_dir": state_dir})})
    sent: Counter[bytes] = Counter()
    publish(s, 1200, sent)
    a = Run(s)
    a.wait_records(1200)
    b = Run(s)
    wait_owned(a, b)
    ma, mb = a.stage.metrics, b.stage.metrics
    mine_a, mine_b = set(a.runner.owned), set(b.runner.owned)
    assert mine_a and mine_b
    topic = a.table.topic
    h = highs(s, topic)
    parts_b = {tp.partition for tp in mine_b}
    keys_b = sum(1 for k in sent if key_partition(k, PARTS) in parts_b)
    assert len(b.at_assign) == keys_b
    print(f"\nrebalance: A keeps {sorted(tp.partition for tp in mine_a)}, B restores "
          f"{sorted(tp.partition for tp in mine_b)}: A restored {ma.restored} records, "
          f"{ma.snapshot_entries} entries, kept {ma.kept}; B restored {mb.restored} records, "
          f"{mb.snapshot_entries} entries")
    assert ma.kept == len(mine_a), "A kept the partitions it got back"
    assert ma.restored == 0 and ma.snapshot_entries == 0, "A restored nothing"
    assert mb.restored == 0 and mb.snapshot_entries == keys_b > 0, "B: A's snapshots, no tail"
    assert mb.snapshot_fallbacks == 0

    more: Counter[bytes] = Counter()
    publish(s, 600, more)
    sent.update(more)
    deadline = time.monotonic() + 60
    while ma.records + mb.records < 1800:
        assert time.monotonic() < deadline, (ma.records, mb.records)
        time.sleep(0.1)
    entries0 = ma.snapshot_entries
    b.stop()
    wait_owned(a)
    h2 = highs(s, topic)
    assert h2 != h
    deadline = time.monotonic() + 30
    while a.table.data != {k: b"%d" % n for k, n in sent.items()}:
        assert time.monotonic() < deadline, "A's state after B left"
        time.sleep(0.1)
    a.stop()
    print(f"B left: A restored {ma.restored} records, {ma.snapshot_entries - entries0} entries")
    assert ma.restored == 0, "B's snapshots were at the changelog's end"
    assert ma.snapshot_entries - entries0 == keys_b, "B's share from B's snapshots"
    assert ma.kept == 2 * len(mine_a), "A kept its own share again"
    assert ma.snapshot_fallbacks == 0
    assert full_read(s, topic) == {k: b"%d" % n for k, n in sent.items()}
