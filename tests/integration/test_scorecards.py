"""Scorecards through the real pipeline on plain PostgreSQL (and TimescaleDB where
``IOC_TEST_TIMESCALEDB_DSN`` names one): canonical events ->
``scorecards`` stage -> ``<ns>.scorecards`` -> sink -> ``scorecard_counts`` -> the
gateway's NGSI-LD ``KeyPerformanceIndicator`` export.

The province's published share of dossiers received online, at 1/50 scale: 2020 220
online of 4,582 (4.8%; published 10,996 of ~229,083), 2021 1,153 of 4,384 (26.3%;
published 57,646 of ~219,187), spread over five districts so that district d5 moves
from last place (2020) to third (2021). d6 reported results in 2020 and nothing in
2021 (flagged no_data, unranked). Then late 2020 dossiers recompute the closed year.
"""

from __future__ import annotations

import http.client
import os
import secrets
from datetime import datetime
from pathlib import Path
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import orjson
import pytest
from psycopg import sql

from ioc.config import load_settings
from ioc.events import Event
from ioc.gateway import hash_key, new_key
from ioc.storage import connect, drop_schema, migrate
from ioc.tiles import decode_tile
from tests.fixtures.gateway import GatewayThread
from tests.integration.pipeline_fixtures import TopicTail, publish, wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.db]

ROOT = Path(__file__).resolve().parents[2]
TZ = ZoneInfo("Asia/Ho_Chi_Minh")
READER = new_key()
# district -> (dossiers, online) per year
FIGURES = {
    "2020": {"d1": (1000, 80), "d2": (1000, 60), "d3": (900, 40), "d4": (900, 30), "d5": (782, 10)},
    "2021": {"d1": (1000, 400), "d2": (900, 300), "d3": (800, 100), "d4": (800, 70), "d5": (884, 283)},
}


def dossiers(year: str, district: str, total: int, online: int, *, tag: str = "") -> list[Event]:
    start = datetime(int(year), 1, 1, tzinfo=TZ).timestamp()
    span = datetime(int(year) + 1, 1, 1, tzinfo=TZ).timestamp() - start - 1
    return [Event(id=f"{tag}{year}-{district}-{i}", source="egov-portal", type="egov.dossier",
                  entity=district, time=start + (i * 7919 % total) / total * span,
                  values={"count": 1.0},
                  attributes={"channel": "online" if i < online else "counter",
                              "admin_level": "district", "procedure": f"p{i % 3}"})
            for i in range(total)]


@pytest.fixture(params=["off", pytest.param("on", marks=pytest.mark.timescaledb)],
                ids=["plain", "timescaledb"])
def plain_ns(request, stack, tmp_path):
    """A namespace with its topics, on the plain-PostgreSQL path (timescaledb: off) and,
    where ``IOC_TEST_TIMESCALEDB_DSN`` names a server, on TimescaleDB (on): the same
    assertions hold on both (``scorecard_counts`` is a plain table either way, ADR 0004)."""
    from ioc.kafka import delete_namespace_topics, ensure_topics
    from tests.fixtures.timescale import DSN_ENV, SKIP_REASON

    mode = request.param
    if mode == "on":
        dsn = os.environ.get(DSN_ENV)
        if not dsn:
            pytest.skip(SKIP_REASON)
        db = {"dsn": dsn, "timescaledb": "on"}
    else:
        db = {"dsn": stack.database.dsn.get_secret_value(), "timescaledb": "off",
              **({"passfile": str(stack.database.passfile)} if stack.database.passfile else {})}
    cfg = tmp_path / "ioc.yaml"
    cfg.write_text((ROOT / "deploy" / "scorecards.example.yaml").read_text())
    base = load_settings(cfg, env={}, overrides={
        "kafka": {"bootstrap_servers": stack.kafka.bootstrap_servers},
        "database": db,
        "scorecards": {"readers": {"portal": {"key_sha256": hash_key(READER)}}}})
    s = base.with_namespace(f"tsc{secrets.token_hex(4)}")
    assert ensure_topics(s).success
    features, _ = migrate(s)
    assert features.timescaledb == (mode == "on"), features.describe()
    yield s, cfg, mode
    delete_namespace_topics(s)
    drop_schema(s)


def rows(s, where: str = "true"):
    with connect(s.database, autocommit=True) as conn:
        return conn.execute(sql.SQL(
            "select indicator, period, period_key, path, numerator, denominator from {} where "
            + where).format(sql.Identifier(s.db_schema, "scorecard_counts"))).fetchall()


def totals(s, indicator: str, period: str, key_like: str) -> tuple[float, float]:
    rs = [r for r in rows(s) if r[0] == indicator and r[1] == period and r[2].startswith(key_like)]
    return sum(r[4] for r in rs), sum(r[5] for r in rs)


