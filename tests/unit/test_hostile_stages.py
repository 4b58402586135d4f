"""The stages, the sink's decode path and the runner's bug handling on hostile records.

The stages' ``process`` functions are taken from the real agents (registered on a
stand-in app that only collects them) and fed ``Record``s with hostile bytes, keys and
headers, mixed with valid ones: nothing raises, every bad record is a dead letter
with its reason and origin exactly once, every valid one is applied. The runner's
record-by-record fallback (``StageRunner._process_careful``) dead-letters a record our
own code fails on as ``internal_error`` without half-applying its state.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ioc.aggregate import Rollup
from ioc.aggregate._window import Agg, EntityWindows
from ioc.config import Settings
from ioc.events import DEAD_LETTER_REASONS, DLQ_HEADERS, Event, encode_event
from ioc.kpi import KpiValue
from ioc.rules import Alert
from ioc.storage.sink import SinkOptions, _Batch, _TableSinkRunner
from ioc.storage.sink_tables import sink_tables
from ioc.tilegen import ViewFact
from streams.aggregate import AGGREGATE
from streams.engine import Outbox, Record, Stage, StageRunner, StateTable, TopicPartition, combine
from streams.kpis import KPIS
from streams.rules import RULES
from streams.tiles import TILES
from streams.validate import VALIDATE
from tests.fixtures.hostile import (
    hostile_bytes,
    hostile_headers,
    hostile_json_bytes,
)

NS = "hx"
FAST = settings(max_examples=100, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])
NOW = 1_750_000_000.0


class _App:
    """Collects the stages the agents register (``host_stage``); runs nothing."""

    def __init__(self) -> None:
        self.conf = SimpleNamespace(id=f"{NS}-app")

    def task(self, fn: Any) -> Any:
        return fn


def _stages() -> dict[str, Stage]:
    s = Settings(namespace=NS)
    # the stages themselves, no app or broker (AgentSpec.of_stages); tiles through a
    # stand-in app (its register hosts more than one stage)
    out = {st.name: st for spec in (VALIDATE, AGGREGATE, KPIS, RULES)
           for st in spec.make_stages(s)}
    app = _App()
    TILES.register(app, s)  # type: ignore[arg-type]
    out.update({stage.name: stage for stage in app._ioc_stages})  # type: ignore[attr-defined]
    for stage in out.values():
        for t in stage.tables:
            t.topic = f"{NS}.state.app.{t.name}"
    return out


def _event(i: int, entity: str = "agency-1") -> Event:
    return Event(id=f"e{i}", source="egov", type="egov.dossier", entity=entity,
                 time=NOW - 1000 + i, values={"count": 1.0}, attributes={"channel": "online"})


records_of = st.tuples(st.one_of(st.none(), hostile_bytes(max_size=40)),
                       st.one_of(st.none(), hostile_bytes(max_size=512), hostile_json_bytes()),
                       st.one_of(st.just([]), hostile_headers()))


def _dead(out: Outbox) -> list[dict[str, bytes]]:
    return [dict(h or ()) for topic, _k, _v, _p, h in out.records if topic == f"{NS}.dlq"]


def _origin_ok(h: dict[str, bytes], topic: str, offsets: set[int], stage: str) -> bool:
    return (set(DLQ_HEADERS) <= set(h) and h["dlq.reason"].decode() in DEAD_LETTER_REASONS
            and h["dlq.topic"] == topic.encode() and int(h["dlq.offset"]) in offsets
            and h["dlq.stage"] == stage.encode())


@FAST
@given(st.lists(records_of, min_size=1, max_size=8))
def test_validate_stage_routes_every_hostile_record(recs):
    stage = _stages()["validate"]
    topic = f"{NS}.events.raw"
    records = [Record(topic, 1, 100 + i, k, v, h) for i, (k, v, h) in enumerate(recs)]
    out = Outbox()
    stage.process(records, out)
    for h in _dead(out):
        assert _origin_ok(h, topic, {r.offset for r in records}, "validate")


@FAST
@given(st.lists(st.one_of(records_of, st.integers(0, 50)), min_size=1, max_size=16))
def test_aggregate_kpis_rules_dead_letter_each_bad_record_once_and_apply_the_valid(items):
    stages = _stages()
    both = combine([stages["aggregate"], stages["kpis"], stages["rules"]])
    topic = f"{NS}.events"
    records, good, seen = [], 0, set()
    for off, item in enumerate(items):
        if isinstance(item, int):
            if item in seen:
                continue
            seen.add(item)
            e = _event(item)
            records.append(Record(topic, 0, off, e.entity.encode(), encode_event(e), []))
            good += 1
        else:
            records.append(Record(topic, 0, off, *item))
    out = Outbox()
    both.process(records, out)
    dead = _dead(out)
    bad = len(records) - good
    late = sum(h["dlq.reason"] == b"late" for h in dead)
    assert len(dead) - late == bad
    assert all(_origin_ok(h, topic, {r.offset for r in records}, "aggregate") for h in dead)
    windows = next(t for t in both.tables if t.name == "agg-windows")
    states = [windows.changed[k].state for k in windows.changed]
    assert sum(s.applied for s in states) + late == good


SERIES = Settings(namespace=NS).streams.aggregate.window_sizes_s[0]  # what tiles decode


def _rollup_bytes(i: int) -> bytes:
    return Rollup(f"s-{i}", "pm25", SERIES, 1_700_000_040, Agg(1, 2.0, 2.0, 2.0, 2.0, 1.7e9),
                  "updated").to_bytes()


@FAST
@given(st.lists(st.tuples(st.sampled_from(["rollups", "kpis", "alerts"]),
                          st.one_of(hostile_json_bytes(), hostile_bytes(), st.none(),
                                    st.just(b"valid"))), min_size=1, max_size=15),
       hostile_headers())
def test_tiles_dead_letter_undecodable_records_and_keep_only_decodable_state(items, headers):
    stage = _stages()["tiles"]
    kpi = KpiValue("dossiers_online", "agency-1", "month", "2026-12", 3.0, 4.0, 75.0)
    alert = Alert("a1", "pm25-high", "s-1", "pm25", "warning", "raised", 1_700_000_000,
                  1.7e9, None, 55.0, "pm25 above 50", "air")
    valid = {"rollups": lambda i: _rollup_bytes(i), "kpis": lambda i: kpi.to_bytes(),
             "alerts": lambda i: alert.to_bytes()}
    records = []
    for off, (suffix, value) in enumerate(items):
        v = valid[suffix](off) if value == b"valid" else value
        key = (f"s-{off}|pm25|{SERIES}|1700000040".encode() if suffix == "rollups"
               else b"k%d" % off)
        records.append(Record(f"{NS}.{suffix}", 0, off, key, v, headers))
    out = Outbox()
    stage.process(records, out)
    dead = _dead(out)
    for h in dead:
        assert h["dlq.reason"] == b"undecodable" and h["dlq.stage"] == b"tiles"
    undecodable = 0
    for r in records:
        decode = {"rollups": Rollup.from_bytes, "kpis": KpiValue.from_bytes,
                  "alerts": Alert.from_bytes}[r.topic.rsplit(".", 1)[1]]
        try:
            decode(r.value)
        except Exception:
            undecodable += 1
    assert len(dead) == undecodable
    # what decodes is forwarded to the views stage, whose state decodes after a restore
    views = _stages()["views"]
    facts = _views_records(out)
    shown = {ViewFact(item, b"", 0, 0).record_key() for r in records
             if r.topic != f"{NS}.rollups" and (item := _decoded(r)) is not None
             and (not isinstance(item, KpiValue) or _TILE_PERIOD.get(item.kpi) == item.period)}
    assert sorted(f.key for f in facts) == sorted(shown)  # one fact per key and batch
    vout = Outbox()
    views.process(facts, vout)
    assert _dead(vout) == []
    for t in views.tables:
        t.write_changes(Outbox())
        t.cache.clear()
    assert views.on_assigned is not None
    views.on_assigned({_VIEWS_TP})


_VIEWS_TP = TopicPartition(f"{NS}.views", 0)
_TILE_PERIOD = {k.id: k.tile_period for k in Settings(namespace=NS).streams.kpis}


def _decoded(r: Record) -> KpiValue | Alert | None:
    decode = KpiValue.from_bytes if r.topic == f"{NS}.kpis" else Alert.from_bytes
    try:
        return decode(r.value)
    except Exception:
        return None


def _views_records(out: Outbox) -> list[Record]:
    """The tiles stage's forwarded view facts, as the views stage would read them."""
    return [Record(t, 0, off, k, v, []) for off, (t, k, v, _p, _h)
            in enumerate(r for r in out.records if r[0] == f"{NS}.views")]


