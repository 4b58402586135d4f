"""The combined aggregate+kpis+rules stage: what it computes does not depend on how its
input is batched, and a redelivered record changes nothing.

(These checks were the stage half of the Faust-path experiment's equivalence test, ADR
0002; the experiment is gone, the stage's own contract stays.)
"""

from __future__ import annotations

import random
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from ioc.config import load_settings
from ioc.events import Event, encode_event
from streams.engine import Outbox, Record, Stage, combine, key_partition

PARTS = 4


def _stage() -> Stage:
    from streams.aggregate import AGGREGATE
    from streams.kpis import KPIS
    from streams.rules import RULES

    s = load_settings()
    stage = combine([st for spec in (AGGREGATE, KPIS, RULES) for st in spec.make_stages(s)])
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
            e = Event(id=f"e{i}", source="t", type="traffic.flow", entity=f"road-{i % 5}",
                      time=t, values={"speed": float(rnd.choice([80, 50, 20, 70])),
                                      "intensity": 3.0}, attributes={})
        elif kind == 2:
            e = Event(id=f"e{i}", source="t", type="egov.dossier", entity=f"agency-{i % 3}",
                      time=t, values={"count": 1.0},
                      attributes={"channel": rnd.choice(["online", "counter"])})
        else:
            late = rnd.random() < 0.05
            e = Event(id=f"e{i}", source="t", type="air.quality", entity=f"air-{i % 7}",
                      time=t - (500 if late else 0), values={"no2": 10.0 + i % 13},
                      attributes={})
        out.append(e)
    return out


def _records(events: list[Event]) -> list[Record]:
    offsets = [0] * PARTS
    out = []
    for j, e in enumerate(events):
        key = e.entity.encode()
        p = key_partition(key, PARTS)
        out.append(Record("ns.events", p, offsets[p], key, encode_event(e),
                          [("ioc.raw", b"0:%d:%d" % (j // 100, j % 100))]))
        offsets[p] += 1
    return out


def _run(stage: Stage, records: list[Record], chunk: int) -> list[Any]:
    out = Outbox()
    got: list[Any] = []
    for i in range(0, len(records), chunk):
        stage.process(records[i:i + chunk], out)
        got += out.records
        out.records.clear()
    return [r for r in got if not r[0].startswith("test.state.")]


def _summary(stage: Stage, records: list[Any]) -> dict[str, Any]:
    closed = sorted(v for t, _k, v, *_ in records
                    if t.endswith(".rollups") and b'"state":"closed"' in v)
    kpis = {k: v for t, k, v, *_ in records if t.endswith(".kpis")}
    alerts = sorted((k, orjson.loads(v)["state"]) for t, k, v, *_ in records
                    if t.endswith(".alerts"))
    late = sorted(v for t, _k, v, _p, h in records
                  if t.endswith(".dlq") and ("dlq.reason", b"late") in (h or ()))
    out = Outbox()
    for t in stage.tables:
        t.write_changes(out)
    states = {}
    for t in stage.tables:
        if t.name == "agg-windows":
            for k, v in t.data.items():
                d = orjson.loads(v)
                d.pop("p", None), d.pop("o", None)  # the offset mark of the last record
                states[k] = d
    return {"closed": closed, "kpis": kpis, "alerts": alerts, "late": late, "states": states}


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), chunk=st.sampled_from([1, 7, 100, 333]))
def test_outputs_and_states_do_not_depend_on_the_batching(seed: int, chunk: int) -> None:
    records = _records(_events(800, seed))
    whole = _stage()
    a = _summary(whole, _run(whole, records, len(records)))
    parts = _stage()
    b = _summary(parts, _run(parts, records, chunk))
    assert a["closed"] and a["kpis"] and a["alerts"] and a["late"] and a["states"]
    assert b == a


def test_a_redelivered_record_changes_nothing() -> None:
    records = _records(_events(400, 1))
    stage = _stage()
    first = _summary(stage, _run(stage, records, 50))
    again = _run(stage, records, 50)  # a rewind after a failed checkpoint re-reads them
    assert not [r for r in again if r[0].endswith((".kpis", ".alerts", ".dlq"))]
    second = _summary(stage, [])
    assert second["states"] == first["states"]
