"""Latency from publish to tile on <ns>.wall.tiles at a steady event rate, next to the
same run's baseline: a raw Kafka produce -> consume of the same events.

    .venv/bin/python bench/bench_latency.py [--quick] [--rate 2000] [--seconds 30]
                                             [--sensors 50] [--partial [--via-raw]]

Path measured (real processes, as deployed):

    producer (kafka-python, this process) -> <ns>.events.raw  (--partial: <ns>.events,
      -> validate stage -> <ns>.events                           or events.raw with --via-raw)
      -> `ioc worker --agents validate,aggregate,kpis,rules,tiles` (batch stages in the
         Faust worker) and `ioc sink` of the event tables (--partial: aggregate,tiles
         [,validate], no sink):
         aggregate: 10 s windows, 'updated' rollups (throttled) -> <ns>.rollups
         tiles: sensor:<entity>:<metric> series tiles, coalesced per tile -> <ns>.wall.tiles
      -> consumer (kafka-python, this process)

An event's latency is the time from its send to the arrival of the first tile of its
sensor whose data time (newest event time in the tile) is at least the event's time;
events are stamped with their send time. Coalescing means one tile answers many
events: that is what a wall sees. Baseline: the same events produced to a scratch topic
and consumed back, latency per record. Uses a namespace of its own, dropped at the end.
"""

from __future__ import annotations

import argparse
import bisect
import os
import secrets
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kafka import KafkaConsumer, KafkaProducer, TopicPartition  # noqa: E402

from ioc.config import Settings, load_settings  # noqa: E402
from ioc.events import Event, encode_event  # noqa: E402
from ioc.kafka import delete_namespace_topics, ensure_topics, kafka_python_kwargs  # noqa: E402
from ioc.storage import drop_schema, migrate  # noqa: E402
from ioc.tiles import decode_tile  # noqa: E402
from ioc.topics import TopicSpec  # noqa: E402

BASELINE = TopicSpec("bench.baseline", 4, "entity", "event", "delete", 3600 * 1000, "bench scratch")


