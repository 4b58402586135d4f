"""The event engine's stages on the broker: sustained rate, drain capacity, restart time.

    .venv/bin/python bench/bench_engine.py rate --rate R [--seconds T] [--repeat 2]
    .venv/bin/python bench/bench_engine.py capacity [--events N] [--repeat 2]
    .venv/bin/python bench/bench_engine.py restart [--entities 100000] [--rounds 1] [--repeat 2]

The stages run as deployed, a real process on the broker of the settings (127.0.0.1:19092
for the local stack), in a namespace of its own (topics deleted at the end):
`ioc worker --agents aggregate,kpis,rules` (the combined batch stage) on <ns>.events,
one record per event, as validate writes it. (ADR 0002 measured a Faust agent on batched
records against it with this bench; that path is deleted, the ADR keeps its figures.)

The input is validated events (``bench_events.make_events``: 500 sensors, plus one e-gov
"probe" event per chunk), in chunks of max(100, R/20) events every chunk/R s, the
publisher's chunks; the bench writes <ns>.events itself, so validate and the sink do not
run. Each event carries the ``ioc.raw`` origin a validate would give it. The probe's KPI
value carries its count, so the bench sees when probe n was applied.

rate       R events/s for T s, lag of the stage's consumer group sampled every 2 s; the
           SUSTAINED verdict of bench_events.py (publisher <= 2 s behind; lag at the end
           <= 2 s of input + the commit interval; growth over the last third <= 0.5 s +
           the commit interval; lag 0 within 15 s). Also: CPU µs/event of the worker and
           the broker, and the probe latency (probe produced -> its KPI value on
           <ns>.kpis) p50/p99.
capacity   N events written before the worker starts; events/s from the worker's first
           output (its warm-up probe) until its group committed the end: the most the
           stage drains, for choosing R.
restart    one event each of N entities (air-quality readings of entities "aq-N", so that
           the absence rule of "air-" entities does not fire), drained and committed;
           the worker stopped (SIGTERM); a probe written; the worker started again:
           seconds from the process start until the probe's KPI value is out. Twice in
           the same run: with the local snapshots of streams.state_dir kept (a restart:
           snapshots plus the changelogs' tail) and wiped (a new host: the whole
           changelog is read); the ratio kept / wiped is the baseline, and what each
           restore read (changelog records, entries from snapshots, from the worker's log).

Baselines: the verdict's own criteria (rate), the load average (/proc/loadavg) before
and after each run, and in restart the wiped variant of the same run. The stage's CPU
per event without Kafka: bench/bench_stage_cpu.py.

Needs the local stack (``make up``). Worker logs: /tmp/ioc-bench-engine/.
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
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_events import cpu_seconds, make_events  # noqa: E402

from ioc.config import Settings, load_settings  # noqa: E402
from ioc.events import Event, encode_event  # noqa: E402
from ioc.kafka import acked_producer, delete_namespace_topics, ensure_topics, rdkafka_conf  # noqa: E402
from ioc.topics import topic_name  # noqa: E402
from streams.engine import key_partition  # noqa: E402

PARTS = load_settings().topics.spec("events").partitions
PROBE = "probe-agency"
PROBE_KEY = "dossiers_online|probe-agency|year|"
LOGDIR = Path("/tmp/ioc-bench-engine")


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def group_of(ns: str) -> str:
    return f"{ns}-streams.aggregate+kpis+rules"


def probe_event(j: int, t: float) -> Event:
    return Event(id=f"probe-{j}", source="bench", type="egov.dossier", entity=PROBE, time=t,
                 values={"count": 1.0}, attributes={"channel": "online"})


@dataclass
class Input:
    """What the bench writes to <ns>.events, chunk by chunk: per chunk its (partition,
    key, value, headers) records, one per event."""

    chunks: list[list[tuple[int, bytes, bytes, list[tuple[str, bytes]]]]]


def build_input(chunks: list[list[Event]], raw0: int = 0) -> Input:
    """The records of ``chunks``, one per event, in the event's entity partition."""
    inp = Input([])
    for c, events in enumerate(chunks):
        recs = []
        for i, e in enumerate(events):
            key = e.entity.encode()
            recs.append((key_partition(key, PARTS), key, encode_event(e),
                         [("ioc.raw", b"0:%d:%d" % (raw0 + c, i))]))
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


def start(s: Settings, data_dir: Path, log: Path) -> subprocess.Popen[bytes]:
    env = env_of(s)
    env["IOC_STREAMS__STATE_DIR"] = str(data_dir / "snapshots")  # the stages' local snapshots
    args = ["-m", "ioc", "worker", "--agents", "aggregate,kpis,rules", "--loglevel", "info"]
    return subprocess.Popen([sys.executable, *args], env=env, cwd=ROOT,
                            stdout=open(log, "ab"), stderr=subprocess.STDOUT)


