"""How fast the events sink drains a backlog, next to the same run's baselines.

    .venv/bin/python bench/bench_sink_drain.py [--quick] [--events N] [--incoming R]
        [--sink-args "--batch-rows 20000"] [--py-spy FILE]

What a database outage leaves behind: N validated events already on ``<ns>.events``
(produced exactly as validate writes them: key = entity, value = ``encode_event``,
header ``ioc.raw``), and, while the sink drains them, ``--incoming`` R events/s more
(default 2,000, the fault suite's rate; 0 for a clean drain). Then ``ioc sink --tables
events`` (the real CLI, a subprocess, defaults unless ``--sink-args``) is started and
the committed offsets of its group are read every 0.25 s. Figures:

    sink drain      rows/s from its first offset commit until its committed offsets
                    reach everything published 1 s earlier (caught up), gross (backlog
                    + incoming) and net (backlog only: gross - R)
    raw consume     baseline (a): the same topic read with confluent-kafka (records/s,
                    no database, no decoding)
    direct COPY     baseline (b): the same rows (the spec's ``to_rows`` of the same
                    records, built in memory beforehand, in its ``copy_types``)
                    binary-COPYed in committed batches of ``--copy-batch`` rows
                    into a table identical to ``events`` (unique key and indexes
                    included); rows/s
    to_rows         the events spec's ``to_rows`` alone over the same records (µs/row)

and the ratios sink/raw consume, sink/COPY; CPU seconds per 1,000 rows of the sink
process, of the PostgreSQL backend serving it (found by application_name), of the
baseline COPY's client and backend; the load average before and after. The
namespace's topics and schema are dropped at the end (``--keep`` keeps them).

``--py-spy FILE`` records the sink process with py-spy (raw folded stacks, 100 Hz)
during the drain. ``--sink-root DIR`` runs the sink of another checkout (``git worktree
add DIR COMMIT``), for before/after runs alternated on the same machine.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shlex
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from psycopg import sql  # noqa: E402

from ioc.config import Settings, load_settings  # noqa: E402
from ioc.events import Event, encode_event  # noqa: E402
from ioc.events._storage import EVENTS_SINK  # noqa: E402
from ioc.kafka import delete_namespace_topics, ensure_topics  # noqa: E402
from ioc.storage import connect, drop_schema, migrate  # noqa: E402

TYPES = [("air.quality", ("pm25", "pm10", "no2")), ("traffic.flow", ("intensity", "speed")),
         ("noise.level", ("laeq",))]


def log(msg: str) -> None:
    print(f"[drain {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def event_record(run: str, i: int, t0: float) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    """Event ``i`` as validate writes it to ``<ns>.events``: (key, value, headers)."""
    t, metrics = TYPES[i % 3]
    sensor = i % 500
    e = Event(id=f"{run}-{i}", source="bench", type=t, entity=f"sensor-{sensor}",
              time=t0 + i * 0.0005, values={m: 20.0 + (i * 7 + k) % 400 / 10
                                            for k, m in enumerate(metrics)},
              attributes={"district": f"d{i % 12}"})
    return e.entity.encode(), encode_event(e), [("ioc.raw", b"%d:%d:0" % (i % 4, i))]


def _stat_cpu(pid: int | str) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_of(pid: int | None) -> float:
    if pid is None:
        return 0.0
    try:
        return _stat_cpu(pid)
    except (OSError, ValueError):
        return 0.0


def loadavg() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def producer(s: Settings) -> Any:
    from confluent_kafka import Producer

    return Producer({"bootstrap.servers": ",".join(s.kafka.bootstrap_servers), "acks": "all",
                     "enable.idempotence": True, "linger.ms": 20, "batch.size": 1 << 20,
                     "queue.buffering.max.messages": 500_000,
                     "partitioner": "murmur2_random"})


def produce(p: Any, topic: str, records: list[tuple[bytes, bytes, list[tuple[str, bytes]]]]
            ) -> None:
    for k, v, h in records:
        while True:
            try:
                p.produce(topic, value=v, key=k, headers=h)
                break
            except BufferError:
                p.poll(0.05)
    left = p.flush(60)
    if left:
        raise RuntimeError(f"{left} records not acknowledged")


class Incoming(threading.Thread):
    """Publishes ``rate`` events/s (in 50 ms chunks) until stopped; ``sent`` counts them."""

    def __init__(self, s: Settings, topic: str, run: str, rate: float, first: int, t0: float
                 ) -> None:
        super().__init__(daemon=True, name="incoming")
        self.p, self.topic, self.run_id, self.rate = producer(s), topic, run, rate
        self.first, self.t0 = first, t0
        self.sent = 0
        self.history: list[tuple[float, int]] = []  # (monotonic, sent so far)
        self.halt = threading.Event()

    def run(self) -> None:
        start = time.monotonic()
        while not self.halt.is_set():
            due = int((time.monotonic() - start) * self.rate)
            for i in range(self.first + self.sent, self.first + due):
                k, v, h = event_record(self.run_id, i, self.t0)
                self.p.produce(self.topic, value=v, key=k, headers=h)
            self.sent = due
            self.p.poll(0)
            self.history.append((time.monotonic(), self.sent))
            self.halt.wait(0.05)
        self.p.flush(60)

    def sent_before(self, t: float) -> int:
        n = 0
        for when, sent in self.history:
            if when > t:
                break
            n = sent
        return n


def committed_total(c: Any, tps: list[Any]) -> int:
    from confluent_kafka import KafkaException

    try:
        got = c.committed(tps, timeout=5)
    except KafkaException:
        return -1
    return sum(max(tp.offset, 0) for tp in got)


def raw_consume(s: Settings, topic: str, n: int) -> tuple[float, float]:
    """Seconds and CPU seconds (this process) to read ``n`` records of ``topic``."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": ",".join(s.kafka.bootstrap_servers),
                  "group.id": f"{s.namespace}-bench-raw", "enable.auto.commit": False})
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(4)])
    t0, cpu0 = time.perf_counter(), time.process_time()
    got = 0
    while got < n:
        for m in c.consume(10_000, 1.0):
            if m.error() is None:
                m.value()
                got += 1
    dt, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    c.close()
    return dt, cpu


