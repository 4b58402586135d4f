"""Unit: the worker's stage metrics (ioc.metrics.stages) follow the stages' own counters.

The validate and aggregate stages are registered on a stand-in for the Faust app (only
``host_stage``'s bookkeeping is needed), fed plain ``Record``s, and their runners count
dead letters from the outbox as a flush does; no Kafka is involved.
"""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest

from ioc.config import Settings, load_settings
from ioc.events import DEAD_LETTER_REASONS
from ioc.kpi import KpiValue
from ioc.metrics.stages import StagesCollector, stage_groups
from ioc.rules import Alert
from ioc.scorecard import LeafCount
from ioc.tilegen import ViewFact
from streams.agent_spec import AgentSpec
from streams.aggregate import AGGREGATE
from streams.engine import Outbox, Record, Stage, StageRunner, TopicPartition, combine
from streams.scorecards import SCORECARDS
from streams.tiles import TILES
from streams.validate import VALIDATE
from streams.views import VIEWS_PARTITION
from tests.fixtures.hostile import hostile_bytes
from tests.fixtures.metrics import Scrape

ROOT = Path(__file__).resolve().parents[2]
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


# --- the tiles agent (tiles, views) and scorecard_tiles ------------------------------

TILES_SETTINGS = load_settings(env={}, overrides={
    "namespace": "mt", "streams": {"tiles": {"trend_points": 2, "alert_items": 1}}})
KPI = "dossiers_online"  # tile period: month


def _agents_app(s: Settings, *agents: AgentSpec) -> SimpleNamespace:
    """``agents`` hosted on a stand-in app, one runner per group of topics (as ``_app``)."""
    app = SimpleNamespace(conf=SimpleNamespace(id="mt-streams"), task=lambda fn: fn)
    for agent in agents:
        agent.register(app, s)  # type: ignore[arg-type]
    app._ioc_runners = [StageRunner(s, "mt-streams", st) for st in app._ioc_stages]
    return app


def _kpi_rec(off: int, v: KpiValue) -> Record:
    return Record("mt.kpis", 0, off, v.key.encode(), v.to_bytes(), [])


def _alert(i: int) -> Alert:  # scope "air" for both alerts used below
    return Alert(f"a{i}", "pm25_high", f"s-{i}", "pm25", "warning", "raised", 1_700_000_000 + i,
                 1.7e9 + i, None, 60.0, f"pm25 high at s-{i}", "air")


def _stage(app: SimpleNamespace, name: str) -> Stage:
    return next(st for st in app._ioc_stages if st.name == name)


def test_tiles_and_views_export_forwarded_skipped_removed_and_held_facts():
    app = _agents_app(TILES_SETTINGS, TILES)
    tiles, views = _stage(app, "tiles"), _stage(app, "views")
    s0 = _scrape(app)
    assert s0.value("ioc_views_facts_forwarded_total", stage="tiles") == 0
    for reason in ("stale", "unshown"):  # at 0 from the start, as the dead letters
        assert s0.value("ioc_views_facts_skipped_total", stage="views", reason=reason) == 0
    for reason in ("expired_periods", "unlisted", "expired_alerts", "evicted"):
        assert s0.value("ioc_views_facts_removed_total", stage="views", reason=reason) == 0
    assert s0.value("ioc_views_facts", stage="views") == 0

    months = [KpiValue(KPI, "agency-01", "month", m, 1, 2, 50.0)
              for m in ("2026-01", "2026-02", "2026-03")]
    day = KpiValue(KPI, "agency-01", "day", "2026-03-02", 1, 2, 50.0)  # no tile: not forwarded
    recs = [_kpi_rec(i, v) for i, v in enumerate([*months, day])]
    recs.append(Record("mt.kpis", 0, 4, b"k", b"\xff", []))  # undecodable: dead-lettered
    recs += [Record("mt.alerts", 0, i, a.id.encode(), a.to_bytes(), [])
             for i, a in enumerate([_alert(0), _alert(3)])]
    out = Outbox()
    tiles.process(recs, out)
    _runner(app, "tiles")._count_dead_letters(out.records)
    fwd = [(k, v) for topic, k, v, _p, _h in out.records if topic == "mt.views"]
    assert len(fwd) == 5

    # the views stage reads them, a redelivered copy of the newest month, a fact of a
    # period no tile shows and a record that is not a view fact
    last = next(v for k, v in fwd if k == f"kpi|{months[-1].key}".encode())
    unshown = ViewFact(day, day.to_bytes(), 0, 3).to_bytes()
    assert views.on_assigned is not None
    views.on_assigned({TopicPartition("mt.views", VIEWS_PARTITION)})
    vrecs = [Record("mt.views", 0, i, k, v, [])
             for i, (k, v) in enumerate([*fwd, (b"k", last), (b"k", unshown), (b"k", b"\xff")])]
    vout = Outbox()
    views.process(vrecs, vout)
    _runner(app, "views")._count_dead_letters(vout.records)

    s = _scrape(app)
    assert s.value("ioc_views_facts_forwarded_total", stage="tiles") == 5
    assert s.value("ioc_views_facts_skipped_total", stage="views", reason="stale") == 1
    assert s.value("ioc_views_facts_skipped_total", stage="views", reason="unshown") == 1
    # trend_points=2: the oldest month leaves; alert_items=1: one of the two alerts
    assert s.value("ioc_views_facts_removed_total", stage="views", reason="expired_periods") == 1
    assert s.value("ioc_views_facts_removed_total", stage="views", reason="unlisted") == 1
    assert s.value("ioc_views_facts_removed_total", stage="views", reason="expired_alerts") == 0
    assert s.value("ioc_views_facts_removed_total", stage="views", reason="evicted") == 0
    assert s.value("ioc_views_facts", stage="views") == 3  # two months and one alert
    # the undecodable records are the dead letters, once each (not a second metric)
    assert s.value("ioc_dead_letters_total", stage="tiles", reason="undecodable") == 1
    assert s.value("ioc_dead_letters_total", stage="views", reason="undecodable") == 1
    assert s.value("ioc_dead_letters_total", stage="views") == 1
    assert views.counters["views_stage"].undecodable == 1
    assert tiles.counters["tiles"].undecodable == 1
    assert not {n for n in s.names() if "undecodable" in n}


def test_scorecard_tiles_exports_the_records_it_skipped_undecoded():
    s = load_settings(ROOT / "deploy" / "scorecards.example.yaml", env={},
                      overrides={"namespace": "mt"})
    app = _agents_app(s, SCORECARDS)
    board = _stage(app, "scorecard_tiles")
    assert _scrape(app).value("ioc_undecodable_skipped_total", stage="scorecard_tiles") == 0
    lf = LeafCount("dossiers_online", "year", "2021", ("province", "district", "d1", "all"),
                   400, 1000, ("province", "admin_level", "agency", "procedure"))
    recs = [Record("mt.scorecards", 0, 0, lf.key.encode(), lf.to_bytes(), []),
            Record("mt.scorecards", 0, 1, b"k", b"\xff", []),
            Record("mt.scorecards", 0, 2, b"k", b"{}", []),
            Record("mt.scorecards", 0, 3, b"k", None, [])]  # a tombstone: not counted
    board.process(recs, Outbox())
    sc = _scrape(app)
    assert sc.value("ioc_undecodable_skipped_total", stage="scorecard_tiles") == 2
    assert sc.value("ioc_undecodable_skipped_total", 0, stage="scorecards") == 0
    assert board.tables[0].changed.keys() == {lf.key.encode()}
