"""The event engine experiment (issue 18, docs/adr/0002-event-engine.md): today's stages
against a Faust agent on batched records, same input, same run.

    .venv/bin/python bench/bench_engine.py rate --rate R [--faust-rate RF] [--seconds T] [--repeat 2]
    .venv/bin/python bench/bench_engine.py capacity [--events N] [--repeat 2]
    .venv/bin/python bench/bench_engine.py restart [--entities 100000] [--repeat 2] [--paths stages]
    .venv/bin/python bench/bench_engine.py kill [--rate R] [--seconds T]
    .venv/bin/python bench/bench_engine.py cpu [--events N]       # no broker

The two paths, each a real process on the broker of the settings (127.0.0.1:19092 for
the local stack), each in a namespace of its own (topics deleted at the end):

    stages  `ioc worker --agents aggregate,kpis,rules` (the combined batch stage) on
            <ns>.events with one record per event, as validate writes it today;
    faust   `python -m streams.faust_path` (one Faust agent, RocksDB tables, standby
            replicas 1) on <ns>.events with batched records: the events of one input
            chunk for one partition per record (streams.faust_path.batch_by_partition).

Both get the same validated events (``bench_events.make_events``: 500 sensors, plus one
e-gov "probe" event per chunk), in chunks of max(100, R/20) events every chunk/R s, the
publisher's chunks; the bench writes <ns>.events itself, so validate and the sink do not
run (the batched form is produced here, not by validate). Each event carries the
``ioc.raw`` origin a validate would give it.

rate       R events/s for T s into each path in turn (stages, faust, repeated), lag of
           the path's consumer group sampled every 2 s; the SUSTAINED verdict of
           bench_events.py (publisher <= 2 s behind; lag at the end <= 2 s of input +
           the commit interval; growth over the last third <= 0.5 s + the commit
           interval; lag 0 within 15 s). Also: CPU µs/event of the worker and the broker,
           and the probe latency (probe produced -> its KPI value on <ns>.kpis) p50/p99.
capacity   N events written before the worker starts; events/s from the worker's start
           (after its warm-up probe) until its group committed the end: the most a path
           drains, for choosing R.
restart    one event each of N entities (air-quality readings of entities "aq-N", so that
           the absence rule of "air-" entities does not fire), drained
           and committed; the worker stopped (SIGTERM); a probe written; the worker
           started again: seconds from the process start until the probe's KPI value
           is out. Each path twice, same run: with its local state kept (a restart;
           stages: the snapshots of streams.state_dir, read with the changelogs' tail;
           faust: its RocksDB directory) and wiped (a new host: the whole changelog is
           read); the ratio kept / wiped is printed, and for the stages what the restore
           read (changelog records, entries from snapshots, from the worker's log).
           --paths stages measures the stages only.
cpu        both paths' pure work in this process, no Kafka: the combined stage's process
           (as bench_stage_cpu.py) against EventCore.process, µs/event, and EventCore's
           outputs and state writes per event.
kill       the faust path under R ev/s is killed -9 mid-stream and started again; the
           outputs (closed rollups, latest KPI values, alerts, each deduplicated by its
           key) are compared with EventCore run in this process on the same records:
           nothing lost, nothing doubled.

Baseline in every mode: the other path in the same run (ratios printed), and the load
average (/proc/loadavg) before and after each run.

Needs the local stack (``make up``) and, for the faust path, rocksdict
(``pip install -e .[engine-experiment]``). Worker logs: /tmp/ioc-bench-engine/.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_events import cpu_seconds, make_events  # noqa: E402

from ioc.config import Settings, load_settings  # noqa: E402
from ioc.events import Event, encode_event  # noqa: E402
from ioc.kafka import acked_producer, delete_namespace_topics, ensure_topics, rdkafka_conf  # noqa: E402
from ioc.topics import spec, topic_name  # noqa: E402
from streams.engine import key_partition  # noqa: E402
from streams.faust_path import EventCore, batch_by_partition  # noqa: E402

PARTS = spec("events").partitions
PATHS = ("stages", "faust")
PROBE = "probe-agency"
PROBE_KEY = "dossiers_online|probe-agency|year|"
LOGDIR = Path("/tmp/ioc-bench-engine")


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def group_of(path: str, ns: str) -> str:
    return f"{ns}-streams.aggregate+kpis+rules" if path == "stages" else f"{ns}-faustpath"


def probe_event(j: int, t: float) -> Event:
    return Event(id=f"probe-{j}", source="bench", type="egov.dossier", entity=PROBE, time=t,
                 values={"count": 1.0}, attributes={"channel": "online"})


@dataclass
class Input:
    """What the bench writes to <ns>.events for one path, chunk by chunk."""

    path: str
    chunks: list[list[tuple[int, bytes, bytes, list[tuple[str, bytes]] | None]]]
    # per chunk: (partition, key, value, headers) records
    events_per_record: list[list[int]] = field(default_factory=lambda: [[] for _ in range(PARTS)])


def build_input(path: str, chunks: list[list[Event]], raw0: int = 0) -> Input:
    """The records of ``chunks`` for ``path``: one per event, or one per partition."""
    inp = Input(path, [])
    for c, events in enumerate(chunks):
        recs: list[tuple[int, bytes, bytes, list[tuple[str, bytes]] | None]] = []
        if path == "stages":
            for i, e in enumerate(events):
                key = e.entity.encode()
                recs.append((key_partition(key, PARTS), key, encode_event(e),
                             [("ioc.raw", b"0:%d:%d" % (raw0 + c, i))]))
        else:
            trip = [(e.entity.encode(), b"0:%d:%d" % (raw0 + c, i), encode_event(e))
                    for i, e in enumerate(events)]
            counts: dict[int, int] = {}
            for key, _o, _v in trip:
                p = key_partition(key, PARTS)
                counts[p] = counts.get(p, 0) + 1
            for p, value in batch_by_partition(trip, PARTS).items():
                recs.append((p, b"p%d" % p, value, None))
        inp.chunks.append(recs)
    return inp


def chunked(n: int, rate: float, run: str, time_step: float = 0.001) -> list[list[Event]]:
    """``n`` bench events in publisher chunks, each chunk ending with a probe event;
    ``time_step``: event-time seconds between two events (make_events: 0.001)."""
    chunk = max(100, int(rate // 20))
    raw = make_events(n, run)
    t_start = time.time() - n * time_step
    for i, e in enumerate(raw):
        e["time"] = t_start + i * time_step
    evs = [Event(**e) for e in raw]
    out = []
    for j, i in enumerate(range(0, n, chunk)):
        out.append([*evs[i:i + chunk], probe_event(j, evs[min(i + chunk, n) - 1].time)])
    return out


def broker_cpu() -> float:
    """CPU seconds of the broker listening on the settings' first bootstrap port (other
    brokers on this machine, private ones of fault tests, are not counted)."""
    port = load_settings().kafka.bootstrap_servers[0].rsplit(":", 1)[1]
    global _BROKER_PID
    if _BROKER_PID is None:
        out = subprocess.run(["ss", "-ltnpH", f"sport = :{port}"], capture_output=True,
                             text=True, check=False).stdout
        pid = out.split("pid=", 1)[1].split(",", 1)[0] if "pid=" in out else ""
        if not pid.isdigit():
            raise SystemExit(f"no process found listening on port {port} (ss -ltnp)")
        _BROKER_PID = int(pid)
    return cpu_seconds(_BROKER_PID)


_BROKER_PID: int | None = None


# -- processes --

def env_of(s: Settings) -> dict[str, str]:
    return dict(os.environ, IOC_NAMESPACE=s.namespace,
                IOC_KAFKA__BOOTSTRAP_SERVERS=",".join(s.kafka.bootstrap_servers),
                IOC_DATABASE__DSN=s.database.dsn.get_secret_value(),
                IOC_METRICS__WORKER="0")  # any free port: other workers run on this machine


def start(path: str, s: Settings, data_dir: Path, log: Path) -> subprocess.Popen[bytes]:
    env = env_of(s)
    if path == "stages":  # the stages' local snapshots (streams.state_dir) in data_dir
        args = ["-m", "ioc", "worker", "--agents", "aggregate,kpis,rules", "--loglevel", "info"]
        env["IOC_STREAMS__STATE_DIR"] = str(data_dir / "snapshots")
    else:
        args = ["-m", "streams.faust_path", "--data-dir", str(data_dir)]
    return subprocess.Popen([sys.executable, *args], env=env, cwd=ROOT,
                            stdout=open(log, "ab"), stderr=subprocess.STDOUT)


def restored(log: Path, since: int, started: float) -> tuple[str, float | None]:
    """What the stages' restores logged after byte ``since`` of ``log``: changelog records
    read and entries loaded from snapshots, summed over tables, and the first restore's
    seconds (('', None) for the faust path); and the seconds from ``started`` (wall
    clock) until Faust logged its start (Python start and imports)."""
    import re
    from datetime import datetime

    try:
        text = log.read_bytes()[since:].decode(errors="replace")
    except OSError:
        return "", None
    found = re.findall(r"(\d+) changelog record\(s\) read, (\d+) entries from snapshots", text)
    if not found:
        return "", None
    took = re.findall(r"restore of \d+ new partition\(s\) took ([\d.]+) s", text)
    boot = ""
    first = re.search(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\] \[\d+\] \[INFO\] "
                      r"\[\^Worker\]: Starting", text, re.M)
    if first:
        at = datetime.strptime(first.group(1), "%Y-%m-%d %H:%M:%S,%f")
        t = at.timestamp()  # the worker logs local time, as a naive datetime means
        boot = f" [Python start until Faust's start {t - started:.1f} s]"
    return (f"{boot}  [restore{f' {float(took[0]):.2f} s' if took else ''}: "
            f"{sum(int(a) for a, _b in found):,} changelog records read, "
            f"{sum(int(b) for _a, b in found):,} entries from snapshots]",
            float(took[0]) if took else None)


def crashes(log: Path) -> str:
    """Agent crashes Faust logged (each restarts the agent; the record in flight is
    acknowledged without its state writes): '' when none."""
    try:
        n = log.read_text(errors="replace").count("Crashed reason=")
    except OSError:
        return ""
    return f"  [{n} Faust agent crash(es) in {log.name}]" if n else ""


def stop(p: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if p.poll() is None:
        p.send_signal(sig)
        try:
            p.wait(60)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(10)


@contextmanager
def namespace(tag: str) -> Iterator[Settings]:
    s = load_settings().with_namespace(f"beng{secrets.token_hex(3)}{tag}")
    assert ensure_topics(s).success
    try:
        yield s
    finally:
        delete_namespace_topics(s)


# -- Kafka helpers of the bench --

class Writer:
    """Writes an Input's chunks to <ns>.events (librdkafka, acks=all), counting events per
    record so that lag in records converts to lag in events."""

    def __init__(self, s: Settings, inp: Input) -> None:
        self.topic = topic_name(s.namespace, "events")
        self.p = acked_producer(s.kafka)
        self.inp = inp
        self.cum = [[0] for _ in range(PARTS)]  # per partition: events before offset k

    def write(self, c: int) -> float:
        """Produce chunk ``c``; returns the time its probe (last record) was produced."""
        for part, key, value, headers in self.inp.chunks[c]:
            n = 1 if self.inp.path == "stages" else _count(value)
            while True:
                try:
                    self.p.produce(self.topic, value, key, part, headers=headers)
                    break
                except BufferError:
                    self.p.poll(0.05)
            self.cum[part].append(self.cum[part][-1] + n)
        self.p.poll(0)
        return time.perf_counter()

    def flush(self) -> None:
        assert self.p.flush(60) == 0


def _count(value: bytes) -> int:
    return int.from_bytes(value[5:9], "big")


class Lag:
    """Events not yet committed by a group on <ns>.events (committed offsets)."""

    def __init__(self, s: Settings, group: str, w: Writer) -> None:
        from confluent_kafka import Consumer, TopicPartition

        conf = rdkafka_conf(s.kafka, "consumer")
        conf.update({"group.id": group, "enable.auto.commit": False})
        self.c = Consumer(conf)
        self.tps = [TopicPartition(w.topic, p) for p in range(PARTS)]
        self.w = w

    def events(self) -> int:
        total = 0
        for tp in self.c.committed(self.tps, timeout=10):
            cum = self.w.cum[tp.partition]
            off = max(0, tp.offset)
            total += cum[-1] - cum[min(off, len(cum) - 1)]
        return total

    def close(self) -> None:
        self.c.close()


class ProbeWatch(threading.Thread):
    """Reads <ns>.kpis; ``seen[n]``: when the probe agency's value with denominator n
    (its n-th probe applied) first arrived. A stage that applies several probes in one
    batch sends only the last count: ``first(n)`` is when a count >= n first arrived."""

    def __init__(self, s: Settings) -> None:
        super().__init__(daemon=True, name="probe-watch")
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        conf = rdkafka_conf(s.kafka, "consumer")
        conf.update({"group.id": f"{s.namespace}-bench-probe", "enable.auto.commit": False})
        self.c = Consumer(conf)
        topic = topic_name(s.namespace, "kpis")
        self.c.assign([TopicPartition(topic, p, OFFSET_BEGINNING)
                       for p in range(spec("kpis").partitions)])
        self.seen: dict[int, float] = {}
        self.top = 0
        self.stopping = threading.Event()

    def run(self) -> None:
        import orjson

        while not self.stopping.is_set():
            for m in self.c.consume(1000, 0.1):
                if m.error() is not None or not m.key():
                    continue
                if m.key().decode().startswith(PROBE_KEY):
                    n = int(orjson.loads(m.value())["denominator"])
                    self.seen.setdefault(n, time.perf_counter())
                    self.top = max(self.top, n)
        self.c.close()

    def wait_for(self, n: int, timeout: float, proc: subprocess.Popen[bytes] | None = None
                 ) -> float:
        end = time.perf_counter() + timeout
        while self.top < n:
            if proc is not None and proc.poll() is not None:
                raise SystemExit(f"worker ended with {proc.returncode}; see {LOGDIR}")
            if time.perf_counter() > end:
                raise SystemExit(f"probe {n} not out within {timeout:.0f} s; see {LOGDIR}")
            time.sleep(0.02)
        return self.first(n)

    def first(self, n: int) -> float:
        """When a count >= ``n`` first arrived (inf: not yet)."""
        return min((t for d, t in list(self.seen.items()) if d >= n), default=float("inf"))


# -- rate --

@dataclass
class RateResult:
    path: str
    rate: float
    n: int
    behind: float
    samples: list[tuple[float, int]]
    t_pub: float
    drained: float | None
    cpu_worker: float
    cpu_broker: float
    lat: list[float]
    records: int
    processed: int
    load: tuple[str, str]
    log: Path
    verdict: list[str]

    def line(self) -> str:
        lat = sorted(self.lat)
        p50 = lat[len(lat) // 2] * 1000 if lat else float("nan")
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000 if lat else float("nan")
        lagmax = max((lag for _t, lag in self.samples), default=0) / self.rate
        return (f"{self.path:<7} {self.rate:>8,.0f} ev/s  "
                f"{'SUSTAINED' if not self.verdict else 'not sustained':<14}"
                f" lag max {lagmax:5.2f} s  drained {('-' if self.drained is None else f'{self.drained:.1f} s'):>7}"
                f"  CPU µs/event processed ({self.processed:,}) worker "
                f"{self.cpu_worker / self.processed * 1e6:5.1f} broker "
                f"{self.cpu_broker / self.processed * 1e6:5.1f}  probe latency p50 {p50:6.1f} ms "
                f"p99 {p99:6.1f} ms  records {self.records:,}  load {self.load[0]} -> {self.load[1]}")


COMMIT_S = 1.0


def run_rate(path: str, rate: float, seconds: float, *, kill_at: float | None = None,
             drain_s: float = 30.0, time_step: float = 0.001
             ) -> tuple[RateResult, Settings | None, Any]:
    """One path at ``rate`` for ``seconds``; waits at most ``drain_s`` after publishing for
    lag 0 (the verdict needs 15 s)."""
    n = int(rate * seconds)
    chunks = chunked(n, rate, secrets.token_hex(3), time_step)
    warm = build_input(path, [[probe_event(-1, chunks[0][0].time)]])
    inp = build_input(path, chunks, raw0=1)
    inp.chunks = warm.chunks + inp.chunks
    LOGDIR.mkdir(parents=True, exist_ok=True)
    l0 = loadavg()
    with namespace(path[0]) as s:
        data_dir = LOGDIR / f"{s.namespace}-data"
        log = LOGDIR / f"{s.namespace}-{path}.log"
        w = Writer(s, inp)
        watch = ProbeWatch(s)
        watch.start()
        w.write(0)
        w.flush()
        proc = start(path, s, data_dir, log)
        try:
            watch.wait_for(1, 180, proc)
            lag = Lag(s, group_of(path, s.namespace), w)
            end = time.monotonic() + 60
            while lag.events():
                if time.monotonic() > end:
                    raise SystemExit(f"{path}: warm-up not committed; see {log}")
                time.sleep(0.2)
            cpu0, b0 = cpu_seconds(proc.pid), broker_cpu()
            sent: dict[int, float] = {}
            samples: list[tuple[float, int]] = []
            stopping = threading.Event()

            def sampler() -> None:
                while not stopping.is_set():
                    t = time.perf_counter() - t0
                    try:
                        samples.append((t, lag.events()))
                    except Exception as exc:
                        print(f"lag sample failed: {exc!r}", file=sys.stderr)
                    stopping.wait(2.0)

            t0 = time.perf_counter()
            th = threading.Thread(target=sampler, daemon=True)
            th.start()
            every = len(chunks[0]) / rate
            behind = 0.0
            killed = False
            for c in range(1, len(inp.chunks)):
                due = t0 + (c - 1) * every
                late = time.perf_counter() - due
                if late < 0:
                    time.sleep(-late)
                behind = max(behind, time.perf_counter() - due)
                sent[c + 1] = w.write(c)  # probe c+1 (the warm-up probe was 1)
                if kill_at is not None and not killed and time.perf_counter() - t0 >= kill_at:
                    cpu0 -= cpu_seconds(proc.pid)
                    proc.kill()
                    proc.wait()
                    killed = True
                    print(f"  kill -9 of the {path} worker at {time.perf_counter() - t0:.1f} s; "
                          "started again", flush=True)
                    proc = start(path, s, data_dir, log)
            w.flush()
            t_pub = time.perf_counter() - t0
            drained = None
            while time.perf_counter() - t0 < t_pub + drain_s:
                if proc.poll() is not None:
                    raise SystemExit(f"{path} worker ended; see {log}")
                if not lag.events():
                    drained = time.perf_counter() - t0 - t_pub
                    break
                time.sleep(0.1)
            cpu_w, cpu_b = cpu_seconds(proc.pid) - cpu0, broker_cpu() - b0
            processed = n - lag.events()  # CPU per event counts the events processed
            stopping.set()
            th.join()
            last = len(inp.chunks)
            if drained is not None:
                try:
                    watch.wait_for(last, 30)
                except SystemExit as exc:
                    print(f"  {exc}")
            firsts = sorted(watch.seen.items())
            lat = []
            for k, t_sent in sent.items():
                t_out = min((t for d, t in firsts if d >= k), default=None)
                if t_out is not None:
                    lat.append(t_out - t_sent)
            lag.close()
        finally:
            stop(proc)
            watch.stopping.set()
            watch.join()
            shutil.rmtree(data_dir, ignore_errors=True)
        records = sum(len(c) for c in inp.chunks)
        r = RateResult(path, rate, n, max(0.0, t_pub - n / rate), samples, t_pub, drained,
                       cpu_w, cpu_b, lat, records, max(1, processed), (l0, loadavg()), log, [])
        r.verdict = verdict(r)
        return r, (s if kill_at is not None else None), inp


def verdict(r: RateResult) -> list[str]:
    """bench_events.py's SUSTAINED criterion, on this path's one group."""
    fails = []
    if r.behind > 2.0:
        fails.append(f"publisher ended {r.behind:.1f} s behind")
    during = [lag for t, lag in r.samples if t < r.t_pub]
    after = [lag for t, lag in r.samples if t >= r.t_pub]
    mid, last = during[len(during) // 3: 2 * len(during) // 3], during[2 * len(during) // 3:]
    if mid and last and (min(last) - min(mid)) > (0.5 + COMMIT_S) * r.rate:
        fails.append(f"lag grew by {(min(last) - min(mid)) / r.rate:.1f} s")
    end = after[0] if after else (during[-1] if during else 0)
    if end > (2.0 + COMMIT_S) * r.rate:
        fails.append(f"lag at end {end / r.rate:.1f} s")
    if r.drained is None or r.drained > 15.0:
        fails.append("not at lag 0 within 15 s" if r.drained is None
                     else f"lag 0 only {r.drained:.1f} s after publishing")
    return fails


def cmd_rate(a: argparse.Namespace) -> None:
    rates = {"stages": a.rate, "faust": a.faust_rate or a.rate}
    results: list[RateResult] = []
    for rep in range(a.repeat):
        for path in PATHS:
            r, _s, _i = run_rate(path, rates[path], a.seconds)
            print(f"run {rep + 1}: {r.line()}" + crashes(r.log) + ("" if not r.verdict else
                  "\n        not sustained: " + "; ".join(r.verdict)), flush=True)
            print("        lag (s of input, every 2 s): " + " ".join(
                f"{lag / r.rate:.1f}" for _t, lag in r.samples), flush=True)
            results.append(r)
    for rep in range(a.repeat):
        st, fa = results[2 * rep], results[2 * rep + 1]
        print(f"ratio run {rep + 1}: faust/stages rate asked {fa.rate / st.rate:.2f} "
              f"(faust {'sustained' if not fa.verdict else 'NOT sustained'}, stages "
              f"{'sustained' if not st.verdict else 'NOT sustained'}); CPU/event faust/stages "
              f"worker {fa.cpu_worker / fa.processed / (st.cpu_worker / st.processed):.2f}, "
              f"worker+broker {(fa.cpu_worker + fa.cpu_broker) / fa.processed / ((st.cpu_worker + st.cpu_broker) / st.processed):.2f}")


# -- capacity --

def cmd_capacity(a: argparse.Namespace) -> None:
    figures: dict[str, list[float]] = {p: [] for p in PATHS}
    for rep in range(a.repeat):
        for path in PATHS:
            chunks = chunked(a.events, a.chunk_rate, secrets.token_hex(3))
            inp = build_input(path, chunks, raw0=1)
            warm = build_input(path, [[probe_event(-1, chunks[0][0].time)]])
            l0 = loadavg()
            with namespace(path[0]) as s:
                data_dir = LOGDIR / f"{s.namespace}-data"
                log = LOGDIR / f"{s.namespace}-{path}.log"
                LOGDIR.mkdir(parents=True, exist_ok=True)
                inp.chunks = warm.chunks + inp.chunks
                w = Writer(s, inp)
                for c in range(len(inp.chunks)):
                    w.write(c)
                w.flush()
                watch = ProbeWatch(s)
                watch.start()
                proc = start(path, s, data_dir, log)
                try:
                    t_first = watch.wait_for(1, 180, proc)
                    lag = Lag(s, group_of(path, s.namespace), w)
                    cpu0, b0 = cpu_seconds(proc.pid), broker_cpu()
                    while lag.events():
                        if proc.poll() is not None or time.perf_counter() - t_first > 900:
                            raise SystemExit(f"{path}: did not drain; see {log}")
                        time.sleep(0.05)
                    dt = time.perf_counter() - t_first
                    cpu_w, cpu_b = cpu_seconds(proc.pid) - cpu0, broker_cpu() - b0
                    lag.close()
                finally:
                    stop(proc)
                    watch.stopping.set()
                    watch.join()
                    shutil.rmtree(data_dir, ignore_errors=True)
            n = a.events + len(chunks)
            figures[path].append(n / dt)
            print(f"run {rep + 1}: {path:<7} drained {n:,} events in {dt:.1f} s = "
                  f"{n / dt:>8,.0f} ev/s (from its first output; records "
                  f"{sum(len(c) for c in inp.chunks):,}); CPU µs/event worker "
                  f"{cpu_w / n * 1e6:.1f} broker {cpu_b / n * 1e6:.1f}; load {l0} -> "
                  f"{loadavg()}" + crashes(log), flush=True)
    for rep in range(a.repeat):
        print(f"ratio run {rep + 1}: faust/stages capacity "
              f"{figures['faust'][rep] / figures['stages'][rep]:.2f}")


# -- restart --

def cmd_restart(a: argparse.Namespace) -> None:
    out: dict[str, list[float]] = {}
    for rep in range(a.repeat):
        for path in a.paths.split(","):
            chunk = 1000
            run = secrets.token_hex(3)
            t = time.time() - 60
            # --rounds R: R events per entity, round after round (R changelog records per
            # key when commits fall between rounds: a changelog not yet compacted)
            evs = [Event(id=f"{run}-{r}-{i}", source="bench", type="air.quality",
                         entity=f"aq-{i:06d}", time=t + r * 20 + i * 1e-4,
                         values={"pm25": 20.0 + r, "pm10": 30.0}, attributes={})
                   for r in range(a.rounds) for i in range(a.entities)]
            t += 20 * (a.rounds - 1)
            chunks = [evs[i:i + chunk] for i in range(0, len(evs), chunk)]
            chunks[-1].append(probe_event(0, t))
            chunks.append([probe_event(1, t + 1)])  # written after the stop
            inp = build_input(path, chunks)
            l0 = loadavg()
            with namespace(path[0]) as s:
                LOGDIR.mkdir(parents=True, exist_ok=True)
                data_dir = LOGDIR / f"{s.namespace}-data"
                log = LOGDIR / f"{s.namespace}-{path}.log"
                w = Writer(s, inp)
                for c in range(len(chunks) - 1):
                    w.write(c)
                w.flush()
                watch = ProbeWatch(s)
                watch.start()
                proc = start(path, s, data_dir, log)
                try:
                    watch.wait_for(1, 600, proc)
                    lag = Lag(s, group_of(path, s.namespace), w)
                    while lag.events():
                        time.sleep(0.2)
                    lag.close()
                    time.sleep(3 * COMMIT_S)  # the states' changelogs written and committed
                    stop(proc)
                    state = changelog_records(s)
                    w.write(len(chunks) - 1)
                    w.flush()
                    kept, wiped = (("snapshots kept", "snapshots wiped") if path == "stages"
                                   else ("RocksDB kept", "RocksDB wiped"))
                    variants = [(f"restart, {kept}", False), (f"new host, {wiped}", True)
                                ][:1 if a.no_wipe else 2]
                    times: dict[bool, float] = {}
                    restores: dict[bool, float | None] = {}
                    n_probe = 2
                    for name, wipe in variants:
                        if wipe:
                            shutil.rmtree(data_dir, ignore_errors=True)
                        t0 = time.perf_counter()
                        since = log.stat().st_size if log.exists() else 0
                        t_wall = time.time()
                        proc = start(path, s, data_dir, log)
                        try:
                            dt = watch.wait_for(n_probe, a.timeout, proc) - t0
                        except SystemExit as exc:
                            stop(proc)
                            print(f"run {rep + 1}: {path:<7} {name:<24} did NOT process "
                                  f"again: {exc}" + crashes(log), flush=True)
                            break
                        stop(proc)
                        times[wipe] = dt
                        what, restores[wipe] = restored(log, since, t_wall)
                        out.setdefault(f"{path} {name}", []).append(dt)
                        print(f"run {rep + 1}: {path:<7} {name:<26} processes again "
                              f"{dt:5.1f} s after the process start ({a.entities:,} "
                              f"entities; changelog records {state}); load {l0} -> "
                              f"{loadavg()}" + crashes(log) + what, flush=True)
                        # the probe counts once: a further start re-reads nothing new,
                        # so write one more probe for the next variant
                        # (its raw origin is new too: one already applied would be skipped)
                        w.inp.chunks.append([*build_input(path, [[probe_event(n_probe, t + 2)]],
                                                          raw0=len(w.inp.chunks)).chunks[0]])
                        w.write(len(w.inp.chunks) - 1)
                        w.flush()
                        n_probe += 1
                    if len(times) == 2:
                        r_kept, r_wiped = restores.get(False), restores.get(True)
                        print(f"run {rep + 1}: {path:<7} {kept} / {wiped}: "
                              f"{times[False] / times[True]:.2f}" + (
                                  f" (the restore alone: {r_kept:.2f} s / {r_wiped:.2f} s = "
                                  f"{r_kept / r_wiped:.2f})" if r_kept and r_wiped else ""),
                              flush=True)
                finally:
                    stop(proc)
                    watch.stopping.set()
                    watch.join()
                    shutil.rmtree(data_dir, ignore_errors=True)
    for k, v in out.items():
        print(f"{k}: " + ", ".join(f"{x:.1f} s" for x in v)
              + f" (median {statistics.median(v):.1f} s)")


def changelog_records(s: Settings) -> dict[str, int]:
    from confluent_kafka import Consumer, TopicPartition

    conf = rdkafka_conf(s.kafka, "consumer")
    conf.update({"group.id": f"{s.namespace}-bench-count"})
    c = Consumer(conf)
    try:
        topics = [t for t in c.list_topics(timeout=10).topics
                  if t.startswith(s.namespace) and ("changelog" in t or ".state." in t)]
        out = {}
        for t in sorted(topics):
            n = 0
            for p in c.list_topics(t, timeout=10).topics[t].partitions:
                lo, hi = c.get_watermark_offsets(TopicPartition(t, p), timeout=10)
                n += hi - lo
            out[t.removeprefix(s.namespace)] = n
        return out
    finally:
        c.close()


# -- kill -9 --

def cmd_kill(a: argparse.Namespace) -> None:
    import orjson

    r, _s, _inp = run_rate_keep("faust", a.rate, a.seconds, a.seconds / 2)
    got, want = r
    for what in ("closed", "kpis", "alerts"):
        g, w_ = got[what], want[what]
        lost = [k for k in w_ if k not in g]
        extra = [k for k in g if k not in w_]
        differ = [k for k in w_ if k in g and g[k] != w_[k]]
        print(f"kill -9: {what:<7} expected {len(w_):,}, got {len(g):,} distinct keys; lost "
              f"{len(lost)}, unexpected {len(extra)}, different value {len(differ)}"
              + (f" e.g. {differ[0]!r}: {orjson.loads(g[differ[0]]) if what != 'alerts' else g[differ[0]]}"
                 if differ else ""))
    print(f"kill -9: duplicates (same key sent more than once): {got['dups']}")


def run_rate_keep(path: str, rate: float, seconds: float, kill_at: float
                  ) -> tuple[tuple[dict[str, Any], dict[str, Any]], None, Input]:
    """``run_rate`` with a kill -9 at ``kill_at``; then every output of the namespace is
    read and compared with EventCore over the same records in this process."""
    holder: dict[str, Any] = {}
    orig = delete_namespace_topics

    def keep(s: Settings) -> list[str]:
        holder["got"] = read_outputs(s)
        return orig(s)

    globals()["delete_namespace_topics"] = keep
    try:
        # 50 ms of event time between events: windows close (closed rollups are checked)
        r, s, inp = run_rate(path, rate, seconds, kill_at=kill_at, drain_s=600.0,
                             time_step=0.05)
    finally:
        globals()["delete_namespace_topics"] = orig
    print(r.line())
    assert s is not None
    core = EventCore(s)
    tables: dict[str, dict[bytes, bytes]] = {}
    offsets = [0] * PARTS
    outs: list[Any] = []
    for chunk in inp.chunks:
        for part, _k, value, _h in chunk:
            o, wr = core.process(part, offsets[part], value,
                                 lambda t, k: tables.get(t, {}).get(k))
            offsets[part] += 1
            outs += o
            for t, k, v in wr:
                tables.setdefault(t, {})[k] = v
    want = summarize([(o.topic.split(".", 1)[1], o.key, o.value) for o in outs])
    return (holder["got"], want), None, inp


def read_outputs(s: Settings) -> dict[str, Any]:
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    conf = rdkafka_conf(s.kafka, "consumer")
    conf.update({"group.id": f"{s.namespace}-bench-read", "enable.auto.commit": False})
    c = Consumer(conf)
    recs: list[tuple[str, bytes, bytes]] = []
    try:
        for suffix in ("rollups", "kpis", "alerts"):
            topic = topic_name(s.namespace, suffix)
            tps = [TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(spec(suffix).partitions)]
            ends = {tp.partition: c.get_watermark_offsets(tp, timeout=10)[1] for tp in tps}
            c.assign(tps)
            left = {p for p, e in ends.items() if e > 0}
            while left:
                for m in c.consume(10_000, 1.0):
                    if m.error() is None:
                        recs.append((suffix, m.key(), m.value()))
                        if m.offset() + 1 >= ends[m.partition()]:
                            left.discard(m.partition())
            c.unassign()
    finally:
        c.close()
    return summarize(recs)


def summarize(recs: list[tuple[str, bytes, bytes]]) -> dict[str, Any]:
    """Closed rollups by key, the latest KPI value by key, alerts by (id, state); and how
    many keys came more than once (re-sent after the kill: absorbed by the keys)."""
    import orjson

    closed: dict[bytes, bytes] = {}
    kpis: dict[bytes, bytes] = {}
    alerts: dict[tuple[bytes, str], bytes] = {}
    dups = 0
    for suffix, key, value in recs:
        if suffix == "rollups" and b'"state":"closed"' in value:
            dups += key in closed
            closed[key] = value
        elif suffix == "kpis":
            kpis[key] = value
        elif suffix == "alerts":
            d = orjson.loads(value)
            k = (key, d["state"])
            dups += k in alerts
            alerts[k] = orjson.dumps({x: d[x] for x in ("id", "rule", "entity", "state",
                                                        "start", "value")})
    return {"closed": closed, "kpis": kpis, "alerts": alerts, "dups": dups}


# -- in memory --

def cmd_cpu(a: argparse.Namespace) -> None:
    """The pure work of both paths on the same events, no Kafka (bench_stage_cpu.py's
    stage, state changelogs every 10 batches; EventCore with dict tables)."""
    from bench_stage_cpu import build_stage

    from ioc._runtime import tune_gc
    from streams.engine import Outbox, Record

    chunks = chunked(a.events, a.chunk_rate, "cpu")
    st_in, fa_in = build_input("stages", chunks), build_input("faust", chunks)
    tune_gc()
    for rep in range(a.repeat):
        stage = build_stage()
        out, offs = Outbox(), [0] * PARTS
        c0 = time.process_time()
        for k, chunk in enumerate(st_in.chunks):
            recs = []
            for part, key, value, headers in chunk:
                recs.append(Record("bench.events", part, offs[part], key, value, headers or []))
                offs[part] += 1
            stage.process(recs, out)
            if stage.tick is not None:
                stage.tick(time.time(), out)
            if k % 20 == 19:  # one commit a second at 20 chunks a second
                for t in stage.tables:
                    t.write_changes(out)
            out.records.clear()
        t_stage = time.process_time() - c0
        core = EventCore(load_settings())
        tables: dict[str, dict[bytes, bytes]] = {}
        offs = [0] * PARTS
        n_out = n_w = 0
        c0 = time.process_time()
        for chunk in fa_in.chunks:
            for part, _key, value, _h in chunk:
                o, wr = core.process(part, offs[part], value,
                                     lambda t, k, tables=tables: tables.get(t, {}).get(k))
                offs[part] += 1
                n_out += len(o)
                n_w += len(wr)
                for t, k, v in wr:
                    tables.setdefault(t, {})[k] = v
        t_core = time.process_time() - c0
        n = sum(len(c) for c in chunks)
        print(f"run {rep + 1}: in memory, {n:,} events: stage process+tick+changelog "
              f"{t_stage / n * 1e6:.1f} µs/event; EventCore {t_core / n * 1e6:.1f} µs/event "
              f"(ratio {t_core / t_stage:.2f}); EventCore per event: {n_out / n:.2f} outputs, "
              f"{n_w / n:.2f} state writes (records of {n / sum(len(c) for c in fa_in.chunks):.0f}"
              f" events)", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("rate", help="sustained rate, CPU per event, probe latency")
    r.add_argument("--rate", type=float, required=True, help="events/s into the stages path")
    r.add_argument("--faust-rate", type=float, default=None,
                   help="events/s into the faust path (default: --rate)")
    r.add_argument("--seconds", type=float, default=60.0)
    r.add_argument("--repeat", type=int, default=2)
    c = sub.add_parser("capacity", help="events/s each path drains from a backlog")
    c.add_argument("--events", type=int, default=150_000)
    c.add_argument("--chunk-rate", type=float, default=10_000,
                   help="the rate whose chunk size shapes the records (default 10,000: 500 "
                        "events a chunk)")
    c.add_argument("--repeat", type=int, default=2)
    rs = sub.add_parser("restart", help="restart time with N entities of state")
    rs.add_argument("--entities", type=int, default=100_000)
    rs.add_argument("--repeat", type=int, default=2)
    rs.add_argument("--rounds", type=int, default=1,
                    help="events per entity (one per round): more changelog records per key")
    rs.add_argument("--timeout", type=float, default=300.0,
                    help="seconds a restarted worker may take to process again")
    rs.add_argument("--no-wipe", action="store_true",
                    help="only the restart with the local state kept (stages: snapshots, "
                         "faust: RocksDB directory), not the new host")
    rs.add_argument("--paths", default=",".join(PATHS),
                    help="comma-separated paths to measure (default: stages,faust)")
    k = sub.add_parser("kill", help="kill -9 of the faust worker mid-stream")
    k.add_argument("--rate", type=float, default=3000)
    k.add_argument("--seconds", type=float, default=30)
    cp = sub.add_parser("cpu", help="the pure work of both paths in memory, no Kafka")
    cp.add_argument("--events", type=int, default=100_000)
    cp.add_argument("--chunk-rate", type=float, default=10_000)
    cp.add_argument("--repeat", type=int, default=2)
    a = ap.parse_args()
    # SIGTERM (and SIGINT, ignored in background jobs) end the bench through its finally
    # blocks: workers stopped, namespaces deleted
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    print(f"cores: {os.cpu_count()}  load (1/5/15 min): {loadavg()}  events partitions: "
          f"{PARTS}  broker: {','.join(load_settings().kafka.bootstrap_servers)}", flush=True)
    {"rate": cmd_rate, "capacity": cmd_capacity, "restart": cmd_restart, "kill": cmd_kill,
     "cpu": cmd_cpu}[a.cmd](a)
    print(f"load after: {loadavg()}")


if __name__ == "__main__":
    main()