def direct_copy(s: Settings, rows: list[tuple[Any, ...]], batch: int
                ) -> tuple[float, float, float]:
    """Seconds, client CPU seconds and backend CPU seconds of binary-COPYing ``rows`` in
    committed batches of ``batch`` into a fresh table like ``events`` (all indexes)."""
    import orjson
    from psycopg.types.json import set_json_dumps

    tbl = sql.Identifier(s.db_schema, f"bench_copy_{batch}")
    cols = sql.SQL(", ").join(map(sql.Identifier, EVENTS_SINK.columns))
    with connect(s.database) as c:
        c.execute(sql.SQL("create table {} (like {} including all)").format(
            tbl, sql.Identifier(s.db_schema, "events")))
        c.commit()
        set_json_dumps(orjson.dumps, context=c)
        row = c.execute("select pg_backend_pid()").fetchone()
        backend = int(row[0]) if row else None
        c.commit()
        stmt = sql.SQL("copy {} ({}) from stdin (format binary)").format(tbl, cols)
        t0, cpu0, pg0 = time.perf_counter(), time.process_time(), cpu_of(backend)
        for i in range(0, len(rows), batch):
            with c.cursor() as cur, cur.copy(stmt) as cp:
                cp.set_types(list(EVENTS_SINK.copy_types or EVENTS_SINK.types))
                for r in rows[i:i + batch]:
                    cp.write_row(r)
            c.commit()
        return time.perf_counter() - t0, time.process_time() - cpu0, cpu_of(backend) - pg0


def backend_of(s: Settings, app: str) -> int | None:
    with connect(s.database, autocommit=True) as c:
        row = c.execute("select pid from pg_stat_activity where application_name = %s "
                        "order by backend_start desc limit 1", (app,)).fetchone()
        return int(row[0]) if row else None