def pct(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


class Tail(threading.Thread):
    """Consume a topic from its current end; keep (arrival time, record) pairs."""

    def __init__(self, s: Settings, topic: str) -> None:
        super().__init__(daemon=True)
        self.c = KafkaConsumer(enable_auto_commit=False, fetch_max_wait_ms=10,
                               **kafka_python_kwargs(s.kafka))
        tps = [TopicPartition(topic, p) for p in sorted(self.c.partitions_for_topic(topic) or ())]
        self.c.assign(tps)
        self.c.seek_to_end(*tps)
        for tp in tps:
            self.c.position(tp)
        self.got: list[tuple[float, object]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            for records in self.c.poll(timeout_ms=50).values():
                now = time.time()
                self.got.extend((now, r) for r in records)
        self.c.close()


def pace(producer: KafkaProducer, topic: str, rate: float, seconds: float, sensors: int,
         tag: str) -> list[tuple[str, float]]:
    """Send ``rate`` events/s for ``seconds``; return (entity, send time) per event."""
    sent: list[tuple[str, float]] = []
    step = 0.005
    per_step = rate * step
    t0 = time.time()
    n = 0
    credit = 0.0
    while (now := time.time()) - t0 < seconds:
        credit += per_step
        while credit >= 1:
            credit -= 1
            entity = f"bench-{n % sensors}"
            t = time.time()
            e = Event(id=f"{tag}{n}", source="bench", type="air.quality", entity=entity, time=t,
                      values={"pm25": float(n % 90)})
            producer.send(topic, key=entity.encode(), value=encode_event(e))
            sent.append((entity, t))
            n += 1
        delay = t0 + (len(sent) / rate) - time.time()
        time.sleep(max(0.0, min(step, delay)) if delay > 0 else 0)
        _ = now
    producer.flush()
    return sent


def run(args: argparse.Namespace) -> int:
    base = load_settings()
    s = base.with_namespace(f"bl{secrets.token_hex(4)}")
    assert ensure_topics(s).success and ensure_topics(s, [BASELINE]).success
    env = dict(os.environ, IOC_METRICS__ENABLED="false", IOC_NAMESPACE=s.namespace,
               IOC_KAFKA__BOOTSTRAP_SERVERS=",".join(s.kafka.bootstrap_servers))
    args.full = not args.partial
    if args.full:
        args.via_raw = True
        agents = "validate,aggregate,kpis,rules,tiles"
    else:
        agents = "aggregate,tiles" + (",validate" if args.via_raw else "")
    log = open(Path(os.environ.get("TMPDIR", "/tmp")) / f"{s.namespace}-worker.log", "wb")  # noqa: SIM115
    worker = subprocess.Popen([sys.executable, "-m", "ioc", "worker", "--agents", agents],
                              env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    sink = None
    if args.full:
        migrate(s)
        env["IOC_DATABASE__DSN"] = s.database.dsn.get_secret_value()
        sink = subprocess.Popen([sys.executable, "-m", "ioc", "sink", "--tables",
                                 "events,rollups,kpi_values,alerts"],
                                env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    producer = KafkaProducer(acks="all", linger_ms=2, **kafka_python_kwargs(s.kafka))
    src = f"{s.namespace}.events.raw" if args.via_raw else f"{s.namespace}.events"
    try:
        # baseline: the same events, produced and consumed back, same process and clients
        bt = Tail(s, BASELINE.name(s.namespace))
        bt.start()
        b_sent = pace(producer, BASELINE.name(s.namespace), args.rate, args.baseline_seconds,
                      args.sensors, "b")
        time.sleep(1.0)
        bt.stop.set()
        bt.join()
        b_lat = [arr - orjson_time(r.value) for arr, r in bt.got]  # type: ignore[attr-defined]
        # warm up until the worker produces tiles
        tiles = Tail(s, f"{s.namespace}.wall.tiles")
        tiles.start()
        t_w = time.time()
        while not tiles.got:
            if worker.poll() is not None:
                raise SystemExit(f"worker exited with {worker.returncode}; see {log.name}")
            if time.time() - t_w > 180:
                raise SystemExit(f"no tile within 180 s; see {log.name}")
            pace(producer, src, 200, 0.5, args.sensors, f"w{time.time()}")
        time.sleep(2.0)
        mark = len(tiles.got)
        t_first = time.time()
        sent = pace(producer, src, args.rate, args.seconds, args.sensors, "m")
        # keep reading until every sensor's tile has caught up with its last event
        last_sent = {e: t for e, t in sent}
        t_caught = None
        deadline = time.time() + args.drain_timeout
        while time.time() < deadline:
            newest: dict[str, float] = {}
            for _, r in tiles.got[mark:]:
                t = decode_tile(r.value)  # type: ignore[attr-defined]
                if t.id.startswith("sensor:bench-"):
                    newest[t.payload["entity"]] = max(newest.get(t.payload["entity"], 0.0), t.time)
            if all(newest.get(e, 0.0) >= t for e, t in last_sent.items()):
                t_caught = tiles.got[-1][0]
                break
            time.sleep(0.5)
        tiles.stop.set()
        tiles.join()
        by_entity: dict[str, list[tuple[float, float]]] = defaultdict(list)
        for arr, r in tiles.got[mark:]:
            t = decode_tile(r.value)  # type: ignore[attr-defined]
            if t.id.startswith("sensor:bench-"):
                by_entity[t.payload["entity"]].append((t.time, arr))
        stale = [arr - t for ser in by_entity.values() for t, arr in ser]
        lat, missing = [], 0
        for entity, series in by_entity.items():
            series.sort()
            # earliest arrival among tiles whose data time >= the event time
            suffix_min = [0.0] * len(series)
            m = float("inf")
            for i in range(len(series) - 1, -1, -1):
                m = min(m, series[i][1])
                suffix_min[i] = m
            by_entity[entity] = list(zip([x[0] for x in series], suffix_min, strict=True))
        for entity, t_send in sent:
            series = by_entity.get(entity, [])
            i = bisect.bisect_left(series, (t_send - 1e-6, -1.0))
            if i >= len(series):
                missing += 1
                continue
            lat.append(series[i][1] - t_send)
        n_tiles = len(tiles.got) - mark
        span = (tiles.got[-1][0] - t_first) if n_tiles else 1.0
        print(f"rate {args.rate:g} ev/s for {args.seconds:g} s, {args.sensors} sensors, agents {agents}"
              + (" + sink events,rollups,kpi_values,alerts" if sink else ""))
        print(f"events sent {len(sent)} (achieved {len(sent) / args.seconds:,.0f}/s), "
              f"tiles received {n_tiles} ({n_tiles / span:,.0f}/s), "
              f"events without a tile {missing}")
        print(f"publish->tile latency    p50 {pct(lat, 50) * 1000:7.1f} ms   p99 "
              f"{pct(lat, 99) * 1000:7.1f} ms   max {max(lat, default=float('nan')) * 1000:7.1f} ms")
        print(f"tile age at arrival (arrival - newest event in it) p50 {pct(stale, 50) * 1000:7.1f} ms"
              f"   p99 {pct(stale, 99) * 1000:7.1f} ms")
        print(f"baseline produce->consume p50 {pct(b_lat, 50) * 1000:7.1f} ms   p99 "
              f"{pct(b_lat, 99) * 1000:7.1f} ms   ({len(b_lat)} of {len(b_sent)} events)")
        if t_caught is None:
            print(f"the worker had not caught up {args.drain_timeout:g} s after the last send")
        else:
            took = t_caught - t_first
            print(f"all tiles caught up {t_caught - sent[-1][1]:.1f} s after the last send: "
                  f"{len(sent)} events processed in {took:.1f} s = {len(sent) / took:,.0f} events/s "
                  f"sustained (offered {args.rate:g}/s)")
        ok = pct(lat, 99) <= 0.5
        print(f"target p99 <= 500 ms: {'MET' if ok else 'NOT MET'}")
        return 0
    finally:
        producer.close(timeout=5)
        for proc in (worker, sink):
            if proc is None:
                continue
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        log.close()
        if not args.keep:
            delete_namespace_topics(s)
            if sink is not None:
                drop_schema(s)


def orjson_time(value: bytes) -> float:
    import orjson

    return float(orjson.loads(value)["time"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="10 s measured, 5 s baseline")
    ap.add_argument("--rate", type=float, default=2000.0, help="events per second")
    ap.add_argument("--seconds", type=float, default=30.0, help="measured seconds")
    ap.add_argument("--baseline-seconds", type=float, default=10.0)
    ap.add_argument("--sensors", type=int, default=50, help="distinct entities (tiles)")
    ap.add_argument("--via-raw", action="store_true", help="publish to events.raw through validate")
    ap.add_argument("--full", action="store_true",
                    help="(the default) every stage of the events path: publish to events.raw, "
                         "the worker with validate, aggregate, kpis, rules and tiles, and the "
                         "sink of events, rollups, kpi_values and alerts")
    ap.add_argument("--partial", action="store_true",
                    help="only the aggregate and tiles stages, publishing to events "
                         "(with --via-raw: to events.raw, plus validate); no sink")
    ap.add_argument("--drain-timeout", type=float, default=120.0,
                    help="seconds to wait after the last send for tiles to catch up")
    ap.add_argument("--keep", action="store_true", help="keep the namespace's topics")
    args = ap.parse_args()
    if args.quick:
        args.seconds, args.baseline_seconds = 10.0, 5.0
    return run(args)


if __name__ == "__main__":
    raise SystemExit(main())