def restored(log: Path, since: int, started: float) -> tuple[str, float | None]:
    """What the stages' restores logged after byte ``since`` of ``log``: changelog records
    read and entries loaded from snapshots, summed over tables, and the first restore's
    seconds (('', None) when nothing was restored); and the seconds from ``started``
    (wall clock) until Faust logged its start (Python start and imports)."""
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
            while True:
                try:
                    self.p.produce(self.topic, value, key, part, headers=headers)
                    break
                except BufferError:
                    self.p.poll(0.05)
            self.cum[part].append(self.cum[part][-1] + 1)
        self.p.poll(0)
        return time.perf_counter()

    def flush(self) -> None:
        assert self.p.flush(60) == 0


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
                       for p in range(load_settings().topics.spec("kpis").partitions)])
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
        return (f"stages {self.rate:>8,.0f} ev/s  "
                f"{'SUSTAINED' if not self.verdict else 'not sustained':<14}"
                f" lag max {lagmax:5.2f} s  drained {('-' if self.drained is None else f'{self.drained:.1f} s'):>7}"
                f"  CPU µs/event processed ({self.processed:,}) worker "
                f"{self.cpu_worker / self.processed * 1e6:5.1f} broker "
                f"{self.cpu_broker / self.processed * 1e6:5.1f}  probe latency p50 {p50:6.1f} ms "
                f"p99 {p99:6.1f} ms  records {self.records:,}  load {self.load[0]} -> {self.load[1]}")


COMMIT_S = 1.0


def run_rate(rate: float, seconds: float, *, drain_s: float = 30.0) -> RateResult:
    """The stage at ``rate`` for ``seconds``; waits at most ``drain_s`` after publishing for
    lag 0 (the verdict needs 15 s)."""
    n = int(rate * seconds)
    chunks = chunked(n, rate, secrets.token_hex(3))
    warm = build_input([[probe_event(-1, chunks[0][0].time)]])
    inp = build_input(chunks, raw0=1)
    inp.chunks = warm.chunks + inp.chunks
    LOGDIR.mkdir(parents=True, exist_ok=True)
    l0 = loadavg()
    with namespace("s") as s:
        data_dir = LOGDIR / f"{s.namespace}-data"
        log = LOGDIR / f"{s.namespace}-stages.log"
        w = Writer(s, inp)
        watch = ProbeWatch(s)
        watch.start()
        w.write(0)
        w.flush()
        proc = start(s, data_dir, log)
        try:
            watch.wait_for(1, 180, proc)
            lag = Lag(s, group_of(s.namespace), w)
            end = time.monotonic() + 60
            while lag.events():
                if time.monotonic() > end:
                    raise SystemExit(f"warm-up not committed; see {log}")
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
            for c in range(1, len(inp.chunks)):
                due = t0 + (c - 1) * every
                late = time.perf_counter() - due
                if late < 0:
                    time.sleep(-late)
                behind = max(behind, time.perf_counter() - due)
                sent[c + 1] = w.write(c)  # probe c+1 (the warm-up probe was 1)
            w.flush()
            t_pub = time.perf_counter() - t0
            drained = None
            while time.perf_counter() - t0 < t_pub + drain_s:
                if proc.poll() is not None:
                    raise SystemExit(f"the worker ended; see {log}")
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
        r = RateResult(rate, n, max(0.0, t_pub - n / rate), samples, t_pub, drained,
                       cpu_w, cpu_b, lat, records, max(1, processed), (l0, loadavg()), log, [])
        r.verdict = verdict(r)
        return r


def verdict(r: RateResult) -> list[str]:
    """bench_events.py's SUSTAINED criterion, on the stage's one group."""
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
    for rep in range(a.repeat):
        r = run_rate(a.rate, a.seconds)
        print(f"run {rep + 1}: {r.line()}" + ("" if not r.verdict else
              "\n        not sustained: " + "; ".join(r.verdict)), flush=True)
        print("        lag (s of input, every 2 s): " + " ".join(
            f"{lag / r.rate:.1f}" for _t, lag in r.samples), flush=True)


# -- capacity --