# --- the sink's decode path -----------------------------------------------------------


class _Msg:
    def __init__(self, topic: str, offset: int, key: bytes | None, value: bytes | None,
                 headers: list[tuple[str, bytes | None]]) -> None:
        self._t, self._o, self._k, self._v, self._h = topic, offset, key, value, headers

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return self._t

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._o

    def key(self) -> bytes | None:
        return self._k

    def value(self) -> bytes | None:
        return self._v

    def headers(self) -> list[tuple[str, bytes | None]]:
        return self._h


@pytest.mark.parametrize("spec", sink_tables(), ids=lambda s: s.name)
@settings(FAST, max_examples=40)
@given(recs=st.lists(records_of, min_size=1, max_size=8))
def test_sink_reads_every_record_into_rows_or_a_dead_letter(spec, recs):
    runner = _TableSinkRunner(Settings(namespace=NS), spec, SinkOptions(), asyncio.Event())
    batch = _Batch()
    msgs = [_Msg(runner.topic, i, k, v, h) for i, (k, v, h) in enumerate(recs)]
    runner._add(batch, msgs)  # type: ignore[arg-type]
    assert len(batch.messages) == len(msgs) and batch.offsets[(runner.topic, 0)] == len(msgs)
    assert all(len(r) == len(spec.columns) for r in batch.rows)
    assert all(reason == "sink_unreadable" for _m, reason, _t in batch.dead)
    assert runner.metrics.messages_rejected == len(batch.dead)