def export(port: int, **q: str) -> tuple[int, list]:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    c.request("GET", "/ngsi-ld/v1/entities?" + urlencode({"type": "KeyPerformanceIndicator", **q}),
              headers={"Authorization": f"Bearer {READER}"})
    r = c.getresponse()
    body = orjson.loads(r.read())
    assert r.getheader("Content-Type", "").startswith("application/ld+json" if r.status == 200
                                                      else "application/json")
    return r.status, body


@pytest.mark.timeout(300)
def test_published_figures_through_stage_sink_and_ngsi_export(plain_ns, spawn):
    s, cfg, mode = plain_ns
    env = {"IOC_CONFIG": str(cfg), "IOC_DATABASE__TIMESCALEDB": mode,
           "IOC_SCORECARDS__TILE_EVERY_S": "1"}
    worker = spawn(["worker", "--agents", "scorecards"], settings=s, env=env, name="worker")
    sink = spawn(["sink", "--tables", "scorecard_counts"], settings=s, env=env, name="sink")
    events = [e for year, ds in FIGURES.items() for d, (n, k) in ds.items()
              for e in dossiers(year, d, n, k)]
    # d6 sent results in 2020 (30% by post), nothing in 2021
    t20 = datetime(2020, 6, 1, tzinfo=TZ).timestamp()
    events += [Event(id=f"r{i}", source="egov-portal", type="egov.result", entity="d6",
                     time=t20 + i, attributes={"return_channel": "postal" if i < 12 else "counter",
                                               "admin_level": "district"})
               for i in range(40)]
    n, took = publish(s, events)
    print(f"published {n} events in {took:.2f} s")

    want = {y: (sum(k for _, k in ds.values()), sum(n for n, _ in ds.values()))
            for y, ds in FIGURES.items()}
    assert want == {"2020": (220, 4582), "2021": (1153, 4384)}

    def stored():
        got = {y: totals(s, "dossiers_online", "year", y) for y in want}
        return got if got == want else None

    wait_for(stored, timeout=200, every=1.0, alive=lambda: worker.alive() and sink.alive(),
             what=f"scorecard_counts to hold {want}")
    # rollover: the months and the quarters of each year add up to the year
    for y, w in want.items():
        assert totals(s, "dossiers_online", "quarter", f"{y}-Q") == w
        assert totals(s, "dossiers_online", "month", f"{y}-") == w
        assert len({r[2] for r in rows(s) if r[1] == "month" and r[2].startswith(y)}) == 12
    # numerator and denominator are stored per drill path (down to the procedure)
    paths = {tuple(r[3]) for r in rows(s) if r[0] == "dossiers_online" and r[2] == "2021"}
    assert ("province", "district", "d5", "p0") in paths and len(paths) == 15

    with GatewayThread(s) as gw:
        status, prov = export(gw.port, period="year", periodKey="2021", level="province",
                              indicator="dossiers_online")
        assert status == 200, prov
        [e] = prov
        assert (e["kpiValue"], e["numerator"], e["denominator"]) == (26.3, 1153, 4384)
        assert e["calculationPeriod"] == {"from": "2021-01-01", "to": "2021-12-31"}
        assert e["@context"][0].startswith("https://uri.etsi.org/ngsi-ld/")
        _, prov20 = export(gw.port, period="year", periodKey="2020", level="province",
                           indicator="dossiers_online")
        assert (prov20[0]["kpiValue"], prov20[0]["numerator"]) == (4.8, 220)

        status, ents = export(gw.port, period="year", periodKey="2021", level="agency")
        assert status == 200
        by = {(x["organization"], x["indicator"]): x for x in ents}
        d5 = by[("d5", "dossiers_online")]
        assert (d5["rank"], d5["rankChange"]) == (3, 2), d5  # last in 2020, third in 2021
        # by total score d6 (4 points for its results in 2020) was also above d5 in 2020
        assert by[("d5", "total")]["rank"] == 3 and by[("d5", "total")]["rankChange"] == 3
        ranked = sorted((x["rank"], x["organization"]) for x in ents
                        if x["indicator"] == "total" and x["rank"] is not None)
        assert [o for _, o in ranked] == ["d1", "d2", "d5", "d3", "d4"]
        d6 = by[("d6", "total")]
        assert d6["rank"] is None and "no_data" in d6["dataQuality"]
        assert all(0 <= x["score"] <= x["maxScore"] for x in ents)

        # the wall's leaderboard (latest year, agencies within province/district), built
        # by the single owner of <ns>.scorecards from every unit
        tail = TopicTail(s, "wall.tiles")
        boards: dict[str, object] = {}

        def board():
            for r in tail.poll():
                t = decode_tile(r.value)
                boards[t.id] = t
            t = boards.get("scorecard:agency:province/district")
            return t if t is not None and t.payload["period_key"] == "2021" and len(
                t.payload["rows"]) == 6 else None

        tile = wait_for(board, timeout=60, every=0.5, alive=worker.alive,
                        what="the leaderboard tile of 2021")
        tail.close()
        rows_ = tile.payload["rows"]
        assert [r["unit"] for r in rows_] == ["d1", "d2", "d5", "d3", "d4", "d6"]
        assert (rows_[2]["rank"], rows_[2]["rank_change"]) == (3, 3)
        assert rows_[5]["rank"] is None and "no_data" in rows_[5]["flags"]

        # late dossiers for the closed year 2020 recompute it
        late = dossiers("2020", "d5", 10, 10, tag="late-")
        publish(s, late)
        wait_for(lambda: totals(s, "dossiers_online", "year", "2020") == (230, 4592),
                 timeout=60, every=0.5, alive=worker.alive, what="2020 recomputed with late events")
        _, prov20 = export(gw.port, period="year", periodKey="2020", level="province",
                           indicator="dossiers_online")
        assert (prov20[0]["numerator"], prov20[0]["denominator"], prov20[0]["kpiValue"]) == (
            230, 4592, 5.0)

        # 2025: the targets differ by administrative level (80% district, 60% commune);
        # the province as a whole has none. Sent last: the wall shows the latest year.
        y25 = dossiers("2025", "d1", 100, 72) + [
            Event(id=f"c25-{e.id}", source=e.source, type=e.type, entity="c1", time=e.time,
                  values=e.values, attributes={**e.attributes, "admin_level": "commune"})
            for e in dossiers("2025", "c1", 50, 36)]
        publish(s, y25)
        wait_for(lambda: totals(s, "dossiers_online", "year", "2025") == (108, 150),
                 timeout=60, every=0.5, alive=worker.alive, what="2025 stored")
        _, ents25 = export(gw.port, period="year", periodKey="2025", level="agency",
                           indicator="dossiers_online")
        got = {x["organization"]: (x["kpiValue"], x["target"], x["progress"], x["score"])
               for x in ents25}
        assert got == {"d1": (72.0, 80.0, 0.9, 18.0), "c1": (72.0, 60.0, 1.2, 20.0)}, got
        _, prov25 = export(gw.port, period="year", periodKey="2025", level="province",
                           indicator="dossiers_online")
        assert (prov25[0]["kpiValue"], prov25[0]["target"], prov25[0]["score"]) == (72.0, None, 0)
    assert sink.alive() and worker.alive()


