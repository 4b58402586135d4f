"""Events/s through the whole events pipeline, next to the same run's baselines.

    .venv/bin/python bench/bench_events.py [--quick] [--events N]         # burst
    .venv/bin/python bench/bench_events.py --rate R [--seconds T]         # sustained rate

Stages measured together (each a real process, as deployed; every stage of the
events path running):

    Publisher (kafka-python, this process) -> <ns>.events.raw
      -> `ioc worker --agents validate,aggregate,kpis,rules,tiles` -> <ns>.events,
         <ns>.rollups, <ns>.kpis, <ns>.alerts, <ns>.wall.tiles
      -> `ioc sink --tables events,rollups,kpi_values,alerts` (librdkafka + COPY)
         -> PostgreSQL

``--workers N`` runs N identical worker processes, each with every stage (the stage
groups share the partitions among them: the way to scale). ``bench/bench_scale.py``
measures the sustained rate of 1, 2 and 3 of them in one run (and, with ``--split``, the
pipeline split of earlier sessions, which was removed: docs/performance/events.md,
"N identical workers").

Burst (default): N events published as fast as the publisher can. Two figures:
N / (time from the first publish to the last event row visible in PostgreSQL), and
N / (time until every stage's consumer group has committed the end of its input, i.e.
every stage has caught up: aggregate, kpis, rules, tiles and all sinks). The second
includes the tail in which the aggregate stage releases held-back 'updated' rollups at
its designed rate limit, so neither figure is a sustained rate.

Sustained rate (``--rate R``): R*T events published on a schedule (chunks of
max(100, R/20) events, chunk k sent at k*chunk/R s) while the lag of every consumer
group is sampled (every ``--sample-s`` s, on clients kept open), then until every group
is at lag 0. Reports, per group, the largest lag, the lag when publishing ended and how
long after that it reached 0, and a verdict: the rate is SUSTAINED when the publisher
kept its schedule (ended <= 2 s behind) and, for every group, the lag did not grow (its
least value over the last third of publishing exceeds that over the middle third by at
most 0.5 s of input plus the commit interval: committed offsets make the lag a sawtooth
as high as the commit interval, which the 2 s samples alias into a slow wave), the lag at the end of publishing was at most 2 s of input plus the
stages' commit interval (lag is read from committed offsets, which trail processing by
up to ``streams.commit_every_s``), and the group was at 0 within 15 s after publishing
ended. Groups reading other topics than the events are held to the same numbers in
records.

Baselines (both modes), same events, same machine, same run:

    kafka:  aiokafka produce one record per event, then consume them all back
    copy:   binary COPY of the same rows into a table without the unique key

Uses a namespace of its own (topics and schema dropped at the end).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from psycopg import sql  # noqa: E402

from ioc.config import Settings, load_settings  # noqa: E402
from ioc.events import Event, encode_event  # noqa: E402
from ioc.kafka import aiokafka_kwargs, delete_namespace_topics, ensure_topics  # noqa: E402
from ioc.storage import connect, drop_schema, migrate  # noqa: E402


def make_events(n: int, run: str, *, storm: bool = False) -> list[dict]:
    """``n`` events of 500 sensors (3 kinds), each sensor reporting every 0.5 s of event time.

    Values follow a bounded random walk per sensor and metric (seeded), like real
    readings: the demo rules (pm25 > 55 for 10 min, speed falling 20 km/h per minute)
    fire now and then. ``storm``: a sawtooth (``i % 97``) instead, which makes nearly
    every traffic event raise or clear a speed_drop alert (~0.4 alerts per event), the
    worst case for the rules, tiles and alert sink.
    """
    import random

    rnd = random.Random(7)
    t0 = time.time() - 600
    types = [("air.quality", ("pm25", "pm10", "no2")), ("traffic.flow", ("intensity", "speed")),
             ("noise.level", ("laeq",))]
    level: dict[tuple[int, str], float] = {}
    out = []
    for i in range(n):
        t, metrics = types[i % 3]
        sensor = i % 500
        if storm:
            values = {m: float(i % 97) + 0.5 for m in metrics}
        else:
            values = {}
            for m in metrics:
                v = level.get((sensor, m), 20.0 + rnd.random() * 40) + rnd.gauss(0, 0.3)
                level[(sensor, m)] = v = min(120.0, max(0.0, v))
                values[m] = round(v, 2)
        out.append({"id": f"{run}-{i}", "source": "bench", "type": t, "entity": f"sensor-{sensor}",
                    "time": t0 + i * 0.001, "values": values,
                    "attributes": {"district": f"d{i % 12}"}})
    return out


async def kafka_baseline(s: Settings, payloads: list[tuple[bytes, bytes]]
                         ) -> tuple[float, dict[str, float]]:
    """Seconds to produce every event as its own record (acks=all) and consume them back,
    and the CPU seconds that took in this process (producer + consumer) and the broker."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from kafka.admin import NewTopic

    from ioc.kafka import admin_client

    topic = f"{s.namespace}.bench.baseline"
    admin = admin_client(s.kafka)
    admin.create_topics([NewTopic(topic, 4, 1)])
    admin.close()
    kw = aiokafka_kwargs(s.kafka)
    prod = AIOKafkaProducer(acks="all", enable_idempotence=True, linger_ms=5,
                            max_batch_size=256 * 1024, **kw)
    await prod.start()
    cons = AIOKafkaConsumer(topic, auto_offset_reset="earliest", enable_auto_commit=False,
                            group_id=None, max_poll_records=10000, **kw)
    t0 = time.perf_counter()
    cpu0, broker0 = time.process_time(), infra_cpu()["broker"]
    futs = [await prod.send(topic, value=v, key=k) for k, v in payloads]
    await asyncio.gather(*futs)
    await prod.stop()
    await cons.start()
    got = 0
    while got < len(payloads):
        for recs in (await cons.getmany(timeout_ms=1000, max_records=10000)).values():
            got += len(recs)
    dt = time.perf_counter() - t0
    cpu = {"client": time.process_time() - cpu0, "broker": infra_cpu()["broker"] - broker0}
    await cons.stop()
    return dt, cpu


