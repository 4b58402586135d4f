"""What a rebalance costs the stage consumers: eager (``range``) against incremental
(``cooperative-sticky``) assignment, side by side in the same run.

    .venv/bin/python bench/bench_rebalance.py [--partitions 12] [--keys 12000]
        [--rate 2000] [--warm 6] [--after 12] [--repeat 1]

Per mode, in a namespace of its own (topics deleted at the end): an input topic of
``--partitions`` partitions is filled with one record per key (``--keys`` states of
~200 bytes each in the stage's table); members A and B, real ``StageRunner`` processes
(``python bench/bench_rebalance.py _member``, one consumer group, one state directory:
one host), count the records of each key in a ``StateTable``; once they share every
partition and drained the fill, records flow at ``--rate`` per second; after ``--warm``
seconds member C joins; ``--after`` seconds later the flow stops and every member stops
cleanly. Printed per member: the longest gap between two processed batches after C was
started (the pause; the longest gap of the warm-up before is the baseline), the
partitions revoked and restored, the last restore's seconds, and for C the seconds from
its start to its first batch. Checked: the changelog read from its start holds exactly
the counts sent (no loss, no double count, in both modes).

The eager mode is today's runner with ``partition.assignment.strategy=range``: every
member is revoked everything and restores what it is assigned (from the local snapshots
the revoke wrote, so mostly no changelog tail). The runner before cooperative-sticky
(commit 725ddf8~1) also kept in memory the partitions an eager member got back
unchanged; that spared it the restores counted here, not the stop while the group
re-forms.

Needs the local stack (``make up``). Member logs: /tmp/ioc-bench-rebalance/.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ioc.config import Settings, load_settings  # noqa: E402
from ioc.kafka import acked_producer, delete_namespace_topics, ensure_topics  # noqa: E402
from ioc.topics import TopicSpec  # noqa: E402

LOGS = Path("/tmp/ioc-bench-rebalance")
PAD = b"s" * 190  # ~200 bytes of state per key
INPUT = TopicSpec("bench.rebalance", 12, "key", "bytes", "delete", 3_600_000,
                  "input of bench_rebalance.py")


def bench_settings(ns: str, state_dir: str) -> Settings:
    s = load_settings().with_namespace(ns)
    return s.model_copy(update={"streams": s.streams.model_copy(
        update={"state_dir": Path(state_dir)})})


def input_spec(partitions: int) -> TopicSpec:
    return TopicSpec(INPUT.suffix, partitions, INPUT.key, INPUT.value_format,
                     INPUT.cleanup_policy, INPUT.retention_ms, INPUT.description)


# -- a member (child process) --

def member(a: argparse.Namespace) -> None:
    """One counting stage until SIGTERM; then its figures as JSON on ``a.out``."""
    import logging

    from streams.engine import Outbox, Stage, StageRunner, StateTable

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    s = bench_settings(a.ns, a.state_dir)
    src = input_spec(a.partitions).name(a.ns)
    table = StateTable("rbcounts", src, a.partitions)
    stamps: list[tuple[float, int]] = []  # (monotonic time, records) per batch
    # (monotonic time, partitions) of each call; restores also (seconds, changelog
    # records read, snapshot entries loaded)
    revoked: list[tuple[float, list[int]]] = []
    restores: list[tuple[float, list[int], float, int, int]] = []

    def load(raw: bytes) -> int:
        return int(raw.split(b"|", 1)[0])

    def process(records: list[Any], out: Outbox) -> None:
        stamps.append((time.monotonic(), len(records)))
        for r in records:
            n = table.get(r.key, load, lambda _e: 0, "")
            table.change(r.key, b"%d|%s" % (n + 1, PAD), r.partition)

    restore = table.restore

    def recording_restore(settings: Settings, partitions: Any, **kw: Any) -> int:
        t0, e0 = time.monotonic(), table.snapshot_entries
        n = restore(settings, partitions, **kw)
        if partitions:
            restores.append((t0, sorted(partitions), time.monotonic() - t0, n,
                             table.snapshot_entries - e0))
        return n

    table.restore = recording_restore  # type: ignore[method-assign]
    stage = Stage("rbcount", [src], process, tables=[table], batch_max=5000, within_s=0.01,
                  commit_every_s=1.0,
                  on_revoked=lambda tps: revoked.append(
                      (time.monotonic(), sorted(tp.partition for tp in tps))))
    runner = StageRunner(s, f"{a.ns}-rb", stage)
    conf = runner._consumer_conf

    def with_strategy() -> dict[str, Any]:
        c = conf()
        c["partition.assignment.strategy"] = a.strategy
        return c

    runner._consumer_conf = with_strategy  # type: ignore[method-assign]
    assert ensure_topics(s, runner.specs).success
    signal.signal(signal.SIGTERM, lambda *_: runner.stopping.set())
    t_start = time.monotonic()
    runner.run_sync()
    m = stage.metrics
    Path(a.out).write_text(json.dumps({
        "start": t_start, "stamps": stamps, "revoked": revoked, "restores": restores,
        "records": m.records, "kept": m.kept}))


# -- the parent --

class Member:
    def __init__(self, name: str, ns: str, state_dir: str, strategy: str, partitions: int,
                 tmp: Path) -> None:
        self.name = name
        self.out = tmp / f"{name}.json"
        LOGS.mkdir(parents=True, exist_ok=True)
        self.log = open(LOGS / f"{ns}-{name}.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "_member", "--ns", ns, "--state-dir", state_dir,
             "--strategy", strategy, "--partitions", str(partitions), "--out", str(self.out)],
            stdout=self.log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.t_spawn = time.monotonic()
        self.figures: dict[str, Any] = {}

    def stop(self) -> dict[str, Any]:
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(90)
        self.log.close()
        assert rc == 0 and self.out.exists(), f"member {self.name} exited {rc}: see {self.log.name}"
        self.figures = json.loads(self.out.read_text())
        return self.figures


def group_members(s: Settings, group: str) -> list[tuple[str, set[int]]]:
    from ioc.kafka.clients import admin_client

    admin = admin_client(s.kafka)
    try:
        g = admin.describe_groups([group])[group]
    finally:
        admin.close()
    out = []
    for m in g.get("members") or ():
        parts: set[int] = set()
        for tp in (m.get("member_assignment") or {}).get("assigned_partitions") or ():
            parts.update(tp["partitions"])
        out.append((str(m["member_id"]), parts))
    return out if str(g.get("group_state")) == "Stable" else []


def wait_shared(s: Settings, group: str, n: int, partitions: int, procs: list[Member],
                timeout: float = 90) -> float:
    deadline = time.monotonic() + timeout
    while True:
        for p in procs:
            assert p.proc.poll() is None, f"member {p.name} died: see {p.log.name}"
        mem = group_members(s, group)
        owned = [parts for _m, parts in mem]
        if (len(mem) == n and all(owned) and sum(map(len, owned)) == partitions
                and set().union(*owned) == set(range(partitions))):
            return time.monotonic()
        assert time.monotonic() < deadline, f"group {group}: {mem}"
        time.sleep(0.2)


def committed_all(s: Settings, group: str, topic: str, partitions: int) -> bool:
    from ioc.kafka import rdkafka_conf
    from ioc.kafka.rdkafka import Consumer, TopicPartition

    conf = rdkafka_conf(s.kafka, "consumer")
    conf["group.id"] = group
    c = Consumer(conf)
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        done = c.committed(tps, timeout=10)
        return all(d.offset >= c.get_watermark_offsets(tp, timeout=10)[1]
                   for d, tp in zip(done, tps, strict=True))
    finally:
        c.close()


class Feeder(threading.Thread):
    """``rate`` records/s over ``keys`` keys, in chunks every 50 ms, until ``stop``."""

    def __init__(self, s: Settings, topic: str, keys: int, rate: int) -> None:
        super().__init__(daemon=True)
        self.s, self.topic, self.keys, self.rate = s, topic, keys, rate
        self.sent = 0
        self.stop = threading.Event()

    def run(self) -> None:
        p = acked_producer(self.s.kafka)
        chunk = max(1, self.rate // 20)
        t = time.monotonic()
        while not self.stop.is_set():
            for _ in range(chunk):
                p.produce(self.topic, b"x", b"k%06d" % ((self.sent * 7919) % self.keys))
                self.sent += 1
            p.poll(0)
            t += chunk / self.rate
            time.sleep(max(0.0, t - time.monotonic()))
        assert p.flush(30) == 0


def longest_gap(stamps: list[tuple[float, int]], lo: float, hi: float) -> tuple[float, float]:
    """The longest time without a processed batch within [lo, hi], and when it began."""
    ts = [lo, *(t for t, _n in stamps if lo <= t <= hi), hi]
    return max((b - a, a) for a, b in itertools.pairwise(ts))


def run_mode(strategy: str, a: argparse.Namespace) -> dict[str, Any]:
    ns = f"brb{secrets.token_hex(3)}"
    s0 = load_settings().with_namespace(ns)
    spec = input_spec(a.partitions)
    assert ensure_topics(s0, [spec]).success
    topic = spec.name(ns)
    group = f"{ns}-rb.rbcount"
    try:
        with tempfile.TemporaryDirectory(prefix="bench-rebalance-") as tmp_s:
            tmp = Path(tmp_s)
            state_dir = str(tmp / "state")
            s = bench_settings(ns, state_dir)
            p = acked_producer(s.kafka)
            for k in range(a.keys):
                p.produce(topic, b"x", b"k%06d" % k)
                if k % 1000 == 0:
                    p.poll(0)
            assert p.flush(30) == 0
            members = [Member(n, ns, state_dir, strategy, a.partitions, tmp) for n in "AB"]
            wait_shared(s, group, 2, a.partitions, members)
            deadline = time.monotonic() + 60
            while not committed_all(s, group, topic, a.partitions):
                assert time.monotonic() < deadline, "the fill was not drained in 60 s"
                time.sleep(0.3)
            feeder = Feeder(s, topic, a.keys, a.rate)
            feeder.start()
            t_warm = time.monotonic()
            time.sleep(a.warm)
            c = Member("C", ns, state_dir, strategy, a.partitions, tmp)
            members.append(c)
            t_join = c.t_spawn
            t_stable = wait_shared(s, group, 3, a.partitions, members)
            time.sleep(max(0.0, a.after - (time.monotonic() - t_join)))
            t_end = time.monotonic()
            feeder.stop.set()
            feeder.join(60)
            deadline = time.monotonic() + 60
            while not committed_all(s, group, topic, a.partitions):
                assert time.monotonic() < deadline, "the flow was not drained in 60 s"
                time.sleep(0.3)
            figs = {mb.name: mb.stop() for mb in members}
            # the changelog, read from its start, holds exactly what was sent
            from streams.engine import StateTable

            t = StateTable("rbcounts", topic, a.partitions)
            t.topic = f"{ns}.state.rb.rbcounts"
            t.restore(s, list(range(a.partitions)))
            total = sum(int(v.split(b"|", 1)[0]) for v in t.data.values())
            sent = a.keys + feeder.sent
            assert len(t.data) == a.keys and total == sent, (
                f"{strategy}: the changelog counts {total} records of {len(t.data)} keys, "
                f"{sent} were sent")
    finally:
        delete_namespace_topics(s0)
    out: dict[str, Any] = {"strategy": strategy, "join_to_stable": t_stable - t_join,
                           "sent": sent}
    for name, f in figs.items():
        stamps = [(t, n) for t, n in f["stamps"]]
        # what happened between C's start and the end of the flow (A's and B's first
        # assignment, and the stops, lie outside)
        rs = [r for r in f["restores"] if t_join <= r[0] <= t_end]
        row: dict[str, Any] = {
            "revoked": sum(len(ps) for t, ps in f["revoked"] if t_join <= t <= t_end),
            "restored_parts": sum(len(r[1]) for r in rs), "restore_s": sum(r[2] for r in rs),
            "changelog": sum(r[3] for r in rs), "entries": sum(r[4] for r in rs)}
        if name == "C":
            first = min((t for t, _n in stamps if t >= t_join), default=float("nan"))
            row["first_batch_s"] = first - t_join
        else:
            row["pause_s"], at = longest_gap(stamps, t_join, t_end)
            row["pause_at_s"] = at - t_join
            row["baseline_gap_s"] = longest_gap(stamps, t_warm + 1.0, t_join)[0]
        out[name] = row
    out["C"]["assigned_at_s"] = min((r[0] for r in figs["C"]["restores"]), default=0.0) - t_join
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd")
    m = sub.add_parser("_member")
    m.add_argument("--ns", required=True)
    m.add_argument("--state-dir", required=True)
    m.add_argument("--strategy", required=True)
    m.add_argument("--partitions", type=int, required=True)
    m.add_argument("--out", required=True)
    ap.add_argument("--partitions", type=int, default=12)
    ap.add_argument("--keys", type=int, default=12_000)
    ap.add_argument("--rate", type=int, default=2000)
    ap.add_argument("--warm", type=float, default=6.0)
    ap.add_argument("--after", type=float, default=12.0)
    ap.add_argument("--repeat", type=int, default=1)
    a = ap.parse_args()
    if a.cmd == "_member":
        member(a)
        return
    print(f"bench_rebalance: {a.partitions} partitions, {a.keys} keys, {a.rate} records/s; "
          f"members A, B, then C joins; load {Path('/proc/loadavg').read_text().split()[:3]}",
          flush=True)
    for rep in range(a.repeat):
        rows = {}
        for strategy in (("range", "cooperative-sticky") if rep % 2 == 0
                         else ("cooperative-sticky", "range")):
            rows[strategy] = r = run_mode(strategy, a)
            print(f"run {rep + 1} {strategy:<18} C stable after {r['join_to_stable']:.1f} s, "
                  f"C's first batch after {r['C']['first_batch_s']:.1f} s; "
                  f"{r['sent']} records counted exactly", flush=True)
            for name in "ABC":
                x = r[name]
                pause = (f"pause {x['pause_s']:.2f} s from {x['pause_at_s']:.1f} s (baseline "
                         f"gap {x['baseline_gap_s']:.2f} s), "
                         f"revoked {x['revoked']}, " if name != "C" else "")
                print(f"    {name}: {pause}restored {x['restored_parts']} partition(s) in "
                      f"{x['restore_s']:.2f} s ({x['changelog']} changelog records, "
                      f"{x['entries']} snapshot entries)"
                      + (f", assigned at {x['assigned_at_s']:.1f} s" if name == "C" else ""),
                      flush=True)
        e, c = rows["range"], rows["cooperative-sticky"]
        pe = max(e["A"]["pause_s"], e["B"]["pause_s"])
        pc = max(c["A"]["pause_s"], c["B"]["pause_s"])
        print(f"run {rep + 1}: longest pause of an old member: eager {pe:.2f} s, cooperative "
              f"{pc:.2f} s (cooperative / eager = {pc / pe:.2f}); partitions restored by A+B: "
              f"eager {e['A']['restored_parts'] + e['B']['restored_parts']}, cooperative "
              f"{c['A']['restored_parts'] + c['B']['restored_parts']}; load "
              f"{Path('/proc/loadavg').read_text().split()[:3]}", flush=True)


if __name__ == "__main__":
    main()
