"""Faults survived under load: one row per fault, events lost or doubled, time to recover.

    .venv/bin/python bench/bench_faults.py                  # every fault (~35 min)
    .venv/bin/python bench/bench_faults.py --quick          # the fast cases (~5 min)
    .venv/bin/python bench/bench_faults.py --only kill-sink [--only broker-stop ...]
    .venv/bin/python bench/bench_faults.py --pg-long-s 60   # shorten the long database outage
    .venv/bin/python bench/bench_faults.py --list
    .venv/bin/python bench/bench_faults.py --only pg-stop-long --sink-args "--first ''"
    .venv/bin/python bench/bench_faults.py --only kill-worker --workers 3

Everything runs on infrastructure of its own, so that breaking it hurts no one: a
private single-node Kafka (``deploy/local/stack.sh kafka-up`` with its own
IOC_STATE_DIR, broker 127.0.0.1:29090), a private 3-node KRaft cluster for the
multi-broker fault (IOC_KAFKA_BROKERS=3, brokers 29092-29094, controllers 29095-29097,
replication factor 3, min.insync.replicas 2), and a private PostgreSQL cluster (initdb
in the run folder, 127.0.0.1:29432). The shared stack (19092/55432) is never touched.

Each fault runs in a fresh namespace with every service as a subprocess of this script,
as deployed (deploy/local/services.sh): ``--workers`` N identical ``ioc worker``
processes (default 2), each running every agent and stage the deployment runs (no
``--agents``: validate, aggregate, kpis, rules, tiles, vision, camera_health, probe;
scorecards only with indicators configured, and the suite configures none). Every
group then shares its partitions among the N, so ``kill-worker`` (kill -9 of worker 1
of N) shows a worker dying beside others: theirs keep flowing, its own wait until its
session times out (``streams.session_timeout_s``) and the group is rebalanced over the
others and the restarted worker, if it has joined by then (with ``--workers 1``
everything waits). Metrics are off (the suite reads none, so the workers need no ports
of their own). Then ``ioc sink`` (every table), ``ioc gateway``, ``ioc wall serve`` and
``ioc camera run`` (4 file cameras from ../shared/data/video at 2 fps, 320 px wide). A
killed process is started again by the script 1 s later, as a supervisor would. Each
worker and sink joins its groups as a static member named after its service
(``kafka.group_instance_id``, as deploy/local/services.sh does; docs/adr/0007), so a
restarted one takes its partitions back at once; ``--membership dynamic`` runs them
without (the partitions of a restarted or rejoining member then wait for the group to
expire the member it was).

The load is a steady R events/s (``--rate``, default 2,000): 80% from a Python producer (``ioc.publish.Publisher``,
acks=all, idempotent), 20% over HTTP through the gateway, each publisher a real client:
a batch that is not acknowledged (KafkaError, HTTP 503, a refused or broken
connection, a timeout) is sent again after 0.5 s until it is; ids are unique per run.

A fault: ``--steady-s`` of normal load, the fault, then load continues until the
pipeline has recovered and ``--tail-s`` more; then publishing stops and the database
is given up to 180 s to drain. Per fault one row:

    published  events acknowledged to the publishers (each id counted once)
    stored     rows in <schema>.events
    missing    acknowledged ids with no row          (target 0)
    dup        rows minus distinct ids               (target 0)
    recover s  seconds from the end of the fault (the stopped broker or database ready
               again, its own start time excluded and given in the notes; a killed
               process started again, its start-up included) until the backlog,
               scheduled events not yet stored, is back at its pre-fault level: at most
               max(1.5 x the largest backlog of the steady phase, 2 s of input),
               and stays there: the first sample of the first run of samples within
               that bound lasting 10 s (``HOLD_S``; a killed worker's backlog rises
               only after its restart, while its partitions wait for its session to
               time out: the samples before do not count as back) (target <= 30)
    notes      outage length, the backlog (seconds of input scheduled but not stored)
               before the fault and at its peak, retries of the publishers, HTTP 503s,
               services that died on their own (restarted by the script and named),
               service-specific recovery (wall /healthz back, camera frames flowing
               again; after kill-worker, when every worker group was Stable with the
               others alone, if seen, and with N members again); per sink
               table with a backlog, its consumer lag at the fault's end and when it
               was back (the load stays on, at most --recover-max-s, until each is:
               the events go first, the other tables may drain later), and what the
               sink wrote per table over the recovery (``ioc -v sink`` report lines)

Figures depend on the machine: run it on a quiet one, or say how loaded it was (the
load average is printed with the table).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import pwd
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402
import yaml  # noqa: E402

from ioc.config import Settings, load_settings  # noqa: E402
from ioc.errors import IOCError  # noqa: E402
from ioc.kafka.clients import quiet_kafka_client_logs  # noqa: E402

STACK = ROOT / "deploy" / "local" / "stack.sh"
KAFKA1_PORT = 29090  # single node: broker 29090, controller 29091
KAFKA3_PORT = 29092  # 3 nodes: brokers 29092-29094, controllers 29095-29097
PG_PORT = 29432
PG_BIN = Path("/usr/lib/postgresql/15/bin")
WALL_SECRET = "fault-suite-secret-not-for-production-0123456789"
HOLD_S = 10.0  # the backlog counts as back once within its bound for this long


def stack_pg_settings() -> dict[str, str]:
    """The ``name = value`` lines of deploy/local/postgresql-ioc.conf."""
    out = {}
    for line in (ROOT / "deploy" / "local" / "postgresql-ioc.conf").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            k, _, v = line.partition("=")
            out[k.strip()] = v.strip()
    return out


def log(msg: str) -> None:
    print(f"[faults {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def port_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


# ---- private infrastructure --------------------------------------------------------

class Kafka:
    """A private Kafka of ``n`` nodes driven through stack.sh (its own IOC_STATE_DIR)."""

    def __init__(self, root: Path, port: int, n: int) -> None:
        self.state, self.port, self.n = root, port, n
        self.env = dict(os.environ, IOC_STATE_DIR=str(root), IOC_KAFKA_PORT=str(port),
                        IOC_KAFKA_BROKERS=str(n))

    @property
    def bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{self.port + i}" for i in range(self.n))

    @property
    def replication(self) -> int:
        return min(self.n, 3)

    def _stack(self, cmd: str) -> None:
        r = subprocess.run([str(STACK), cmd], env=self.env, capture_output=True, text=True,
                           timeout=300)
        if r.returncode != 0:
            raise SystemExit(f"stack.sh {cmd} failed: {r.stderr[-2000:]}")

    def up(self) -> None:
        self._stack("kafka-up")

    def down(self) -> None:
        self._stack("kafka-down")

    def pid_file(self, node: int) -> Path:
        return self.state / "kafka" / (f"node-{node}/kafka.pid" if self.n > 1 else "kafka.pid")

    def kill9(self, node: int) -> None:
        pid = int(self.pid_file(node).read_text())
        os.kill(pid, signal.SIGKILL)
        for _ in range(100):
            if not Path(f"/proc/{pid}").exists():
                break
            time.sleep(0.1)


class Postgres:
    """A private PostgreSQL 15 cluster (trust auth on 127.0.0.1 only)."""

    def __init__(self, root: Path, port: int) -> None:
        self.root, self.port = root, port
        self.data = root / "data"
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            self.as_user = ["runuser", "-u", "postgres", "--"]

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def init(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
        if not (self.data / "PG_VERSION").exists():
            r = subprocess.run([*self.as_user, str(PG_BIN / "initdb"), "-D", str(self.data),
                                "-U", "postgres", "-A", "trust", "-E", "UTF8",
                                # as deploy/local/stack.sh: byte-order collation
                                "--locale=C.UTF-8", "--lc-collate=C"],
                               capture_output=True, text=True)
            if r.returncode != 0:
                raise SystemExit(f"initdb failed: {r.stdout}{r.stderr}")

    def _ctl(self, *args: str) -> None:
        r = subprocess.run([*self.as_user, str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-w",
                            "-t", "120", *args], capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit(f"pg_ctl {args[-1]} failed: {r.stdout}{r.stderr}")

    def start(self) -> None:
        # The local stack's settings (deploy/local/postgresql-ioc.conf), as deployed.
        self._ctl("-l", str(self.root / "pg.log"), "-o",
                  f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
                  + " ".join(f"-c {k}={v}" for k, v in stack_pg_settings().items()),
                  "start")

    def stop(self) -> None:
        self._ctl("-m", "fast", "stop")


# ---- services ------------------------------------------------------------------------

def service_specs(workers: int, sinks: int = 1) -> dict[str, list[str]]:
    """name -> ``ioc`` arguments of every service: ``worker-1`` .. ``worker-N``, identical
    (every agent, as deployed), then the sink (``sink``, and ``sink-2`` .. with
    ``--sinks``: identical, every table, each table's consumer group shared), the
    gateway, the wall and the capture."""
    out = {f"worker-{k}": ["worker"] for k in range(1, workers + 1)}
    # -v: its 10-s report lines, read for the drain profile (of ``sink``); --sink-args
    # adds options
    out.update({("sink" if k == 1 else f"sink-{k}"): ["-v", "sink", "{sink_args}"]
                for k in range(1, sinks + 1)})
    out.update({
        "gateway": ["gateway", "--port", "{gateway_port}"],
        "wall": ["wall", "serve", "--port", "{wall_port}"],
        "capture": ["camera", "run"],
    })
    return out


# The processes a fault may kill -9 (``kill-<name>``); "worker" is worker 1 of N.
KILLABLE = {"worker": "worker-1", "sink": "sink", "gateway": "gateway", "wall": "wall",
            "capture": "capture"}


class Services:
    """The services of one fault, as subprocesses; ``watch`` restarts any that died."""

    def __init__(self, specs: dict[str, list[str]], env: dict[str, str], logdir: Path,
                 ports: dict[str, Any], *, static: bool = True) -> None:
        self.specs, self.env, self.logdir, self.ports = specs, env, logdir, ports
        self.static = static  # each worker and sink its own kafka.group_instance_id
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.started: dict[str, int] = {}
        self.died: dict[str, int] = {}  # exits we did not cause
        self.lock = threading.Lock()

    def start(self, name: str) -> None:
        args = [x for a in self.specs[name] for x in (
            shlex.split(self.ports["sink_args"]) if a == "{sink_args}" else [a.format(**self.ports)])]
        n = self.started.get(name, 0)
        out = open(self.logdir / f"{name}.{n}.log", "wb")  # noqa: SIM115 - child owns it
        with self.lock:
            env = self.env
            if self.static and name.startswith(("worker", "sink")):
                # as deployed (docs/reliability.md, "Static membership"): a name per
                # process, the same after a restart
                env = dict(env, IOC_KAFKA__GROUP_INSTANCE_ID=name)
            self.procs[name] = subprocess.Popen([sys.executable, "-m", "ioc", *args], env=env,
                                                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
            self.started[name] = n + 1
        out.close()

    def kill9(self, name: str) -> None:
        with self.lock:
            p = self.procs.pop(name)
        p.send_signal(signal.SIGKILL)
        p.wait(10)

    def watch(self) -> None:
        """Restart services that exited by themselves (counted in ``died``)."""
        with self.lock:
            dead = [n for n, p in self.procs.items() if p.poll() is not None]
        for n in dead:
            self.died[n] = self.died.get(n, 0) + 1
            log(f"{n} exited by itself (rc {self.procs[n].returncode}); restarting it; "
                f"log: {self.logdir}/{n}.{self.started[n] - 1}.log")
            self.start(n)

    def stop_all(self) -> None:
        with self.lock:
            procs = list(self.procs.values())
            self.procs.clear()
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)


# ---- load ------------------------------------------------------------------------------

def make_event(run: str, i: int, t0: float, rate: float) -> dict[str, Any]:
    kinds = (("air.quality", ("pm25", "no2")), ("traffic.flow", ("intensity", "speed")),
             ("noise.level", ("laeq",)))
    t, metrics = kinds[i % 3]
    return {"id": f"{run}-{i}", "source": f"fz{i % 4}", "type": t,
            "entity": f"sensor-{i % 500}", "time": t0 + i / rate,
            "values": {m: float(20 + (i * 7 + k) % 40) for k, m in enumerate(metrics)},
            "attributes": {"district": f"d{i % 12}"}}


class Feed(threading.Thread):
    """Publishes ``rate`` events/s (chunks of ``chunk``, larger when behind schedule) until
    ``stop`` is set, resending a chunk that was not acknowledged every 0.5 s."""

    def __init__(self, name: str, run: str, rate: float, chunk: int, t_start: float,
                 t_event0: float, deadline: float) -> None:
        super().__init__(name=name, daemon=True)
        self.run_id, self.rate, self.chunk = run, rate, chunk
        self.max_batch = 20 * chunk
        self.t_start, self.t_event0, self.deadline = t_start, t_event0, deadline
        self.stop = threading.Event()
        self.acked = 0  # events acknowledged (ids run-0 .. run-(acked-1))
        self.retries = 0
        self.errors: dict[str, int] = {}
        self.unacked = 0  # events of a chunk given up at the deadline
        self.acks: list[tuple[float, int]] = []  # (monotonic, acked) at each acknowledgement

    def scheduled(self, t: float) -> float:
        return max(0.0, (t - self.t_start) * self.rate)

    def send(self, events: list[dict[str, Any]]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Release the client (called once the feed has stopped)."""

    def run(self) -> None:
        i = 0
        while not self.stop.is_set():
            due = self.t_start + i / self.rate
            wait = due - time.monotonic()
            if wait > 0:
                self.stop.wait(wait)
                if self.stop.is_set():
                    break
            # Behind schedule (after an outage, or acknowledgements slower than the chunk
            # period): send what is due in one larger batch, up to 20 chunks (1,000 events over HTTP), as a
            # batching client would, instead of falling further behind.
            due = int((time.monotonic() - self.t_start) * self.rate) - i
            n = min(max(self.chunk, due), self.max_batch)
            events = [make_event(self.run_id, j, self.t_event0, self.rate)
                      for j in range(i, i + n)]
            while True:
                try:
                    self.send(events)
                    break
                except Exception as exc:  # a real client retries whatever went wrong
                    kind = type(exc).__name__
                    self.errors[kind] = self.errors.get(kind, 0) + 1
                    self.retries += 1
                    if time.monotonic() > self.deadline:
                        self.unacked += len(events)
                        log(f"{self.name}: giving up a chunk at the deadline: {exc!r}")
                        return
                    time.sleep(0.5)
            i += n
            self.acked = i
            self.acks.append((time.monotonic(), i))
        self.close()


class KafkaFeed(Feed):
    def __init__(self, s: Settings, *args: Any) -> None:
        super().__init__("kafka-feed", *args)
        from ioc.publish import Publisher

        self.pub = Publisher(s, ack_timeout_s=10.0)

    def send(self, events: list[dict[str, Any]]) -> None:
        res = self.pub.send_many(events)
        if res.rejected:
            raise SystemExit(f"publisher rejected valid events: {res.rejected[:2]}")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.pub.close(timeout_s=5)


class HttpFeed(Feed):
    """POSTs JSON arrays to the gateway; 200 is acknowledged, 503/connection errors retried."""

    def __init__(self, port: int, key: str, *args: Any) -> None:
        super().__init__("http-feed", *args)
        self.port, self.key = port, key
        self.max_batch = min(self.max_batch, 1000)  # gateway.max_batch_events (default)
        self.conn: http.client.HTTPConnection | None = None
        self.status_503 = 0

    def send(self, events: list[dict[str, Any]]) -> None:
        body = orjson.dumps(events)
        try:
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            self.conn.request("POST", "/v1/events", body=body, headers={
                "Content-Type": "application/json", "Authorization": f"Bearer {self.key}"})
            r = self.conn.getresponse()
            data = r.read()
        except (OSError, http.client.HTTPException):
            if self.conn is not None:
                self.conn.close()
            self.conn = None
            raise
        if r.status == 200:
            return
        if r.status == 503:
            self.status_503 += 1
            raise ConnectionError("503 from the gateway")
        raise SystemExit(f"gateway answered {r.status} to valid events: {data[:300]!r}")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()


class Rows(threading.Thread):
    """Samples the stored event rows every second: (monotonic time, count or None).

    One connection, kept between samples (a new one each second cost the database a
    backend start per sample), and no parallel workers for the count (each would be
    another process started per sample): the probe takes as little as it can of the
    cores the drain it measures needs. A count is still a scan of the table (71-98 ms
    for 850,000 rows in psql on the 2-core development machine)."""

    def __init__(self, s: Settings) -> None:
        super().__init__(name="rows", daemon=True)
        self.s = s
        self.samples: list[tuple[float, int | None]] = []
        self.stop = threading.Event()
        self._conn: Any = None

    def count(self) -> int | None:
        from psycopg import sql

        from ioc.storage import connect

        try:
            if self._conn is None:
                self._conn = connect(self.s.database, autocommit=True)
                self._conn.execute("set statement_timeout = 5000")
                self._conn.execute("set max_parallel_workers_per_gather = 0")
            row = self._conn.execute(sql.SQL("select count(*) from {}").format(
                sql.Identifier(self.s.db_schema, "events"))).fetchone()
            return int(row[0]) if row else 0
        except Exception:  # database down: no sample, and a new connection next time
            if self._conn is not None:
                with contextlib.suppress(Exception):
                    self._conn.close()
            self._conn = None
            return None

    def run(self) -> None:
        while not self.stop.is_set():
            t = time.monotonic()
            self.samples.append((t, self.count()))
            self.stop.wait(max(0.0, 1.0 - (time.monotonic() - t)))
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()


def write_trace(path: Path, fault: str, t_fault: float, t_end: float, feeds: list[Any],
                rows: list[tuple[float, int | None]],
                lags: list[tuple[float, dict[str, int]]],
                cpu: list[tuple[float, dict[str, float]]]) -> None:
    """Append one JSON line per rows sample from ``t_fault`` on: the fault, seconds after
    its end, events scheduled, acknowledged per feed, rows stored (None: database away),
    the latest lag sample (table or stage -> lag) and CPU sample (part -> cores, see
    ``Cpu``) at that time."""
    with path.open("a") as f:
        for t, n in rows:
            if t < t_fault:
                continue
            lag = next((d for tl, d in reversed(lags) if tl <= t), {})
            used = next((d for tc, d in reversed(cpu) if tc <= t), {})
            acked = {fd.name: next((k for ta, k in reversed(fd.acks) if ta <= t), 0)
                     for fd in feeds}
            f.write(json.dumps({"fault": fault, "s": round(t - t_end, 1),
                                "scheduled": round(sum(fd.scheduled(t) for fd in feeds)),
                                "acked": acked, "stored": n, "lag": lag, "cpu": used}) + "\n")


class Lags(threading.Thread):
    """Samples, every ``every`` s, each sink table's consumer lag (records of its topic
    not yet committed by ``<ns>-sink-<table>``) and the lag of the workers' first two
    stages (``validate`` on events.raw, ``aggregate+kpis+rules`` on events: names
    ``stage:validate``, ``stage:aggregate``): where a recovery spends its time."""

    def __init__(self, s: Settings, every: float = 2.0) -> None:
        super().__init__(name="lags", daemon=True)
        from ioc.metrics import ConsumerLag
        from ioc.storage.sink_tables import sink_tables

        self.groups = {t.name: (f"{s.namespace}-sink-{t.name}",
                                f"{s.namespace}.{t.topic_suffix}") for t in sink_tables()}
        app = s.streams.app_id or f"{s.namespace}-streams"
        self.stages = {"stage:validate": (f"{app}.validate", f"{s.namespace}.events.raw"),
                       "stage:aggregate": (f"{app}.aggregate+kpis+rules",
                                           f"{s.namespace}.events")}
        self.groups.update(self.stages)
        self.lag = ConsumerLag(s, lambda: [(g, [t]) for g, t in self.groups.values()],
                               timeout_s=1.0)
        self.every = every
        self.samples: list[tuple[float, dict[str, int]]] = []  # (monotonic, table -> lag)
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            t = time.monotonic()
            with contextlib.suppress(Exception):  # broker away: no sample
                self.lag.refresh()
                now = time.monotonic()
                got: dict[str, int] = {}
                for (group, _topic, _part), (n, at) in self.lag.values.copy().items():
                    if now - at < self.every:
                        name = next(k for k, (g, _) in self.groups.items() if g == group)
                        got[name] = got.get(name, 0) + n
                self.samples.append((t, got))
            self.stop.wait(max(0.0, self.every - (time.monotonic() - t)))
        self.lag.close()

    def _backlogs(self, t_fault: float, t_end: float
                  ) -> dict[str, tuple[list[tuple[float, int]], float | None]]:
        """Per table with a backlog after the fault: its lag samples from ``t_end`` on,
        and when (s after ``t_end``) it was back at its pre-fault level (at most 1.5 x
        its steady maximum, and 1,000), None: not yet."""
        out = {}
        for name in self.groups:
            before = [lag.get(name, 0) for t, lag in self.samples if t < t_fault]
            after = [(t, lag[name]) for t, lag in self.samples if t >= t_end and name in lag]
            if not after:
                continue
            base = max(1000.0, 1.5 * max(before, default=0))
            if max(n for _, n in after) <= base:
                continue
            out[name] = (after, next((t - t_end for t, n in after if n <= base), None))
        return out

    def pending(self, t_fault: float, t_end: float) -> list[str]:
        """The tables (and stages) whose backlog is not back yet."""
        return [k for k, (_, back) in self._backlogs(t_fault, t_end).items() if back is None]

    def profile(self, t_fault: float, t_end: float, *, stages: bool = False) -> list[str]:
        """Per sink table (``stages``: per worker stage) with a backlog: its lag at the
        fault's end and when it was back."""
        out = []
        for name, (after, back) in self._backlogs(t_fault, t_end).items():
            if (name in self.stages) != stages:
                continue
            rate = (after[0][1] / back) if back else 0.0
            out.append(f"{name} {after[0][1]:,} at the end, back "
                       + (f"+{back:.0f} s ({rate:,.0f}/s net)" if back is not None
                          else f"not by +{after[-1][0] - t_end:.0f} s ({after[-1][1]:,} left)"))
        return out


class Cpu(threading.Thread):
    """Samples every second the CPU each part uses, in cores (user + system time over the
    last second, from /proc): each service process, the broker node(s) (``broker``),
    PostgreSQL (``postgres``: the postmaster, its live children and those it has reaped)
    and this script (``bench``: the publishers and the probes). For the trace: who has
    the two cores during a recovery."""

    def __init__(self, services: Services, kafka: Kafka, pg: Postgres) -> None:
        super().__init__(name="cpu", daemon=True)
        self.services, self.kafka, self.pg = services, kafka, pg
        self.tick = os.sysconf("SC_CLK_TCK")
        self.samples: list[tuple[float, dict[str, float]]] = []  # (monotonic, part -> cores)
        self.stop = threading.Event()
        self._last: dict[str, tuple[float, dict[int, int]]] = {}

    @staticmethod
    def _stat(pid: int) -> list[str] | None:
        try:
            with open(f"/proc/{pid}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            return None

    def _ticks(self) -> dict[str, dict[int, int]]:
        """part -> {pid: cumulative ticks}; a PostgreSQL pid's includes reaped children."""
        out: dict[str, dict[int, int]] = {"bench": {}, "broker": {}, "postgres": {}}
        with self.services.lock:
            procs = {n: p.pid for n, p in self.services.procs.items()}
        parts = {pid: n for n, pid in procs.items()}
        parts[os.getpid()] = "bench"
        for node in range(1, self.kafka.n + 1):
            with contextlib.suppress(OSError, ValueError):
                parts[int(self.kafka.pid_file(node).read_text())] = "broker"
        postmaster = None
        with contextlib.suppress(OSError, ValueError, IndexError):
            postmaster = int((self.pg.data / "postmaster.pid").read_text().split()[0])
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            pid = int(d)
            st = self._stat(pid)
            if st is None:
                continue
            name = parts.get(pid)
            if pid == postmaster:
                out["postgres"][pid] = sum(int(x) for x in st[11:15])  # + reaped children
            elif postmaster is not None and int(st[1]) == postmaster:
                out["postgres"][pid] = int(st[11]) + int(st[12])
            elif name is not None:
                out.setdefault(name, {})[pid] = int(st[11]) + int(st[12])
        return out

    def run(self) -> None:
        while not self.stop.is_set():
            t = time.monotonic()
            got: dict[str, float] = {}
            for part, ticks in self._ticks().items():
                before = self._last.get(part)
                if before is not None:
                    t0, old = before
                    used = sum(max(0, n - old.get(pid, 0)) for pid, n in ticks.items()
                               if pid in old or part == "postgres")
                    got[part] = round(used / self.tick / max(1e-3, t - t0), 2)
                self._last[part] = (t, ticks)
            self.samples.append((t, got))
            self.stop.wait(max(0.0, 1.0 - (time.monotonic() - t)))


class WorkerGroups:
    """The consumer groups the workers share (``<app id>`` of the Faust agents and
    ``<app id>.<stages>`` of each stage group): their state and member ids."""

    def __init__(self, s: Settings) -> None:
        from ioc.kafka.clients import admin_client

        self.app_id = s.streams.app_id or f"{s.namespace}-streams"
        self.admin = admin_client(s.kafka)
        self.names = sorted(
            str(g["group_id"]) for g in self.admin.list_groups()
            if g["group_id"] == self.app_id or str(g["group_id"]).startswith(self.app_id + "."))

    def members(self) -> dict[str, tuple[str, frozenset[str]]] | None:
        """Group -> (state, member ids); None when the broker does not answer."""
        try:
            got = self.admin.describe_groups(self.names)
        except Exception:  # broker busy or away: no sample
            return None
        return {g: (str(d.get("group_state")),
                    frozenset(str(m["member_id"]) for m in d.get("members") or ()))
                for g, d in got.items()}

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.admin.close()


def sink_drain_lines(logs: list[Path], t0_wall: float, t1_wall: float) -> list[str]:
    """From the sink's 10-s report lines (``ioc -v sink``): per table, messages read,
    rows inserted and seconds of database writes between two wall-clock times.

    One log per sink process started (``sink.<n>.log``): each process's counters start
    at 0, so each log's part is taken from its own last line before ``t0_wall`` (0 for
    a process started after it), and the parts are added up."""
    import datetime as dt
    import re

    pat = re.compile(r"^(\S+ \S+) INFO ioc\.storage\.sink: sink (\w+): messages=(\d+) "
                     r"rows_inserted=(\d+) .*write_s=([\d.]+)")
    total: dict[str, list[float]] = {}
    for p in logs:
        first: dict[str, tuple[int, int, float]] = {}
        last: dict[str, tuple[int, int, float]] = {}
        for line in p.read_text(errors="replace").splitlines():
            m = pat.match(line)
            if not m:
                continue
            t = dt.datetime.strptime(m[1], "%Y-%m-%d %H:%M:%S,%f").timestamp()
            v = (int(m[3]), int(m[4]), float(m[5]))
            if t <= t0_wall:
                first[m[2]] = v
            elif t <= t1_wall:
                last[m[2]] = v
        for name, v in last.items():
            base = first.get(name, (0, 0, 0.0))
            acc = total.setdefault(name, [0, 0, 0.0])
            for i in range(3):
                acc[i] += v[i] - base[i]
    out = []
    for name, (msgs, ins, ws) in total.items():
        if msgs > 1000:
            out.append(f"{name} {int(msgs):,} msgs -> {int(ins):,} rows, {ws:.1f} s writing")
    return out


# ---- one fault ---------------------------------------------------------------------------

@dataclass
class Row:
    name: str
    published: int = 0
    stored: int = 0
    missing: int = 0
    dup: int = 0
    recover_s: float | None = None
    notes: list[str] = field(default_factory=list)
    error: str | None = None


@dataclass
class Ctx:
    """What a fault action may act on."""

    kafka: Kafka
    pg: Postgres
    services: Services
    s: Settings
    frames: Callable[[], dict[str, int]]
    notes: list[str]
    wall_port: int
    workers: int


Action = Callable[[Ctx], float]  # does the fault; returns the monotonic time it ended


def frames_per_camera(s: Settings) -> dict[str, int]:
    """Frames on <ns>.camera.frames so far (end offsets, per partition)."""
    from kafka import KafkaConsumer, TopicPartition

    from ioc.kafka import kafka_python_kwargs

    c = KafkaConsumer(**kafka_python_kwargs(s.kafka))
    try:
        t = f"{s.namespace}.camera.frames"
        tps = [TopicPartition(t, p) for p in sorted(c.partitions_for_topic(t) or ())]
        return {str(tp.partition): n for tp, n in c.end_offsets(tps).items()}
    finally:
        c.close()


def wait_until(what: str, check: Callable[[], bool], timeout: float, every: float = 0.5,
               watch: Callable[[], None] | None = None) -> float:
    t0 = time.monotonic()
    while not check():
        if watch:
            watch()
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"{what}: not within {timeout:.0f} s")
        time.sleep(every)
    return time.monotonic() - t0


def http_ok(port: int, path: str) -> bool:
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        c.request("GET", path)
        ok = c.getresponse().status == 200
        c.close()
        return ok
    except (OSError, http.client.HTTPException):
        return False


def run_fault(name: str, action: Action, kafka: Kafka, pg: Postgres, a: argparse.Namespace,
              workdir: Path) -> Row:
    from ioc.gateway import hash_key, new_key
    from ioc.kafka import delete_namespace_topics, ensure_topics
    from ioc.storage import connect, drop_schema, migrate

    row = Row(name)
    ns = f"flt{secrets.token_hex(3)}"
    logdir = workdir / f"{name}-{ns}"
    logdir.mkdir(parents=True)
    key = new_key()
    ports = {"gateway_port": a.gateway_port, "wall_port": a.wall_port,
             "sink_args": a.sink_args}
    env = dict(os.environ, IOC_METRICS__ENABLED="false", IOC_CONFIG=str(workdir / "config.yaml"), IOC_NAMESPACE=ns,
               IOC_KAFKA__BOOTSTRAP_SERVERS=kafka.bootstrap,
               IOC_KAFKA__REPLICATION_FACTOR=str(kafka.replication),
               IOC_DATABASE__DSN=pg.dsn, IOC_WALL__SECRET=WALL_SECRET,
               IOC_GATEWAY__PUBLISHERS=json.dumps(
                   {"faults": {"key_sha256": hash_key(key), "sources": ["*"]}}))
    s = load_settings(env=env)
    assert ensure_topics(s).success
    migrate(s)
    services = Services(service_specs(a.workers, a.sinks), env, logdir, ports,
                        static=a.membership == "static")
    rows = Rows(s)
    lags = Lags(s)
    cpu = Cpu(services, kafka, pg)
    feeds: list[Feed] = []
    try:
        for svc in services.specs:
            services.start(svc)
        # Ready: one event through validate and the sink, the gateway and wall answering.
        from ioc.publish import Publisher

        with Publisher(s) as pub:
            pub.send_many([make_event(f"{ns}warm", 0, time.time(), 1.0)])
        t_ready = wait_until("services ready",
                             lambda: (rows.count() or 0) >= 1 and http_ok(a.gateway_port, "/healthz")
                             and port_open(a.wall_port), 240, watch=services.watch)
        log(f"{name}: services ready after {t_ready:.0f} s (namespace {ns}, logs {logdir})")
        run = secrets.token_hex(3)
        t_start = time.monotonic() + 0.5
        t_event0 = time.time() - 30
        deadline = t_start + a.steady_s + 900
        http_rate = a.rate * 0.2
        kfeed = KafkaFeed(s, run + "k", a.rate - http_rate, max(50, int((a.rate - http_rate) / 10)),
                          t_start, t_event0, deadline)
        hfeed = HttpFeed(a.gateway_port, key, run + "h", http_rate, max(20, int(http_rate / 4)),
                         t_start, t_event0, deadline)
        feeds = [kfeed, hfeed]
        rows.start()
        lags.start()
        cpu.start()
        for f in feeds:
            f.start()
        frames0 = frames_per_camera(s)
        time.sleep(max(0.0, t_start - time.monotonic()) + a.steady_s)
        services.watch()
        t_fault = time.monotonic()
        backlog_base = max((sum(f.scheduled(t) for f in feeds) - (n or 0)
                            for t, n in rows.samples if t > t_start + 3 and n is not None),
                           default=0.0)
        ctx = Ctx(kafka, pg, services, s, lambda: frames_per_camera(s), row.notes, a.wall_port,
                  a.workers)
        log(f"{name}: fault begins (pre-fault backlog at most {backlog_base:,.0f} events)")
        t_end = action(ctx)
        row.notes.insert(0, f"fault {t_end - t_fault:.0f} s")
        log(f"{name}: fault ended after {t_end - t_fault:.1f} s; waiting for recovery")
        limit = max(1.5 * backlog_base, 2.0 * a.rate)
        # Back: the first sample of the run of samples within the limit that lasts
        # HOLD_S (the backlog of a fault whose effect comes after its end, e.g. one of N
        # workers killed, its partitions waiting for its session to time out, rises only
        # after the restart: the samples just after it do not count as "back").
        recovered: float | None = None
        back_from: float | None = None
        while time.monotonic() < t_end + a.recover_max_s:
            services.watch()
            time.sleep(0.5)
            back_from = None
            for t, got in list(rows.samples):
                if t < t_end or got is None:
                    continue
                if sum(f.scheduled(t) for f in feeds) - got > limit:
                    back_from = None
                elif back_from is None:
                    back_from = t
                if back_from is not None and t - back_from >= HOLD_S:
                    recovered = back_from - t_end
                    break
            if recovered is not None:
                break
        if recovered is None and back_from is not None:  # back, not yet for HOLD_S
            recovered = back_from - t_end
        row.recover_s = recovered
        # The events table is what "recover s" measures; the sink's other tables (rollups,
        # alerts...) may drain later (they wait while events are behind): keep the load
        # on until they are back too, or recover_max_s, and say when each was.
        while recovered is not None and time.monotonic() < t_end + a.recover_max_s \
                and lags.pending(t_fault, t_end):
            services.watch()
            time.sleep(1.0)
        peak = max((sum(f.scheduled(t) for f in feeds) - n for t, n in rows.samples
                    if t >= t_fault and n is not None), default=0.0)
        row.notes.append(f"backlog before {backlog_base / a.rate:.1f} s, peak {peak / a.rate:.1f} s"
                         " of input")
        over = [t - t_fault for t, n in rows.samples if t >= t_fault and n is not None
                and sum(f.scheduled(t) for f in feeds) - n > limit]
        if over:  # when the pipeline was behind: e.g. a cluster node still down, yet caught up
            row.notes.append(f"behind from {over[0]:.0f} to {over[-1]:.0f} s after the fault began")
        # Where the recovery went: each sink table's backlog (lag) and when it was back;
        # the sink's own counters over the recovery (the events table's catch-up).
        drained = lags.profile(t_fault, t_end, stages=True)
        if drained:
            row.notes.append("stage lag: " + ", ".join(drained))
        drained = lags.profile(t_fault, t_end)
        if drained:
            row.notes.append("sink lag: " + ", ".join(drained))
        if a.trace is not None:
            write_trace(a.trace, name, t_fault, t_end, feeds, rows.samples, lags.samples,
                        cpu.samples)
        if recovered is not None and recovered > 5:
            wall = time.time() - time.monotonic()
            spent = sink_drain_lines(sorted(logdir.glob("sink*.log")), t_end + wall,
                                     t_end + recovered + 10 + wall)
            if spent:
                row.notes.append("sink from its last 10-s report before the fault's end to "
                                 "the recovery: " + ", ".join(spent))
        time.sleep(a.tail_s)
        for f in feeds:
            f.stop.set()
        for f in feeds:
            f.join(60)
        frames1 = frames_per_camera(s)
        want = sum(f.acked for f in feeds)
        log(f"{name}: publishing stopped ({want:,} events acknowledged); draining")
        t_drain, last, t_moved = time.monotonic(), -1, time.monotonic()
        while time.monotonic() < t_drain + a.drain_s:  # until stored, or stalled for 60 s
            services.watch()
            got = rows.count() or 0
            if got >= want + 1:
                break
            if got != last:
                last, t_moved = got, time.monotonic()
            elif time.monotonic() - t_moved > 60:
                row.notes.append(f"rows stalled at {got:,} for 60 s after publishing stopped")
                break
            time.sleep(1.0)
        rows.stop.set()
        rows.join(10)
        lags.stop.set()
        from psycopg import sql

        with connect(s.database, autocommit=True) as c:
            tbl = sql.Identifier(s.db_schema, "events")
            total, distinct = c.execute(sql.SQL(
                "select count(*), count(distinct id) from {} where id like %s").format(tbl),
                (f"{run}%",)).fetchone() or (0, 0)
            stored_ids = {r[0] for r in c.execute(sql.SQL(
                "select id from {} where id like %s").format(tbl), (f"{run}%",))}
        published = {f"{f.run_id}-{j}" for f in feeds for j in range(f.acked)}
        row.published, row.stored = len(published), int(total)
        row.missing = len(published - stored_ids)
        row.dup = int(total) - int(distinct)
        extra = len(stored_ids - published)
        retries = {f.name: f.retries for f in feeds if f.retries}
        if retries:
            row.notes.append("retries " + ", ".join(f"{k} {v}" for k, v in retries.items()))
        if hfeed.status_503:
            row.notes.append(f"HTTP 503 x{hfeed.status_503}")
        if extra:
            row.notes.append(f"{extra} stored ids never acknowledged (sent, ack lost)")
        unacked = sum(f.unacked for f in feeds)
        if unacked:
            row.notes.append(f"{unacked} events never acknowledged")
        if services.died:
            row.notes.append("DIED by themselves: " + ", ".join(
                f"{k} x{v}" for k, v in services.died.items()))
        cams = sum(1 for p, n in frames1.items() if n > frames0.get(p, 0))
        row.notes.append(f"frames +{sum(frames1.values()) - sum(frames0.values()):,} "
                         f"({cams}/{len(frames1)} partitions)")
    except (TimeoutError, SystemExit, IOCError, AssertionError) as exc:
        row.error = f"{type(exc).__name__}: {exc}"
        log(f"{name}: FAILED: {row.error}")
    finally:
        rows.stop.set()
        lags.stop.set()
        cpu.stop.set()
        for f in feeds:
            f.stop.set()
        services.stop_all()
        with contextlib.suppress(Exception):
            delete_namespace_topics(s)
        with contextlib.suppress(Exception):
            drop_schema(s)
    return row


# ---- the faults --------------------------------------------------------------------------

def broker_stop(seconds: float) -> Action:
    def act(c: Ctx) -> float:
        t0 = time.monotonic()
        c.kafka.down()
        time.sleep(max(0.0, t0 + seconds - time.monotonic()))
        t_up = time.monotonic()
        c.kafka.up()
        t_end = time.monotonic()
        c.notes.append(f"broker start {t_end - t_up:.0f} s")
        return t_end
    return act


def pg_stop(seconds: float) -> Action:
    def act(c: Ctx) -> float:
        t0 = time.monotonic()
        c.pg.stop()
        while time.monotonic() < t0 + seconds:
            c.services.watch()
            time.sleep(1.0)
        t_up = time.monotonic()
        c.pg.start()
        t_end = time.monotonic()
        c.notes.append(f"database start {t_end - t_up:.0f} s")
        return t_end
    return act


def worker_takeover(c: Ctx, groups: WorkerGroups, before: dict[str, tuple[str, frozenset[str]]],
                    t_kill: float, t_restart: float, timeout: float = 180.0) -> None:
    """After kill -9 of one of ``c.workers`` identical workers: note when every worker
    group was Stable with the N-1 others alone (they owned all its partitions; seen
    only if it happened between two samples, 0.5 s apart) and when with N members
    again, one of them new (the restarted worker; the killed one's member gone)."""
    n = c.workers
    t_alone: float | None = None
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        c.services.watch()
        got = groups.members()
        if got is not None and set(got) == set(before):
            stable = all(st == "Stable" for st, _ in got.values())
            if stable and n > 1 and t_alone is None and all(
                    len(m) == n - 1 and m < before[g][1] for g, (_, m) in got.items()):
                t_alone = time.monotonic()
            if stable and all(len(m) == n and m != before[g][1] for g, (_, m) in got.items()):
                others = "the other worker" + ("s" if n > 2 else "")
                alone = ("" if n == 1 else f"{others} alone not seen; " if t_alone is None
                         else f"{others} alone from +{t_alone - t_kill:.0f} s after the kill; ")
                c.notes.append(f"{len(got)} worker groups: {alone}{n} members again "
                               f"{time.monotonic() - t_restart:.0f} s after the restart")
                return
        time.sleep(0.5)
    c.notes.append(f"worker groups not Stable with {n} members {timeout:.0f} s after the "
                   f"restart: {groups.members()}")


def kill9(service: str) -> Action:
    def act(c: Ctx) -> float:
        groups = WorkerGroups(c.s) if service.startswith("worker-") else None
        before = groups.members() if groups else None
        if groups and not before:
            raise AssertionError(f"no worker groups of {groups.app_id} before the kill")
        t_kill = time.monotonic()
        c.services.kill9(service)
        time.sleep(1.0)  # a supervisor's restart delay (systemd RestartSec=1)
        t_end = time.monotonic()
        c.services.start(service)
        if groups and before:
            try:
                worker_takeover(c, groups, before, t_kill, t_end)
            finally:
                groups.close()
        elif service == "wall":
            back = wait_until("wall /healthz", lambda: http_ok(c.wall_port, "/healthz"), 120)
            c.notes.append(f"wall /healthz 200 {back:.0f} s after restart")
        elif service == "capture":
            before = sum(c.frames().values())
            back = wait_until("frames", lambda: sum(c.frames().values()) > before + 4, 120, every=1.0)
            c.notes.append(f"frames flowing {back:.0f} s after restart")
        return t_end
    return act


def cluster_kill(node: int, seconds: float) -> Action:
    def act(c: Ctx) -> float:
        t0 = time.monotonic()
        c.kafka.kill9(node)
        c.notes.append(f"node {node} of 3 killed")
        time.sleep(max(0.0, t0 + seconds - time.monotonic()))
        t_up = time.monotonic()
        c.kafka.up()
        t_end = time.monotonic()
        c.notes.append(f"node start {t_end - t_up:.0f} s")
        return t_end
    return act


def faults(a: argparse.Namespace) -> dict[str, tuple[Action, bool]]:
    """name -> (action, runs on the 3-node cluster)."""
    out: dict[str, tuple[Action, bool]] = {
        "broker-stop": (broker_stop(a.broker_s), False),
        "pg-stop-20s": (pg_stop(20), False),
        "pg-stop-long": (pg_stop(a.pg_long_s), False),
    }
    for name, svc in KILLABLE.items():
        out[f"kill-{name}"] = (kill9(svc), False)
    out["cluster-kill-broker"] = (cluster_kill(1, a.cluster_down_s), True)
    return out


QUICK = ("broker-stop", "pg-stop-20s", "kill-worker", "kill-sink", "kill-gateway")


def write_config(path: Path, data_dir: Path) -> None:
    """Settings of the run: the demo's 4 cameras (2 fps, 320 px) and one wall screen."""
    demo = yaml.safe_load((ROOT / "deploy" / "local" / "demo.yaml").read_text())
    cams = demo["cameras"]
    cams["fps"], cams["width"] = 2, 320
    for cam in cams["cameras"]:
        cam["url"] = str(data_dir / cam["url"].split("data/", 1)[1])
    cfg = {"cameras": cams, "wall": {"screens": {"main": demo["wall"]["screens"]["main"]}}}
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))


