"""Poison records against a running worker and sink: nothing stops, nothing is lost.

A real ``ioc worker`` (every agent and stage) and ``ioc sink`` (every table) run as
subprocesses while 10,000 random and malformed records go to every input topic they
read (``events.raw``, ``events``, ``camera.frames``, ``rollups``, ``kpis``,
``alerts``, ``system.probe``; the wall's ``wall.tiles`` is tested with the wall). Then
valid events follow. Checked:

* every valid event is stored in PostgreSQL exactly once;
* every bad record is dead-lettered by each consumer that reads it, with the reason
  and origin (topic, partition, offset) the pure decoders predict for it, or (camera
  frames, which are too large for ``<ns>.dlq``) counted in the vision agent's log;
  every probe record is answered;
* no dead letter says ``internal_error`` (no bug of ours was hit), and both processes
  are still running with no traceback in their logs.

The figures (records sent, dead letters by stage and reason, rows stored, duplicates)
are printed; docs/reliability.md quotes a run.
"""

from __future__ import annotations

import random
import re
import time
from collections import Counter
from typing import Any

import orjson
import pytest
from kafka import KafkaProducer
from psycopg import sql

from ioc.aggregate import Rollup
from ioc.aggregate._storage import rollup_rows
from ioc.config import Settings
from ioc.errors import InvalidRecord
from ioc.events import Event, chunk_events, decode_event, encode_event
from ioc.events._route import route_raw
from ioc.events._storage import event_rows
from ioc.kafka import kafka_python_kwargs
from ioc.kpi import KpiValue
from ioc.kpi._storage import kpi_rows
from ioc.rules import Alert
from ioc.rules._storage import alert_rows
from ioc.storage import connect
from ioc.topics import topic_name
from tests.fixtures.events import read_topic, wait_for
from tests.fixtures.hostile import BIG_INT_LITERALS, deep_json

pytestmark = [pytest.mark.kafka, pytest.mark.db]

N_BAD = 10_000
SPLIT = {"events.raw": 3000, "events": 2400, "camera.frames": 1500, "rollups": 1000,
         "kpis": 1000, "alerts": 1000, "system.probe": 100}
N_GOOD = 3000
SEED = 12


# --- hostile records, deterministic -------------------------------------------------

