"""Pure KPI maths, including the province's published 2021 figures at full size."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from ioc.config import load_settings
from ioc.kpi import KpiCounts, KpiValue, combine, period_key, ranking
from ioc.tilegen import KpiBoard

TZ = ZoneInfo("Asia/Ho_Chi_Minh")
SPECS = load_settings(env={}).streams.kpis
ONLINE = next(s for s in SPECS if s.id == "dossiers_online")

# Published: 57,646 dossiers received online = 26.3% of all dossiers received.
ONLINE_2021 = 57_646
TOTAL_2021 = 219_187  # 57646 / 219187 = 0.26300...


def test_calendar_periods_follow_the_configured_zone():
    t = datetime(2021, 12, 31, 20, 0, tzinfo=ZoneInfo("UTC")).timestamp()  # 03:00 on 1 Jan in Hanoi
    assert period_key(t, "day", TZ) == "2022-01-01"
    assert period_key(t, "month", TZ) == "2022-01"
    assert period_key(t, "year", TZ) == "2022"
    assert period_key(t, "year", ZoneInfo("UTC")) == "2021"


def test_full_2021_counts_through_the_pure_core_give_26_3_percent():
    agencies = [f"agency-{i:02d}" for i in range(20)]
    counts = {a: KpiCounts(a) for a in agencies}
    start = datetime(2021, 1, 1, tzinfo=TZ).timestamp()
    span = datetime(2022, 1, 1, tzinfo=TZ).timestamp() - start
    for i in range(TOTAL_2021):
        a = agencies[(i * 7) % len(agencies)]
        channel = "online" if i < ONLINE_2021 else "counter"
        t = start + (i * 9973 % TOTAL_2021) / TOTAL_2021 * span
        counts[a].add(SPECS, TZ, type="egov.dossier", t=t, values={"count": 1},
                      attributes={"channel": channel})
    per_agency = [c.value(("dossiers_online", "year", "2021"), ONLINE) for c in counts.values()]
    overall = combine(per_agency, ONLINE, "all")
    assert overall is not None
    assert (overall.numerator, overall.denominator) == (ONLINE_2021, TOTAL_2021)
    assert overall.value == 26.3
    months = [c.value(k, ONLINE) for c in counts.values() for k in c.counts if k[1] == "month"]
    assert sum(v.denominator for v in months) == TOTAL_2021


def test_ranking_and_board_tile():
    vals = [KpiValue("dossiers_online", g, "month", "2021-05", n, 100, float(n)) for g, n in
            (("b", 30), ("a", 30), ("c", 50))]
    assert ranking(vals) == [{"group": "c", "value": 50.0}, {"group": "a", "value": 30.0},
                             {"group": "b", "value": 30.0}]
    board = KpiBoard(SPECS)
    for v in vals:
        assert board.update(v) == ["kpi:dossiers_online:" + v.group, "kpi:dossiers_online"]
    tile = board.tile("kpi:dossiers_online")
    assert tile is not None and tile.kind == "kpi"
    assert tile.payload["value"] == round(110 / 300 * 100, 1)
    assert tile.payload["ranking"][0] == {"group": "c", "value": 50.0}
    group_tile = board.tile("kpi:dossiers_online:a")
    assert group_tile is not None and group_tile.payload["value"] == 30.0


def test_state_round_trip_and_unmatched_types():
    c = KpiCounts("x")
    assert c.add(SPECS, TZ, type="air.quality", t=1.6e9, values={}, attributes={}) == set()
    c.add(SPECS, TZ, type="egov.document", t=1.6e9, values={"count": 1}, attributes={"signed": True})
    back = KpiCounts.from_bytes(c.to_bytes())
    assert back.counts == c.counts
    key = next(k for k in back.counts if k[1] == "day")
    assert back.value(key, next(s for s in SPECS if s.id == "documents_signed")).value == 100.0
