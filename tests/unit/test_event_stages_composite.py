"""``combine`` of the stages that read ``<ns>.events``: each record is decoded once for all
of them, and each stage's outputs, state changes and counters are what it makes alone."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import streams.engine.records as records_module
from ioc.config import Settings, load_settings
from ioc.events import Event, decode_event, encode_event
from streams.aggregate import AGGREGATE
from streams.engine import Outbox, Record, Stage, combine, decode_events, key_partition
from streams.kpis import KPIS
from streams.rules import RULES
from streams.scorecards import scorecard_stage, scorecard_table

ROOT = Path(__file__).resolve().parents[2]
NS = "tcomp"
NOW = 1_700_000_000.0
PARTS = 4


@pytest.fixture
def settings() -> Settings:
    # the example has KPIs, threshold/absence/rate rules and scorecard indicators
    return load_settings(ROOT / "deploy" / "scorecards.example.yaml", env={},
                         overrides={"namespace": NS})


@pytest.fixture(autouse=True)
def frozen_clocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """The aggregate's update throttle and the rules' ``now`` read the clock: frozen, so
    a stage run twice over the same records makes the same outputs."""
    clock = SimpleNamespace(monotonic=lambda: 1000.0, time=lambda: NOW,
                            perf_counter=time.perf_counter)
    monkeypatch.setattr("streams.aggregate.time", clock)
    monkeypatch.setattr("streams.rules.time", clock)


def _stages(s: Settings) -> list[Stage]:
    """aggregate, kpis, rules and scorecards, new (their own state), as the worker builds them."""
    got = [st for spec in (AGGREGATE, KPIS, RULES) for st in spec.make_stages(s)]
    got.append(scorecard_stage(s, scorecard_table(s), clock=lambda: NOW))
    for st in got:
        assert st.process_events is not None, st.name  # Stage.of_events
        for t in st.tables:
            t.topic = f"{NS}.state.{t.name}"
    return got


def _records(n: int) -> list[Record]:
    """Air quality over the pm25 threshold, traffic speed drops, e-gov dossiers and
    results (KPIs, scorecards), an event far behind its entity (late), and records that
    are not events (dead-lettered by the aggregate stage, skipped by the others)."""
    out: list[Record] = []
    offsets = [0] * PARTS

    def add(key: bytes | None, value: bytes | None) -> None:
        p = key_partition(key, PARTS)
        out.append(Record(f"{NS}.events", p, offsets[p], key, value,
                          [("ioc.raw", b"0:%d:%d" % (len(out) // 50, len(out) % 50))]))
        offsets[p] += 1

    for i in range(n):
        t = NOW - 5000 + i * 3.0
        kind = i % 5
        if kind == 0:
            e = Event(id=f"e{i}", source="t", type="air.quality", entity=f"air-{i % 3}",
                      time=t, values={"pm25": float(20 + (i * 7) % 60)}, attributes={})
        elif kind == 1:
            e = Event(id=f"e{i}", source="t", type="traffic.flow", entity=f"road-{i % 2}",
                      time=t, values={"speed": float((80, 20, 60)[i % 3])}, attributes={})
        elif kind == 2:
            e = Event(id=f"e{i}", source="egov", type="egov.dossier", entity=f"d{i % 3}",
                      time=t, values={"count": 1.0},
                      attributes={"channel": ("online", "counter")[i % 2],
                                  "admin_level": "district"})
        elif kind == 3:
            e = Event(id=f"e{i}", source="egov", type="egov.result", entity=f"d{i % 3}",
                      time=t, values={"count": 1.0},
                      attributes={"channel": ("postal", "counter")[i % 2],
                                  "admin_level": "district"})
        else:
            e = Event(id=f"e{i}", source="t", type="air.quality", entity=f"air-{i % 3}",
                      time=t - (4000 if i % 20 == 4 else 0), values={"no2": 12.0},
                      attributes={})
        add(e.entity.encode(), encode_event(e))
        if i % 37 == 11:
            add(b"bad", b"not json")
        if i % 53 == 7:
            add(None, None)
    return out


def _changelogs(stage: Stage) -> list[Any]:
    out = Outbox()
    for t in stage.tables:
        t.write_changes(out)
    return out.records


def test_the_composite_decodes_each_record_once_for_all_its_stages(
        settings: Settings, monkeypatch: pytest.MonkeyPatch):
    calls = [0]

    def counting(data: bytes) -> Event:
        calls[0] += 1
        return decode_event(data)

    monkeypatch.setattr(records_module, "decode_event", counting)
    records = _records(200)
    stages = _stages(settings)
    both = combine(stages)
    assert both.name == "aggregate+kpis+rules+scorecards"
    both.process(records, Outbox())
    assert calls[0] == len(records)  # once per record, not once per stage

    calls[0] = 0
    for st in _stages(settings):
        st.process(records, Outbox())  # alone, each stage decodes for itself
    assert calls[0] == 4 * len(records)


def test_each_stage_of_the_composite_makes_what_it_makes_alone(settings: Settings):
    records = _records(600)
    batches = [records[i:i + 97] for i in range(0, len(records), 97)]
    together, alone = _stages(settings), _stages(settings)
    both = combine(together)
    made: set[str] = set()
    for batch in batches:
        out = Outbox()
        both.process(batch, out)
        expected: list[Any] = []
        for st in alone:
            own = Outbox()
            st.process(batch, own)
            expected += own.records
        # the composite's outbox is each stage's outputs, in the stages' order
        assert out.records == expected
        made |= {t for t, *_ in out.records}
    assert made == {f"{NS}.rollups", f"{NS}.kpis", f"{NS}.alerts", f"{NS}.scorecards",
                    f"{NS}.dlq"}
    for a, b in zip(together, alone, strict=True):
        assert _changelogs(a) == _changelogs(b) != [], a.name
        # counted per stage by the composite (the runner counts a stage run alone)
        assert (a.metrics.records, a.metrics.batches) == (len(records), len(batches))
        assert a.metrics.busy_s > 0.0
    agg = together[0].counters["aggregate"]
    assert agg.undecodable == sum(r.value in (b"not json", None) for r in records) > 0
    assert agg.late > 0 and agg.late == alone[0].counters["aggregate"].late


def test_stages_that_do_not_read_events_run_beside_them_undecoded(settings: Settings):
    seen: list[list[Any]] = []
    plain = Stage("plain", [f"{NS}.events"], lambda records, out: seen.append(records))
    records = _records(20)
    both = combine([*_stages(settings)[:1], plain])
    both.process(records, Outbox())
    assert seen == [records]
    assert plain.metrics.records == len(records) and plain.metrics.batches == 1
    none = combine([plain, Stage("other", [f"{NS}.events"], lambda records, out: None)])
    none.process(records, Outbox())  # nothing decodes when no stage reads events
    assert len(seen) == 2


def test_decode_events_keeps_one_entry_per_record_in_order():
    e = Event(id="x", source="s", type="t", entity="a", time=NOW, values={}, attributes={})
    recs = [Record("t", 0, i, None, v, ()) for i, v in
            enumerate([encode_event(e), b"{", None, encode_event(e)])]
    got = decode_events(recs)
    assert [type(g).__name__ for g in got] == ["Event", "InvalidEvent", "InvalidEvent", "Event"]
    assert got[0] == e and got[1].reason == "not_json"


def test_each_stage_is_charged_its_own_time_and_an_equal_share_of_the_decode(
        monkeypatch: pytest.MonkeyPatch):
    ticks = iter(range(100))  # perf_counter: 0, 1, 2... one second per reading
    monkeypatch.setattr("streams.engine.stage.time", SimpleNamespace(
        perf_counter=lambda: float(next(ticks)), monotonic=time.monotonic))
    got: list[tuple[str, list[Any]]] = []
    a = Stage.of_events("a", ["t"], lambda records, events, out: got.append(("a", events)))
    b = Stage.of_events("b", ["t"], lambda records, events, out: got.append(("b", events)))
    plain = Stage("plain", ["t"], lambda records, out: got.append(("plain", records)))
    records = _records(3)
    combine([a, plain, b]).process(records, Outbox())
    assert [name for name, _ in got] == ["a", "plain", "b"]
    assert got[0][1] is got[2][1] and len(got[0][1]) == len(records)  # the same list
    # the decode took 1 s (readings 0 -> 1), shared by a and b; each stage's own work 1 s
    assert (a.metrics.busy_s, plain.metrics.busy_s, b.metrics.busy_s) == (1.5, 1.0, 1.5)
    assert all((st.metrics.records, st.metrics.batches) == (len(records), 1)
               for st in (a, plain, b))