_INVALID_UTF8 = [b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf0\x28\x8c\x28", b"\x80"]


def _garbage(rng: random.Random, like: dict[str, Any]) -> bytes | None:
    """One hostile value: random bytes, broken JSON, deep JSON, odd numbers, invalid
    UTF-8 inside a string, a mutated valid record, or a tombstone."""
    kind = rng.randrange(12)
    if kind == 0:
        return rng.randbytes(rng.randrange(0, 300))
    if kind == 1:
        return b'{"' + rng.choice(list(like)).encode() + b'":"x' + rng.choice(_INVALID_UTF8) \
            + b'"}'
    if kind == 2:
        return deep_json(10_000, rng.choice(["list", "object", "mixed", "unclosed"]))
    if kind == 3:
        return orjson.dumps(like)[: rng.randrange(1, 40)]
    if kind == 4:
        d = dict(like)
        d[rng.choice(list(d))] = rng.choice([None, [], {}, "", True, -1, "\u0000", "é" * 300])
        return orjson.dumps(d)
    if kind == 5:
        body = orjson.dumps(like)[:-1]
        return body + b',"' + rng.choice(list(like)).encode() + b'":' \
            + rng.choice([*BIG_INT_LITERALS, b"NaN", b"Infinity"]) + b"}"
    if kind == 6:
        return b'{"a":"\\ud800","b":"\\udfff\\ud800"}'
    if kind == 7:
        return None
    if kind == 8:
        return orjson.dumps([like, 1, "x", None])
    if kind == 9:
        return b"\xef\xbb\xbf" + orjson.dumps(like)
    if kind == 10:
        d = dict(like)
        d.pop(rng.choice(list(d)))
        return orjson.dumps(d)
    return orjson.dumps(rng.choice([[], {}, "text", 1e308, None, [[[]]]]))


def _headers(rng: random.Random) -> list[tuple[str, bytes]]:
    names = ["ts", "seq", "width", "height", "ioc.raw", "dlq.reason", "time", "x\u00e9"]
    return [(rng.choice(names), rng.choice([rng.randbytes(8), b"nan", b"1e400", b"-1",
                                            b"1:2:x", b"", b"9" * 40]))
            for _ in range(rng.randrange(0, 4))]


NOW = time.time()
EVENT = {"id": "x", "source": "poison", "type": "air.quality", "entity": "p-1",
         "time": NOW, "values": {"pm25": 1.0}}
ROLLUP = orjson.loads(Rollup.from_bytes(orjson.dumps(
    {"entity": "p-1", "metric": "pm25", "size": 10, "start": 1_700_000_000, "state": "updated",
     "count": 1, "sum": 1.0, "min": 1.0, "max": 1.0, "last": 1.0, "last_time": 1.7e9})).to_bytes())
KPI = orjson.loads(KpiValue("k", "g", "day", "2026-12-01", 1.0, 2.0, 50.0).to_bytes())
ALERT = orjson.loads(Alert("a", "r", "e", None, "warning", "raised", 1, 1.0, None, None, "m",
                           "s").to_bytes())


def _fails(fn: Any, *args: Any) -> bool:
    try:
        fn(*args)
    except Exception:
        return True
    return False


class Poison:
    """The bad records, and per (stage, reason) how many dead letters each should give."""

    def __init__(self, s: Settings, seed: int = SEED) -> None:
        rng = random.Random(seed)
        self.records: list[tuple[str, bytes | None, bytes | None, list[tuple[str, bytes]]]] = []
        self.expect: Counter[tuple[str, str]] = Counter()
        self.frames = 0
        series_key = str(s.streams.aggregate.window_sizes_s[0]).encode()
        for suffix, n in SPLIT.items():
            made = 0
            while made < n:
                headers = _headers(rng)
                if suffix == "system.probe":  # answered whatever it holds: no dead letter
                    self.records.append((suffix, b"probe", _garbage(rng, EVENT), headers))
                    made += 1
                    continue
                if suffix == "camera.frames":
                    key = rng.choice([None, rng.randbytes(6), b"cam-poison-%d" % rng.randrange(3),
                                      b"../etc", "é".encode()])
                    value = rng.choice([rng.randbytes(rng.randrange(0, 2000)), None,
                                        b"\xff\xd8\xff\xe0" + rng.randbytes(500),
                                        b"\xff\xd8" + rng.randbytes(300) + b"\xff\xd9"])
                    key = key if key is not None or value is not None else b"tomb"
                    self.records.append((suffix, key, value, headers))
                    self.frames += 1
                    made += 1
                    continue
                like = {"events.raw": EVENT, "events": EVENT, "rollups": ROLLUP, "kpis": KPI,
                        "alerts": ALERT}[suffix]
                value = _garbage(rng, like)
                # compacted topics (kpis, alerts) refuse records without a key
                key = rng.choice([b"k", rng.randbytes(4)] if suffix in ("kpis", "alerts")
                                 else [None, b"k", rng.randbytes(4)])
                key = key if key is not None or value is not None else b"tomb"  # one of both
                if suffix == "events.raw":
                    routed = route_raw(value, key, headers, topic="t", partition=0, offset=0)
                    if any(r.suffix == "events" for r in routed):
                        continue  # by chance a valid event: not poison
                    for r in routed:
                        self.expect[("validate", dict(r.headers)["dlq.reason"].decode())] += 1
                elif suffix == "events":
                    try:
                        e = decode_event(value)  # type: ignore[arg-type]
                    except Exception as exc:
                        reason = getattr(exc, "reason", "?")
                        self.expect[("aggregate", reason)] += 1
                        if _fails(event_rows, key, value, headers):
                            self.expect[("sink:events", "sink_unreadable")] += 1
                    else:
                        if "\x00" not in (e.source + e.id + e.entity + e.type):
                            continue  # a valid canonical event: not poison
                        self.expect[("sink:events", "db_refused")] += 1  # NUL: refused by PG
                else:
                    decode, rows, table = {
                        "rollups": (Rollup.from_bytes, rollup_rows, "sink:rollups"),
                        "kpis": (KpiValue.from_bytes, kpi_rows, "sink:kpi_values"),
                        "alerts": (Alert.from_bytes, alert_rows, "sink:alerts")}[suffix]
                    if suffix == "rollups":
                        key = rng.choice([None, b"p-1|pm25|" + series_key + b"|1700000000"])
                        if value is None:
                            key = b"p-1|pm25|" + series_key + b"|1700000000"
                    sink_fails = _fails(rows, key, value, headers)
                    if not sink_fails and value is not None:
                        continue  # the sink could store it: only certain poison here
                    try:
                        decode(value)
                    except InvalidRecord:
                        self.expect[("tiles", "undecodable")] += 1
                    else:
                        continue
                    if sink_fails:
                        self.expect[(table, "sink_unreadable")] += 1
                self.records.append((suffix, key, value, headers))
                made += 1
        # a few decodable canonical events the database refuses (NUL in a string)
        for i in range(20):
            e = Event(id=f"nul\x00{i}", source="poison", type="air.quality", entity="p-nul",
                      time=NOW, values={"pm25": 1.0})
            self.records[SPLIT["events.raw"] + i] = ("events", b"p-nul", encode_event(e), [])
        self._recount()

    def _recount(self) -> None:
        """Expectations of the events topic after the NUL events replaced 20 records."""
        exp: Counter[tuple[str, str]] = Counter({k: v for k, v in self.expect.items()
                                                  if k[0] not in ("aggregate", "sink:events")})
        for suffix, key, value, headers in self.records:
            if suffix != "events":
                continue
            try:
                e = decode_event(value)  # type: ignore[arg-type]
            except Exception as exc:
                exp[("aggregate", getattr(exc, "reason", "?"))] += 1
                if _fails(event_rows, key, value, headers):
                    exp[("sink:events", "sink_unreadable")] += 1
            else:
                assert "\x00" in e.source + e.id + e.entity + e.type
                exp[("sink:events", "db_refused")] += 1
        self.expect = exp


def _good_events(n: int) -> list[Event]:
    return [Event(id=f"ok-{i}", source="feed", type="air.quality", entity=f"air-{i % 40}",
                  time=NOW - 30 + i * 0.005, values={"pm25": float(i % 50)},
                  attributes={"unit": "ugm3"}) for i in range(n)]


def _stored(s: Settings) -> tuple[int, int, int]:
    """(rows of ok-* events, distinct of them, all rows) in the events table."""
    try:
        with connect(s.database, autocommit=True) as c:
            row = c.execute(sql.SQL(
                "select count(*) filter (where id like 'ok-%%'), "
                "count(distinct id) filter (where id like 'ok-%%'), count(*) from {}")
                .format(sql.Identifier(s.db_schema, "events"))).fetchone()
            assert row is not None
            return int(row[0]), int(row[1]), int(row[2])
    except Exception:
        return -1, -1, -1


@pytest.mark.timeout(300)
def test_poison_records_never_stop_the_worker_or_the_sink(fresh_namespace, spawn):
    s = fresh_namespace("poison")
    env = {"IOC_STREAMS__SESSION_TIMEOUT_S": "10"}
    worker = spawn(["worker", "--loglevel", "info"], settings=s, env=env, name="worker")
    sink = spawn(["sink", "--batch-rows", "2000", "--linger", "0.2"], settings=s, name="sink")
    ready = wait_for(worker.output, until=lambda o: len(re.findall(r"stage \S+: group", o)) >= 3,
                     timeout=90)
    assert worker.alive() and len(re.findall(r"stage \S+: group", ready)) >= 3, ready[-3000:]
    poison = Poison(s)
    assert len(poison.records) == N_BAD

    producer = KafkaProducer(acks="all", linger_ms=20, max_request_size=4 * 1024 * 1024,
                             **kafka_python_kwargs(s.kafka))
    futures = [(suffix, producer.send(topic_name(s.namespace, suffix), key=key, value=value,
                                      headers=headers))
               for suffix, key, value, headers in poison.records]
    producer.flush(120)
    origins = {(topic_name(s.namespace, suffix), m.partition, m.offset)
               for suffix, m in ((sfx, f.get(30)) for sfx, f in futures)}
    good = _good_events(N_GOOD)
    for value, _events in chunk_events(good[: N_GOOD // 2], max_events=100):
        producer.send(topic_name(s.namespace, "events.raw"), key=b"feed", value=value)
    for e in good[N_GOOD // 2:]:
        producer.send(topic_name(s.namespace, "events.raw"), key=b"feed",
                      value=encode_event(e))
    producer.flush(60)
    producer.close(10)

    want = sum(poison.expect.values())
    stored = wait_for(lambda: _stored(s), until=lambda c: c[0] >= N_GOOD, timeout=120, every=1)
    dead = read_topic(s, "dlq", expect=want, timeout=60)
    got: Counter[tuple[str, str]] = Counter()
    bad_origin = []
    for r in dead:
        h = {k: (v or b"").decode("utf-8", "replace") for k, v in r.headers}
        got[(h.get("dlq.stage", "?"), h.get("dlq.reason", "?"))] += 1
        if (h.get("dlq.topic"), int(h.get("dlq.partition") or -1),
                int(h.get("dlq.offset") or -1)) not in origins:
            bad_origin.append(h)  # every dead letter names one of the records we sent
    stored = _stored(s)
    replies = read_topic(s, "system.probe.reply", expect=SPLIT["system.probe"], timeout=30)
    frames = _frames_counted(wait_for(worker.output, until=lambda o: _frames_counted(o) >=
                                      poison.frames, timeout=30, every=1))
    print(f"\npoison: sent {N_BAD} bad records {dict(Counter(x[0] for x in poison.records))} "
          f"then {N_GOOD} valid events")
    print(f"poison: dead letters {len(dead)} (expected {want}) by stage/reason "
          f"{dict(sorted(got.items()))}")
    print(f"poison: stored ok events {stored[0]} (distinct {stored[1]}, duplicates "
          f"{stored[0] - stored[1]}), rows in events {stored[2]}; frames counted by the vision "
          f"agent {frames} of {poison.frames} bad ones; probe replies {len(replies)}")

    assert worker.alive(), worker.output()[-4000:]
    assert sink.alive(), sink.output()[-4000:]
    assert stored[:2] == (N_GOOD, N_GOOD), stored
    assert stored[2] == N_GOOD, "a bad record was stored"
    assert ("internal_error" not in {r for _s, r in got}), got
    assert got == poison.expect, {k: (got.get(k, 0), poison.expect.get(k, 0))
                                  for k in got.keys() | poison.expect.keys()
                                  if got.get(k, 0) != poison.expect.get(k, 0)}
    assert not bad_origin, bad_origin[:3]
    assert frames >= poison.frames, frames
    assert len(replies) == SPLIT["system.probe"], len(replies)
    for name, proc in (("worker", worker), ("sink", sink)):
        assert "Traceback" not in proc.output(), f"{name}: {proc.output()[-4000:]}"


def _frames_counted(log: str) -> int:
    """The vision agent's frame count (its log line every 5 s), the latest."""
    counts = [int(m) for m in re.findall(r"vision: frames=(\d+)", log)]
    return max(counts, default=0)


# --- a bug of ours in a stage: rewind, record by record, dead letter, go on ----------


class _Count:
    def __init__(self, key: str, n: int = 0) -> None:
        self.key, self.n = key, n

    def to_bytes(self) -> bytes:
        return orjson.dumps([self.key, self.n])

    @classmethod
    def from_bytes(cls, raw: bytes) -> _Count:
        k, n = orjson.loads(raw)
        return cls(k, n)


@pytest.mark.timeout(240)
def test_a_bug_in_a_stage_is_dead_lettered_and_the_state_counts_each_record_once(
        fresh_namespace):
    """A stage whose ``process`` raises on some records *after* changing its state in
    place (so a plain retry would count twice), run by the real ``StageRunner`` on the
    real broker: the raising records are dead-lettered as ``internal_error`` with their
    origin, every other record is counted exactly once in the state, the runner keeps
    running."""
    import threading

    from ioc.kafka import ensure_topics
    from streams.engine import Outbox, Stage, StageRunner, StateTable

    s = fresh_namespace("bug")
    src, out_topic = topic_name(s.namespace, "events"), topic_name(s.namespace, "system.probe")
    table = StateTable("bugcounts", src, 4)

    def process(records: list[Any], out: Outbox) -> None:
        for r in records:
            c = table.get(r.key, _Count.from_bytes, _Count, r.key.decode())
            c.n += 1  # in place: a half-applied batch would count it twice on a retry
            table.change(r.key, c, r.partition)
            if r.value.startswith(b"boom"):
                raise ZeroDivisionError("a bug of ours")
            out.add(out_topic, r.key, b"%d" % c.n, partition=0)

    stage = Stage("buggy", [src], process, tables=[table], batch_max=200, within_s=0.05,
                  commit_every_s=0.3)
    runner = StageRunner(s, f"{s.namespace}-bugtest", stage)
    runner.careful_s = 2.0  # back to whole batches soon after the last failure
    assert ensure_topics(s, runner.specs).success
    failed: list[BaseException] = []

    def run() -> None:
        try:
            runner.run_sync()
        except BaseException as exc:  # the test fails on it below
            failed.append(exc)

    thread = threading.Thread(target=run, daemon=True, name="buggy-stage")
    thread.start()
    producer = KafkaProducer(acks="all", linger_ms=5, **kafka_python_kwargs(s.kafka))
    sent: dict[bytes, int] = Counter()
    booms: set[tuple[int, int]] = set()
    for i in range(3000):
        key = b"k%d" % (i % 12)
        boom = i % 97 == 13
        m = producer.send(src, key=key, value=(b"boom" if boom else b"ok") + b"%d" % i).get(30)
        if boom:
            booms.add((m.partition, m.offset))
        else:
            sent[key] += 1
        if i % 1000 == 999:
            time.sleep(1.0)  # several batches, several commits, several rewinds
    producer.close(10)
    dead = read_topic(s, "dlq", expect=len(booms), timeout=90)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and runner.pending:
        time.sleep(0.5)
    runner.stopping.set()
    thread.join(60)
    assert not failed, failed
    assert not thread.is_alive()
    # the state as its changelog holds it (the last record per key; the final checkpoint
    # wrote it before the consumer left the group and the table was dropped)
    changelog = read_topic(s, runner.specs[0].suffix, expect=1, timeout=10)
    counts = {r.key: _Count.from_bytes(r.value).n
              for r in sorted(changelog, key=lambda r: (r.partition, r.offset))}
    got = {(int(dict(r.headers)["dlq.partition"]), int(dict(r.headers)["dlq.offset"]))
           for r in dead}
    reasons = Counter(dict(r.headers)["dlq.reason"] for r in dead)
    print(f"\nbug: {sum(sent.values()) + len(booms)} records, {len(booms)} raising; "
          f"dead letters {len(dead)} {dict(reasons)}; rewinds {stage.metrics.rewinds}, "
          f"internal_errors {stage.metrics.internal_errors}")
    assert got == booms and len(dead) == len(booms)
    assert reasons == {b"internal_error": len(booms)}
    assert all(dict(r.headers)["dlq.stage"] == b"buggy" and
               dict(r.headers)["dlq.message"].startswith(b"ZeroDivisionError: a bug of ours")
               for r in dead)
    assert counts == {k: n for k, n in sent.items()}, "a record was counted twice or lost"
    assert stage.metrics.rewinds >= 1 and stage.metrics.internal_errors == len(booms)