@pytest.mark.timeout(300)
def test_demo_history_reproduces_the_published_figures(plain_ns, spawn):
    """ioc feeds' 2020-2021 history (ioc.feeds._history, 1/100) through the stage, the
    sink and the export: the province's shares and district-7's climb from 9th to 3rd."""
    from ioc.feeds._history import egov_history

    s, cfg, mode = plain_ns
    env = {"IOC_CONFIG": str(cfg), "IOC_DATABASE__TIMESCALEDB": mode}
    worker = spawn(["worker", "--agents", "scorecards"], settings=s, env=env, name="worker")
    sink = spawn(["sink", "--tables", "scorecard_counts"], settings=s, env=env, name="sink")
    events = list(egov_history(0.01))
    n, took = publish(s, events)
    print(f"published {n} history events in {took:.2f} s")
    want = {y: (sum(1 for e in events if e.type == "egov.document" and e.attributes["signed"]
                    and datetime.fromtimestamp(float(e.time), TZ).year == int(y)),
                sum(1 for e in events if e.type == "egov.document"
                    and datetime.fromtimestamp(float(e.time), TZ).year == int(y)))
            for y in ("2020", "2021")}
    wait_for(lambda: all(totals(s, "documents_signed", "year", y) == w for y, w in want.items()),
             timeout=200, every=1.0, alive=lambda: worker.alive() and sink.alive(),
             what=f"scorecard_counts to hold every document {want}")
    with GatewayThread(s) as gw:
        got = {}
        for y in ("2020", "2021"):
            status, prov = export(gw.port, period="year", periodKey=y, level="province",
                                  indicator="dossiers_online,results_postal")
            assert status == 200, prov
            got[y] = {e["indicator"]: e["kpiValue"] for e in prov}
        assert got["2020"]["dossiers_online"] == 4.8 and got["2021"]["dossiers_online"] == 26.3
        assert round(got["2020"]["results_postal"]) == 30
        assert round(got["2021"]["results_postal"]) == 60
        ranks = {}
        for y in ("2020", "2021"):
            _, ents = export(gw.port, period="year", periodKey=y, level="agency",
                             indicator="total,documents_signed")
            ranks[y] = {x["organization"]: (x["rank"], x["rankChange"]) for x in ents
                        if x["indicator"] == "total" and x["drillPath"]["admin_level"] == "district"}
            signed = [x for x in ents if x["indicator"] == "documents_signed"
                      and x["drillPath"]["admin_level"] in ("province", "district")]
            assert len(signed) == 17 and all(x["kpiValue"] > 80 for x in signed)
        assert len(ranks["2020"]) == 9 and ranks["2020"]["district-7"][0] == 9
        assert ranks["2021"]["district-7"] == (3, 6)
    assert sink.alive() and worker.alive()