def test_sink_rows_of_valid_events_still_come_out():
    spec = next(s for s in sink_tables() if s.name == "events")
    runner = _TableSinkRunner(Settings(namespace=NS), spec, SinkOptions(), asyncio.Event())
    batch = _Batch()
    runner._add(batch, [_Msg(runner.topic, i, None, encode_event(_event(i)), [])  # type: ignore[list-item]
                        for i in range(5)])
    assert len(batch.rows) == 5 and not batch.dead


# --- the runner: a bug in our code is dead-lettered, not half-applied ----------------


class _Counter:
    def __init__(self, entity: str, n: int = 0, seen: tuple[int, ...] = ()) -> None:
        self.entity, self.n, self.seen = entity, n, list(seen)

    def to_bytes(self) -> bytes:
        return orjson.dumps([self.entity, self.n, self.seen])

    @classmethod
    def from_bytes(cls, raw: bytes) -> _Counter:
        e, n, seen = orjson.loads(raw)
        return cls(e, n, tuple(seen))


def _buggy_stage() -> tuple[Stage, StateTable]:
    """Counts records per key; on value b"boom" it raises *after* changing the state
    in place (the half-applied state a rewind and a transaction must undo)."""
    table = StateTable("counts", f"{NS}.in", 4)

    def process(records: list[Any], out: Outbox) -> None:
        for r in records:
            c = table.get(r.key, _Counter.from_bytes, _Counter, r.key.decode())
            c.n += 1
            c.seen.append(r.offset)
            table.change(r.key, c, r.partition)
            if r.value == b"boom":
                raise KeyError("a bug of ours")
            out.add(f"{NS}.out", r.key, b"%d" % c.n)

    return Stage("buggy", [f"{NS}.in"], process, tables=[table]), table


def test_a_failing_batch_rerun_record_by_record_dead_letters_only_the_bug():
    stage, table = _buggy_stage()
    runner = StageRunner(Settings(namespace=NS), f"{NS}-app", stage)
    values = [b"ok", b"ok", b"boom", b"ok", b"boom", b"ok"]
    records = [Record(f"{NS}.in", 1, 10 + i, b"k", v, [("trace", b"t")])
               for i, v in enumerate(values)]
    out = Outbox()
    with pytest.raises(KeyError):
        stage.process(records, out)  # what the runner sees first: the batch fails
    # the rewind: outputs dropped, states back to the last commit (nothing yet)
    out.records.clear()
    table.drop(range(4))
    runner._process_careful(records, out)
    state = table.changed[b"k"]
    assert (state.n, state.seen) == (4, [10, 11, 13, 15]), "boom left nothing behind"
    outputs = [(t, v) for t, _k, v, _p, _h in out.records if t == f"{NS}.out"]
    assert outputs == [(f"{NS}.out", b"1"), (f"{NS}.out", b"2"), (f"{NS}.out", b"3"),
                       (f"{NS}.out", b"4")]
    dead = [(v, dict(h)) for t, _k, v, _p, h in out.records if t == f"{NS}.dlq"]
    assert [v for v, _h in dead] == [b"boom", b"boom"]
    for _v, h in dead:
        assert h["dlq.reason"] == b"internal_error" and h["dlq.stage"] == b"buggy"
        assert h["dlq.message"].startswith(b"KeyError: 'a bug of ours' (at ")
        assert (h["dlq.topic"], h["dlq.partition"]) == (f"{NS}.in".encode(), b"1")
        assert h["trace"] == b"t"
    assert [int(h["dlq.offset"]) for _v, h in dead] == [12, 14]
    assert stage.metrics.internal_errors == 2
    assert runner.careful()  # stays record by record for careful_s after a failure


