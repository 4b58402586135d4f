"""Unit: the worker's stage metrics (ioc.metrics.stages) follow the stages' own counters.

The validate and aggregate stages are registered on a stand-in for the Faust app (only
``host_stage``'s bookkeeping is needed), fed plain ``Record``s, and their runners count
dead letters from the outbox as a flush does; no Kafka is involved.
"""

from __future__ import annotations

import time
from types import SimpleNamespace

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest

from ioc.config import load_settings
from ioc.events import DEAD_LETTER_REASONS
from ioc.metrics.stages import StagesCollector, stage_groups
from streams.aggregate import AGGREGATE
from streams.engine import Outbox, Record, StageRunner, combine
from streams.validate import VALIDATE
from tests.fixtures.hostile import hostile_bytes
from tests.fixtures.metrics import Scrape

SETTINGS = load_settings(env={}, overrides={"namespace": "mt"})


def _app() -> SimpleNamespace:
    app = SimpleNamespace(conf=SimpleNamespace(id="mt-streams"), task=lambda fn: fn)
    VALIDATE.register(app, SETTINGS)  # type: ignore[arg-type]
    AGGREGATE.register(app, SETTINGS)  # type: ignore[arg-type]
    groups: dict[tuple[str, ...], list] = {}
    for stage in app._ioc_stages:
        groups.setdefault(tuple(sorted(stage.topics)), []).append(stage)
    app._ioc_runners = [StageRunner(SETTINGS, "mt-streams", combine(g)) for g in groups.values()]
    return app


def _scrape(app: SimpleNamespace) -> Scrape:
    reg = CollectorRegistry()
    reg.register(StagesCollector(app))
    return Scrape(generate_latest(reg).decode())


def _event(i: int, **kw: object) -> dict[str, object]:
    return {"id": f"e{i}", "source": "loops", "type": "traffic.flow", "entity": "loop-1",
            "time": time.time() - 30, "values": {"intensity": 1.0}, **kw}


def _runner(app: SimpleNamespace, name: str) -> StageRunner:
    return next(r for r in app._ioc_runners if r.stage.name == name)


def test_validate_counts_records_events_and_dead_letters_by_reason():
    app = _app()
    s0 = _scrape(app)
    assert s0.value("ioc_stage_records_in_total", stage="validate") == 0
    # every declared reason exists at 0 before the first dead letter (rate() needs it)
    assert all(s0.value("ioc_dead_letters_total", stage="validate", reason=r) == 0
               for r in DEAD_LETTER_REASONS)
    raw = orjson.dumps([_event(1), _event(2), _event(3, time="yesterday")])
    rec = Record("mt.events.raw", 0, 0, b"loops", raw, [])
    runner = _runner(app, "validate")
    out = Outbox()
    runner.stage.process([rec], out)
    runner.stage.metrics.records += 1  # what the runner loop counts per batch
    runner.stage.metrics.batches += 1
    runner._count_dead_letters(out.records)  # what a successful flush does
    runner.stage.metrics.outputs += len(out)
    s = _scrape(app)
    assert s.value("ioc_stage_records_in_total", stage="validate") == 1
    assert s.value("ioc_stage_events_in_total", stage="validate") == 3
    assert s.value("ioc_stage_records_out_total", stage="validate") == 3
    assert s.value("ioc_dead_letters_total", stage="validate", reason="bad_time") == 1
    assert s.value("ioc_stage_batches_total", stage="validate") == 1


def test_aggregate_late_events_state_entries_and_consumer_groups():
    app = _app()
    agg = next(st for st in app._ioc_stages if st.name == "aggregate")
    now = time.time()

    def rec(off: int, t: float) -> Record:
        e = _event(off, time=t)
        return Record("mt.events", 0, off, b"loop-1", orjson.dumps(e), [])

    out = Outbox()
    agg.process([rec(0, now), rec(1, now - 10 * 86400)], out)  # the second is far too late
    s = _scrape(app)
    assert s.value("ioc_late_events_total", stage="aggregate") == 1
    assert s.value("ioc_stage_events_in_total", stage="aggregate") == 2
    assert s.value("ioc_state_entries", stage="aggregate", table="agg-windows") == 0  # not written
    agg.tables[0].write_changes(Outbox())
    assert _scrape(app).value("ioc_state_entries", stage="aggregate", table="agg-windows") == 1
    assert "ioc_held_updates_total" in s.names()
    groups = dict(stage_groups(app))
    assert groups["mt-streams.validate"] == ["mt.events.raw"]
    assert any(g.startswith("mt-streams.aggregate") for g in groups)


@settings(max_examples=200, deadline=None)
@given(values=st.lists(hostile_bytes(), min_size=1, max_size=4))
def test_dead_letter_labels_stay_in_the_declared_set_whatever_the_input(values):
    app = _app()
    runner = _runner(app, "validate")
    out = Outbox()
    runner.stage.process([Record("mt.events.raw", 0, i, None, v, [])
                          for i, v in enumerate(values)], out)
    runner._count_dead_letters(out.records)
    s = _scrape(app)
    labels = s.labels("ioc_dead_letters_total")
    assert {d["stage"] for d in labels} <= {st.name for st in app._ioc_stages}
    assert {d["reason"] for d in labels} <= {*DEAD_LETTER_REASONS, "other"}
    assert s.value("ioc_dead_letters_total", 0, stage="validate") == \
        sum(1 for r in out.records if r[0] == "mt.dlq")