def count_rows(s: Settings) -> tuple[int, int]:
    with connect(s.database, autocommit=True) as c:
        row = c.execute(sql.SQL("select count(*), count(distinct (source, id)) from {}").format(
            sql.Identifier(s.db_schema, "events"))).fetchone()
        assert row is not None
        return int(row[0]), int(row[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=300_000, help="backlog size")
    ap.add_argument("--quick", action="store_true", help="a 50,000-event backlog")
    ap.add_argument("--incoming", type=float, default=2000.0,
                    help="events/s published while the sink drains (0: none)")
    ap.add_argument("--copy-batch", type=int, default=5000, help="rows per baseline COPY")
    ap.add_argument("--sink-args", default="", help="extra arguments of ioc sink")
    ap.add_argument("--py-spy", default="", metavar="FILE", help="py-spy the sink into FILE")
    ap.add_argument("--sink-root", default=str(ROOT), metavar="DIR",
                    help="run the sink of this checkout (default: this one)")
    ap.add_argument("--keep", action="store_true", help="keep the namespace")
    ap.add_argument("--timeout", type=float, default=900.0)
    a = ap.parse_args()
    n = 50_000 if a.quick else a.events
    load0 = loadavg()
    s = load_settings().with_namespace(f"bdrain{secrets.token_hex(3)}")
    topic = f"{s.namespace}.events"
    assert ensure_topics(s).success
    migrate(s)
    logdir = Path(os.environ.get("TMPDIR", "/tmp")) / s.namespace
    logdir.mkdir(parents=True, exist_ok=True)
    sink_proc: subprocess.Popen[bytes] | None = None
    spy: subprocess.Popen[bytes] | None = None
    try:
        run, t0 = secrets.token_hex(3), time.time() - 3600
        records = [event_record(run, i, t0) for i in range(n)]
        log(f"namespace {s.namespace}: producing a backlog of {n:,} events to {topic}")
        tp0 = time.perf_counter()
        produce(producer(s), topic, records)
        log(f"backlog produced in {time.perf_counter() - tp0:.1f} s")

        dt_raw, cpu_raw = raw_consume(s, topic, n)
        log(f"raw consume: {n / dt_raw:,.0f} records/s")
        tr0 = time.perf_counter()
        rows = [r for k, v, h in records for r in EVENTS_SINK.to_rows(k, v, h)]
        us_rows = (time.perf_counter() - tr0) / n * 1e6
        dt_copy, cpu_copy, pg_copy = direct_copy(s, rows, a.copy_batch)
        log(f"direct COPY ({a.copy_batch:,}-row batches): {n / dt_copy:,.0f} rows/s")
        del rows

        from confluent_kafka import Consumer, TopicPartition
        app = f"bench-drain-{s.namespace}"
        env = dict(os.environ, IOC_METRICS__ENABLED="false", IOC_NAMESPACE=s.namespace,
                   IOC_KAFKA__BOOTSTRAP_SERVERS=",".join(s.kafka.bootstrap_servers),
                   IOC_DATABASE__DSN=s.database.dsn.get_secret_value(), PGAPPNAME=app)
        if s.database.passfile:
            env["IOC_DATABASE__PASSFILE"] = str(s.database.passfile)
        env["PYTHONPATH"] = a.sink_root
        group = f"{s.namespace}-sink-events"
        watch = Consumer({"bootstrap.servers": ",".join(s.kafka.bootstrap_servers),
                          "group.id": group, "enable.auto.commit": False})
        tps = [TopicPartition(topic, p) for p in range(4)]
        incoming = Incoming(s, topic, run, a.incoming, n, t0) if a.incoming > 0 else None
        argv = [sys.executable, "-m", "ioc", "sink", "--tables", "events",
                *shlex.split(a.sink_args)]
        log(f"starting {' '.join(argv[2:])}" + (f" with {a.incoming:,.0f} ev/s incoming"
                                                  if incoming else ""))
        with open(logdir / "sink.log", "wb") as out:
            sink_proc = subprocess.Popen(argv, env=env, cwd=a.sink_root, stdout=out,
                                         stderr=subprocess.STDOUT)
        t_start = time.monotonic()
        if incoming is not None:
            incoming.start()
        if a.py_spy:
            spy = subprocess.Popen([str(ROOT / ".venv/bin/py-spy"), "record", "-p",
                                    str(sink_proc.pid), "-r", "100", "-f", "raw", "-o",
                                    a.py_spy, "--nonblocking"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        first: tuple[float, int] | None = None
        cpu_sink0 = cpu_of(sink_proc.pid)
        backend, pg0 = None, 0.0
        done: tuple[float, int] | None = None
        while time.monotonic() - t_start < a.timeout:
            time.sleep(0.25)
            if sink_proc.poll() is not None:
                raise RuntimeError(f"the sink exited (rc {sink_proc.returncode}); "
                                   f"log: {logdir / 'sink.log'}")
            if backend is None:
                backend = backend_of(s, app)
                pg0 = cpu_of(backend)
            now = time.monotonic()
            got = committed_total(watch, tps)
            if got <= 0:
                continue
            if first is None:
                first = (now, got)
                cpu_sink0, pg0 = cpu_of(sink_proc.pid), cpu_of(backend)
                continue
            target = n + (incoming.sent_before(now - 1.0) if incoming else 0)
            if got >= target:
                done = (now, got)
                break
        if first is None or done is None:
            raise RuntimeError(f"the sink did not catch up within {a.timeout:.0f} s")
        cpu_sink, pg_sink = cpu_of(sink_proc.pid) - cpu_sink0, cpu_of(backend) - pg0
        if spy is not None:
            spy.send_signal(2)
            spy.wait(30)
        if incoming is not None:
            incoming.halt.set()
            incoming.join(60)
        total = n + (incoming.sent if incoming else 0)
        while committed_total(watch, tps) < total and time.monotonic() - t_start < a.timeout:
            time.sleep(0.25)
        stored, distinct = count_rows(s)
        watch.close()
        load1 = loadavg()

        dt = done[0] - first[0]
        rows_drained = done[1] - first[1]
        gross = rows_drained / dt
        net = gross - a.incoming
        k = 1000 / rows_drained
        print()
        print(f"SINK DRAIN of {n:,} events, {a.incoming:,.0f} ev/s incoming; "
              f"{os.cpu_count()} cores; load average {load0:.1f} before, {load1:.1f} after")
        print(f"sink ({' '.join(argv[3:])}; {a.sink_root}): first commit {first[0] - t_start:.1f} s after "
              f"start, caught up {done[0] - t_start:.1f} s after start")
        print(f"  sink drain        {gross:>9,.0f} rows/s gross, {net:,.0f} net above the "
              f"incoming ({rows_drained:,} rows in {dt:.1f} s)")
        print(f"  raw consume       {n / dt_raw:>9,.0f} records/s   sink/raw   "
              f"{gross / (n / dt_raw):.2f}")
        print(f"  direct COPY       {n / dt_copy:>9,.0f} rows/s      sink/COPY  "
              f"{gross / (n / dt_copy):.2f}   ({a.copy_batch:,}-row committed batches)")
        print(f"  to_rows alone     {us_rows:>9.2f} µs/row")
        print(f"CPU s per 1,000 rows: sink process {cpu_sink * k:.3f}, its PostgreSQL "
              f"backend {pg_sink * k:.3f}; raw consume client {cpu_raw * 1000 / n:.3f}; "
              f"direct COPY client {cpu_copy * 1000 / n:.3f}, backend {pg_copy * 1000 / n:.3f}")
        print(f"stored {stored:,} of {total:,} published, {stored - distinct:,} duplicated")
        if a.py_spy:
            print(f"py-spy profile: {a.py_spy}")
    finally:
        if spy is not None and spy.poll() is None:
            spy.kill()
        if sink_proc is not None and sink_proc.poll() is None:
            sink_proc.terminate()
            try:
                sink_proc.wait(30)
            except subprocess.TimeoutExpired:
                sink_proc.kill()
        if not a.keep:
            delete_namespace_topics(s)
            drop_schema(s)


if __name__ == "__main__":
    main()
