"""Sustained events/s from publish to durable rows, next to the same run's baselines.

    .venv/bin/python bench/bench_events.py [--quick] [--events N]

Stages measured together (each a real process, as deployed; every stage of the
events path running):

    Publisher (kafka-python, this process) -> <ns>.events.raw
      -> `ioc worker --agents validate,aggregate,kpis,rules,tiles` -> <ns>.events,
         <ns>.rollups, <ns>.kpis, <ns>.alerts, <ns>.wall.tiles
      -> `ioc sink --tables events,rollups,kpi_values,alerts` (aiokafka + COPY)
         -> PostgreSQL

Two figures: N / (time from the first publish to the last event row visible in
PostgreSQL), and N / (time until every stage's consumer group has committed the end of
its input, i.e. every stage has caught up: aggregate, kpis, rules, tiles and all sinks).

Baselines, same events, same machine, same run:

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
import time
from datetime import UTC, datetime
from pathlib import Path

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


def lag(s: Settings) -> dict[str, int]:
    """Records not yet committed, per stage and sink consumer group of this namespace.

    Every group named ``<ns>-...`` counts, over every partition of each topic it has
    committed offsets for (a partition without a commit counts from 0). Raises until all
    the expected groups (stages of the worker, one per sink) exist.
    """
    from kafka import KafkaConsumer, TopicPartition

    from ioc.kafka import kafka_python_kwargs
    from ioc.kafka.clients import admin_client

    admin = admin_client(s.kafka)
    c = KafkaConsumer(**kafka_python_kwargs(s.kafka))
    try:
        groups = [g["group_id"] for g in admin.list_groups()]
        groups = [g for g in groups if str(g).startswith(f"{s.namespace}-")]
        if len(groups) < 3 + len(SINKS):  # validate, aggregate+kpis+rules, tiles, sinks
            return {"(groups missing)": 1 << 30}
        out: dict[str, int] = {}
        for group in groups:
            total = 0
            committed = admin.list_group_offsets([group]).get(group, {})
            topics = {tp.topic for tp in committed}
            tps = [TopicPartition(t, p) for t in topics
                   for p in sorted(c.partitions_for_topic(t) or ())]
            ends = c.end_offsets(tps)
            for tp in tps:
                meta = committed.get(tp)
                total += ends[tp] - (meta.offset if meta is not None and meta.offset >= 0 else 0)
            if topics:
                out[group.removeprefix(f"{s.namespace}-")] = total
        return out
    finally:
        c.close()
        admin.close()


def spawn(args: list[str], s: Settings, log: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, IOC_NAMESPACE=s.namespace,
               IOC_KAFKA__BOOTSTRAP_SERVERS=",".join(s.kafka.bootstrap_servers),
               IOC_DATABASE__DSN=s.database.dsn.get_secret_value())
    return subprocess.Popen([sys.executable, "-m", "ioc", *args], env=env, cwd=ROOT,
                            stdout=open(log, "wb"), stderr=subprocess.STDOUT)


def cpu_seconds(pid: int) -> float:
    """User+system CPU seconds a process has used (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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


def pipeline(s: Settings, events: list[dict], logdir: Path, *, split: bool = False
             ) -> tuple[float, float, float, dict[str, float]]:
    """(seconds publish->last durable event row, seconds until every stage caught up,
    seconds the publisher alone took, CPU seconds per process during the measured run)."""
    from ioc.publish import Publisher

    workers = ([STAGES[:1], STAGES[1:]] if split else [STAGES])
    procs = [*(spawn(["worker", "--agents", ",".join(w)], s, logdir / f"worker{i}.log")
               for i, w in enumerate(workers)),
             spawn(["sink", "--tables", ",".join(SINKS), "--batch-rows", "5000",
                    "--linger", "0.2"], s, logdir / "sink.log")]
    try:
        with Publisher(s, source="bench") as pub:
            # Warm up: wait until one event has gone all the way (group joins, connections).
            warm = make_events(1, "warm")
            pub.send_many(warm)
            end = time.monotonic() + 120
            while count_rows(s) < 1:
                if time.monotonic() > end or any(p.poll() is not None for p in procs):
                    raise SystemExit(f"pipeline did not start; see {logdir}")
                time.sleep(0.2)
            cpu0 = [cpu_seconds(p.pid) for p in procs]
            infra0 = infra_cpu()
            pub0 = time.process_time()
            t0 = time.perf_counter()
            for i in range(0, len(events), 5000):
                res = pub.send_many(events[i:i + 5000])
                assert not res.rejected, res.rejected[:3]
            t_pub = time.perf_counter() - t0
            cpu_pub = time.process_time() - pub0
        want = len(events) + 1
        while (n := count_rows(s)) < want:
            if any(p.poll() is not None for p in procs):
                raise SystemExit(f"a stage died; see {logdir}")
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
            if any(p.poll() is not None for p in procs):
                raise SystemExit(f"a stage died; see {logdir}")
            if time.perf_counter() - t0 > 900:
                raise SystemExit(f"records still not processed after 900 s: {left}")
            time.sleep(0.1)
        drained = time.perf_counter() - t0
        print("caught up after (s): " + ", ".join(f"{g} {t:.1f}" for g, t in
                                                   sorted(caught.items(), key=lambda x: x[1])))
        cpu = {"publisher": cpu_pub,
               **{name: cpu_seconds(p.pid) - c0
                  for name, p, c0 in zip((*(("worker",) if not split else
                                              ("worker validate", "worker others")), "sink"),
                                            procs, cpu0, strict=True)},
               **{k: v - infra0[k] for k, v in infra_cpu().items()}}
        return elapsed, drained, t_pub, cpu
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="50,000 events instead of 300,000")
    ap.add_argument("--events", type=int, default=None, help="number of events")
    ap.add_argument("--logdir", default="/tmp/ioc-bench-events", help="stage logs")
    ap.add_argument("--alert-storm", action="store_true",
                    help="sawtooth values: nearly every traffic event raises or clears an alert")
    ap.add_argument("--split-worker", action="store_true",
                    help="two worker processes: validate, and aggregate+kpis+rules+tiles")
    a = ap.parse_args()
    n = a.events or (50_000 if a.quick else 300_000)
    logdir = Path(a.logdir)
    logdir.mkdir(parents=True, exist_ok=True)
    s = load_settings().with_namespace(f"bench{secrets.token_hex(3)}")
    assert ensure_topics(s).success
    migrate(s)
    try:
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
        t_pipe, t_all, t_pub, cpu = pipeline(s, events, logdir, split=a.split_worker)
        r_kafka, r_copy, r_pipe, r_all = n / t_kafka, n / t_copy, n / t_pipe, n / t_all
        print(f"baseline kafka produce+consume (aiokafka, 1 record/event): {r_kafka:>10,.0f} ev/s")
        print(f"baseline COPY binary, 5k rows/commit, no unique key:      {r_copy:>10,.0f} rows/s")
        print("baseline CPU per event (µs): kafka hop " + ", ".join(
            f"{k} {v / n * 1e6:.0f}" for k, v in cpu_kafka.items())
              + f" (total {sum(cpu_kafka.values()) / n * 1e6:.0f}); COPY " + ", ".join(
            f"{k} {v / n * 1e6:.0f}" for k, v in cpu_copy.items()))
        print(f"publisher alone (validate + kafka-python, acks=all):      {n / t_pub:>10,.0f} ev/s")
        print(f"PIPELINE publish -> validate -> events -> sink -> rows:   {r_pipe:>10,.0f} ev/s")
        print("PIPELINE every stage caught up (aggregate, kpis, rules,")
        print(f"         tiles, rollup/kpi/alert sinks):                  {r_all:>10,.0f} ev/s")
        print("CPU per event by stage (µs): " + ", ".join(
            f"{k} {v / n * 1e6:.0f}" for k, v in cpu.items())
              + f"  (until every stage caught up; 2 cores = 200 µs/event at 10k ev/s); "
              f"load after: {os.getloadavg()[0]:.1f}")
        print(f"values: {'sawtooth (alert storm)' if a.alert_storm else 'random walk'}; rows "
              f"after: rollups {count_rows(s, 'rollups'):,}, kpi_values "
              f"{count_rows(s, 'kpi_values'):,}, alerts {count_rows(s, 'alerts'):,}")
        print(f"ratios: pipeline/kafka = {r_pipe / r_kafka:.2f}   pipeline/copy = "
              f"{r_pipe / r_copy:.2f}   all-stages/kafka = {r_all / r_kafka:.2f}")
        print(f"target 10,000 ev/s: rows {'MET' if r_pipe >= 10_000 else 'NOT MET'}, "
              f"every stage {'MET' if r_all >= 10_000 else 'NOT MET'}")
    finally:
        delete_namespace_topics(s)
        drop_schema(s)


if __name__ == "__main__":
    main()