def copy_baseline(s: Settings, rows: list[tuple]) -> tuple[float, dict[str, float]]:
    """Seconds to binary-COPY ``rows`` (5,000 per committed batch) into a plain table,
    and the CPU seconds of this process and of PostgreSQL meanwhile."""
    from ioc.events._storage import EVENTS_SINK

    cols, types = EVENTS_SINK.columns, EVENTS_SINK.types
    tbl = sql.Identifier(s.db_schema, "bench_copy")
    with connect(s.database) as c:
        c.execute(sql.SQL("create table {} (like {} including defaults)").format(
            tbl, sql.Identifier(s.db_schema, "events")))
        c.commit()
        import orjson
        from psycopg.types.json import set_json_dumps

        set_json_dumps(orjson.dumps, context=c)
        t0 = time.perf_counter()
        cpu0, pg0 = time.process_time(), infra_cpu()["postgresql"]
        for i in range(0, len(rows), 5000):
            with c.cursor().copy(sql.SQL("copy {} ({}) from stdin (format binary)").format(
                    tbl, sql.SQL(",").join(map(sql.Identifier, cols)))) as cp:
                cp.set_types(list(types))
                for r in rows[i:i + 5000]:
                    cp.write_row(r)
            c.commit()
        dt = time.perf_counter() - t0
        return dt, {"client": time.process_time() - cpu0,
                    "postgresql": infra_cpu()["postgresql"] - pg0}


def count_rows(s: Settings, table: str = "events") -> int:
    with connect(s.database, autocommit=True) as c:
        row = c.execute(sql.SQL("select count(*) from {}").format(
            sql.Identifier(s.db_schema, table))).fetchone()
        return int(row[0]) if row else 0


STAGES = ("validate", "aggregate", "kpis", "rules", "tiles")
SINKS = ("events", "rollups", "kpi_values", "alerts")


# the consumer groups (without "<ns>-") of the worker's stages, and with the sinks': those
# that must exist before lag is measured
STAGE_GROUPS = frozenset({"streams.validate", "streams.aggregate+kpis+rules", "streams.tiles"})
EXPECTED_GROUPS = frozenset({*STAGE_GROUPS, *(f"sink-{t}" for t in SINKS)})