def test_a_bug_in_the_real_aggregate_stage_is_isolated_without_double_counting(monkeypatch):
    stage = combine([(s := _stages())["aggregate"], s["kpis"], s["rules"]])
    runner = StageRunner(Settings(namespace=NS), f"{NS}-app", stage)
    topic = f"{NS}.events"
    events = [_event(i, entity=f"agency-{i % 3}") for i in range(30)]
    records = [Record(topic, 0, i, e.entity.encode(), encode_event(e), [])
               for i, e in enumerate(events)]
    real_add = EntityWindows.add

    def add(self: EntityWindows, t: float, *args: Any) -> Any:
        hit = real_add(self, t, *args)  # applied, then the bug: half-applied state
        if round(t) % 7 == 0:
            raise ZeroDivisionError("a bug of ours")
        return hit

    monkeypatch.setattr(EntityWindows, "add", add)
    out = Outbox()
    with pytest.raises(ZeroDivisionError):
        stage.process(records, out)
    out.records.clear()
    for t in stage.tables:
        t.drop(range(4))
    runner._process_careful(records, out)
    bad = {r.offset for r, e in zip(records, events, strict=True) if round(e.time) % 7 == 0}
    dead = [dict(h) for t, _k, _v, _p, h in out.records if t == f"{NS}.dlq"]
    assert {int(h["dlq.offset"]) for h in dead} == bad and len(dead) == len(bad)
    assert all(h["dlq.reason"] == b"internal_error" for h in dead)
    windows = next(t for t in stage.tables if t.name == "agg-windows")
    applied = sum(windows.changed[k].state.applied for k in windows.changed)
    assert applied == len(events) - len(bad)
    counts = next(t for t in stage.tables if t.name == "kpi-counts")
    total = sum(sum(den for _num, den in c.counts.values()) for c in (t.state for t in counts.changed.values()))
    kpis_per_event = total / (len(events) - len(bad))
    assert kpis_per_event == int(kpis_per_event), "a KPI counted a failed record"


# --- tile building on records that decode but hold odd values -----------------------

_odd_floats = st.one_of(st.floats(allow_nan=False, allow_infinity=False),
                        st.sampled_from([0.0, -0.0, 1e308, -1e308, 5e-324]))
_odd_text = st.one_of(st.text(max_size=30), st.sampled_from(["", "|", ":", "x" * 2000]))


@FAST
@given(st.lists(st.one_of(
    st.builds(lambda e, m, sz, stt, c, sm, last: Rollup(e, m, sz, stt, Agg(c, sm, sm, sm, last,
                                                                            1.7e9), "updated"),
              _odd_text, _odd_text, st.sampled_from([SERIES]), st.integers(-(2**63), 2**63 - 1),
              st.integers(0, 2**63 - 1), _odd_floats, _odd_floats),
    st.builds(KpiValue, st.sampled_from(["egov.share_online", "dossiers_online", "x"]),
              _odd_text, st.sampled_from(["day", "month", "year", "week", ""]), _odd_text,
              _odd_floats, _odd_floats, st.one_of(st.none(), _odd_floats), _odd_text),
    st.builds(Alert, _odd_text, _odd_text, _odd_text, st.one_of(st.none(), _odd_text),
              _odd_text, st.sampled_from(["raised", "cleared"]),
              st.integers(-(2**63), 2**63 - 1), _odd_floats, st.one_of(st.none(), _odd_floats),
              st.one_of(st.none(), _odd_floats), _odd_text, _odd_text)), min_size=1,
    max_size=12))
def test_tiles_build_and_encode_tiles_from_any_decodable_values(values):
    """Records that decode (typed) but carry odd values: the boards and tile builders
    neither raise nor make a tile that cannot be encoded and decoded back."""
    from ioc.tiles import decode_tile

    stage = _stages()["tiles"]
    topic = {Rollup: "rollups", KpiValue: "kpis", Alert: "alerts"}
    records = []
    for off, v in enumerate(values):
        key = v.key.encode() if isinstance(v, (Rollup, KpiValue)) else v.id.encode()
        records.append(Record(f"{NS}.{topic[type(v)]}", 0, off, key, v.to_bytes(), []))
    out = Outbox()
    stage.process(records, out)
    assert stage.tick is not None
    stage.tick(NOW, out)
    views = _stages()["views"]  # the alert and KPI tiles are built from forwarded facts
    views.on_assigned({_VIEWS_TP})
    views.process(_views_records(out), out)
    assert views.tick is not None
    views.tick(NOW, out)
    for t, _k, v, _p, _h in out.records:
        if t == f"{NS}.wall.tiles":
            assert decode_tile(v).id
        elif t == f"{NS}.dlq":  # only what does not decode back (e.g. NaN written as null)
            assert dict(_h or ())["dlq.reason"] == b"undecodable"


