"""Poison records against a running worker, sink and wall: nothing stops, nothing is lost.

A real ``ioc worker`` (every agent and stage, with the scorecards of
deploy/scorecards.example.yaml), ``ioc sink`` (every table) and ``ioc wall serve`` run
as subprocesses while 11,000 random and malformed records go to every input topic they
read (``events.raw``, ``events``, ``camera.frames``, ``rollups``, ``kpis``, ``alerts``,
``system.probe``, ``scorecards``, ``views``, ``alerts.actions``; the wall's
``wall.tiles`` has a poison test of its own, test_wall_hostile.py), and decodable but odd
scorecard events (units with ``/``, ``%``, 300 characters, counts 0, negative, 1e300)
reach the scorecards stage. Then valid records follow: events, scorecard events, view
facts, action records. Checked:

* every valid event is stored in PostgreSQL exactly once, the scorecard counts of the
  valid scorecard events are exact (each counted once), every valid action is in
  ``alert_actions`` once and folded by the wall, the valid view facts are listed in
  their ``alerts:<scope>`` tile;
* every bad record is dead-lettered by each consumer that reads it, with the reason
  and origin (topic, partition, offset) the pure decoders predict for it, or (camera
  frames, which are too large for ``<ns>.dlq``) counted in the vision agent's log, or
  (the wall's action log, which has no consumer group and no dead letters) counted in
  ``/healthz`` (``operators.actions_undecodable``); every probe record is answered;
* no dead letter says ``internal_error`` (no bug of ours was hit), the wall counts no
  fold error, and the three processes are still running with no traceback in their logs.

The figures (records sent, dead letters by stage and reason, rows stored, duplicates)
are printed; docs/reliability.md quotes a run.
"""

from __future__ import annotations

import http.client
import random
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka import KafkaProducer
from psycopg import sql

from ioc.aggregate import Rollup
from ioc.aggregate._storage import rollup_rows
from ioc.config import Settings, load_settings
from ioc.errors import InvalidRecord
from ioc.events import Event, chunk_events, decode_event, encode_event
from ioc.events._route import route_raw
from ioc.events._storage import event_rows
from ioc.kafka import kafka_python_kwargs
from ioc.kpi import KpiValue
from ioc.kpi._storage import kpi_rows
from ioc.rules import Alert
from ioc.rules._storage import alert_rows
from ioc.scorecard import LeafCount
from ioc.scorecard._storage import scorecard_rows
from ioc.storage import connect
from ioc.tilegen import ViewFact
from ioc.tiles import decode_tile
from ioc.topics import topic_name
from ioc.wall._storage import action_rows
from ioc.wall.workflow import ActionRecord
from tests.fixtures.events import read_topic, wait_for
from tests.fixtures.hostile import BIG_INT_LITERALS, deep_json

pytestmark = [pytest.mark.kafka, pytest.mark.db]

N_BAD = 11_000
SPLIT = {"events.raw": 3000, "events": 2400, "camera.frames": 1500, "rollups": 1000,
         "kpis": 1000, "alerts": 1000, "system.probe": 100, "scorecards": 400, "views": 300,
         "alerts.actions": 300}
N_GOOD = 3000
SEED = 12
ROOT = Path(__file__).resolve().parents[2]
SCORECARDS_YAML = ROOT / "deploy" / "scorecards.example.yaml"


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
LEAF = orjson.loads(LeafCount("dossiers_online", "year", "2026", ("province", "district", "d1",
                                                                  "all"),
                              3.0, 4.0, ("province", "admin_level", "agency", "procedure"),
                              NOW).to_bytes())
ACTION = orjson.loads(ActionRecord.new("ack", "a1", "op", at=NOW, id="x1", screen="main",
                                       server="w").to_bytes())
_KPI_B, _ALERT_B = orjson.dumps(KPI), orjson.dumps(ALERT)


