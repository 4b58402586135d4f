"""The scorecard tiles (issue 16) in a real Chromium (Debian's, driven by Playwright)
against a real `ioc wall serve` process fed through the real Kafka broker, on the demo's
'public' and 'main' screens (deploy/local/demo.yaml). The tiles are made by the
leaderboard stage (``streams.scorecards.LeaderboardStage``, the same pure functions as
the export) from hand-made counts: a leaderboard with a district moving from last to
third, the province's target progress and its scorecard. Screenshots of the 'public'
screen go to artifacts/ (the ones in docs/img/ are these, quantized)."""

from __future__ import annotations

import time

import pytest
import yaml

from ioc.config import load_settings
from ioc.scorecard import LeafCount
from ioc.tiles import decode_tile
from ioc.wall.auth import TokenSigner
from streams.engine import Outbox, Record
from streams.scorecards import LeaderboardStage, leaves_table
from tests.browser.test_wall_browser import WallProcess
from tests.conftest import ROOT
from tests.integration.wall_fixtures import TileProducer

pytestmark = [pytest.mark.browser, pytest.mark.kafka, pytest.mark.timeout(180)]

SECRET = "scorecards-browser-secret-0123456789"
ARTIFACTS = ROOT / "artifacts"
DEMO = ROOT / "deploy" / "local" / "demo.yaml"
BOARD = "scorecard:agency:province/district"
FUTURE = "text:future-kind"  # a kind this client does not know
LIVE = "() => document.body.dataset.conn === 'live'"
NONE_WAITING = "(n) => document.querySelectorAll('.tile.waiting').length <= n"
LEVELS = ("province", "admin_level", "agency", "procedure")
# dossiers online per 1000 by district: district-7 is last in 2020 and third in 2021
ONLINE = {"2020": {"district-1": 70, "district-2": 64, "district-3": 60, "district-4": 55,
                   "district-5": 52, "district-6": 50, "district-7": 20, "district-8": 45,
                   "district-9": 40},
          "2021": {"district-1": 330, "district-2": 310, "district-3": 260, "district-4": 240,
                   "district-5": 230, "district-6": 220, "district-7": 300, "district-8": 200,
                   "district-9": 150}}


def _screens() -> dict[str, object]:
    demo = yaml.safe_load(DEMO.read_text())["wall"]["screens"]
    return {"public": demo["public"], "main": demo["main"], "compat": {
        "title": "Compatibility", "columns": 2, "rows": 1,
        "tiles": [{"tile": FUTURE, "col": 1, "row": 1, "title": "Future kind",
                   "expected_interval_s": None}]}}


@pytest.fixture(scope="module")
def wall(settings, tmp_path_factory):
    d = tmp_path_factory.mktemp("wall-scorecards")
    config = d / "wall.yaml"
    config.write_text(yaml.safe_dump({"wall": {"secret": SECRET, "heartbeat_s": 2,
                                               "screens": _screens()}}))
    wp = WallProcess(settings, config, d / "serve.log")
    wp.start()
    yield wp
    wp.stop()


