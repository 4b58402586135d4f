"""`ioc sink` against the real broker and PostgreSQL: idempotent, nothing lost.

- kill -9 mid-stream, restart, then a full redelivery (group rewound to offset 0):
  every event stored exactly once;
- the database stopped for 20 s mid-stream (a private PostgreSQL cluster, never the
  shared one): the sink pauses, keeps everything in Kafka, resumes, and no row is
  missing or doubled;
- a rebalance during such an outage (a second sink joins and leaves), and a clear
  KafkaError when no broker answers at start.
"""

from __future__ import annotations

import re
import threading
import time

import pytest
from psycopg import sql

from ioc.config import Settings, load_settings
from ioc.events import Event, encode_event
from ioc.kafka import kafka_python_kwargs
from ioc.storage import connect, migrate
from ioc.topics import topic_name
from tests.fixtures.events import private_postgres, read_topic, wait_for  # noqa: F401


def _produce(s: Settings, ids: range, *, rate: float | None = None) -> None:
    from kafka import KafkaProducer

    p = KafkaProducer(acks="all", linger_ms=5, **kafka_python_kwargs(s.kafka))
    topic = topic_name(s.namespace, "events")
    t0 = time.time() - 3600
    start = time.monotonic()
    for n, i in enumerate(ids):
        e = Event(id=f"ev{i}", source="sink-test", type="noise.level", entity=f"m{i % 11}",
                  time=t0 + i * 0.01, values={"db": 40.0 + i % 30}, attributes={"k": i})
        p.send(topic, key=e.entity.encode(), value=encode_event(e))
        if rate and n % 50 == 0:
            ahead = n / rate - (time.monotonic() - start)
            if ahead > 0:
                time.sleep(ahead)
    p.flush()
    p.close()


def _counts(s: Settings) -> tuple[int, int]:
    try:
        with connect(s.database, autocommit=True) as c:
            row = c.execute(sql.SQL("select count(*), count(distinct (source, id)) from {}")
                            .format(sql.Identifier(s.db_schema, "events"))).fetchone()
            assert row is not None
            return int(row[0]), int(row[1])
    except Exception:
        return -1, -1


def _committed(s: Settings, group: str) -> int:
    """Sum of the group's committed offsets on <ns>.events."""
    from ioc.kafka import admin_client

    admin = admin_client(s.kafka)
    try:
        offsets = admin.list_group_offsets(group).get(group, {})
        return sum(o.offset for tp, o in offsets.items() if o.offset > 0)
    finally:
        admin.close()


def _rewind_group(s: Settings, group: str) -> None:
    from kafka import KafkaConsumer, TopicPartition
    from kafka.structs import OffsetAndMetadata

    c = KafkaConsumer(group_id=group, enable_auto_commit=False,
                      **kafka_python_kwargs(s.kafka))
    topic = topic_name(s.namespace, "events")
    tps = [TopicPartition(topic, p) for p in c.partitions_for_topic(topic) or ()]
    c.assign(tps)
    c.commit({tp: OffsetAndMetadata(0, "", -1) for tp in tps})
    c.close()


