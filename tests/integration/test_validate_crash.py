"""A validate worker killed with kill -9 mid-stream: windows still count every event once.

The validate stage is at-least-once: it commits raw offsets only after its outputs are
acknowledged, so a validate worker killed between a flush and the next commit re-emits
the events of the uncommitted raw records under new offsets of ``<ns>.events``. Each
canonical event carries its raw origin (header ``ioc.raw``) and the aggregate state
skips origins it already applied. Here a real validate worker is killed while a stream
of ~30,000 events (in many JSON-array raw records, from several sources) flows through
it, a new one takes over, and a separate aggregate worker must close exactly the windows
the pure core computes from each distinct event once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from kafka import KafkaConsumer, TopicPartition

from ioc.config import Settings
from ioc.events import Event, decode_event, raw_origin
from ioc.kafka import kafka_python_kwargs
from ioc.kafka.clients import admin_client
from ioc.publish import Publisher
from ioc.topics import topic_name
from tests.integration.pipeline_fixtures import ClosedWindows, read_topic, wait_for
from tests.integration.test_pipeline_aggregate import LATENESS, T0, expected

pytestmark = pytest.mark.kafka

N_ENTITIES = 48
PER_ENTITY = 640  # 30,720 events, then one end marker per entity
N_SOURCES = 8  # raw records are keyed by source: several raw partitions
ROWS_PER_CHUNK = 2  # 96 events per send_many: 8 raw records of 12 events
RATE = 4000.0  # events/s offered while a validate worker runs
KILL_AT = (0.25, 0.5, 0.7)  # fractions of the stream validated when a kill is tried
ENV = {"IOC_STREAMS__AGGREGATE__WINDOW_SIZES_S": "[10, 60, 3600]",
       "IOC_STREAMS__AGGREGATE__ALLOWED_LATENESS_S": str(LATENESS),
       "IOC_STREAMS__SESSION_TIMEOUT_S": "6"}  # a killed worker's partitions move in 6 s


def make_rows() -> list[list[Event]]:
    """Row i: event i of every entity (entity k from source k % N_SOURCES); every 200th
    row is 120 s late (beyond the allowed lateness). The last row: an end marker per
    entity two hours on, which closes every earlier window."""
    rows = []
    for i in range(PER_ENTITY):
        row = []
        for k in range(N_ENTITIES):
            t = T0 + 2 * i + k * 0.01
            if i % 200 == 199:
                t -= 120
            row.append(Event(id=f"v{k}-{i}", source=f"feed-{k % N_SOURCES}", type="air.quality",
                             entity=f"air-{k:02d}", time=t,
                             values={"pm25": float((i * 7 + k) % 97), "no2": float(i % 13)}))
        rows.append(row)
    rows.append([Event(id=f"end{k}", source=f"feed-{k % N_SOURCES}", type="air.quality",
                       entity=f"air-{k:02d}", time=T0 + 2 * PER_ENTITY + 7200,
                       values={"pm25": 0.0}) for k in range(N_ENTITIES)])
    return rows


def chunks(rows: list[list[Event]]) -> Iterator[list[Event]]:
    for i in range(0, len(rows), ROWS_PER_CHUNK):
        yield [e for row in rows[i:i + ROWS_PER_CHUNK] for e in row]


class Feeder(threading.Thread):
    """Publishes chunks through ``Publisher`` at about ``RATE`` events/s while ``go`` is set."""

    def __init__(self, settings: Settings, parts: list[list[Event]]) -> None:
        super().__init__(daemon=True, name="feeder")
        self.settings = settings
        self.parts = parts
        self.go = threading.Event()
        self.go.set()
        self.stop = False
        self.sent = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with Publisher(self.settings) as pub:
                for part in self.parts:
                    while not self.go.wait(0.1) and not self.stop:
                        pass
                    if self.stop:
                        return
                    t0 = time.monotonic()
                    res = pub.send_many(part)
                    assert not res.rejected and len(res.accepted) == len(part), res.rejected[:3]
                    self.sent += len(part)
                    time.sleep(max(0.0, len(part) / RATE - (time.monotonic() - t0)))
        except BaseException as exc:  # reported by the test
            self.error = exc

    def ok(self) -> bool:
        return self.error is None


class Offsets:
    """End offsets of ``<ns>.events``, committed raw offsets of the validate group."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.consumer = KafkaConsumer(enable_auto_commit=False, **kafka_python_kwargs(settings.kafka))
        topic = topic_name(settings.namespace, "events")
        self.tps = [TopicPartition(topic, p)
                    for p in sorted(self.consumer.partitions_for_topic(topic) or ())]
        self.admin = admin_client(settings.kafka)
        app_id = settings.streams.app_id or f"{settings.namespace}-streams"
        self.group = f"{app_id}.validate"
        self.raw = topic_name(settings.namespace, "events.raw")

    def events_end(self) -> int:
        return sum(self.consumer.end_offsets(self.tps).values())

    def committed_raw(self) -> dict[int, int]:
        got = self.admin.list_group_offsets({self.group: None}).get(self.group, {})
        return {tp.partition: o.offset for tp, o in got.items() if tp.topic == self.raw}

    def members(self) -> tuple[str, set[str]]:
        d = self.admin.describe_groups([self.group])[self.group]
        return str(d.get("group_state", d.get("state", "?"))), {
            str(m["member_id"]) for m in d.get("members", ())}

    def close(self) -> None:
        self.consumer.close()
        self.admin.close()