def _view_garbage(rng: random.Random) -> bytes | None:
    """A hostile ``<ns>.views`` value: bytes, a broken head, or a good head before a bad
    KPI value or alert."""
    kind = rng.randrange(6)
    if kind == 0:
        return rng.randbytes(rng.randrange(0, 200))
    if kind == 1:
        return None
    if kind == 2:  # a head of the wrong shape before a good value
        head = b" ".join(rng.choice([b"kpi", b"alert", b"rollup", b"", b"\xff", b"9", b"-1",
                                     b"1e3", b"0x10", b"\x00"])
                         for _ in range(rng.randrange(1, 5)))
        return head + rng.choice([b"\n", b"", b"\r\n"]) + rng.choice([_KPI_B, _ALERT_B])
    if kind == 3:  # a good head, then what is not that kind's record
        kind_b, like = rng.choice([(b"kpi", KPI), (b"alert", ALERT)])
        return kind_b + b" 0 %d\n" % rng.randrange(0, 9) + (_garbage(rng, like) or b"")
    if kind == 4:  # the other kind's record under the head
        return rng.choice([b"kpi 0 1\n" + _ALERT_B, b"alert 0 1\n" + _KPI_B])
    return b"kpi 0 1\n" + orjson.dumps(KPI)[: rng.randrange(1, 60)]


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
        self.wall_undecodable = 0  # action records the wall's action log skips (and counts)
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
                        "alerts": ALERT, "scorecards": LEAF, "views": {},
                        "alerts.actions": ACTION}[suffix]
                value = _view_garbage(rng) if suffix == "views" else _garbage(rng, like)
                # compacted topics refuse records without a key
                key = rng.choice([b"k", rng.randbytes(4)]
                                 if suffix in ("kpis", "alerts", "scorecards", "views")
                                 else [None, b"k", rng.randbytes(4)])
                key = key if key is not None or value is not None else b"tomb"  # one of both
                if suffix in ("scorecards", "views", "alerts.actions"):
                    if not self._newer(suffix, key, value, headers):
                        continue  # decodable by chance: not poison
                elif suffix == "events.raw":
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

    def _newer(self, suffix: str, key: bytes | None, value: bytes | None,
               headers: list[tuple[str, bytes]]) -> bool:
        """Count what a bad record of the newer consumers' topics must give; False when
        the record decodes (by chance valid: not poison)."""
        if suffix == "views":  # the views stage: tombstones too are not view facts
            if not _fails(ViewFact.from_bytes, value):
                return False
            self.expect[("views", "undecodable")] += 1
            return True
        if suffix == "scorecards":  # the sink and the scorecard_tiles stage (counted skip)
            if value is not None and not _fails(LeafCount.from_bytes, value):
                return False
            if _fails(scorecard_rows, key, value, headers):
                self.expect[("sink:scorecard_counts", "sink_unreadable")] += 1
            return True
        # alerts.actions: the sink, and every wall replica's action log (counted skip)
        if value is not None and not _fails(ActionRecord.from_bytes, value):
            return False
        self.wall_undecodable += 1
        if _fails(action_rows, key, value, headers):
            self.expect[("sink:alert_actions", "sink_unreadable")] += 1
        return True

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


# --- valid records for the newer consumers -------------------------------------------

GOOD_UNITS = ("sc-d1", "sc-d2", "sc-d3", "sc-d4", "sc-d5")
N_SC_GOOD = 300  # egov.dossier events of GOOD_UNITS, every third one online
ODD_UNITS = ("a/b", "100%", "%2F", "é" * 300, "", " ", "x|y|z", "\u202e", "1e400", "null")
N_VIEWS_GOOD, N_ACTIONS_GOOD = 12, 30