@pytest.mark.timeout(150)
def test_sink_kill9_and_redelivery_store_each_event_once(fresh_namespace, spawn):
    s = fresh_namespace("sk")
    n = 20_000
    _produce(s, range(n))
    # Two records the sink cannot store: unreadable, and refused by PostgreSQL (NUL in text).
    from kafka import KafkaProducer

    p = KafkaProducer(acks="all", **kafka_python_kwargs(s.kafka))
    topic = topic_name(s.namespace, "events")
    nul = Event(id="nul", source="sink-test", type="noise.level", entity="bad\x00entity",
                time=time.time() - 60, values={"db": 1.0})
    metas = [p.send(topic, key=b"x", value=b"not an event").get(10),
             p.send(topic, key=b"y", value=encode_event(nul)).get(10)]
    p.close()
    args = ["-v", "sink", "--tables", "events", "--batch-rows", "1500", "--linger", "0.2"]
    first = spawn(args, settings=s, name="sink1")
    got = wait_for(lambda: _counts(s), until=lambda c: c[0] >= 3000, timeout=60, every=0.05)
    first.kill9()  # mid-stream: some batches written, their offsets maybe not committed
    assert 0 < got[0] < n, f"kill came too late or nothing was written: {got}"
    second = spawn(args, settings=s, name="sink2")
    got = wait_for(lambda: _counts(s), until=lambda c: c[0] >= n, timeout=90)
    assert got == (n, n), second.output()[-2000:]
    dead = read_topic(s, "dlq", expect=2, timeout=30)
    assert sorted(dict(d.headers)["dlq.reason"] for d in dead) == [b"db_refused",
                                                                    b"sink_unreadable"]
    for d in dead:
        h = dict(d.headers)
        meta = metas[0] if h["dlq.reason"] == b"sink_unreadable" else metas[1]
        assert (int(h["dlq.partition"]), int(h["dlq.offset"])) == (meta.partition, meta.offset)
        assert d.value in (b"not an event", encode_event(nul))
    assert second.stop() == 0, second.output()[-2000:]
    # Full redelivery: every event comes again; none may be stored twice.
    _rewind_group(s, f"{s.namespace}-sink-events")
    third = spawn(args, settings=s, name="sink3")
    group = f"{s.namespace}-sink-events"
    done = wait_for(lambda: _committed(s, group), until=lambda c: c >= n + 2, timeout=60)
    assert done == n + 2, third.output()[-2000:]
    assert third.stop() == 0
    assert _counts(s) == (n, n)
    assert f"messages={n + 2} rows_inserted=0 duplicates={n}" in third.output(), \
        third.output()[-2000:]
    # The redelivered batches took the merge path after the direct COPY was refused.
    assert re.search(r"direct_fallbacks=[1-9]", third.output()), third.output()[-2000:]


def test_direct_copy_falls_back_to_merge_on_duplicates(fresh_namespace):
    """First-write-wins tables COPY straight into the target; a batch holding a stored
    row is rolled back and merged instead, and the fast path returns once a merged
    batch is all new."""
    from ioc.events._storage import EVENTS_SINK, event_rows
    from ioc.storage.sink import TableWriter

    s = fresh_namespace("dc")
    t0 = time.time() - 600

    def rows(ids: range) -> list[tuple]:
        out: list[tuple] = []
        for i in ids:
            e = Event(id=f"d{i}", source="sink-test", type="noise.level", entity="m",
                      time=t0 + i, values={"db": float(i)})
            out.extend(event_rows(None, encode_event(e), ()))
        return out

    w = TableWriter(s, EVENTS_SINK)
    try:
        assert w.write(rows(range(0, 100))) == 100
        assert w.direct_fallbacks == 0
        # Half already stored, and one row twice within the batch: merged, nothing doubled.
        assert w.write(rows(range(50, 150)) + rows(range(149, 150))) == 50
        assert w.direct_fallbacks == 1
        # The last batch had duplicates: the next one is merged too; it is all new...
        assert w.write(rows(range(150, 200))) == 50
        # ...so the one after takes the direct path again (a duplicate there falls back once more).
        assert w.write(rows(range(200, 250))) == 50
        assert w.direct_fallbacks == 1
        assert w.write(rows(range(240, 260))) == 10
        assert w.direct_fallbacks == 2
    finally:
        w.close()
    assert _counts(s) == (260, 260)


def test_encoded_copy_rows_store_what_event_rows_store(fresh_namespace):
    """The sink's pre-encoded rows (int8 time, binary jsonb) land as the same rows, with
    the same unique key, as the Python-typed rows of ``event_rows``: the second write of
    the same events is all duplicates, on both paths (direct COPY and the merge)."""
    from ioc.events._storage import EVENTS_SINK, event_copy_rows, event_rows
    from ioc.storage.sink import TableWriter

    s = fresh_namespace("enc")
    t0 = time.time() - 600
    raw = [encode_event(Event(id=f"e{i}", source="enc", type="air.quality", entity=f"s{i % 7}",
                              time=t0 + i * 0.0013 + 0.0000005, values={"pm25": i / 3, "n": -0.0},
                              attributes={"a": "é\u2028", "k": 2**62, "b": i % 2 == 0}))
           for i in range(300)]
    enc = [r for v in raw for r in event_copy_rows(None, v, ())]
    plain = [r for v in raw for r in event_rows(None, v, ())]
    w = TableWriter(s, EVENTS_SINK)
    try:
        assert w.write(enc[:200], encoded=True) == 200  # direct COPY
        assert w.write(plain, encoded=False) == 100  # 200 already there: merged
        assert w.write(enc, encoded=True) == 0  # all stored: the merge path, encoded
        # bytea (the binary jsonb) goes through psycopg's C dumper of bytes, not the
        # Python one psycopg.dbapi20 registers for that oid
        import psycopg
        from psycopg.adapt import PyFormat
        from psycopg.pq import Format

        assert w._conn is not None
        assert (w._conn.adapters.get_dumper_by_oid(17, Format.BINARY)
                is psycopg.adapters.get_dumper(bytes, PyFormat.BINARY))
        with connect(s.database, autocommit=True) as c:
            got = c.execute(sql.SQL("select time, source, id, type, entity, values, attributes "
                                    "from {} order by id").format(
                sql.Identifier(s.db_schema, "events"))).fetchall()
    finally:
        w.close()
    assert sorted(got, key=lambda r: r[2]) == sorted(plain, key=lambda r: r[2])