@FAST
@given(st.lists(st.builds(
    Event, id=_odd_text, source=_odd_text,
    type=st.sampled_from(["egov.dossier", "egov.result", "egov.document", "air.quality",
                          "traffic.flow", "x.y"]),
    entity=_odd_text.filter(bool),
    time=st.floats(946_684_800.0, 32_503_680_000.0),
    values=st.dictionaries(st.sampled_from(["pm25", "no2", "speed", "count", "occupancy", ""]),
                           _odd_floats, max_size=4),
    attributes=st.dictionaries(st.sampled_from(["channel", "return_channel", "signed", "x"]),
                               st.one_of(_odd_text, st.booleans(),
                                         st.integers(-(2**63), 2**63 - 1), _odd_floats),
                               max_size=3)), min_size=1, max_size=20))
def test_aggregate_kpis_rules_handle_any_decodable_event(events):
    """Canonical events that decode but hold odd values (any finite float, any text,
    any time the decoder lets through): the stages apply them without raising."""
    stages = _stages()
    both = combine([stages["aggregate"], stages["kpis"], stages["rules"]])
    topic = f"{NS}.events"
    records = [Record(topic, off % 4, off, e.entity.encode(), encode_event(e), [])
               for off, e in enumerate(events)]
    out = Outbox()
    both.process(records, out)
    assert stages["rules"].tick is not None
    stages["rules"].tick(NOW + 10**6, out)  # absence rules over whatever was applied
    for t, _k, _v, _p, h in out.records:
        if t == f"{NS}.dlq":
            assert dict(h or ())["dlq.reason"] == b"late"


# --- state changelog records ----------------------------------------------------------

_WINDOWS = EntityWindows("s-1", NOW, {("pm25", 10, 1_700_000_000): Agg(1, 1.0, 1.0, 1.0, 1.0,
                                                                      NOW)}, 0, 1)


@FAST
@given(st.sampled_from(["windows", "counts", "rules"]), st.data())
def test_state_loaders_raise_only_invalid_record(which, data):
    from ioc.errors import InvalidRecord
    from ioc.kpi._ratio import KpiCounts
    from ioc.rules._engine import EntityRules
    from streams.engine.applied import Applied, Tracked
    from tests.fixtures.hostile import hostile_json_bytes_for

    w = Tracked(_WINDOWS, Applied(0, 5, {0: (5, 0)}))
    k = Tracked(KpiCounts("g", {("k", "day", "2026-12-01"): [1.0, 2.0]}), Applied(0, 9, {0: (9, 1)}))
    valid = {"windows": (Tracked.decoder(EntityWindows.from_dict, "windows"), w.to_bytes()),
             "counts": (Tracked.decoder(KpiCounts.from_dict, "counts"), k.to_bytes()),
             "rules": (EntityRules.from_bytes, EntityRules("e", {}).to_bytes())}[which]
    load, good = valid
    assert load(good).to_bytes() == good
    raw = data.draw(st.one_of(hostile_json_bytes_for(orjson.loads(good)), hostile_bytes()))
    try:
        load(raw)
    except InvalidRecord as exc:
        assert exc.reason == "undecodable"


def test_a_state_that_does_not_decode_starts_anew_and_is_counted():
    t = StateTable("agg-windows", f"{NS}.events", 4)
    t.data[b"s-1"] = b'{"e": "s-1", "w": 17}'
    t.where[b"s-1"] = 0
    st_ = t.get(b"s-1", EntityWindows.from_bytes, EntityWindows, "s-1")
    assert isinstance(st_, EntityWindows) and st_.entity == "s-1" and not st_.windows
    assert t.undecodable == 1


def test_stage_agents_build_fresh_stages_without_an_app():
    """``make_stages`` is the Sans-I/O entry: each call new stages with their own state."""
    from streams.probe import PROBE

    s = Settings(namespace=NS)
    a, b = AGGREGATE.make_stages(s)[0], AGGREGATE.make_stages(s)[0]
    assert a is not b and a.tables[0] is not b.tables[0]
    recs = [Record(f"{NS}.events", 0, i, e.entity.encode(), encode_event(e), [])
            for i, e in enumerate(_event(i) for i in range(3))]
    out = Outbox()
    a.process(recs, out)
    assert a.tables[0].changed and not b.tables[0].changed
    with pytest.raises(TypeError):
        PROBE.make_stages(s)
