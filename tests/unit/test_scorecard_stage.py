"""The scorecards stage's ``process`` without Kafka: outputs, redelivery, hostile records."""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ioc.config import load_settings
from ioc.events import Event, encode_event
from ioc.scorecard import LeafCount, ScorecardCounts
from streams.engine import Outbox, Record
from streams.engine.applied import Tracked
from streams.scorecards import scorecard_stage, scorecard_table
from tests.fixtures.hostile import hostile_bytes, hostile_headers, hostile_json_bytes

ROOT = Path(__file__).resolve().parents[2]
TZ = ZoneInfo("Asia/Ho_Chi_Minh")
S = load_settings(ROOT / "deploy" / "scorecards.example.yaml", env={},
                  overrides={"namespace": "tsc"})
T = datetime(2021, 2, 3, tzinfo=TZ).timestamp()


def rec(offset: int, e: Event, partition: int = 0) -> Record:
    return Record("tsc.events", partition, offset, e.entity.encode(), encode_event(e), ())


def dossier(i: int, entity: str = "d1", online: bool = True) -> Event:
    return Event(id=f"e{i}", source="egov", type="egov.dossier", entity=entity, time=T,
                 values={"count": 1.0},
                 attributes={"channel": "online" if online else "counter",
                             "admin_level": "district"})


def outputs(out: Outbox) -> dict[str, LeafCount]:
    got = {}
    for topic, key, value, _, _ in out.records:
        if topic == "tsc.scorecards":
            assert key is not None and value is not None
            lf = LeafCount.from_bytes(value)
            assert lf.key == key.decode()
            got[lf.key] = lf  # latest wins, as in the compacted topic
    return got


def test_full_counts_out_and_redelivery_skipped():
    table = scorecard_table(S)
    process = scorecard_stage(S, table, clock=lambda: 1.0e9).process
    out = Outbox()
    process([rec(0, dossier(0)), rec(1, dossier(1, online=False)), rec(2, dossier(2, "d2"))], out)
    got = outputs(out)
    year = got["dossiers_online|year|2021|province/district/d1/all"]
    assert (year.numerator, year.denominator) == (1, 2)
    assert year.levels == ("province", "admin_level", "agency", "procedure")
    assert "dossiers_online|quarter|2021-Q1|province/district/d2/all" in got
    assert len(got) == 6  # 2 agencies x month, quarter, year
    # the state went to the table; the same records again (a redelivery) count nothing
    st_ = table.get(b"d1", Tracked.decoder(ScorecardCounts.from_dict, "counts"),
                    Tracked.factory(ScorecardCounts), "d1")
    assert st_.marks.offset == 1 and st_.state.counts
    out2 = Outbox()
    process([rec(0, dossier(0)), rec(1, dossier(1, online=False)), rec(3, dossier(3))], out2)
    year = outputs(out2)["dossiers_online|year|2021|province/district/d1/all"]
    assert (year.numerator, year.denominator) == (2, 3)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records=st.lists(st.tuples(st.one_of(st.none(), hostile_bytes(max_size=40)),
                                  st.one_of(st.none(), hostile_bytes(max_size=300),
                                            hostile_json_bytes()),
                                  st.one_of(st.just([]), hostile_headers())), max_size=8))
def test_hostile_records_never_raise(records):
    process = scorecard_stage(S, scorecard_table(S)).process
    batch = [Record("tsc.events", 0, i, k, v, h) for i, (k, v, h) in enumerate(records)]
    batch.append(rec(len(batch), dossier(99)))
    out = Outbox()
    process(batch, out)
    assert "dossiers_online|year|2021|province/district/d1/all" in outputs(out)


def leaf_rec(offset: int, lf: LeafCount) -> Record:
    return Record("tsc.scorecards", 0, offset, lf.key.encode(), lf.to_bytes(), ())