@pytest.mark.timeout(240)
def test_sink_survives_20s_database_outage(fresh_namespace, spawn, private_postgres):  # noqa: F811
    pg = private_postgres()
    shared = fresh_namespace("pgd")  # topics (and an unused schema on the shared DB)
    s = load_settings(overrides={"namespace": shared.namespace,
                                 "kafka": {"bootstrap_servers": shared.kafka.bootstrap_servers},
                                 "database": {"dsn": pg.dsn, "passfile": None}})
    migrate(s)
    # A backoff of up to 30 s: the sink must not wait it out once the database is back
    # (early_resumes: the backoff cut short when a connection succeeded again).
    sink = spawn(["-v", "sink", "--tables", "events", "--batch-rows", "2000", "--linger", "0.2",
                  "--retry-max", "30"], settings=s, name="sink")
    total = 14_000
    producer = threading.Thread(target=_produce, args=(s, range(total)),
                                kwargs={"rate": 400.0})
    producer.start()  # ~35 s of events at 400/s
    got = wait_for(lambda: _counts(s), until=lambda c: c[0] >= 1500, timeout=30)
    assert got[0] >= 1500, sink.output()[-2000:]
    pg.stop()
    down_at = time.monotonic()
    time.sleep(20)
    assert sink.alive(), sink.output()[-3000:]
    pg.start()
    up_after = time.monotonic() - down_at
    producer.join(60)
    got = wait_for(lambda: _counts(s), until=lambda c: c[0] >= total, timeout=60)
    out = sink.output()
    assert got == (total, total), (got, out[-3000:])
    assert "database unavailable" in out and "resuming" in out, out[-3000:]
    assert up_after >= 20
    assert sink.stop() == 0
    assert re.search(r"sink events stopped: .*early_resumes=[1-9]", sink.output()), \
        sink.output()[-3000:]
    with connect(s.database, autocommit=True) as c:
        ids = {r[0] for r in c.execute(sql.SQL("select id from {}").format(
            sql.Identifier(s.db_schema, "events")))}
    assert ids == {f"ev{i}" for i in range(total)}


def test_sink_without_broker_fails_clearly(fresh_namespace):
    """No broker answers at start: a KafkaError naming the address, not a hang."""
    import asyncio

    from ioc.errors import KafkaError
    from ioc.events._storage import EVENTS_SINK
    from ioc.storage.sink import run_sinks

    s = fresh_namespace("nb")
    kafka = s.kafka.model_copy(update={"bootstrap_servers": ["127.0.0.1:9"],
                                       "request_timeout_s": 3.0})
    t0 = time.monotonic()
    with pytest.raises(KafkaError, match=r"no Kafka broker answered at 127\.0\.0\.1:9"):
        asyncio.run(run_sinks(s.model_copy(update={"kafka": kafka}), [EVENTS_SINK]))
    assert time.monotonic() - t0 < 15


