"""Global views (alerts:all, kpi:<id> with its ranking) are built from every partition.

The tiles stage of each worker forwards the KPI values and alert states of the
partitions it owns to ``<ns>.views``; one views stage builds the tiles from all of them
(``streams.views``, ``ioc.tilegen.GlobalViews``). Here two tiles stages (two workers)
each read half the partitions, their forwarded facts are interleaved and redelivered
in any order a crash or rebalance allows, and the tiles must show every group and
every alert, equal to what the latest value of each key gives; a second views stage
that restores the first one's changelog sends the same tiles at once.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ioc.config import Settings
from ioc.errors import InvalidRecord
from ioc.kpi import KpiValue
from ioc.rules import Alert
from ioc.tilegen import GlobalViews, ViewFact
from ioc.tiles import Tile, decode_tile
from streams.engine import Outbox, Record, Stage, TopicPartition
from streams.tiles import TILES
from tests.fixtures.hostile import hostile_bytes

NS = "gv"
S = Settings(namespace=NS)
SPECS = {k.id: k for k in S.streams.kpis}
KPI = "dossiers_online"  # tile period: month
VIEWS_TP = TopicPartition(f"{NS}.views", 0)
GROUPS = [f"agency-{i:02d}" for i in range(8)]
SCOPES = ["air", "traffic", "flood"]
SOME = settings(max_examples=200, deadline=None)


class _App:
    """Collects the stages the agent registers (``host_stage``); runs nothing."""

    def __init__(self) -> None:
        self.conf = SimpleNamespace(id=f"{NS}-streams")

    def task(self, fn: Any) -> Any:
        return fn


def _worker(s: Settings = S) -> dict[str, Stage]:
    """The tiles and views stages of one worker (as ``ioc worker --agents tiles`` has)."""
    app = _App()
    TILES.register(app, s)  # type: ignore[arg-type]
    out = {stage.name: stage for stage in app._ioc_stages}  # type: ignore[attr-defined]
    for stage in out.values():
        for t in stage.tables:
            t.topic = f"{NS}.state.streams.{t.name}"
    return out


def _kpi(group: str, num: float, den: float, month: str = "2026-11") -> KpiValue:
    return KpiValue(KPI, group, "month", month, num, den, round(100 * num / den, 1) if den else None)


def _alert(i: int, state: str = "raised") -> Alert:
    return Alert(f"a{i}", "pm25_high", f"s-{i}", "pm25", "warning", state, 1_700_000_000 + i,
                 1.7e9 + i, 1.7e9 + 100 + i if state == "cleared" else None, 60.0,
                 f"pm25 high at s-{i}", SCOPES[i % len(SCOPES)])


def _tiles(out: Outbox) -> dict[str, Tile]:
    """The latest tile per id among the outputs (as the compacted topic keeps them)."""
    got: dict[str, Tile] = {}
    for topic, _k, v, _p, _h in out.records:
        if topic == f"{NS}.wall.tiles":
            t = decode_tile(v)
            got[t.id] = t
    return got


def _forwarded(out: Outbox) -> list[tuple[bytes, bytes]]:
    assert all(p == 0 for topic, _k, _v, p, _h in out.records if topic == f"{NS}.views")
    return [(k, v) for topic, k, v, _p, _h in out.records if topic == f"{NS}.views"]


def _as_views_records(pairs: list[tuple[bytes, bytes]], start: int = 0) -> list[Record]:
    return [Record(VIEWS_TP.topic, 0, start + i, k, v, []) for i, (k, v) in enumerate(pairs)]


def _drain(views: Stage, out: Outbox, now: float = 1e9) -> None:
    """Release every held tile (the coalescer's interval is wall-clock: jump past it)."""
    assert views.tick is not None
    coalescer = views.counters["throttle"]
    for _ in range(20):
        coalescer.last_sent.clear()
        coalescer.bucket = None
        views.tick(now, out)
        if not coalescer.pending:
            return
    raise AssertionError("tiles still pending")


# --- the wire form -----------------------------------------------------------------

_items = st.one_of(
    st.builds(_kpi, st.sampled_from(GROUPS), st.integers(0, 50).map(float),
              st.integers(1, 99).map(float)),
    st.builds(_alert, st.integers(0, 10**6), st.sampled_from(["raised", "cleared"])))


@SOME
@given(_items, st.integers(0, 2**31), st.integers(0, 2**62))
def test_view_fact_round_trips(item, partition, offset):
    f = ViewFact(item, item.to_bytes(), partition, offset)
    back = ViewFact.from_bytes(f.to_bytes())
    assert back == f and back.item == item
    assert back.record_key() == f"{back.kind}|{back.key}".encode()


@SOME
@given(st.one_of(st.none(), hostile_bytes(max_size=300),
                 st.builds(lambda h, v: h + b"\n" + v,
                           st.sampled_from([b"kpi 0 1", b"alert 1 2", b"kpi -1 0", b"x 0 0",
                                            b"kpi 0", b"alert a b"]),
                           hostile_bytes(max_size=100))))
def test_view_fact_decoding_raises_only_invalid_record(data):
    try:
        ViewFact.from_bytes(data)
    except InvalidRecord as exc:
        assert exc.reason == "undecodable"


# --- the pure views ----------------------------------------------------------------

def _facts_by_partition(values: list[tuple[str, int, float, float]]) -> dict[int, list[ViewFact]]:
    """KPI values (group, source partition, numerator, denominator) as each source
    partition delivers them, in offset order."""
    out: dict[int, list[ViewFact]] = {}
    for group, part, num, den in values:
        v = _kpi(group, num, den)
        facts = out.setdefault(part, [])
        facts.append(ViewFact(v, v.to_bytes(), part, len(facts)))
    return out


@SOME
@given(st.lists(st.tuples(st.sampled_from(GROUPS), st.integers(0, 3), st.integers(0, 40),
                          st.integers(1, 40)), min_size=1, max_size=40),
       st.randoms(use_true_random=False), st.integers(0, 5))
def test_views_show_the_latest_value_of_every_group_whatever_the_interleaving(
        values, rnd, replay):
    # a group's values come from one source partition (as kpi_partition does); which one
    # differs by group, so the groups of one KPI are spread over partitions
    part_of = {g: i % 4 for i, g in enumerate(GROUPS)}
    values = [(g, part_of[g], float(min(n, d)), float(d)) for g, _p, n, d in values]
    by_part = _facts_by_partition(values)
    # any merge that keeps each partition's order; then a partition's last ``replay``
    # facts come again (its tiles worker crashed before committing them)
    queues = {p: list(fs) for p, fs in by_part.items()}
    merged: list[ViewFact] = []
    while queues:
        p = rnd.choice(sorted(queues))
        merged.append(queues[p].pop(0))
        if not queues[p]:
            del queues[p]
    again = rnd.choice(sorted(by_part))
    merged.extend(by_part[again][-replay:] if replay else [])

    views = GlobalViews(SPECS.values())
    for f in merged:
        views.apply(f)
    latest: dict[str, KpiValue] = {}
    for g, _p, n, d in values:
        latest[g] = _kpi(g, n, d)
    overall = views.tile(f"kpi:{KPI}")
    assert overall is not None
    p = overall.payload
    assert (p["numerator"], p["denominator"]) == (sum(v.numerator for v in latest.values()),
                                                  sum(v.denominator for v in latest.values()))
    assert sorted(r["group"] for r in p["ranking"]) == sorted(latest)
    assert views.stale == (min(replay, len(by_part[again])))
    assert set(views.tile_ids()) == {f"kpi:{KPI}", *(f"kpi:{KPI}:{g}" for g in latest)}
    for g, v in latest.items():
        t = views.tile(f"kpi:{KPI}:{g}")
        assert t is not None and t.payload["numerator"] == v.numerator
        assert t.payload["ranking"] == p["ranking"]


def test_an_older_copy_never_moves_a_view_backwards():
    views = GlobalViews(SPECS.values())
    new, old = _kpi("agency-01", 5, 10), _kpi("agency-01", 1, 10)
    assert views.apply(ViewFact(new, new.to_bytes(), 1, 7)) == [f"kpi:{KPI}:agency-01", f"kpi:{KPI}"]
    assert views.apply(ViewFact(old, old.to_bytes(), 1, 3)) is None  # redelivered, older
    assert views.apply(ViewFact(new, new.to_bytes(), 1, 7)) is None  # the same again
    t = views.tile(f"kpi:{KPI}")
    assert t is not None and t.payload["numerator"] == 5
    # a key that moved to another source partition (topic repartitioned): the copy wins
    assert views.apply(ViewFact(old, old.to_bytes(), 0, 0)) is not None
    assert views.stale == 2


def test_rebuild_keeps_the_alerts_that_were_kept_live():
    live = GlobalViews(SPECS.values(), alert_items=5)
    facts = []
    for i in range(12):
        a = _alert(i, "cleared" if i % 3 == 0 else "raised")
        facts.append(ViewFact(a, a.to_bytes(), i % 2, i))
        live.apply(facts[-1])
    again = GlobalViews(SPECS.values(), alert_items=5)
    tids = again.rebuild(list(reversed(facts)))  # a restore's order is not arrival order
    assert sorted(tids) == sorted(f"alerts:{s}" for s in [*SCOPES, "all"])
    for tid in tids:
        a, b = live.tile(tid), again.tile(tid)
        assert a is not None and b is not None and a.payload == b.payload


# --- two workers' stages -----------------------------------------------------------

def _kpi_records(part_of: dict[str, int], month: str, scale: int) -> list[Record]:
    recs = []
    for i, g in enumerate(GROUPS):
        v = _kpi(g, float(i * scale), float(10 * scale + i), month)
        recs.append(Record(f"{NS}.kpis", part_of[g], 100 * scale + i, v.key.encode(),
                           v.to_bytes(), []))
    return recs


def _alert_records(n: int, start: int = 0, state: str = "raised") -> list[Record]:
    return [Record(f"{NS}.alerts", i % 2, 1000 + start + i, f"a{i}".encode(),
                   _alert(i, state).to_bytes(), []) for i in range(start, start + n)]


def test_two_tiles_workers_feed_one_views_stage_that_lists_everything():
    w1, w2 = _worker(), _worker()
    part_of = {g: i % 2 for i, g in enumerate(GROUPS)}
    records = [*_kpi_records(part_of, "2026-11", 1), *_alert_records(9)]
    # worker 1 owns partition 0 of kpis and alerts, worker 2 partition 1
    out1, out2 = Outbox(), Outbox()
    w1["tiles"].process([r for r in records if r.partition == 0], out1)
    w2["tiles"].process([r for r in records if r.partition == 1], out2)
    # neither tiles stage makes an alert or KPI tile of its own
    assert not [t for t in (*_tiles(out1), *_tiles(out2)) if t.startswith(("kpi:", "alerts:"))]
    f1, f2 = _forwarded(out1), _forwarded(out2)
    assert f1 and f2
    assert (w1["tiles"].counters["tiles"].forwarded, w2["tiles"].counters["tiles"].forwarded) \
        == (len(f1), len(f2))  # what ioc_views_facts_forwarded exports
    merged = [x for pair in zip(f1, f2, strict=False) for x in pair] + f1[len(f2):] + f2[len(f1):]

    # worker 1 owns the views partition; worker 2's views stage owns nothing
    views = w1["views"]
    assert views.on_assigned is not None
    views.on_assigned({VIEWS_TP})
    w2["views"].on_assigned(set())
    vout = Outbox()
    views.process(_as_views_records(merged), vout)
    _drain(views, vout)
    tiles = _tiles(vout)
    sent = [r for r in vout.records if r[0] == f"{NS}.wall.tiles"]
    assert views.counters["views_stage"].sent == len(sent) >= len(tiles)
    items = tiles["alerts:all"].payload["items"]
    assert sorted(x["id"] for x in items) == sorted(f"a{i}" for i in range(9))
    for scope in SCOPES:
        got = {x["id"] for x in tiles[f"alerts:{scope}"].payload["items"]}
        assert got == {f"a{i}" for i in range(9) if SCOPES[i % 3] == scope}
    p = tiles[f"kpi:{KPI}"].payload
    want = [_kpi(g, float(i), float(10 + i)) for i, g in enumerate(GROUPS)]
    assert (p["numerator"], p["denominator"]) == (sum(v.numerator for v in want),
                                                  sum(v.denominator for v in want))
    assert sorted(r["group"] for r in p["ranking"]) == GROUPS
    assert {f"kpi:{KPI}:{g}" for g in GROUPS} <= set(tiles)

    # worker 1 dies; worker 2's views stage restores the changelog and sends every tile
    changelog = Outbox()
    for t in views.tables:
        t.write_changes(changelog)
    standby = w2["views"]
    (table,) = standby.tables
    for topic, k, v, p_, _h in changelog.records:
        assert topic == table.topic and p_ == 0
        table.data[k], table.where[k] = v, 0  # what StateTable.restore reads back
    assert standby.on_assigned is not None
    standby.on_assigned({VIEWS_TP})
    sout = Outbox()
    _drain(standby, sout)
    again = _tiles(sout)
    assert set(again) == set(tiles)
    for tid, t in tiles.items():
        assert again[tid].payload == t.payload, tid

    # the facts worker 1 forwarded but did not commit come again: nothing moves back
    replayed = Outbox()
    standby.process(_as_views_records(merged), replayed)
    _drain(standby, replayed)
    assert _tiles(replayed) == {} and table.changed == {}


def test_a_revoked_views_stage_sends_nothing_more():
    (w,) = [_worker()]
    tiles, views = w["tiles"], w["views"]
    out = Outbox()
    tiles.process(_alert_records(4), out)
    assert views.on_assigned is not None and views.on_revoked is not None
    views.on_assigned({VIEWS_TP})
    views.process(_as_views_records(_forwarded(out)), Outbox())
    views.on_revoked({VIEWS_TP})
    after = Outbox()
    _drain(views, after)
    assert _tiles(after) == {}


def test_only_tile_period_values_of_known_kpis_are_forwarded():
    w = _worker()
    day = KpiValue(KPI, "agency-01", "day", "2026-11-02", 1, 2, 50.0)
    unknown = KpiValue("not_configured", "agency-01", "month", "2026-11", 1, 2, 50.0)
    month = _kpi("agency-01", 1, 2)
    older = _kpi("agency-01", 0, 1)
    recs = [Record(f"{NS}.kpis", 0, i, v.key.encode(), v.to_bytes(), [])
            for i, v in enumerate([day, unknown, older, month])]
    out = Outbox()
    w["tiles"].process(recs, out)
    (fwd,) = _forwarded(out)  # the latest of the batch per key only
    f = ViewFact.from_bytes(fwd[1])
    assert fwd[0] == f"kpi|{month.key}".encode() and f.item == month and f.offset == 3


@pytest.mark.parametrize("value", [b"", b"kpi 0 0\n{}", b"alert 0 0\nnot json", b"\xff"])
def test_views_stage_dead_letters_what_is_not_a_view_fact(value):
    views = _worker()["views"]
    assert views.on_assigned is not None
    views.on_assigned({VIEWS_TP})
    out = Outbox()
    views.process([Record(VIEWS_TP.topic, 0, 5, b"k", value, [])], out)
    (dead,) = [dict(h or ()) for t, _k, _v, _p, h in out.records if t == f"{NS}.dlq"]
    assert dead["dlq.reason"] == b"undecodable" and dead["dlq.stage"] == b"views"
    assert views.tables[0].changed == {}
    assert views.counters["views_stage"].undecodable == 1


# --- bounded state -------------------------------------------------------------------

def _fact(item: KpiValue | Alert, offset: int, partition: int = 0) -> ViewFact:
    return ViewFact(item, item.to_bytes(), partition, offset)


def test_kpi_values_of_periods_no_tile_shows_leave_and_are_counted():
    board = GlobalViews(SPECS.values(), trend_points=3)
    months = [f"2026-{m:02d}" for m in range(1, 9)]
    for i, m in enumerate(months):
        for g in GROUPS[:2]:
            assert board.apply(_fact(_kpi(g, 1, 2, m), 10 * i + GROUPS.index(g))) is not None
    day = KpiValue(KPI, GROUPS[0], "day", "2026-08-03", 1, 2, 50.0)
    assert board.apply(_fact(day, 999)) is None  # the tile shows months only
    assert board.unshown == 1
    kept = board.kpis.values[KPI]["month"]
    assert sorted(kept) == months[-3:]  # the trend's length, the current month last
    assert board.expired_periods == 2 * (len(months) - 3)
    removed = set(board.take_removed())
    assert removed == {f"kpi|{KPI}|{g}|month|{m}".encode() for g in GROUPS[:2] for m in months[:-3]}
    assert set(board.origins) == {f"kpi|{KPI}|{g}|month|{m}".encode()
                                  for g in GROUPS[:2] for m in months[-3:]}
    tile = board.tile(f"kpi:{KPI}")
    assert tile is not None and tile.payload["period"] == "month:2026-08"
    assert len(tile.payload["trend"]) == 3


def test_cleared_alerts_leave_after_the_retention_raised_ones_stay():
    board = GlobalViews(SPECS.values(), cleared_retention_s=600.0)
    for i in range(6):
        board.apply(_fact(_alert(i, "cleared" if i % 2 else "raised"), i))
    cleared_at = 1.7e9 + 100  # _alert(i, "cleared") clears at 1.7e9 + 100 + i
    assert board.expire(cleared_at + 599) == []  # none older than the retention yet
    ids = board.expire(cleared_at + 604)  # a1 and a3 cleared more than 600 s ago, a5 not
    assert "alerts:all" in ids
    assert board.expired_alerts == 2
    assert set(board.take_removed()) == {b"alert|a1", b"alert|a3"}
    listed = [it["id"] for it in board.tile("alerts:all").payload["items"]]  # type: ignore[union-attr]
    assert sorted(listed) == ["a0", "a2", "a4", "a5"]
    board.expire(cleared_at + 10**6)
    assert sorted(it["id"] for it in board.tile("alerts:all").payload["items"]) == ["a0", "a2", "a4"]  # type: ignore[union-attr]


def test_the_retention_runs_in_event_time_the_newest_alert_time_by_default():
    board = GlobalViews(SPECS.values(), cleared_retention_s=600.0)
    board.apply(_fact(_alert(1, "cleared"), 1))  # cleared at 1.7e9 + 101 (years ago)
    assert board.expire() == [] and board.alert_time == 1.7e9 + 101
    board.apply(_fact(_alert(2), 2))  # raised at 1.7e9 + 2: the clock does not go back
    assert board.expire() == [] and board.alert_time == 1.7e9 + 101
    later = Alert("a9", "pm25_high", "s-9", "pm25", "warning", "raised", 1_700_000_900,
                  1.7e9 + 702, None, 60.0, "pm25 high at s-9", "air")
    board.apply(_fact(later, 3))  # more than 600 s after a1 cleared
    assert set(board.expire()) == {"alerts:traffic", "alerts:all"}  # a1's scope and all
    assert board.expired_alerts == 1 and b"alert|a1" not in board.origins


def test_alerts_pushed_out_of_every_list_leave():
    board = GlobalViews(SPECS.values(), alert_items=4)
    for i in range(20):
        board.apply(_fact(_alert(i), i))
    listed = {a for b in board.alerts.scopes.values() for a in b}
    assert {k.decode().split("|", 1)[1] for k in board.origins} == listed
    assert board.unlisted == 20 - len(listed) > 0
    assert {k.decode().split("|", 1)[1] for k in board.take_removed()} == {f"a{i}" for i in range(20)} - listed


def test_a_hard_cap_evicts_the_least_recently_updated_and_counts_them():
    board = GlobalViews(SPECS.values(), alert_items=1000, max_facts=100)
    for i in range(150):
        board.apply(_fact(_alert(i), i))
    board.apply(_fact(_alert(60, "cleared"), 1000))  # a60 updated: the newest now
    assert len(board.origins) == 100 and board.evicted == 50
    assert next(iter(board.origins)) == b"alert|a50" and next(reversed(board.origins)) == b"alert|a60"
    board.apply(_fact(_alert(150), 150))  # the least recently updated (a50) leaves, not a60
    assert board.evicted == 51 and b"alert|a50" not in board.origins and b"alert|a60" in board.origins
    listed = {a for b in board.alerts.scopes.values() for a in b}
    assert listed == {f"a{i}" for i in range(51, 151)}
    assert len(board.take_removed()) == 51


@SOME
@given(st.lists(st.one_of(
    st.tuples(st.just("kpi"), st.sampled_from(GROUPS[:3]), st.integers(1, 24)),
    st.tuples(st.just("alert"), st.integers(0, 40), st.sampled_from(["raised", "cleared"]))),
    max_size=120), st.integers(5, 40))
def test_the_views_stay_within_their_bounds_and_hold_only_what_is_kept(ops, cap):
    board = GlobalViews(SPECS.values(), trend_points=4, alert_items=6, max_facts=cap)
    state: set[bytes] = set()  # what the stage's table would hold
    for off, op in enumerate(ops):
        if op[0] == "kpi":
            f = _fact(_kpi(op[1], 1, 2, f"20{op[2]:02d}-01"), off)
        else:
            f = _fact(_alert(op[1], op[2]), off)
        if board.apply(f) is not None:
            state.add(f.record_key())
        state -= set(board.take_removed())
        assert len(board.origins) <= cap
        assert state == set(board.origins)
        for by_key in board.kpis.values.get(KPI, {}).values():
            assert len(by_key) <= 4
        assert all(len(b) <= 6 for b in board.alerts.scopes.values())


def test_the_views_stage_deletes_what_leaves_from_its_state_and_counts_it():
    s = Settings.model_validate({"namespace": NS, "streams": {"tiles": {"alert_items": 3}}})
    views = _worker(s)["views"]
    (table,) = views.tables
    assert views.on_assigned is not None
    views.on_assigned({VIEWS_TP})
    out = Outbox()
    facts = [(f"alert|a{i}".encode(), _fact(_alert(i), 0).to_bytes()) for i in range(10)]
    views.process(_as_views_records(facts), out)
    for t in views.tables:
        t.write_changes(out)
    tombstones = [k for topic, k, v, _p, _h in out.records if topic == table.topic and v is None]
    assert tombstones and set(tombstones) | set(table.state_keys()) >= {k for k, _v in facts}
    assert not set(tombstones) & set(table.state_keys())
    board = views.counters["views"]
    assert board.counters()["unlisted"] == len(tombstones)
    assert board.counters()["facts"] == len(table.state_keys())
