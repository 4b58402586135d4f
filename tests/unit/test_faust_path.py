"""The experiment's Faust path (streams.faust_path): batched records and EventCore.

EventCore must compute what today's combined aggregate+kpis+rules stage computes from
the same events: the same closed rollups, final window states, latest KPI values,
alerts and late dead letters, whatever the batching.
"""

from __future__ import annotations

import contextlib
import random
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ioc.config import load_settings
from ioc.errors import InvalidRecord
from ioc.events import Event, encode_event
from streams.engine import Outbox, Record, Stage, combine, key_partition
from streams.faust_path import EventCore, batch_by_partition, decode_batch, encode_batch
from streams.faust_path._core import AGG

PARTS = 4


class _App:
    """What the agents' register functions use of a Faust app."""

    class conf:
        id = "test-streams"

    def task(self, _fn: Any) -> None:
        pass


def _stage() -> Stage:
    from streams.aggregate import AGGREGATE
    from streams.kpis import KPIS
    from streams.rules import RULES

    app = _App()
    for spec in (AGGREGATE, KPIS, RULES):
        spec.register(app, load_settings())  # type: ignore[arg-type]
    stage = combine(app._ioc_stages)  # type: ignore[attr-defined]
    for t in stage.tables:
        t.topic = f"test.state.{t.name}"
    return stage


def _events(n: int, seed: int) -> list[Event]:
    """Air-quality walks that cross the pm25 rule, traffic with speed drops, e-gov
    dossiers for the KPIs, and now and then an event far behind (late)."""
    rnd = random.Random(seed)
    out = []
    t0 = 1_700_000_000.0
    level: dict[str, float] = {}
    for i in range(n):
        kind = i % 4
        t = t0 + i * 2.0
        if kind == 0:
            ent = f"air-{i % 7}"
            v = level.get(ent, 50.0) + rnd.uniform(-3, 3.2)
            level[ent] = v = min(90.0, max(0.0, v))
            e = Event(id=f"e{i}", source="t", type="air.quality", entity=ent, time=t,
                      values={"pm25": round(v, 2)}, attributes={})
        elif kind == 1:
            ent = f"road-{i % 5}"
            e = Event(id=f"e{i}", source="t", type="traffic.flow", entity=ent, time=t,
                      values={"speed": float(rnd.choice([80, 50, 20, 70])), "intensity": 3.0},
                      attributes={})
        elif kind == 2:
            e = Event(id=f"e{i}", source="t", type="egov.dossier", entity=f"agency-{i % 3}",
                      time=t, values={"count": 1.0},
                      attributes={"channel": rnd.choice(["online", "counter"])})
        else:
            ent = f"air-{i % 7}"
            late = rnd.random() < 0.05
            e = Event(id=f"e{i}", source="t", type="air.quality", entity=ent,
                      time=t - (500 if late else 0), values={"no2": 10.0 + i % 13},
                      attributes={})
        out.append(e)
    return out