class LagProbe:
    """Records not yet committed, per stage and sink consumer group of this namespace,
    on one admin client and one consumer kept open across samples.

    Every group named ``<ns>-...`` counts, over every partition of each topic it has
    committed offsets for (a partition without a commit counts from 0). ``sample``
    returns ``{"(groups missing)": 2**30}`` until all the expected groups (stages of the
    worker, one per sink) exist. ``inputs``: the topics (without ``<ns>.``) each group
    has committed offsets for; ``threads``: the clients' I/O threads.
    """

    def __init__(self, s: Settings, expected: frozenset[str] = EXPECTED_GROUPS) -> None:
        from kafka import KafkaConsumer

        from ioc.kafka import kafka_python_kwargs
        from ioc.kafka.clients import admin_client

        before = set(threading.enumerate())
        self.s = s
        self.expected = expected
        self.admin = admin_client(s.kafka)
        try:
            self.consumer = KafkaConsumer(**kafka_python_kwargs(s.kafka))
        except BaseException:
            self.admin.close()
            raise
        self.threads = [t for t in threading.enumerate() if t not in before]
        self.groups: list[str] = []
        self.inputs: dict[str, set[str]] = {}

    def __enter__(self) -> LagProbe:
        return self

    def __exit__(self, *exc: object) -> None:
        self.consumer.close()
        self.admin.close()

    def complete(self) -> bool:
        """Every expected group is in the list (other groups of the namespace count too)."""
        ns = self.s.namespace
        return {g.removeprefix(f"{ns}-") for g in self.groups} >= self.expected

    def sample(self) -> dict[str, int]:
        from kafka import TopicPartition

        ns = self.s.namespace
        if not self.complete():  # the list is kept once complete
            self.groups = sorted(str(g["group_id"]) for g in self.admin.list_groups()
                                 if str(g["group_id"]).startswith(f"{ns}-"))
            if not self.complete():
                return {"(groups missing)": 1 << 30}
        committed = self.admin.list_group_offsets(self.groups)
        tps: dict[str, list[Any]] = {}
        for group in self.groups:
            topics = {tp.topic for tp in committed.get(group, {})}
            if topics:
                tps[group] = [TopicPartition(t, p) for t in sorted(topics)
                              for p in sorted(self.consumer.partitions_for_topic(t) or ())]
                self.inputs[group.removeprefix(f"{ns}-")] = {
                    t.removeprefix(f"{ns}.") for t in topics}
        ends = self.consumer.end_offsets(list({tp for v in tps.values() for tp in v}))
        out: dict[str, int] = {}
        for group, group_tps in tps.items():
            total = 0
            for tp in group_tps:
                meta = committed[group].get(tp)
                total += ends[tp] - (meta.offset if meta is not None and meta.offset >= 0 else 0)
            out[group.removeprefix(f"{ns}-")] = total
        return out


def lag(s: Settings) -> dict[str, int]:
    """One ``LagProbe`` sample, on clients made for it and closed after."""
    with LagProbe(s) as probe:
        return probe.sample()


class LagSampler(threading.Thread):
    """Samples ``probe`` every ``every_s`` seconds, and at once when ``now`` is set, until
    ``stopping`` is set. ``samples``: (seconds from ``t0`` to the start of the sample,
    lag per group); ``cpu_s``: this thread's CPU seconds (not its clients' I/O threads)."""

    def __init__(self, probe: LagProbe, every_s: float, t0: float) -> None:
        super().__init__(name="lag-sampler", daemon=True)
        self.probe, self.every_s, self.t0 = probe, every_s, t0
        self.samples: list[tuple[float, dict[str, int]]] = []
        self.now, self.stopping = threading.Event(), threading.Event()
        self.cpu_s = 0.0

    def run(self) -> None:
        cpu0 = time.thread_time()
        while not self.stopping.is_set():
            self.now.clear()
            t = time.perf_counter() - self.t0
            try:
                self.samples.append((t, self.probe.sample()))
            except Exception as exc:  # e.g. a broker timeout: the next sample may do
                print(f"lag sample at {t:.1f} s failed: {exc!r}", file=sys.stderr)
            if os.environ.get("BENCH_TRACE") and self.samples:
                print(f"{t:6.1f} s lag {self.samples[-1][1]}")
            self.cpu_s = time.thread_time() - cpu0
            self.now.wait(self.every_s)


def records_written(s: Settings) -> dict[str, int]:
    """Records written so far to each topic of the namespace (sum of end offsets)."""
    from kafka import KafkaConsumer, TopicPartition

    from ioc.kafka import kafka_python_kwargs

    c = KafkaConsumer(**kafka_python_kwargs(s.kafka))
    try:
        topics = [t for t in c.topics() if t.startswith(f"{s.namespace}.")]
        tps = [TopicPartition(t, p) for t in topics for p in sorted(c.partitions_for_topic(t) or ())]
        out: dict[str, int] = {}
        for tp, end in c.end_offsets(tps).items():
            name = tp.topic.removeprefix(f"{s.namespace}.")
            out[name] = out.get(name, 0) + end
        return out
    finally:
        c.close()