def _scorecard_events() -> tuple[list[Event], list[Event]]:
    """(valid dossier events of GOOD_UNITS, decodable but odd ones of other entities)."""
    good = [Event(id=f"sc-ok-{i}", source="egov-portal", type="egov.dossier",
                  entity=GOOD_UNITS[i % len(GOOD_UNITS)], time=NOW - 20 + i * 0.01,
                  values={"count": 1.0},
                  attributes={"channel": "online" if i % 3 == 0 else "counter",
                              "admin_level": "district", "procedure": f"p{i % 4}"})
            for i in range(N_SC_GOOD)]
    rng = random.Random(SEED)
    odd = []
    for i in range(60):
        attrs: dict[str, Any] = {name: rng.choice(ODD_UNITS) for name in
                                 rng.sample(["province", "admin_level", "procedure", "channel",
                                             "return_channel", "signed"], rng.randrange(0, 6))}
        if rng.random() < 0.3:
            attrs["admin_level"] = rng.choice([True, False, 0, -1, 1.5, 2**62])
        odd.append(Event(id=f"sc-odd-{i}", source="egov-portal",
                         type=rng.choice(["egov.dossier", "egov.result", "egov.document"]),
                         entity=f"sc-odd-{rng.choice(ODD_UNITS)}", time=NOW - 20 + i * 0.01,
                         values={"count": rng.choice([0.0, -5.0, 1e300, 0.5, 7.0])},
                         attributes=attrs))
    return good, odd


def _view_facts() -> list[tuple[bytes, bytes]]:
    """Valid ``<ns>.views`` records: raised alerts of scope ``poison`` (key, value)."""
    out = []
    for i in range(N_VIEWS_GOOD):
        a = Alert(f"pv-{i}", "r", f"e-{i}", None, "warning", "raised", int(NOW) - 60, NOW - 60 + i,
                  None, None, f"m{i}", "poison")
        f = ViewFact(a, a.to_bytes(), 0, 1_000 + i)
        out.append((f.record_key(), f.to_bytes()))
    return out


def _actions() -> list[ActionRecord]:
    return [ActionRecord.new("ack", f"pa-{i}", "op", at=NOW + i, id=f"act-ok-{i}",
                             screen="main", server="poison") for i in range(N_ACTIONS_GOOD)]


def _scorecard_totals(s: Settings) -> dict[str, tuple[float, float]]:
    """Numerator and denominator of dossiers_online per good unit (this year, all paths)."""
    try:
        with connect(s.database, autocommit=True) as c:
            rows = c.execute(sql.SQL(
                "select path->>2, sum(numerator), sum(denominator) from {} where indicator = "
                "'dossiers_online' and period = 'year' and path->>2 like 'sc-d%%' "
                "group by 1").format(sql.Identifier(s.db_schema, "scorecard_counts"))).fetchall()
    except Exception:
        return {}
    return {r[0]: (float(r[1]), float(r[2])) for r in rows}


def _count(s: Settings, table: str, where: str) -> int:
    try:
        with connect(s.database, autocommit=True) as c:
            row = c.execute(sql.SQL("select count(*) from {} where " + where).format(
                sql.Identifier(s.db_schema, table))).fetchone()
            return int(row[0]) if row else -1
    except Exception:
        return -1


def _healthz(port: int) -> dict[str, Any]:
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        c.request("GET", "/healthz")
        body = orjson.loads(c.getresponse().read())
        c.close()
        return body if isinstance(body, dict) else {}
    except (OSError, ValueError):
        return {}