def test_leaderboard_tiles_rank_every_unit_with_rank_change():
    from ioc.tiles import decode_tile
    from streams.scorecards import LeaderboardStage, leaves_table

    table = leaves_table(S)
    board = LeaderboardStage(S, table)
    lvl = ("province", "admin_level", "agency", "procedure")
    shares = {"2020": {"d1": 190, "d2": 170, "d3": 150, "d4": 120, "d5": 50},
              "2021": {"d1": 400, "d2": 380, "d3": 200, "d4": 180, "d5": 350}}
    recs = [leaf_rec(i, LeafCount("dossiers_online", "year", y, ("province", "district", d, "all"),
                                  n, 1000, lvl))
            for i, (y, d, n) in enumerate((y, d, n) for y, ds in shares.items()
                                          for d, n in ds.items())]
    recs.append(Record("tsc.scorecards", 0, 99, b"junk", b"not json", ()))
    out = Outbox()
    board.process(recs, out)
    assert board.undecodable == 1 and not out.records
    now = datetime(2022, 6, 1, tzinfo=TZ).timestamp()
    board.tick(now, out)
    sent = {key: (topic, decode_tile(value)) for topic, key, value, _, _ in out.records}
    assert {t for t, _ in sent.values()} == {"tsc.wall.tiles"}
    # the leaderboard, one target tile per indicator and one scorecard for the province
    assert set(sent) == {b"scorecard:agency:province/district", b"card:province",
                         *(f"target:{i.id}:province".encode() for i in S.scorecards.indicators)}
    key = b"scorecard:agency:province/district"
    tile = sent[key][1]
    assert tile.kind == "leaderboard" and tile.id == key.decode()
    rows = tile.payload["rows"]
    assert [r["unit"] for r in rows] == ["d1", "d2", "d5", "d3", "d4"]
    assert rows[2]["rank"] == 3 and rows[2]["rank_change"] == 2
    assert all(0 <= r["share"] <= 1 for r in rows)
    assert "3. d5" in tile.payload["text"] and "▲2" in tile.payload["text"]
    # the province's target progress and scorecard, from the same counts (1510 of 5000)
    target = sent[b"target:dossiers_online:province"][1]
    assert target.kind == "target"
    assert target.payload["value"] == 30.2 and target.payload["target"] == 40
    assert target.payload["progress"] == 0.755 and target.payload["score"] == 15.1
    assert (target.payload["numerator"], target.payload["denominator"]) == (1510, 5000)
    assert sent[b"target:results_postal:province"][1].payload["flags"] == ["no_data"]
    card = sent[b"card:province"][1]
    assert card.kind == "scorecard" and card.payload["total"] == 15.1
    areas = {a["area"]: a for a in card.payload["areas"]}
    assert (areas["online"]["points"], areas["online"]["max_points"]) == (15.1, 30)
    assert areas["transparency"]["indicators"] == 0 and card.payload["max_total"] == 100
    assert all(t.payload["text"] for _, t in sent.values())  # old clients show the text
    # a change within tile_every_s of the last tile waits for it; nothing changed: no tile
    out2 = Outbox()
    board.process([leaf_rec(100, LeafCount("dossiers_online", "year", "2021",
                                           ("province", "district", "d4", "all"), 990, 1000,
                                           lvl))], out2)
    board.tick(now + 1, out2)
    assert not out2.records
    board.tick(now + S.scorecards.tile_every_s, out2)
    [value] = [v for _, k, v, _, _ in out2.records if k == key]
    by = {r["unit"]: r for r in decode_tile(value).payload["rows"]}
    assert by["d4"]["rank"] == 1 == by["d1"]["rank"]  # both at full points: a shared rank
    assert by["d4"]["rank_change"] == 3 and by["d2"]["rank"] == 3
    out3 = Outbox()
    board.tick(now + 100, out3)
    assert not out3.records


def test_the_demo_feeds_events_fill_the_example_scorecard():
    """ioc feeds' live e-government events (provincial agencies, districts, communes, with
    province/admin_level/procedure attributes) fill the example's drill levels."""
    from ioc.feeds._history import UNITS
    from ioc.feeds._plan import AGENCIES, EgovGenerator
    from ioc.scorecard import build_scorecard

    gen = EgovGenerator(rate=50.0, seed=3)
    events = [e for _, (_, e) in zip(range(8000), gen.events(T), strict=False)]
    table = scorecard_table(S)
    out = Outbox()
    scorecard_stage(S, table).process([rec(i, e) for i, e in enumerate(events)], out)
    leaves = list(outputs(out).values())
    assert {lf.path[:2] for lf in leaves} == {("province", lv)
                                              for lv in ("province", "district", "commune")}
    assert {lf.path[2] for lf in leaves} == {u.entity for u in UNITS}
    assert {lf.path[2] for lf in leaves if lf.path[1] == "province"} == set(AGENCIES)
    year = [lf for lf in leaves if lf.period == "year"]
    assert sum(lf.denominator for lf in year) == len(events)  # every event in one indicator
    cards = build_scorecard(S.scorecards, leaves, period="year", period_key="2021",
                            level="agency", tz=TZ, now=T + 400 * 86400)
    cards = [c for c in cards if c.unit[1] == "province"]  # the provincial agencies
    ranks = sorted(c.rank for c in cards if c.rank is not None)
    assert len(ranks) == 8 and ranks[0] == 1 and ranks[-1] > 4  # equal scores share a rank
    assert all(not c.flags for c in cards)  # ~330 events each, a closed year


def test_leaderboard_counts_and_warns_about_records_that_are_not_leaves(
        caplog: pytest.LogCaptureFixture):
    from streams.scorecards import LeaderboardStage, leaves_table

    board = LeaderboardStage(S, leaves_table(S))
    lf = LeafCount("dossiers_online", "year", "2021", ("province", "district", "d1", "all"),
                   400, 1000, ("province", "admin_level", "agency", "procedure"))
    bad = [Record("tsc.scorecards", 0, i, b"k", v, ()) for i, v in
           enumerate([b"\xff", b"{}", b"[1]"], start=1)]
    with caplog.at_level(logging.WARNING, logger="streams.scorecards"):
        board.process([leaf_rec(0, lf), *bad], Outbox())
    assert board.undecodable == 3
    # throttled: one line per topic every 10 s, at warning level, where the first one was
    (line,) = [r for r in caplog.records if r.name == "streams.scorecards"]
    assert line.levelno == logging.WARNING
    assert "tsc.scorecards[0]@1" in line.getMessage() and "1 so far" in line.getMessage()
    assert board.table.changed.keys() == {lf.key.encode()}