def _through_stage(events: list[Event], chunk: int) -> tuple[list[Any], dict[bytes, bytes]]:
    stage = _stage()
    offsets = [0] * PARTS
    out = Outbox()
    records: list[Any] = []
    for i in range(0, len(events), chunk):
        batch = []
        for j, e in enumerate(events[i:i + chunk], start=i):
            key = e.entity.encode()
            p = key_partition(key, PARTS)
            batch.append(Record("ns.events", p, offsets[p], key, encode_event(e),
                                [("ioc.raw", b"0:%d:%d" % (j // 100, j % 100))]))
            offsets[p] += 1
        stage.process(batch, out)
        records += out.records
        out.records.clear()
    for t in stage.tables:
        t.write_changes(out)
    agg = next(t for t in stage.tables if t.name == AGG)
    return [r for r in records if not r[0].startswith("test.state.")], dict(agg.data)


def _through_core(events: list[Event], chunk: int) -> tuple[list[Any], dict[bytes, bytes]]:
    s = load_settings()
    core = EventCore(s)
    tables: dict[str, dict[bytes, bytes]] = {}
    offsets = [0] * PARTS
    out: list[Any] = []
    for i in range(0, len(events), chunk):
        batch = [(e.entity.encode(), b"0:%d:%d" % (j // 100, j % 100), encode_event(e))
                 for j, e in enumerate(events[i:i + chunk], start=i)]
        for p, value in batch_by_partition(batch, PARTS).items():
            o, w = core.process(p, offsets[p], value,
                                lambda t, k: tables.get(t, {}).get(k))
            offsets[p] += 1
            out += [(r.topic, r.key, r.value, r.partition, r.headers) for r in o]
            for t, k, v in w:
                tables.setdefault(t, {})[k] = v
    return out, tables.get(AGG, {})


def _summary(records: list[Any], agg: dict[bytes, bytes]) -> dict[str, Any]:
    closed = sorted(v for t, _k, v, _p, _h in records
                    if t.endswith(".rollups") and b'"state":"closed"' in v)
    kpis: dict[bytes, bytes] = {}
    for t, k, v, _p, _h in records:
        if t.endswith(".kpis"):
            kpis[k] = v
    alerts = sorted((k, orjson.loads(v)["state"]) for t, k, v, _p, _h in records
                    if t.endswith(".alerts"))
    late = sorted(v for t, _k, v, _p, h in records
                  if t.endswith(".dlq") and (("dlq.reason", b"late") in (h or ())))
    states = {}
    for k, v in agg.items():
        d = orjson.loads(v)
        d.pop("p"), d.pop("o")  # the offset mark: per event vs per batched record
        states[k] = d
    return {"closed": closed, "kpis": kpis, "alerts": alerts, "late": late, "states": states}


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), chunk=st.sampled_from([1, 7, 100, 333]))
def test_core_computes_what_the_stages_compute(seed: int, chunk: int) -> None:
    events = _events(800, seed)
    a = _summary(*_through_stage(events, chunk))
    b = _summary(*_through_core(events, chunk))
    assert a["closed"] and a["kpis"] and a["states"]  # the input exercises every part
    assert b == a


def test_core_skips_a_redelivered_record() -> None:
    events = _events(200, 1)
    core = EventCore(load_settings())
    tables: dict[str, dict[bytes, bytes]] = {}
    batch = [(e.entity.encode(), b"0:0:%d" % j, encode_event(e)) for j, e in enumerate(events)]
    records = batch_by_partition(batch, PARTS)

    def load(t: str, k: bytes) -> bytes | None:
        return tables.get(t, {}).get(k)

    for p, v in records.items():
        _o, w = core.process(p, 0, v, load)
        for t, k, val in w:
            tables.setdefault(t, {})[k] = val
    before = {t: dict(d) for t, d in tables.items()}
    core.forget()  # as after a restart: states come from the tables again
    for p, v in records.items():
        out, w = core.process(p, 0, v, load)
        assert not [r for r in out if r.topic.endswith((".kpis", ".alerts"))]
        for t, k, val in w:
            tables.setdefault(t, {})[k] = val
    assert core.metrics.redelivered > 0
    for t in ("agg-windows", "kpi-counts"):
        assert tables[t] == before[t]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.none() | st.binary(min_size=1, max_size=30),
                          st.binary(max_size=200)), max_size=20))
def test_batch_round_trip(pairs: list[tuple[bytes | None, bytes]]) -> None:
    assert decode_batch(encode_batch(pairs)) == pairs


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=100))
def test_batch_decoder_refuses_other_bytes_with_invalid_record(data: bytes) -> None:
    with contextlib.suppress(InvalidRecord):
        decode_batch(data)
    good = encode_batch([(b"0:1:2", b"{}")])
    with pytest.raises(InvalidRecord):
        decode_batch(good[:-1])
    with pytest.raises(InvalidRecord):
        decode_batch(good + b"x")


def test_faust_app_wiring(tmp_path: Any) -> None:
    """The experiment's app: one agent on <ns>.events, three RocksDB tables with standby
    replicas, changelogs named after the app (no broker: nothing is started)."""
    from streams.faust_path._app import create_faust_app

    app = create_faust_app(load_settings().with_namespace("t1"), data_dir=tmp_path)
    assert app.conf.id == "t1-faustpath"
    assert str(app.conf.store).startswith("rocksdb:")
    assert app.conf.table_standby_replicas == 1
    assert sorted(app.tables) == ["agg-windows", "kpi-counts", "rule-states"]
    assert {t.changelog_topic.get_topic_name() for t in app.tables.values()} == {
        f"t1-faustpath-{n}-changelog" for n in ("agg-windows", "kpi-counts", "rule-states")}
    (agent,) = app.agents.values()
    assert agent.channel.get_topic_name() == "t1.events"