def _leaves() -> list[LeafCount]:
    out = []
    for year, by in ONLINE.items():
        for d, n in by.items():
            path = ("province", "district", d, "all")
            out.append(LeafCount("dossiers_online", "year", year, path, n, 1000, LEVELS))
            out.append(LeafCount("results_postal", "year", year, path,
                                 300 if year == "2020" else 620, 1000, LEVELS))
            out.append(LeafCount("documents_signed", "year", year, path, 850, 1000, LEVELS))
        for a, n in (("agency-health", 400), ("agency-planning", 250), ("agency-justice", 20)):
            out.append(LeafCount("dossiers_online", "year", year, ("province", "province", a, "all"),
                                 n if year == "2021" else n // 5, 1000 if a != "agency-justice" else 25,
                                 LEVELS))
        for c, n in (("commune-01", 300), ("commune-02", 180), ("commune-03", 90)):
            out.append(LeafCount("dossiers_online", "year", year, ("province", "commune", c, "all"),
                                 n if year == "2021" else n // 4, 600, LEVELS))
    return out


@pytest.fixture(scope="module")
def tiles(settings, wall):
    """The stage's tiles for the leaves above, produced to the tiles topic; by id."""
    cfg = load_settings(DEMO, env={}, overrides={"namespace": settings.namespace})
    board = LeaderboardStage(cfg, leaves_table(cfg))
    board.process([Record(f"{settings.namespace}.scorecards", 0, i, lf.key.encode(),
                          lf.to_bytes(), ()) for i, lf in enumerate(_leaves())], Outbox())
    out = Outbox()
    board.tick(time.time(), out)
    p = TileProducer(settings)
    for _, key, value, _, _ in out.records:
        p.p.send(p.topic, key=key, value=value)
    now = time.time()
    for tile, value in (("kpi:dossiers_online", 26.3), ("kpi:results_postal", 60.0),
                        ("kpi:documents_signed", 86.0), ("kpi:dossiers_online:agency-planning", 25.0)):
        p.send(tile, int(now * 1000), {"label": tile, "value": value, "unit": "%",
                                       "trend": [value * 0.8, value * 0.9, value]}, flush=False)
    p.send(FUTURE, int(now * 1000), {"text": "rendered as text by this client", "gauge": 3},
           kind="gauge-v9")
    got = {key.decode(): decode_tile(value) for _, key, value, _, _ in out.records}
    yield got
    p.close()


def _page(browser, wall, screen: str, width: int = 1920, height: int = 1080):
    page = browser.new_page(viewport={"width": width, "height": height})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if "Content Security Policy" in m.text else None)
    token = TokenSigner(SECRET.encode()).issue([screen], 3600)
    page.goto(f"http://127.0.0.1:{wall.port}/?screen={screen}#token={token}")
    page.wait_for_function(LIVE, timeout=15000)
    return page, errors


@pytest.fixture(scope="module")
def public(browser, wall, tiles):
    page, errors = _page(browser, wall, "public")
    page.wait_for_function(NONE_WAITING, arg=0, timeout=15000)
    yield page, errors
    page.close()


def test_the_stage_made_every_tile_the_public_screen_places(tiles):
    placed = {t["tile"] for t in _screens()["public"]["tiles"]}  # type: ignore[index]
    assert placed <= set(tiles), placed - set(tiles)
    assert {tiles[t].kind for t in placed} == {"leaderboard", "target", "scorecard"}


def test_leaderboard_shows_rank_order_arrows_and_bars(public, tiles):
    page, errors = public
    rows = page.locator(f'[data-tile="{BOARD}"] .lb-row')
    assert rows.count() == 9
    got = rows.evaluate_all(
        "rs => rs.map(r => ({unit: r.dataset.unit, rank: r.querySelector('.lb-rank').textContent,"
        " arrow: r.querySelector('.lb-change').textContent,"
        " dir: r.querySelector('.lb-change').className,"
        " bar: r.querySelector('.lb-fill').getBoundingClientRect().width}))")
    expected = [r["unit"] for r in tiles[BOARD].payload["rows"]]
    assert [g["unit"] for g in got] == expected
    assert [int(g["rank"]) for g in got] == sorted(int(g["rank"]) for g in got)
    seven = next(g for g in got if g["unit"] == "district-7")
    assert seven["rank"] == "3" and seven["arrow"] == "▲6" and "up" in seven["dir"]
    assert any(g["arrow"].startswith("▼") and "down" in g["dir"] for g in got)
    bars = [g["bar"] for g in got]
    assert bars[0] > 0 and bars == sorted(bars, reverse=True)  # bars follow the scores
    # an agency with fewer cases than min_denominator is marked, and the caption says why
    depts = '[data-tile="scorecard:agency:province/province"]'
    assert page.locator(f'{depts} .lb-row[data-unit="agency-justice"] .lb-low').count() == 1
    assert page.locator(f"{depts} .lb-low").count() == 1
    assert page.locator(f"{depts} .sc-caption .sc-flag").text_content() == "⚠ few cases"
    assert errors == []


def test_target_tile_shows_value_target_and_progress(public, tiles):
    page, _ = public
    t = tiles["target:dossiers_online:province"].payload
    sel = '[data-tile="target:dossiers_online:province"]'
    assert page.locator(f"{sel} .tg-value").text_content() == f"{t['value']:.1f}"
    assert page.locator(f"{sel} .tg-of").text_content() == f"target {t['target']:g}%"
    assert page.locator(f"{sel} .tg-progress").text_content() == f"{round(t['progress'] * 100)}% of target"
    fill, bar = page.locator(f"{sel} .tg-fill").evaluate(
        "f => [f.getBoundingClientRect().width, f.parentElement.getBoundingClientRect().width]")
    assert fill / bar == pytest.approx(t["progress"], abs=0.01)
    reached = '[data-tile="target:documents_signed:province"]'
    assert page.locator(f"{reached} .tg-progress").text_content() == "target reached"


def test_scorecard_tile_shows_area_points_and_total(public, tiles):
    page, _ = public
    c = tiles["card:province"].payload
    sel = '[data-tile="card:province"]'
    areas = page.locator(f"{sel} .card-area").evaluate_all(
        "as => as.map(a => [a.dataset.area, a.querySelector('.card-points').textContent])")
    assert [a for a, _ in areas] == [a["area"] for a in c["areas"]]
    online = next(a for a in c["areas"] if a["area"] == "online")
    assert 10 <= online["points"] < 100 and 10 <= c["total"] < 100  # shown with 1 decimal
    assert dict(areas)["online"] == f"{online['points']:.1f} / 30"
    assert dict(areas)["transparency"] == "0 / 15"
    assert page.locator(f"{sel} .card-total").text_content() == f"{c['total']:.1f}"
    assert page.locator(f"{sel} .card-area.unmeasured").count() == 3


def _titles(page) -> list[list[object]]:
    """[text, data-fit, lines taken unclamped, a word wider than the box] per tile title."""
    return page.locator(".tile-title").evaluate_all(
        "ts => ts.map(t => { const s = t.style, old = [s.display, s.webkitLineClamp, s.maxHeight];"
        " s.display = 'block'; s.webkitLineClamp = 'none'; s.maxHeight = 'none';"
        " const lines = Math.round(t.getBoundingClientRect().height / parseFloat(getComputedStyle(t).lineHeight));"
        " const wide = t.scrollWidth > t.clientWidth + 1;"
        " [s.display, s.webkitLineClamp, s.maxHeight] = old;"
        " return [t.textContent, t.dataset.fit, lines, wide]; })")


@pytest.mark.parametrize("screen", ["main", "public"])
def test_no_tile_title_is_cut_at_1080p(browser, wall, tiles, screen):
    page, errors = _page(browser, wall, screen)
    page.wait_for_function("() => document.querySelectorAll('.tile-title[data-fit]').length > 0")
    # Lines each title takes unclamped, measured here (not by the page's own fitting),
    # and whether a word is wider than the title box.
    titles = _titles(page)
    cut = [t for t in titles if t[1] == "cut" or t[2] > 2 or t[3]]
    assert len(titles) == len(_screens()[screen]["tiles"]) and cut == []  # type: ignore[index]
    if screen == "main":
        [kpi] = [t for t in titles if t[0] == "Dossiers received online"]
        assert kpi[1] in ("fits", "shrunk")
        ARTIFACTS.mkdir(exist_ok=True)  # to check the KPI titles by eye
        page.screenshot(path=str(ARTIFACTS / "wall-main-titles-1920x1080.png"), animations="disabled")
    page.close()
    assert errors == []


def test_an_unknown_kind_renders_its_text(browser, wall, tiles):
    page, errors = _page(browser, wall, "compat")
    page.wait_for_function(NONE_WAITING, arg=0, timeout=10000)
    assert page.locator(f'[data-tile="{FUTURE}"] .text-body').text_content() == \
        "rendered as text by this client"
    page.close()
    assert errors == []


def test_scorecard_screenshots(browser, wall, tiles):
    """The 'public' screen at 1920x1080 and 3840x2160 (in artifacts/; checked by eye)."""
    ARTIFACTS.mkdir(exist_ok=True)
    for width, height in ((1920, 1080), (3840, 2160)):
        page, errors = _page(browser, wall, "public", width, height)
        page.wait_for_function(NONE_WAITING, arg=0, timeout=15000)
        sw, sh = page.evaluate("[document.documentElement.scrollWidth, document.documentElement.scrollHeight]")
        assert (sw, sh) == (width, height)
        # Ages ('12 s ago') now narrow the titles beside them: still none cut.
        page.wait_for_function("() => [...document.querySelectorAll('.tile-age')].every(a => a.textContent)",
                               timeout=15000)
        assert [t for t in _titles(page) if t[1] == "cut" or t[2] > 2 or t[3]] == []
        page.screenshot(path=str(ARTIFACTS / f"wall-scorecards-{width}x{height}.png"),
                        animations="disabled")
        page.close()
        assert errors == []