def cmd_capacity(a: argparse.Namespace) -> None:
    figures: list[float] = []
    for rep in range(a.repeat):
        chunks = chunked(a.events, a.chunk_rate, secrets.token_hex(3))
        inp = build_input(chunks, raw0=1)
        warm = build_input([[probe_event(-1, chunks[0][0].time)]])
        l0 = loadavg()
        with namespace("s") as s:
            data_dir = LOGDIR / f"{s.namespace}-data"
            log = LOGDIR / f"{s.namespace}-stages.log"
            LOGDIR.mkdir(parents=True, exist_ok=True)
            inp.chunks = warm.chunks + inp.chunks
            w = Writer(s, inp)
            for c in range(len(inp.chunks)):
                w.write(c)
            w.flush()
            watch = ProbeWatch(s)
            watch.start()
            proc = start(s, data_dir, log)
            try:
                t_first = watch.wait_for(1, 180, proc)
                lag = Lag(s, group_of(s.namespace), w)
                cpu0, b0 = cpu_seconds(proc.pid), broker_cpu()
                while lag.events():
                    if proc.poll() is not None or time.perf_counter() - t_first > 900:
                        raise SystemExit(f"did not drain; see {log}")
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
        figures.append(n / dt)
        print(f"run {rep + 1}: stages drained {n:,} events in {dt:.1f} s = "
              f"{n / dt:>8,.0f} ev/s (from its first output; records "
              f"{sum(len(c) for c in inp.chunks):,}); CPU µs/event worker "
              f"{cpu_w / n * 1e6:.1f} broker {cpu_b / n * 1e6:.1f}; load {l0} -> "
              f"{loadavg()}", flush=True)
    print("capacity: " + ", ".join(f"{x:,.0f}" for x in figures)
          + f" ev/s (median {statistics.median(figures):,.0f})")


# -- restart --

def cmd_restart(a: argparse.Namespace) -> None:
    out: dict[str, list[float]] = {}
    for rep in range(a.repeat):
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
        inp = build_input(chunks)
        l0 = loadavg()
        with namespace("s") as s:
            LOGDIR.mkdir(parents=True, exist_ok=True)
            data_dir = LOGDIR / f"{s.namespace}-data"
            log = LOGDIR / f"{s.namespace}-stages.log"
            w = Writer(s, inp)
            for c in range(len(chunks) - 1):
                w.write(c)
            w.flush()
            watch = ProbeWatch(s)
            watch.start()
            proc = start(s, data_dir, log)
            try:
                watch.wait_for(1, 600, proc)
                lag = Lag(s, group_of(s.namespace), w)
                while lag.events():
                    time.sleep(0.2)
                lag.close()
                time.sleep(3 * COMMIT_S)  # the states' changelogs written and committed
                stop(proc)
                state = changelog_records(s)
                w.write(len(chunks) - 1)
                w.flush()
                kept, wiped = "snapshots kept", "snapshots wiped"
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
                    proc = start(s, data_dir, log)
                    try:
                        dt = watch.wait_for(n_probe, a.timeout, proc) - t0
                    except SystemExit as exc:
                        stop(proc)
                        print(f"run {rep + 1}: stages {name:<24} did NOT process "
                              f"again: {exc}", flush=True)
                        break
                    stop(proc)
                    times[wipe] = dt
                    what, restores[wipe] = restored(log, since, t_wall)
                    out.setdefault(name, []).append(dt)
                    print(f"run {rep + 1}: stages {name:<26} processes again "
                          f"{dt:5.1f} s after the process start ({a.entities:,} "
                          f"entities; changelog records {state}); load {l0} -> "
                          f"{loadavg()}" + what, flush=True)
                    # the probe counts once: a further start re-reads nothing new,
                    # so write one more probe for the next variant
                    # (its raw origin is new too: one already applied would be skipped)
                    w.inp.chunks.append([*build_input([[probe_event(n_probe, t + 2)]],
                                                      raw0=len(w.inp.chunks)).chunks[0]])
                    w.write(len(w.inp.chunks) - 1)
                    w.flush()
                    n_probe += 1
                if len(times) == 2:
                    r_kept, r_wiped = restores.get(False), restores.get(True)
                    print(f"run {rep + 1}: stages {kept} / {wiped}: "
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("rate", help="sustained rate, CPU per event, probe latency")
    r.add_argument("--rate", type=float, required=True, help="events/s into the stage")
    r.add_argument("--seconds", type=float, default=60.0)
    r.add_argument("--repeat", type=int, default=2)
    c = sub.add_parser("capacity", help="events/s the stage drains from a backlog")
    c.add_argument("--events", type=int, default=150_000)
    c.add_argument("--chunk-rate", type=float, default=10_000,
                   help="the rate whose chunk size shapes the input (default 10,000: 500 "
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
                    help="only the restart with the snapshots kept, not the new host")
    rs.add_argument("--paths", choices=["stages"], default="stages",
                    help="the stages are the only path (accepted so that the commands "
                         "recorded in docs/adr/0002-event-engine.md still run)")
    a = ap.parse_args()
    # SIGTERM (and SIGINT, ignored in background jobs) end the bench through its finally
    # blocks: workers stopped, namespaces deleted
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    print(f"cores: {os.cpu_count()}  load (1/5/15 min): {loadavg()}  events partitions: "
          f"{PARTS}  broker: {','.join(load_settings().kafka.bootstrap_servers)}", flush=True)
    {"rate": cmd_rate, "capacity": cmd_capacity, "restart": cmd_restart}[a.cmd](a)
    print(f"load after: {loadavg()}")


if __name__ == "__main__":
    main()