@pytest.mark.timeout(240)
def test_sink_rebalance_during_database_outage(fresh_namespace, spawn, private_postgres):  # noqa: F811
    """A second member joins and leaves while the database is down, so the paused sink
    is handed partitions by rebalances (its on_assign pauses them too). Checked: both
    members survive the outage and, once the database is back, every event is stored
    exactly once."""
    pg = private_postgres()
    shared = fresh_namespace("pgr")
    s = load_settings(overrides={"namespace": shared.namespace,
                                 "kafka": {"bootstrap_servers": shared.kafka.bootstrap_servers},
                                 "database": {"dsn": pg.dsn, "passfile": None}})
    migrate(s)
    args = ["-v", "sink", "--tables", "events", "--batch-rows", "1000", "--linger", "0.2",
            "--retry-max", "1"]
    a = spawn(args, settings=s, name="sinkA")
    total = 8_000
    producer = threading.Thread(target=_produce, args=(s, range(total)),
                                kwargs={"rate": 500.0})
    producer.start()  # ~16 s of events
    got = wait_for(lambda: _counts(s), until=lambda c: c[0] >= 1000, timeout=30)
    assert got[0] >= 1000, a.output()[-2000:]
    pg.stop()
    out = wait_for(a.output, until=lambda o: "database unavailable" in o, timeout=20)
    assert "database unavailable" in out, out[-3000:]
    b = spawn(args, settings=s, name="sinkB")  # joins: the group rebalances
    # B got partitions, read a batch and could not write it either.
    out = wait_for(b.output, until=lambda o: "database unavailable (" in o, timeout=30)
    assert "database unavailable (" in out, out[-3000:]
    assert b.stop() == 0, b.output()[-2000:]  # leaves: sink A gets every partition back
    time.sleep(4)
    assert a.alive(), a.output()[-3000:]
    pg.start()
    producer.join(60)
    got = wait_for(lambda: _counts(s), until=lambda c: c[0] >= total, timeout=60)
    assert got == (total, total), (got, a.output()[-3000:], b.output()[-2000:])
    assert "resuming" in a.output(), a.output()[-3000:]
    assert a.stop() == 0


def _wrap_first_consumer(monkeypatch, wrap):  # type: ignore[no-untyped-def]
    """Make the sink's first consumer ``wrap(real consumer)``; its replacements are real.
    Returns a list that holds the wrapped one once it is made."""
    from ioc.storage import sink as sink_mod

    made: list = []  # type: ignore[type-arg]
    real_new = sink_mod._TableSinkRunner._new_consumer

    def new_consumer(self):  # type: ignore[no-untyped-def]
        c = real_new(self)
        if made:
            return c
        made.append(wrap(c))
        return made[0]

    monkeypatch.setattr(sink_mod._TableSinkRunner, "_new_consumer", new_consumer)
    return made