def pending_reemission(settings: Settings, committed: dict[int, int]) -> int:
    """Events already on ``<ns>.events`` whose raw record is not committed: the next
    validate worker re-reads those records and emits these events again."""
    n = 0
    for r in read_topic(settings, "events", timeout=30):
        o = raw_origin(list(r.headers or ()))
        assert o is not None, f"an event without an ioc.raw header: {r.headers!r}"
        if o[1] >= committed.get(o[0], 0):
            n += 1
    return n


@pytest.mark.timeout(240)
def test_validate_kill9_mid_stream_does_not_double_count_windows(fresh_namespace, spawn):
    t_start = time.monotonic()
    s = fresh_namespace("vcrash")
    rows = make_rows()
    events = [e for row in rows for e in row]
    want, want_late = expected(events)
    total = len(events) - N_ENTITIES  # without the end markers
    assert want_late == 3 * N_ENTITIES and len(want) > 10_000
    parts = list(chunks(rows[:-1]))

    agg = spawn(["worker", "--agents", "aggregate"], settings=s, env=ENV, name="aggregate")
    val = spawn(["worker", "--agents", "validate"], settings=s, env=ENV, name="validate1")
    off = Offsets(s)
    feeder = Feeder(s, parts)

    def running() -> bool:
        for name, p in (("aggregate", agg), ("validate", val)):
            assert p.alive(), f"the {name} worker died:\n{p.output()[-3000:]}"
        assert feeder.ok(), f"publishing failed: {feeder.error!r}"
        return True

    try:
        # the first chunk shows the validate worker is consuming; then the stream flows
        with Publisher(s) as pub:
            assert len(pub.send_many(parts[0]).accepted) == len(parts[0])
        feeder.parts = parts[1:]
        wait_for(lambda: off.events_end() >= len(parts[0]), timeout=60, every=0.1,
                 alive=running, what="the validate worker's first events")
        print(f"validate running after {time.monotonic() - t_start:.1f} s")
        feeder.start()

        reemit, kills = 0, []
        for n, frac in enumerate(KILL_AT, 1):
            def reached(goal: float = frac * total) -> int:
                e = off.events_end()
                return e if e >= goal else 0

            end = wait_for(reached, timeout=60, every=0.02, alive=running,
                           what=f"{frac:.0%} of the stream validated")
            _, old = off.members()
            val.kill9()
            feeder.go.clear()  # publish nothing while no validate worker runs
            time.sleep(0.5)  # a commit the broker received before the kill is applied
            committed = off.committed_raw()
            reemit = pending_reemission(s, committed)
            kills.append((end, off.events_end(), reemit))
            print(f"kill {n}: at {end} events validated ({frac:.0%} target; feeder sent "
                  f"{feeder.sent + len(parts[0])}), committed raw {committed}, "
                  f"{reemit} events to be re-emitted")
            t_kill = time.monotonic()
            val = spawn(["worker", "--agents", "validate"], settings=s, env=ENV,
                        name=f"validate{n + 1}")

            def joined(old: set[str] = old) -> bool:
                state, members = off.members()
                return state == "Stable" and bool(members) and not members & old

            wait_for(joined, timeout=60, every=0.2, alive=running,
                     what="the new validate worker in the group")
            print(f"new validate worker assigned {time.monotonic() - t_kill:.1f} s after the kill")
            feeder.go.set()
            if reemit:
                break
        assert reemit, (f"no kill -9 of the validate worker left emitted but uncommitted "
                        f"events (kills at events end, end after kill, pending): {kills}")

        feeder.join(timeout=90)
        assert not feeder.is_alive(), "publishing did not finish in 90 s"
        running()
        with Publisher(s) as pub:  # the end markers close every window
            assert len(pub.send_many(rows[-1]).accepted) == N_ENTITIES

        closed = ClosedWindows(s)
        got, conflicts, collect = closed.got, closed.conflicts, closed.collect

        try:
            wait_for(lambda: collect() >= len(want), timeout=90, every=0.3, alive=running,
                     what=f"all {len(want)} windows closed")
            time.sleep(1.0)
            collect()  # more closed windows than expected would be a bug to see
        finally:
            closed.tail.close()
        print(f"all windows closed {time.monotonic() - t_start:.1f} s after the start")
    finally:
        feeder.stop = True
        feeder.go.set()
        off.close()

    # 1) a re-emission really happened: more records than distinct events on <ns>.events
    records = read_topic(s, "events", timeout=30)
    origins: dict[str, set[tuple[int, int, int] | None]] = {}
    for r in records:
        origins.setdefault(decode_event(r.value).id, set()).add(raw_origin(list(r.headers or ())))
    dup = len(records) - len(origins)
    print(f"<ns>.events: {len(records)} records, {len(origins)} distinct events, "
          f"{dup} re-emitted; kills (events end at kill, after, predicted): {kills}")
    assert set(origins) == {e.id for e in events}, "events lost or unknown events validated"
    assert dup > 0, f"no event was re-emitted ({len(records)} records, kills {kills})"
    assert dup == sum(k[2] for k in kills), "re-emitted events other than the uncommitted ones"
    assert all(len(o) == 1 for o in origins.values()), "a re-emitted event changed its origin"

    # 2) every closed window as the pure core computes it from each event once
    assert conflicts == [], conflicts[:3]
    assert set(got) == set(want), (f"{len(set(want) - set(got))} windows missing, "
                                   f"{len(set(got) - set(want))} unexpected: "
                                   f"{sorted(set(got) ^ set(want))[:5]}")
    bad = [(k, got[k], want[k]) for k in want if got[k][0] != want[k][0] or
           abs(got[k][1] - want[k][1]) > 1e-6 or got[k][2:] != want[k][2:]]
    assert bad == [], f"{len(bad)} windows differ (key, got, expected): {bad[:3]}"

    # late events are dead-lettered once each, re-emitted or not
    late: list[Any] = [decode_event(r.value).id for r in read_topic(s, "dlq", timeout=10)
                       if dict(r.headers).get("dlq.reason") == b"late"]
    assert len(late) == len(set(late)) == want_late, (len(late), len(set(late)), want_late)
    print(f"done in {time.monotonic() - t_start:.1f} s")