def print_table(rows: list[Row], a: argparse.Namespace, load: tuple[float, float]) -> None:
    print()
    print(f"FAULTS at {a.rate:,.0f} ev/s (80% Kafka producer, 20% HTTP gateway) + 4 cameras "
          f"at 2 fps; {a.membership} group membership; {os.cpu_count()} cores; "
          f"load average {load[0]:.1f} before, "
          f"{os.getloadavg()[0]:.1f} after")
    hdr = f"{'fault':<22}{'published':>10}{'stored':>10}{'missing':>9}{'dup':>6}{'recover s':>11}  notes"
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        if r.error:
            print(f"{r.name:<22}{'FAILED':>10}  {r.error}")
            continue
        rec = "never" if r.recover_s is None else f"{r.recover_s:.1f}"
        print(f"{r.name:<22}{r.published:>10,}{r.stored:>10,}{r.missing:>9,}{r.dup:>6,}{rec:>11}"
              f"  {'; '.join(r.notes)}")
    ok = [r for r in rows if not r.error and not r.missing and not r.dup
          and r.recover_s is not None and r.recover_s <= 30]
    print(f"target (0 missing, 0 duplicated, recovery <= 30 s): met by {len(ok)} of {len(rows)}"
          + ("" if len(ok) == len(rows) else ": not met by " + ", ".join(
              r.name for r in rows if r not in ok)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", action="append", default=[], metavar="NAME",
                    help="run this fault (repeatable); see --list")
    ap.add_argument("--quick", action="store_true",
                    help=f"the fast cases ({', '.join(QUICK)}), broker down 10 s, 10 s steady")
    ap.add_argument("--list", action="store_true", help="list the faults")
    ap.add_argument("--rate", type=float, default=2000.0, help="events/s (default 2,000)")
    ap.add_argument("--workers", type=int, default=2, metavar="N",
                    help="identical 'ioc worker' processes, every agent in each (default 2: "
                         "kill-worker kills worker 1 beside the other, whose partitions flow "
                         "on and which shares the killed one's after the rebalance)")
    ap.add_argument("--broker-s", type=float, default=None, help="broker down (30 s; quick 10 s)")
    ap.add_argument("--pg-long-s", type=float, default=300.0,
                    help="the long database outage in seconds (default 300)")
    ap.add_argument("--cluster-down-s", type=float, default=20.0,
                    help="seconds the killed cluster node stays down (default 20)")
    ap.add_argument("--steady-s", type=float, default=None, help="load before the fault (20; quick 10)")
    ap.add_argument("--tail-s", type=float, default=5.0, help="load after recovery (default 5)")
    ap.add_argument("--recover-max-s", type=float, default=240.0,
                    help="give up waiting for recovery after this long (default 240)")
    ap.add_argument("--drain-s", type=float, default=180.0,
                    help="wait this long for the rows after publishing stops (default 180)")
    ap.add_argument("--sinks", type=int, default=1, metavar="N",
                    help="identical `ioc sink` processes (default 1; each table's group "
                         "shares its partitions among them)")
    ap.add_argument("--sink-args", default="", metavar="ARGS",
                    help="more options of 'ioc sink', e.g. \"--first ''\" (before/after runs)")
    ap.add_argument("--gateway-port", type=int, default=29180)
    ap.add_argument("--wall-port", type=int, default=29181)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/ioc-bench-faults"),
                    help="private brokers, database and logs (removed first)")
    ap.add_argument("--membership", choices=("static", "dynamic"), default="static",
                    help="consumer group membership of the workers and sinks: static (each "
                         "its own kafka.group_instance_id, its service name; the default, "
                         "as deployed) or dynamic (none)")
    ap.add_argument("--trace", type=Path, default=None, metavar="FILE",
                    help="append each fault's samples to FILE, one JSON line per second "
                         "from the fault's start: s after its end, events scheduled, "
                         "acknowledged per feed, rows stored, lags (sink tables and stages), "
                         "CPU per part in cores (each service, broker, postgres, bench)")
    ap.add_argument("--keep", action="store_true", help="leave the brokers/database running")
    a = ap.parse_args()
    # The suite's own lag probe (librdkafka) logs each failed connect while the broker is
    # down (thousands of lines per broker fault): each kind once per 30 s, as the services do.
    quiet_kafka_client_logs()
    if a.workers < 1:
        ap.error(f"--workers: expected at least 1, got {a.workers}")
    a.broker_s = a.broker_s if a.broker_s is not None else (10.0 if a.quick else 30.0)
    a.steady_s = a.steady_s if a.steady_s is not None else (10.0 if a.quick else 20.0)
    table = faults(a)
    if a.list:
        for n in table:
            print(n + ("  (quick)" if n in QUICK else ""))
        return
    names = a.only or (list(QUICK) if a.quick else list(table))
    unknown = [n for n in names if n not in table]
    if unknown:
        ap.error(f"unknown fault(s) {unknown}; known: {list(table)}")
    data_dir = Path(os.environ.get("IOC_DATA_DIR") or ROOT.parent / "shared" / "data")
    load0 = os.getloadavg()[:2]
    w = a.workdir
    if w.exists():
        for sub, nodes, port in (("kafka1", 1, KAFKA1_PORT), ("kafka3", 3, KAFKA3_PORT)):
            if (w / sub).exists():
                with contextlib.suppress(SystemExit):
                    Kafka(w / sub, port, nodes).down()
        if (w / "pg" / "data" / "postmaster.pid").exists():
            with contextlib.suppress(SystemExit):
                Postgres(w / "pg", PG_PORT).stop()
        shutil.rmtree(w)
    w.mkdir(parents=True)
    write_config(w / "config.yaml", data_dir)
    k1, k3, pg = Kafka(w / "kafka1", KAFKA1_PORT, 1), Kafka(w / "kafka3", KAFKA3_PORT, 3), \
        Postgres(w / "pg", PG_PORT)
    busy = [p for p in (KAFKA1_PORT, KAFKA1_PORT + 1, *range(KAFKA3_PORT, KAFKA3_PORT + 6),
                        PG_PORT, a.gateway_port, a.wall_port) if port_open(p)]
    if busy:
        raise SystemExit(f"ports already in use on 127.0.0.1: {busy} (another run?)")
    rows: list[Row] = []
    try:
        pg.init()
        pg.start()
        log(f"private PostgreSQL on 127.0.0.1:{PG_PORT}")
        if any(not table[n][1] for n in names):
            k1.up()
            log(f"private Kafka (1 node) on {k1.bootstrap}")
        for n in names:
            action, on_cluster = table[n]
            kafka = k3 if on_cluster else k1
            if on_cluster and not port_open(KAFKA3_PORT):
                k3.up()
                log(f"private Kafka (3 nodes, rf 3, min ISR 2) on {k3.bootstrap}")
            rows.append(run_fault(n, action, kafka, pg, a, w))
            r = rows[-1]
            log(f"{n}: published {r.published:,} stored {r.stored:,} missing {r.missing:,} dup "
                f"{r.dup:,} recover {r.recover_s} {'; '.join(r.notes)} {r.error or ''}")
    finally:
        if not a.keep:
            for k in (k1, k3):
                if (k.state / "kafka").exists():
                    with contextlib.suppress(SystemExit):
                        k.down()
            with contextlib.suppress(SystemExit):
                pg.stop()
        print_table(rows, a, load0)
    if any(r.error or r.missing or r.dup for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
