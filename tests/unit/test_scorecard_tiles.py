"""The scorecard wall tiles (pure): leaderboard, target and scorecard tiles from any counts."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from ioc.config import load_settings
from ioc.config._wall import TilePlacement
from ioc.scorecard import LeafCount, build_scorecard
from ioc.scorecard._tiles import card_tiles, leaderboard_tiles, target_tiles
from ioc.tiles import TILE_KINDS, decode_tile, encode_tile

ROOT = Path(__file__).resolve().parents[2]
TZ = ZoneInfo("Asia/Ho_Chi_Minh")
S = load_settings(ROOT / "deploy" / "scorecards.example.yaml", env={}, overrides={"namespace": "tst"})
CFG = S.scorecards
LEVELS = tuple(lv.id for lv in CFG.levels)
NOW = datetime(2022, 6, 1, tzinfo=TZ).timestamp()
MAX_TOTAL = sum(a.max_points for a in CFG.areas)

counts = st.integers(0, 400).flatmap(lambda d: st.tuples(st.integers(0, d), st.just(d)))
leaf_sets = st.dictionaries(
    st.tuples(st.sampled_from([i.id for i in CFG.indicators]), st.sampled_from(["2020", "2021"]),
              st.sampled_from(["district", "commune"]), st.sampled_from(["u1", "u2", "u3", "u/4"])),
    counts, max_size=30)


def _leaves(d: dict) -> list[LeafCount]:
    return [LeafCount(ind, "year", y, ("province", lvl, u, "all"), n, den, LEVELS)
            for (ind, y, lvl, u), (n, den) in d.items()]


@settings(max_examples=200, deadline=None)
@given(leaf_sets)
def test_every_tile_is_consistent_with_its_scorecard(d):
    leaves = _leaves(d)
    board = build_scorecard(CFG, leaves, leaves, period="year", period_key="2021", level="agency",
                            tz=TZ, now=NOW)
    top = build_scorecard(CFG, leaves, leaves, period="year", period_key="2021", level="province",
                          tz=TZ, now=NOW)
    tiles = (leaderboard_tiles(board, max_total=MAX_TOTAL, rows=10, now=NOW, version=1)
             + target_tiles(CFG, top, now=NOW, version=1)
             + card_tiles(CFG, top, max_total=MAX_TOTAL, now=NOW, version=1))
    ids = [t.id for t in tiles]
    assert len(ids) == len(set(ids))
    for t in tiles:
        assert t.kind in TILE_KINDS and t.payload["text"]
        back = decode_tile(encode_tile(t, stamp=False))
        assert (back.id, back.kind, back.payload) == (t.id, t.kind, t.payload)
        if t.kind == "leaderboard":
            ranks = [r["rank"] for r in t.payload["rows"] if r["rank"] is not None]
            assert ranks == sorted(ranks) and all(0 <= r["share"] <= 1 for r in t.payload["rows"])
            # unranked (no data) units come last
            seen_none = False
            for r in t.payload["rows"]:
                seen_none = seen_none or r["rank"] is None
                assert r["rank"] is None or not seen_none
        elif t.kind == "target":
            p = t.payload
            assert 0 <= p["score"] <= p["max_score"]
            assert (p["value"] is None) == (p["denominator"] == 0)
        else:
            p = t.payload
            assert abs(sum(a["points"] for a in p["areas"]) - p["total"]) < 0.05
            assert all(0 <= a["points"] <= a["max_points"] + 1e-9 for a in p["areas"])
            assert p["ranked_of"] <= 1  # the province is alone in its parent
    if leaves:
        assert {t.id for t in tiles if t.kind == "scorecard"} == {"card:province"}
        assert {t.id for t in tiles if t.kind == "target"} == {
            f"target:{i.id}:province" for i in CFG.indicators}


def test_a_unit_name_with_a_slash_keeps_ids_unique_and_placeable():
    leaves = _leaves({("dossiers_online", "2021", "district", "a/b"): (5, 10),
                      ("dossiers_online", "2021", "district%2Fb", "x"): (5, 10)})
    board = build_scorecard(CFG, leaves, period="year", period_key="2021", level="agency",
                            tz=TZ, now=NOW)
    ids = {t.id for t in leaderboard_tiles(board, max_total=MAX_TOTAL, rows=10, now=NOW, version=1)}
    assert ids == {"scorecard:agency:province/district", "scorecard:agency:province/district%252Fb"}
    for tile_id in ids:  # a wall screen can place them
        TilePlacement(tile=tile_id, col=1, row=1)


def test_the_demo_public_screen_places_the_tiles_the_feeds_history_makes():
    """deploy/local/demo.yaml: the feeds' e-gov history (1/100) through the counting and
    leaderboard stages (no Kafka) makes every tile the 'public' screen places, and its
    district leaderboard shows the rising district 3rd, six places up."""
    from ioc.events import encode_event
    from ioc.feeds._history import RISING_DISTRICT, egov_history
    from streams.engine import Outbox, Record
    from streams.scorecards import (
        LeaderboardStage,
        leaves_table,
        scorecard_stage,
        scorecard_table,
    )

    demo = load_settings(ROOT / "deploy" / "local" / "demo.yaml", env={},
                         overrides={"namespace": "tdemo"})
    process = scorecard_stage(demo, scorecard_table(demo), clock=lambda: NOW).process
    out = Outbox()
    events = list(egov_history(0.01))
    # and the live stream's first event of the current year: the pinned 2021 still shows
    import msgspec

    events.append(msgspec.structs.replace(events[-1], id="live-1", time=NOW))
    for i in range(0, len(events), 2000):
        process([Record("tdemo.events", 0, i + j, e.entity.encode(), encode_event(e), ())
                 for j, e in enumerate(events[i:i + 2000])], out)
    board = LeaderboardStage(demo, leaves_table(demo))
    board.process([Record("tdemo.scorecards", 0, n, key, value, ())
                   for n, (_, key, value, _, _) in enumerate(out.records)], Outbox())
    tiles_out = Outbox()
    board.tick(NOW, tiles_out)
    tiles = {key.decode(): decode_tile(value) for _, key, value, _, _ in tiles_out.records}
    placed = {p.tile for p in demo.wall.screens["public"].tiles}
    assert placed <= set(tiles), placed - set(tiles)
    rows = tiles["scorecard:agency:province/district"].payload["rows"]
    [rising] = [r for r in rows if r["unit"] == RISING_DISTRICT]
    assert (rising["rank"], rising["rank_change"]) == (3, 6)
    assert tiles["target:dossiers_online:province"].payload["value"] == 26.3