class _CommitHangs:
    """A consumer whose ``hang_at``-th offset commit never returns, as librdkafka's
    synchronous commit did once after a broker stop (docs/reliability.md): the real
    consumer is closed first, so it has left the group, like the stuck one had."""

    def __init__(self, real, hang_at: int, release: threading.Event) -> None:  # type: ignore[no-untyped-def]
        self._real, self._hang_at, self._release = real, hang_at, release
        self.commits = 0

    def commit(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        self.commits += 1
        if self.commits < self._hang_at:
            return self._real.commit(*args, **kwargs)
        self._real.close()
        self._release.wait(120)
        raise RuntimeError("released at the end of the test")

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return getattr(self._real, name)


def test_sink_replaces_a_consumer_whose_commit_never_returns(fresh_namespace, monkeypatch):
    """The sink-events group stayed empty after a broker stop: the events consumer's
    synchronous commit never returned, so it never polled again. A commit is now
    bounded; the consumer is replaced and every event is stored exactly once."""
    import asyncio

    from ioc.events._storage import EVENTS_SINK
    from ioc.storage import sink as sink_mod

    s = fresh_namespace("hang")
    n = 6000
    _produce(s, range(n))
    release = threading.Event()
    made = _wrap_first_consumer(monkeypatch, lambda c: _CommitHangs(c, 2, release))
    options = sink_mod.SinkOptions(batch_rows=1000, linger_s=0.1, commit_timeout_s=3.0,
                                   stall_s=30.0)

    async def main() -> list:  # type: ignore[type-arg]
        stop = asyncio.Event()
        task = asyncio.create_task(sink_mod.run_sinks(s, [EVENTS_SINK], options, stop))
        while _counts(s)[0] < n or _committed(s, f"{s.namespace}-sink-events") < n:
            assert not task.done(), task.exception()
            await asyncio.sleep(0.5)
        stop.set()
        return await task

    try:
        metrics = asyncio.run(asyncio.wait_for(main(), 80))
    finally:
        release.set()
    assert made[0].commits >= 2, "the hanging commit was never reached"
    assert metrics[0].consumer_restarts == 1, metrics[0].line()
    assert _counts(s) == (n, n)


def test_a_commit_that_hangs_while_the_next_batch_is_consumed_replaces_the_consumer(
        fresh_namespace, monkeypatch):
    """The write-ahead batch's commit hangs while the loop consumes the next one (no
    backlog: the batch does not fill). Seen in a broker-stop fault run: the consume
    waited behind the commit for the consumer's lock until the watchdog ended the sink
    (120 s). The consume now gives way; the consumer is replaced, nothing is lost."""
    import asyncio

    from ioc.events._storage import EVENTS_SINK
    from ioc.storage import sink as sink_mod

    s = fresh_namespace("hang2")
    n = 2000
    _produce(s, range(n))
    release = threading.Event()
    made = _wrap_first_consumer(monkeypatch, lambda c: _CommitHangs(c, 2, release))
    options = sink_mod.SinkOptions(batch_rows=50_000, drain_batch_rows=50_000, linger_s=0.1,
                                   commit_timeout_s=3.0, stall_s=15.0)

    async def main() -> list:  # type: ignore[type-arg]
        stop = asyncio.Event()
        task = asyncio.create_task(sink_mod.run_sinks(s, [EVENTS_SINK], options, stop))
        while _counts(s)[0] < n or made[0].commits < 1:
            assert not task.done(), task.exception()
            await asyncio.sleep(0.2)
        await asyncio.to_thread(_produce, s, range(n, 2 * n))  # its commit hangs
        while _counts(s)[0] < 2 * n or _committed(s, f"{s.namespace}-sink-events") < 2 * n:
            assert not task.done(), task.exception()
            await asyncio.sleep(0.5)
        stop.set()
        return await task

    try:
        metrics = asyncio.run(asyncio.wait_for(main(), 80))
    finally:
        release.set()
    assert made[0].commits >= 2, "the hanging commit was never reached"
    assert metrics[0].consumer_restarts == 1, metrics[0].line()
    assert _counts(s) == (2 * n, 2 * n)


def test_run_sinks_raises_when_a_sink_stops_making_progress(fresh_namespace, monkeypatch):
    """A call that never returns (here: consume) is found by the watchdog thread:
    ``run_sinks`` raises ``SinkStalled`` (``ioc sink`` exits with code 70 instead)."""
    import asyncio

    from ioc.events._storage import EVENTS_SINK
    from ioc.storage import sink as sink_mod

    s = fresh_namespace("stall")
    release = threading.Event()

    async def consume(self, consumer, most, wait_s):  # type: ignore[no-untyped-def]
        return await self._thread("consume", lambda: release.wait(60) and [])

    monkeypatch.setattr(sink_mod._TableSinkRunner, "_consume", consume)
    reasons: list[str] = []
    options = sink_mod.SinkOptions(stall_s=2.0)
    try:
        with pytest.raises(sink_mod.SinkStalled, match="has not returned"):
            asyncio.run(asyncio.wait_for(
                sink_mod.run_sinks(s, [EVENTS_SINK], options, on_stall=reasons.append), 40))
    finally:
        release.set()
    assert len(reasons) == 1, reasons
    assert "consume has not returned" in reasons[0], reasons
    assert f"{s.namespace}-sink-events" in reasons[0], reasons


class _NeverMember:
    """A consumer that polls but reports no member id, like the sink-events consumer
    that stayed outside its group after a broker stop while polling."""

    def __init__(self, real) -> None:  # type: ignore[no-untyped-def]
        self._real = real

    def memberid(self) -> str:
        return ""

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return getattr(self._real, name)


def _outside_group_setup(fresh_namespace, monkeypatch, tag: str, wrapper: type):  # type: ignore[no-untyped-def]
    """A namespace with 3,000 events on <ns>.events, the sink's first consumer wrapped in
    ``wrapper``, and sink options with 3-s membership bounds: (settings, n, options)."""
    from ioc.storage import sink as sink_mod

    s = fresh_namespace(tag)
    n = 3000
    _produce(s, range(n))
    _wrap_first_consumer(monkeypatch, wrapper)
    options = sink_mod.SinkOptions(batch_rows=500, linger_s=0.1, rejoin_s=3.0,
                                    first_join_s=3.0)
    return s, n, options


def test_sink_replaces_a_consumer_that_stays_outside_its_group(fresh_namespace, monkeypatch):
    import asyncio

    from ioc.events._storage import EVENTS_SINK
    from ioc.storage import sink as sink_mod

    s, n, options = _outside_group_setup(fresh_namespace, monkeypatch, "out", _NeverMember)

    async def main() -> list:  # type: ignore[type-arg]
        stop = asyncio.Event()
        task = asyncio.create_task(sink_mod.run_sinks(s, [EVENTS_SINK], options, stop))
        t0 = time.monotonic()
        while time.monotonic() - t0 < 8 or _counts(s)[0] < n:
            assert not task.done(), task.exception()
            await asyncio.sleep(0.5)
        stop.set()
        return await task

    metrics = asyncio.run(asyncio.wait_for(main(), 80))
    assert metrics[0].consumer_restarts == 1, metrics[0].line()
    assert _counts(s) == (n, n)


class _MemberIdHangs(_NeverMember):
    """A consumer whose ``memberid()`` does not return (until ``release`` is set), as
    librdkafka's did after a broker stop while a synchronous commit had no reply."""

    release = threading.Event()

    def memberid(self) -> str:
        self.release.wait(60)
        return ""


@pytest.mark.timeout(120)
def test_a_memberid_that_hangs_neither_blocks_the_sink_nor_keeps_its_consumer(
        fresh_namespace, monkeypatch):
    """The read runs off the event loop, bounded: the sink stores on (all ``n`` rows),
    counts the consumer as outside its group and replaces it, abandoned (its read
    still runs), once the membership bound is over."""
    import asyncio

    from ioc.events._storage import EVENTS_SINK
    from ioc.storage import sink as sink_mod

    s, n, options = _outside_group_setup(fresh_namespace, monkeypatch, "mid", _MemberIdHangs)
    abandoned = sink_mod.abandoned_consumers()

    async def main() -> list:  # type: ignore[type-arg]
        stop = asyncio.Event()
        task = asyncio.create_task(sink_mod.run_sinks(s, [EVENTS_SINK], options, stop))
        t0 = time.monotonic()
        ticks = 0
        while time.monotonic() - t0 < 10 or _counts(s)[0] < n:
            assert not task.done(), task.exception()
            await asyncio.sleep(0.5)
            ticks += 1
        stop.set()
        assert ticks >= 18  # the loop was never held (20 ticks in 10 s)
        return await task

    try:
        metrics = asyncio.run(asyncio.wait_for(main(), 90))
        assert sink_mod.abandoned_consumers() == abandoned + 1, metrics[0].line()  # read hangs
    finally:
        _MemberIdHangs.release.set()
    assert metrics[0].consumer_restarts == 1, metrics[0].line()
    t0 = time.monotonic()  # once the read returned, the abandoned consumer is closed
    while sink_mod.abandoned_consumers() > abandoned and time.monotonic() - t0 < 10:
        time.sleep(0.1)
    assert sink_mod.abandoned_consumers() == abandoned
    assert _counts(s) == (n, n)


@pytest.mark.timeout(150)
def test_a_fenced_static_sink_consumer_is_replaced_at_once(fresh_namespace):
    """With ``kafka.group_instance_id`` set, a consumer that joins the sink's group with
    the same id fences the sink's consumer (a fatal error, as after librdkafka's own
    rejoin with a commit under way: librdkafka issue 3437). The sink replaces it at
    once, not after the membership bound, takes its partitions back and stores every
    event once, those produced after the fencing included."""
    import asyncio

    from ioc.events._storage import EVENTS_SINK
    from ioc.storage import sink as sink_mod
    from tests.integration.test_stage_rebalance import static_impostor

    base = fresh_namespace("fnc")
    s = base.model_copy(update={"kafka": base.kafka.model_copy(
        update={"group_instance_id": "fence-sink"})})
    n = 2000
    _produce(s, range(n))
    # the membership bound far off: only the fatal error can explain a replacement
    options = sink_mod.SinkOptions(batch_rows=500, linger_s=0.1, rejoin_s=120.0)

    async def main() -> list:  # type: ignore[type-arg]
        stop = asyncio.Event()
        task = asyncio.create_task(sink_mod.run_sinks(s, [EVENTS_SINK], options, stop))
        t0 = time.monotonic()
        while _counts(s)[0] < n:
            assert not task.done(), task.exception()
            assert time.monotonic() - t0 < 60, _counts(s)
            await asyncio.sleep(0.3)
        await asyncio.to_thread(static_impostor, s, f"{s.namespace}-sink-events",
                                topic_name(s.namespace, "events"), "fence-sink",
                                strategy=None)
        await asyncio.to_thread(_produce, s, range(n, 2 * n))
        t0 = time.monotonic()
        while _counts(s)[0] < 2 * n:
            assert not task.done(), task.exception()
            assert time.monotonic() - t0 < 60, _counts(s)
            await asyncio.sleep(0.3)
        stop.set()
        return await task

    metrics = asyncio.run(asyncio.wait_for(main(), 140))
    assert metrics[0].consumer_restarts == 1, metrics[0].line()
    assert _counts(s) == (2 * n, 2 * n)


def _produce_rollups(s: Settings, n: int) -> None:
    """``n`` rollup messages on <ns>.rollups, each its own window (n rows)."""
    import orjson
    from kafka import KafkaProducer

    p = KafkaProducer(acks="all", linger_ms=5, **kafka_python_kwargs(s.kafka))
    t0 = int(time.time()) // 60 * 60 - 86_400
    for i in range(n):
        d = {"entity": f"m{i % 11}", "metric": "db", "size": 60, "start": t0 + 60 * i,
             "count": 1, "sum": 1.0, "min": 1.0, "max": 1.0, "last": 1.0,
             "last_time": t0 + 60 * i + 1, "state": "closed"}
        p.send(topic_name(s.namespace, "rollups"), key=d["entity"].encode(),
               value=orjson.dumps(d))
    p.flush()
    p.close()


@pytest.mark.timeout(150)
def test_other_tables_wait_while_the_events_table_drains_its_backlog(fresh_namespace):
    """After an outage the events go first: with a backlog on both topics, the rollups
    sink writes at most its first two batches (the start, before the events sink has
    said it is behind) until every event is stored, then all its rows; nothing lost or
    doubled."""
    import asyncio
    import dataclasses

    from ioc.aggregate._storage import ROLLUPS_SINK
    from ioc.events._storage import EVENTS_SINK
    from ioc.storage import sink as sink_mod

    s = fresh_namespace("first")
    n_events, n_rollups = 20_000, 5_000
    _produce(s, range(n_events))
    _produce_rollups(s, n_rollups)
    events_then: list[int] = []  # events stored when each rollups batch was committed

    def after_write(conn, settings, rows):  # type: ignore[no-untyped-def]
        events_then.append(int(conn.execute(sql.SQL("select count(*) from {}").format(
            sql.Identifier(settings.db_schema, "events"))).fetchone()[0]))
        conn.rollback()

    rollups = dataclasses.replace(ROLLUPS_SINK, after_write=after_write)
    # A linger far longer than filling a batch from a backlog takes: the events sink
    # stays "behind" until its backlog is gone, even on a loaded machine.
    options = sink_mod.SinkOptions(batch_rows=1000, drain_batch_rows=1000, linger_s=2.0,
                                   stall_s=60.0)

    def rollup_rows() -> int:
        with connect(s.database, autocommit=True) as c:
            row = c.execute(sql.SQL("select count(*) from {}").format(
                sql.Identifier(s.db_schema, "rollups"))).fetchone()
            return int(row[0]) if row else 0

    async def main() -> list:  # type: ignore[type-arg]
        stop = asyncio.Event()
        task = asyncio.create_task(sink_mod.run_sinks(s, [EVENTS_SINK, rollups], options, stop))
        while _counts(s)[0] < n_events or rollup_rows() < n_rollups:
            assert not task.done(), task.exception()
            await asyncio.sleep(0.5)
        stop.set()
        return await task

    events_m, rollups_m = asyncio.run(asyncio.wait_for(main(), 100))
    assert _counts(s) == (n_events, n_events)
    assert rollup_rows() == n_rollups
    early = [c for c in events_then if c < n_events]
    assert len(early) <= 2, (events_then, rollups_m.line())
    assert len(events_then) >= n_rollups // 1000, events_then
    assert rollups_m.held_s > 0 and events_m.held_s == 0, (rollups_m.line(), events_m.line())