def spawn(args: list[str], s: Settings, log: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, IOC_METRICS__ENABLED="false", IOC_NAMESPACE=s.namespace,
               IOC_KAFKA__BOOTSTRAP_SERVERS=",".join(s.kafka.bootstrap_servers),
               IOC_DATABASE__DSN=s.database.dsn.get_secret_value())
    return subprocess.Popen([sys.executable, "-m", "ioc", *args], env=env, cwd=ROOT,
                            stdout=open(log, "wb"), stderr=subprocess.STDOUT)


def _stat_cpu(stat: Path) -> float:
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User+system CPU seconds a process has used (Linux /proc)."""
    return _stat_cpu(Path(f"/proc/{pid}/stat"))


def threads_cpu(threads: list[threading.Thread]) -> float:
    """User+system CPU seconds used so far by these live threads of this process."""
    return sum(_stat_cpu(Path(f"/proc/self/task/{t.native_id}/stat")) for t in threads
               if t.is_alive())


def infra_cpu() -> dict[str, float]:
    """CPU seconds used so far by the broker (java ... kafka.Kafka) and all postgres processes."""
    out = {"broker": 0.0, "postgresql": 0.0}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes()
            comm = (d / "comm").read_text().strip()
            cpu = cpu_seconds(int(d.name))
        except (OSError, ValueError):
            continue
        if b"kafka.Kafka" in cmd:
            out["broker"] += cpu
        elif comm == "postgres":
            out["postgresql"] += cpu
    return out


Procs = dict[str, "subprocess.Popen[bytes]"]


Layout = dict[str, tuple[str, ...]]  # worker process name -> its stages


def layout(workers: int = 1) -> Layout:
    """``workers`` identical worker processes, every stage in each."""
    if workers == 1:
        return {"worker": STAGES}
    return {f"worker {i + 1}": STAGES for i in range(workers)}


@contextmanager
def stages_running(s: Settings, logdir: Path, *, workers: int = 1, agents: Layout | None = None,
                   sink: bool = True) -> Iterator[Procs]:
    """The worker processes (``layout(workers)``, or ``agents``) and the sink, as
    deployed, by name; terminated at exit."""
    procs = {name: spawn(["worker", "--agents", ",".join(w)], s, logdir / f"worker{i}.log")
             for i, (name, w) in enumerate((agents or layout(workers)).items())}
    if sink:
        procs["sink"] = spawn(["sink", "--tables", ",".join(SINKS), "--batch-rows", "5000",
                               "--linger", "0.2"], s, logdir / "sink.log")
    try:
        yield procs
    finally:
        for p in procs.values():
            p.terminate()
        for p in procs.values():
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()


def check_alive(procs: Procs, logdir: Path, what: str = "a stage died") -> None:
    if any(p.poll() is not None for p in procs.values()):
        raise SystemExit(f"{what}; see {logdir}")


def warm_up(s: Settings, pub: Any, procs: Procs, logdir: Path) -> None:
    """Wait until one event has gone all the way to a row (group joins, connections)."""
    pub.send_many(make_events(1, "warm"))
    end = time.monotonic() + 120
    while count_rows(s) < 1:
        check_alive(procs, logdir, "pipeline did not start")
        if time.monotonic() > end:
            raise SystemExit(f"pipeline did not start; see {logdir}")
        time.sleep(0.2)


def stage_cpu(procs: Procs) -> dict[str, float]:
    """CPU seconds used so far by each stage process, the broker and PostgreSQL."""
    return {**{name: cpu_seconds(p.pid) for name, p in procs.items()}, **infra_cpu()}


def pipeline(s: Settings, events: list[dict], logdir: Path, *, workers: int = 1
             ) -> tuple[float, float, float, dict[str, float]]:
    """(seconds publish->last durable event row, seconds until every stage caught up,
    seconds the publisher alone took, CPU seconds per process during the measured run)."""
    from ioc.publish import Publisher

    with stages_running(s, logdir, workers=workers) as procs:
        with Publisher(s, source="bench") as pub:
            warm_up(s, pub, procs, logdir)
            cpu0 = stage_cpu(procs)
            pub0 = time.process_time()
            t0 = time.perf_counter()
            for i in range(0, len(events), 5000):
                res = pub.send_many(events[i:i + 5000])
                assert not res.rejected, res.rejected[:3]
            t_pub = time.perf_counter() - t0
            cpu_pub = time.process_time() - pub0
        want = len(events) + 1
        while (n := count_rows(s)) < want:
            check_alive(procs, logdir)
            if time.perf_counter() - t0 > 600:
                raise SystemExit(f"only {n} of {want} rows after 600 s")
            time.sleep(0.05)
        elapsed = time.perf_counter() - t0
        caught: dict[str, float] = {}  # group -> last time it was seen behind
        while True:
            left = lag(s)
            if os.environ.get("BENCH_TRACE"):
                print(f"{time.perf_counter() - t0:6.1f} s lag {left}")
            for g, n_left in left.items():
                if n_left or g not in caught:
                    caught[g] = time.perf_counter() - t0
            if left and not any(left.values()):
                break
            check_alive(procs, logdir)
            if time.perf_counter() - t0 > 900:
                raise SystemExit(f"records still not processed after 900 s: {left}")
            time.sleep(0.1)
        drained = time.perf_counter() - t0
        print("caught up after (s): " + ", ".join(f"{g} {t:.1f}" for g, t in
                                                   sorted(caught.items(), key=lambda x: x[1])))
        cpu = {"publisher": cpu_pub,
               **{k: v - cpu0[k] for k, v in stage_cpu(procs).items()}}
        return elapsed, drained, t_pub, cpu


LATE_MAX_S = 2.0  # the publisher may end at most this far behind its schedule
LAG_MAX_S = 2.0  # lag at the end of publishing: at most this many seconds of input, plus
# the stages' commit interval (the lag is measured on committed offsets, which trail what
# a stage has processed by up to streams.commit_every_s by design)
GROWTH_MAX_S = 0.5  # least lag of the last third of publishing minus that of the middle
# third, plus the commit interval: committed offsets make the lag a sawtooth as high as the
# commit interval, and samples every 2 s alias it into a slow wave of that height (seen in
# validate's series); a backlog that grows outruns it within a 60 s run
DRAIN_MAX_S = 15.0  # every group back at lag 0 within this long after publishing ended
DRAIN_TIMEOUT_S = 300.0


@dataclass
class RateRun:
    """What ``at_rate`` measured; times in seconds from the first scheduled chunk."""

    rate: float
    n: int
    chunk: int
    t_pub: float  # the last chunk acknowledged
    max_late: float  # most a chunk was sent behind its schedule
    t_done: float | None  # every group at lag 0 (None: not within DRAIN_TIMEOUT_S)
    samples: list[tuple[float, dict[str, int]]]
    inputs: dict[str, set[str]]  # group -> topics it reads
    silent: list[str]  # groups that committed no offsets (no input seen): not judged
    raw_per_record: float  # events per record of events.raw (validate's lag is in these)
    cpu: dict[str, float]  # CPU seconds from publish start to t_done

    @property
    def behind_end(self) -> float:
        return max(0.0, self.t_pub - self.n / self.rate)


def at_rate(s: Settings, events: list[dict], rate: float, logdir: Path, *,
            sample_s: float = 2.0, workers: int = 1) -> RateRun:
    """Publish ``events`` at ``rate`` events/s while sampling every group's lag, then wait
    until every group is at lag 0 (at most DRAIN_TIMEOUT_S)."""
    from ioc.publish import Publisher

    with stages_running(s, logdir, workers=workers) as procs, LagProbe(s) as probe, \
            Publisher(s, source="bench") as pub:
        warm_up(s, pub, procs, logdir)
        settle(probe, procs, logdir)
        return rate_step(s, events, rate, procs, probe, pub, logdir, sample_s=sample_s)


def settle(probe: LagProbe, procs: Procs, logdir: Path, timeout_s: float = 60.0) -> None:
    """Wait until every group of ``probe`` exists and is at lag 0 (after the warm-up)."""
    end = time.monotonic() + timeout_s
    while (left := probe.sample()) and any(left.values()):
        check_alive(procs, logdir)
        if time.monotonic() > end:
            raise SystemExit(f"groups not settled after the warm-up event: {left}")
        time.sleep(0.5)


def rate_step(s: Settings, events: list[dict], rate: float, procs: Procs, probe: LagProbe,
              pub: Any, logdir: Path, *, sample_s: float = 2.0,
              cpu: Callable[[Procs], dict[str, float]] | None = None) -> RateRun:
    """``at_rate`` on running ``procs`` (settled): publish ``events`` through ``pub`` at
    ``rate``, sample the lag of ``probe``'s groups, wait until all are at 0. ``cpu``: CPU
    seconds so far by process (default ``stage_cpu``)."""
    cpu_of = cpu or stage_cpu
    n, chunk = len(events), max(100, int(rate // 20))
    raw0 = records_written(s).get("events.raw", 0)
    cpu0, pub0 = cpu_of(procs), time.process_time()
    io0 = threads_cpu(probe.threads)
    t0 = time.perf_counter()
    sampler = LagSampler(probe, sample_s, t0)
    sampler.start()
    try:
        max_late = 0.0
        for i in range(0, n, chunk):
            late = time.perf_counter() - (t0 + i / rate)
            if late < 0:
                time.sleep(-late)
            max_late = max(max_late, late)
            res = pub.send_many(events[i:i + chunk])
            assert not res.rejected, res.rejected[:3]
        t_pub = time.perf_counter() - t0
        sampler.now.set()  # a sample at the end of publishing
        t_done: float | None = None
        while t_done is None and time.perf_counter() - t0 < t_pub + DRAIN_TIMEOUT_S:
            check_alive(procs, logdir)
            t, last = sampler.samples[-1] if sampler.samples else (0.0, {})
            if t >= t_pub and last and not any(last.values()):
                t_done = t
            time.sleep(0.1)
        cpu1, pub1 = cpu_of(procs), time.process_time()
        io1 = threads_cpu(probe.threads)
    finally:
        sampler.stopping.set()
        sampler.now.set()
        sampler.join()
    cpu_sampler = sampler.cpu_s + io1 - io0
    used = {"publisher": pub1 - pub0 - cpu_sampler, "lag sampler": cpu_sampler,
            **{k: v - cpu0[k] for k, v in cpu1.items()}}
    raw = records_written(s).get("events.raw", 0) - raw0
    silent = [g for g in (g.removeprefix(f"{s.namespace}-") for g in probe.groups)
              if g not in probe.inputs]
    return RateRun(rate, n, chunk, t_pub, max_late, t_done, sampler.samples, probe.inputs,
                   silent, n / raw if raw else 1.0, used)


def report_rate(r: RateRun, sample_s: float, commit_s: float) -> list[str]:
    """Print the lag per group, CPU per event and the SUSTAINED verdict of ``r``; return
    why it was not sustained (empty: sustained)."""
    late_end = r.behind_end
    bound, grow_max = (LAG_MAX_S + commit_s) * r.rate, (GROWTH_MAX_S + commit_s) * r.rate
    print(f"RATE {r.rate:,.0f} ev/s for {r.n / r.rate:.0f} s: {r.n:,} events in chunks of "
          f"{r.chunk:,}; lag sampled every {sample_s:g} s")
    print(f"publisher: achieved {r.n / r.t_pub:,.0f} ev/s ({r.t_pub:.2f} s); most behind "
          f"schedule {r.max_late:.2f} s; ended {late_end:.2f} s behind")
    after = [(t, lags) for t, lags in r.samples if t >= r.t_pub]
    groups = sorted({g for _, lags in r.samples for g in lags if not g.startswith("(")})
    fails = []
    if late_end > LATE_MAX_S:
        fails.append(f"the publisher could not keep the rate (ended {late_end:.1f} s behind)")
    print(f"{'consumer group (input)':<40}{'max lag':>20}{'at end of publishing':>24}"
          f"{'at 0 after':>12}{'growth':>20}")
    during = [lags for t, lags in r.samples if t < r.t_pub]
    thirds = (during[len(during) // 3: 2 * len(during) // 3], during[2 * len(during) // 3:])
    for g in groups:
        ins = r.inputs.get(g, set())
        events_in = bool(ins) and ins <= {"events", "events.raw"}
        scale = r.raw_per_record if "events.raw" in ins else 1.0

        def fmt(records: int, scale: float = scale, events_in: bool = events_in) -> str:
            if not events_in:
                return f"{records:,} rec"
            return f"{records * scale:,.0f} ev {records * scale / r.rate:5.2f} s"

        series = [lags.get(g, 0) for _, lags in r.samples]
        at_end = after[0][1].get(g, 0) if after else None
        drained = None
        if after and not after[-1][1].get(g, 0):
            behind = [i for i, (_, lags) in enumerate(after) if lags.get(g, 0)]
            drained = after[behind[-1] + 1 if behind else 0][0] - r.t_pub
        mid, last = ([lags.get(g, 0) for lags in part] for part in thirds)
        growth = (min(last) - min(mid)) if mid and last else None
        name = f"{g} ({', '.join(sorted(ins))})"
        print(f"{name:<40}{fmt(max(series, default=0)):>20}"
              f"{'-' if at_end is None else fmt(at_end):>24}"
              f"{'never' if drained is None else f'{drained:.1f} s':>12}"
              f"{'-' if growth is None else fmt(round(growth)):>20}")
        if growth is None or growth * scale > grow_max:
            fails.append(f"{g}: lag grew by {'-' if growth is None else fmt(round(growth))} "
                         f"(least lag of the last third of publishing minus the middle third) > "
                         f"{grow_max:,.0f}")
        if at_end is None or at_end * scale > bound:
            fails.append(f"{g}: lag at end of publishing {'-' if at_end is None else fmt(at_end)}"
                         f" > {bound:,.0f}")
        if drained is None or drained > DRAIN_MAX_S:
            fails.append(f"{g}: " + (f"not at lag 0 within {DRAIN_TIMEOUT_S:.0f} s"
                                     if drained is None else f"at lag 0 only {drained:.1f} s"
                                     " after publishing ended"))
    if r.silent:
        print(f"no offsets committed, not judged: {', '.join(r.silent)}")
    for g in groups:  # the backlog over time, for the events stages
        if r.inputs.get(g, set()) & {"events", "events.raw"}:
            scale = r.raw_per_record if "events.raw" in r.inputs[g] else 1.0
            print(f"lag of {g} (s of input, every {sample_s:g} s): " + " ".join(
                f"{lags.get(g, 0) * scale / r.rate:.1f}" for t, lags in r.samples
                if t < r.t_pub + DRAIN_MAX_S))
    if "events.raw" in {t for ins in r.inputs.values() for t in ins}:
        print(f"(events.raw carries {r.raw_per_record:,.0f} events a record: validate's lag "
              "is in those events; 'rec' = records of topics other than events)")
    wall = r.t_done if r.t_done is not None else r.t_pub + DRAIN_TIMEOUT_S
    print(f"CPU per event (µs, publish start to every group at 0, {wall:.1f} s): "
          f"{per_event(r.cpu, r.n)} (total {sum(r.cpu.values()) / r.n * 1e6:.0f}; "
          f"{sum(r.cpu.values()) / wall:.2f} of {os.cpu_count()} cores busy)")
    print(f"criterion: publisher ends <= {LATE_MAX_S:g} s behind schedule; for every group "
          f"(lag on committed offsets; for groups not reading events the same numbers in "
          f"records): lag at end of publishing <= {LAG_MAX_S:g} s of input + the "
          f"{commit_s:g} s commit interval = {bound:,.0f} events; lag growth (least lag of the "
          f"last third of publishing minus the middle third) <= {GROWTH_MAX_S:g} s of input + "
          f"the commit interval = {grow_max:,.0f}; at lag 0 <= {DRAIN_MAX_S:g} s after publishing ended (seen "
          f"by samples every {sample_s:g} s)")
    print(f"SUSTAINED {r.rate:,.0f} ev/s: " + ("yes" if not fails else
                                               "no: " + "; ".join(fails)))
    print("target >= 10,000 ev/s with every stage running: "
          + (f"R = {r.rate:,.0f} >= 10,000, {'MET' if not fails else 'NOT MET'}"
             if r.rate >= 10_000 else f"R = {r.rate:,.0f} < 10,000, not tested by this run"))
    return fails


def per_event(cpu: dict[str, float], n: int) -> str:
    return ", ".join(f"{k} {v / n * 1e6:.0f}" for k, v in cpu.items())


def print_results_rows(s: Settings, n: int, storm: bool) -> None:
    """Rows in the other tables, and records written per event to each topic."""
    print(f"values: {'sawtooth (alert storm)' if storm else 'random walk'}; rows "
          f"after: events {count_rows(s):,}, rollups {count_rows(s, 'rollups'):,}, kpi_values "
          f"{count_rows(s, 'kpi_values'):,}, alerts {count_rows(s, 'alerts'):,}")
    written = records_written(s)
    print("records written per event: " + ", ".join(
        f"{t} {k / n:.3f}" for t, k in sorted(written.items(), key=lambda x: -x[1])
        if k and t != "bench.baseline"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="burst: 50,000 events instead of 300,000")
    ap.add_argument("--events", type=int, default=None, help="burst: number of events")
    ap.add_argument("--rate", type=float, default=None, metavar="R",
                    help="sustained-rate mode instead of the burst: publish R events/s for "
                         "--seconds, sample every group's lag, and say whether R is sustained "
                         "(the baselines still run first, with the same R*T events)")
    ap.add_argument("--seconds", type=float, default=60.0, metavar="T",
                    help="with --rate: seconds of publishing, R*T events (default 60)")
    ap.add_argument("--sample-s", type=float, default=2.0,
                    help="with --rate: seconds between lag samples (default 2.0; each sample "
                         "costs CPU on the measured machine)")
    ap.add_argument("--logdir", default="/tmp/ioc-bench-events", help="stage logs")
    ap.add_argument("--alert-storm", action="store_true",
                    help="sawtooth values: nearly every traffic event raises or clears an alert")
    ap.add_argument("--workers", type=int, default=1, metavar="N",
                    help="N identical worker processes, each with every stage (default 1)")
    a = ap.parse_args()
    if a.rate is not None and (a.quick or a.events):
        ap.error("--rate publishes R * --seconds events; --quick and --events are for the burst")
    if a.rate is not None and (a.rate <= 0 or a.seconds <= 0 or a.sample_s <= 0):
        ap.error("--rate, --seconds and --sample-s must be > 0")
    n = int(a.rate * a.seconds) if a.rate is not None else (
        a.events or (50_000 if a.quick else 300_000))
    if n < 1:
        ap.error("no events to publish")
    if a.workers < 1:
        ap.error("--workers must be >= 1")
    logdir = Path(a.logdir)
    logdir.mkdir(parents=True, exist_ok=True)
    s = load_settings().with_namespace(f"bench{secrets.token_hex(3)}")
    try:
        assert ensure_topics(s).success
        migrate(s)
        run = secrets.token_hex(3)
        events = make_events(n, run, storm=a.alert_storm)
        canon = [Event(**e) for e in events]
        payloads = [(e.entity.encode(), encode_event(e)) for e in canon]
        rows = [(datetime.fromtimestamp(e.time, UTC), e.source, e.id, e.type, e.entity,
                 e.values, e.attributes) for e in canon]
        print(f"events: {n:,}  (~{sum(len(v) for _, v in payloads) // n} bytes each)  "
              f"cores: {os.cpu_count()}  load: {os.getloadavg()[0]:.1f}")
        t_kafka, cpu_kafka = asyncio.run(kafka_baseline(s, payloads))
        t_copy, cpu_copy = copy_baseline(s, rows)
        r_kafka, r_copy = n / t_kafka, n / t_copy

        def baselines() -> None:
            print(f"baseline kafka produce+consume (aiokafka, 1 record/event): "
                  f"{r_kafka:>10,.0f} ev/s")
            print(f"baseline COPY binary, 5k rows/commit, no unique key:      "
                  f"{r_copy:>10,.0f} rows/s")
            print(f"baseline CPU per event (µs): kafka hop {per_event(cpu_kafka, n)} (total "
                  f"{sum(cpu_kafka.values()) / n * 1e6:.0f}); COPY {per_event(cpu_copy, n)}")

        if a.rate is not None:
            baselines()
            r = at_rate(s, events, a.rate, logdir, sample_s=a.sample_s, workers=a.workers)
            report_rate(r, a.sample_s, s.streams.commit_every_s)
            print(f"ratios: rate/kafka = {a.rate / r_kafka:.2f}   rate/copy = "
                  f"{a.rate / r_copy:.2f}   (the rate asked for, next to the baselines)")
            print_results_rows(s, n, a.alert_storm)
            print(f"load after: {os.getloadavg()[0]:.1f}")
            return
        t_pipe, t_all, t_pub, cpu = pipeline(s, events, logdir, workers=a.workers)
        r_pipe, r_all = n / t_pipe, n / t_all
        baselines()
        print(f"publisher alone (validate + kafka-python, acks=all):      {n / t_pub:>10,.0f} ev/s")
        print(f"PIPELINE publish -> validate -> events -> sink -> rows:   {r_pipe:>10,.0f} ev/s")
        print("PIPELINE every stage caught up (aggregate, kpis, rules,")
        print(f"         tiles, rollup/kpi/alert sinks):                  {r_all:>10,.0f} ev/s")
        print(f"CPU per event by stage (µs): {per_event(cpu, n)}"
              f"  (until every stage caught up; 2 cores = 200 µs/event at 10k ev/s); "
              f"load after: {os.getloadavg()[0]:.1f}")
        print_results_rows(s, n, a.alert_storm)
        print(f"ratios: pipeline/kafka = {r_pipe / r_kafka:.2f}   pipeline/copy = "
              f"{r_pipe / r_copy:.2f}   all-stages/kafka = {r_all / r_kafka:.2f}")
        print(f"target 10,000 ev/s: rows {'MET' if r_pipe >= 10_000 else 'NOT MET'}, "
              f"every stage {'MET' if r_all >= 10_000 else 'NOT MET'}")
    finally:
        delete_namespace_topics(s)
        drop_schema(s)


if __name__ == "__main__":
    main()