def _listed(s: Settings, tile_id: bytes) -> set[str]:
    """The alert ids in the latest version of ``tile_id`` on ``<ns>.wall.tiles``."""
    latest = None
    for r in read_topic(s, "wall.tiles", expect=10**9, timeout=3):
        if r.key == tile_id and r.value is not None:
            latest = r.value
    if latest is None:
        return set()
    return {item["id"] for item in decode_tile(latest).payload.get("items", [])}


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
def test_poison_records_never_stop_the_worker_the_sink_or_the_wall(fresh_namespace, spawn):
    s = fresh_namespace("poison")
    cfg = load_settings(SCORECARDS_YAML, env={})
    assert cfg.scorecards.indicators  # the scorecards stages run
    env = {"IOC_STREAMS__SESSION_TIMEOUT_S": "10", "IOC_CONFIG": str(SCORECARDS_YAML),
           "IOC_SCORECARDS__TILE_EVERY_S": "1"}
    worker = spawn(["worker", "--loglevel", "info"], settings=s, env=env, name="worker")
    sink = spawn(["sink", "--batch-rows", "2000", "--linger", "0.2"], settings=s, name="sink")
    wall = spawn(["wall", "serve", "--port", "0"], settings=s, name="wall",
                 env={"IOC_WALL__SECRET": "poison-test-secret-0123456789abcdef"})
    ready = wait_for(worker.output, until=lambda o: len(re.findall(r"stage \S+: group", o)) >= 3
                     and "scorecard" in o, timeout=90)
    assert worker.alive() and len(re.findall(r"stage \S+: group", ready)) >= 3, ready[-3000:]
    listening = wait_for(wall.output, until=lambda o: "wall: listening on" in o, timeout=60)
    m = re.search(r"wall: listening on http://127\.0\.0\.1:(\d+)/", listening)
    assert m and wall.alive(), listening[-3000:]
    port = int(m.group(1))
    poison = Poison(s)
    assert len(poison.records) == N_BAD

    producer = KafkaProducer(acks="all", linger_ms=20, max_request_size=4 * 1024 * 1024,
                             **kafka_python_kwargs(s.kafka))
    futures = [(suffix, producer.send(topic_name(s.namespace, suffix), key=key, value=value,
                                      headers=headers))
               for suffix, key, value, headers in poison.records]
    sc_good, sc_odd = _scorecard_events()
    # decodable but odd scorecard events, as a foreign writer of <ns>.events could send
    # them (validate refuses most of them: too long, bad characters)
    odd_refused = 0
    for e in sc_odd:
        value = encode_event(e)
        odd_refused += _fails(event_rows, e.entity.encode(), value, [])
        futures.append(("events", producer.send(topic_name(s.namespace, "events"),
                                                key=e.entity.encode(), value=value)))
    if odd_refused:
        poison.expect[("sink:events", "sink_unreadable")] += odd_refused
    producer.flush(120)
    origins = {(topic_name(s.namespace, suffix), m.partition, m.offset)
               for suffix, m in ((sfx, f.get(30)) for sfx, f in futures)}
    good = _good_events(N_GOOD)
    for value, _events in chunk_events(good[: N_GOOD // 2], max_events=100):
        producer.send(topic_name(s.namespace, "events.raw"), key=b"feed", value=value)
    for e in good[N_GOOD // 2:]:
        producer.send(topic_name(s.namespace, "events.raw"), key=b"feed",
                      value=encode_event(e))
    for e in sc_good:
        producer.send(topic_name(s.namespace, "events.raw"), key=e.entity.encode(),
                      value=encode_event(e))
    for key, value in _view_facts():
        producer.send(topic_name(s.namespace, "views"), key=key, value=value)
    for a in _actions():
        producer.send(topic_name(s.namespace, "alerts.actions"), key=a.key, value=a.to_bytes())
    producer.flush(60)
    producer.close(10)

    want = sum(poison.expect.values())
    n_events = N_GOOD + N_SC_GOOD + len(sc_odd) - odd_refused
    stored = wait_for(lambda: _stored(s), until=lambda c: c[0] >= N_GOOD and c[2] >= n_events,
                      timeout=120, every=1)
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
    # the newer consumers' valid records
    units = {u: (sum(1 for i in range(N_SC_GOOD) if i % len(GOOD_UNITS) == k and i % 3 == 0),
                 sum(1 for i in range(N_SC_GOOD) if i % len(GOOD_UNITS) == k))
             for k, u in enumerate(GOOD_UNITS)}
    totals = wait_for(lambda: _scorecard_totals(s), until=lambda t: t == units, timeout=60,
                      every=1)
    actions = wait_for(lambda: _count(s, "alert_actions", "id like 'act-ok-%%'"),
                       until=lambda n: n >= N_ACTIONS_GOOD, timeout=30, every=1)
    actions_all = _count(s, "alert_actions", "true")
    health = wait_for(lambda: _healthz(port), timeout=30, every=1, until=lambda h: h.get(
        "operators", {}).get("actions_folded", 0) >= N_ACTIONS_GOOD and h.get("operators", {})
        .get("actions_undecodable", 0) >= poison.wall_undecodable)
    ops = health.get("operators", {})
    listed = wait_for(lambda: _listed(s, b"alerts:poison"),
                      until=lambda ids: len(ids) >= N_VIEWS_GOOD, timeout=30, every=0.5)
    card = wait_for(lambda: _has_tile(s, b"card:province"), until=bool, timeout=30, every=0.5)
    print(f"\npoison: sent {N_BAD} bad records {dict(Counter(x[0] for x in poison.records))} "
          f"and {len(sc_odd)} odd scorecard events, then {N_GOOD} valid events, {N_SC_GOOD} "
          f"scorecard events, {N_VIEWS_GOOD} view facts, {N_ACTIONS_GOOD} actions")
    print(f"poison: dead letters {len(dead)} (expected {want}) by stage/reason "
          f"{dict(sorted(got.items()))}")
    print(f"poison: stored ok events {stored[0]} (distinct {stored[1]}, duplicates "
          f"{stored[0] - stored[1]}), rows in events {stored[2]} (expected {n_events}); frames "
          f"counted by the vision agent {frames} of {poison.frames} bad ones; probe replies "
          f"{len(replies)}")
    print(f"poison: scorecard counts of the valid units {totals} (expected {units}); "
          f"alert_actions rows {actions_all} ({actions} valid); wall /healthz status "
          f"{health.get('status')} actions_folded {ops.get('actions_folded')} "
          f"actions_undecodable {ops.get('actions_undecodable')} (expected "
          f"{poison.wall_undecodable}) actions_fold_errors {ops.get('actions_fold_errors')}; "
          f"alerts:poison lists {len(listed)} of {N_VIEWS_GOOD}; card:province tile "
          f"{'sent' if card else 'missing'}")

    assert worker.alive(), worker.output()[-4000:]
    assert sink.alive(), sink.output()[-4000:]
    assert wall.alive(), wall.output()[-4000:]
    assert stored[:2] == (N_GOOD, N_GOOD), stored
    assert stored[2] == n_events, "a bad record was stored, or a valid one lost"
    assert ("internal_error" not in {r for _s, r in got}), got
    assert got == poison.expect, {k: (got.get(k, 0), poison.expect.get(k, 0))
                                  for k in got.keys() | poison.expect.keys()
                                  if got.get(k, 0) != poison.expect.get(k, 0)}
    assert not bad_origin, bad_origin[:3]
    assert frames >= poison.frames, frames
    assert len(replies) == SPLIT["system.probe"], len(replies)
    assert totals == units, "a scorecard event was counted twice or lost"
    assert actions == actions_all == N_ACTIONS_GOOD, (actions, actions_all)
    assert health.get("status") == "ok", health
    assert ops.get("actions_folded") == N_ACTIONS_GOOD, ops
    assert ops.get("actions_undecodable") == poison.wall_undecodable, ops
    assert ops.get("actions_fold_errors") == 0, ops
    assert listed == {f"pv-{i}" for i in range(N_VIEWS_GOOD)}, listed
    assert card, "no scorecard tile: the scorecard_tiles stage did not build"
    for name, proc in (("worker", worker), ("sink", sink), ("wall", wall)):
        assert "Traceback" not in proc.output(), f"{name}: {proc.output()[-4000:]}"


def _has_tile(s: Settings, tile_id: bytes) -> bool:
    return any(r.key == tile_id and r.value is not None
               for r in read_topic(s, "wall.tiles", expect=10**9, timeout=2))


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
