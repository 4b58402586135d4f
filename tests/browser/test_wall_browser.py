"""The wall page in a real Chromium (Debian's, driven by Playwright) against a real
`ioc wall serve` process fed through the real Kafka broker."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from ioc.config._wall import demo_screens
from ioc.tiles import encode_tile
from ioc.wall.auth import TokenSigner
from ioc.wall.demo import DemoTiles
from tests.conftest import ROOT, settings_env
from tests.integration.wall_fixtures import TileProducer

pytestmark = [pytest.mark.browser, pytest.mark.kafka, pytest.mark.timeout(120)]

SECRET = "browser-test-secret-0123456789"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
ARTIFACTS = ROOT / "artifacts"
KPI = "kpi:browser_probe"
# Functions, not expression strings: the page's CSP forbids eval.
VERSION_IS = "([id, v]) => document.querySelector(`[data-tile=\"${id}\"]`).dataset.version === v"
STALE_IS = "([sel, v]) => document.querySelector(sel).dataset.stale === v"
STALE = "sensor:browser-feed:level"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class WallProcess:
    """`ioc wall serve` as a subprocess on a fixed port, restartable, stopped by PID."""

    def __init__(self, settings, config: Path, log: Path) -> None:
        self.port = _free_port()
        self.env = {**settings_env(settings), "IOC_CONFIG": str(config)}
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        fh = open(self.log, "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen([sys.executable, "-m", "ioc", "wall", "serve", "--port",
                                      str(self.port)], env=self.env, stdout=fh,
                                     stderr=subprocess.STDOUT, cwd=ROOT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=1).status == 200:
                    return
            except OSError:
                time.sleep(0.1)
        raise AssertionError(f"wall server not healthy in 30 s:\n{self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture(scope="module")
def wall_proc(settings, tmp_path_factory):
    screens = {k: v.model_dump(mode="json") for k, v in demo_screens().items()}
    screens["probe"] = {"title": "Browser probe", "columns": 2, "rows": 1, "tiles": [
        {"tile": KPI, "col": 1, "row": 1, "title": "Probe KPI", "expected_interval_s": 60},
        {"tile": STALE, "col": 2, "row": 1, "title": "Feed that stops", "expected_interval_s": 2},
    ]}
    d = tmp_path_factory.mktemp("wall")
    config = d / "wall.yaml"
    config.write_text(yaml.safe_dump({"wall": {"secret": SECRET, "heartbeat_s": 1,
                                               "screens": screens}}))
    wp = WallProcess(settings, config, d / "serve.log")
    wp.start()
    yield wp
    wp.stop()


@pytest.fixture(scope="module")
def producer(settings):
    p = TileProducer(settings)
    yield p
    p.close()


def _page(browser, wall_proc, screen: str, width: int = 1920, height: int = 1080):
    page = browser.new_page(viewport={"width": width, "height": height})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    token = TokenSigner(SECRET.encode()).issue([screen], 3600)
    page.goto(f"http://127.0.0.1:{wall_proc.port}/?screen={screen}#token={token}")
    page.wait_for_function("() => document.body.dataset.conn === 'live'", timeout=15000)
    return page, errors


def _feed_demo(producer, now: float) -> None:
    demo = DemoTiles(demo_screens()["main"])
    for t in demo.data_tiles(now) + [demo.camera(p, now) for p in demo.placements("camera")]:
        producer.p.send(producer.topic, key=t.id.encode(), value=encode_tile(t))
    producer.p.flush()


def test_screen_loads_fits_without_scrollbars_and_is_screenshotted(browser, wall_proc, producer):
    _feed_demo(producer, time.time())
    for width, height in ((1920, 1080), (3840, 2160)):
        page, errors = _page(browser, wall_proc, "main", width, height)
        page.wait_for_function(
            "() => document.querySelectorAll('.tile.waiting').length === 0 && "
            "[...document.querySelectorAll('.cam-img')].every(i => i.complete && i.naturalWidth > 0)",
            timeout=15000)
        tiles = page.locator(".tile").count()
        assert tiles == len(demo_screens()["main"].tiles)
        sw, sh = page.evaluate("[document.documentElement.scrollWidth, document.documentElement.scrollHeight]")
        assert (sw, sh) == (width, height), f"expected no scrolling at {width}x{height}, page is {sw}x{sh}"
        # Every tile lies fully inside the viewport.
        boxes = page.evaluate("[...document.querySelectorAll('.tile')].map(t => t.getBoundingClientRect())"
                              ".map(r => [r.left, r.top, r.right, r.bottom])")
        assert all(x0 >= 0 and y0 >= 0 and x1 <= width and y1 <= height for x0, y0, x1, y1 in boxes)
        assert page.locator('[data-tile="camera:north-gate"] .badge').inner_text().lower() == "online"
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"wall-main-{width}x{height}.png"))
        assert errors == []
        page.close()


def test_tile_updates_within_one_second_of_reaching_kafka(browser, wall_proc, producer):
    page, errors = _page(browser, wall_proc, "probe")
    base = int(time.time() * 1000)
    worst = 0.0
    for i in range(1, 6):
        version = base + i
        producer.send(KPI, version, {"label": "probe", "value": i * 11, "unit": "u", "trend": [1, 2, i]})
        acked = time.monotonic()  # flush returned: the broker has it
        page.wait_for_function(VERSION_IS, arg=[KPI, str(version)], timeout=5000, polling="raf")
        worst = max(worst, time.monotonic() - acked)
        assert page.locator(f'[data-tile="{KPI}"] .kpi-value').inner_text() == str(i * 11)
    assert worst < 1.0, f"expected every update on screen within 1 s of reaching Kafka, worst {worst:.3f} s"
    assert errors == []
    page.close()


def test_tile_turns_stale_when_its_feed_stops(browser, wall_proc, producer):
    page, _ = _page(browser, wall_proc, "probe")
    sel = f'[data-tile="{STALE}"]'
    for _ in range(3):  # a live feed: fresh
        producer.send(STALE, int(time.time() * 1000), {"value": 1.5, "unit": "m",
                                                       "series": [[time.time() - 5, 1], [time.time(), 1.5]]},
                      kind="series")
        time.sleep(0.5)
    page.wait_for_function(STALE_IS, arg=[sel, "false"], timeout=3000)
    stopped = time.monotonic()
    page.wait_for_function(STALE_IS, arg=[sel, "true"], timeout=6000)
    assert time.monotonic() - stopped >= 1.0  # not stale while it was fresh
    assert "STALE" in page.locator(f"{sel} .tile-age").inner_text()
    assert page.locator(sel).evaluate("e => getComputedStyle(e).filter").startswith("grayscale")
    page.close()


def test_page_reconnects_by_itself_after_server_restart(browser, wall_proc, producer):
    page, _ = _page(browser, wall_proc, "probe")
    wall_proc.stop()
    page.wait_for_function("() => document.body.dataset.conn !== 'live'", timeout=10000)
    assert page.locator("#banner").is_visible()
    assert "Connection lost" in page.locator("#banner").inner_text()
    wall_proc.start()
    page.wait_for_function("() => document.body.dataset.conn === 'live'", timeout=20000)
    assert page.locator("#banner").is_hidden()
    version = int(time.time() * 1000) + 10_000
    producer.send(KPI, version, {"label": "probe", "value": 999, "unit": "u", "trend": []})
    page.wait_for_function(VERSION_IS, arg=[KPI, str(version)], timeout=5000)
    stats = page.evaluate("window.__wall.conn.stats")
    assert stats["connects"] >= 2, stats
    # The page sent what it held, and the restarted server answered with only the changes.
    health = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{wall_proc.port}/healthz").read())
    assert health["counters"].get("snapshots_resume", 0) >= 1, health["counters"]
    page.close()


def test_no_object_url_leak_over_many_camera_updates(browser, wall_proc, producer):
    page, _ = _page(browser, wall_proc, "main")
    page.evaluate("""() => {
        window.__urls = 0;
        const c = URL.createObjectURL, r = URL.revokeObjectURL;
        URL.createObjectURL = (b) => { window.__urls++; return c(b); };
        URL.revokeObjectURL = (u) => { window.__urls--; return r(u); };
    }""")
    demo = DemoTiles(demo_screens()["main"])
    cam = demo.placements("camera")[0]
    for _ in range(30):
        t = demo.camera(cam, time.time())
        producer.p.send(producer.topic, key=t.id.encode(), value=encode_tile(t))
        time.sleep(0.05)
    producer.p.flush()
    time.sleep(1.5)
    live = page.evaluate("window.__urls")
    # Counted from the patch on: the snapshot's images of the screen's other camera tiles
    # may still be arriving then, so the bound is per camera tile on the screen (a leak
    # over these 30 updates would leave ~30).
    cameras = len(demo.placements("camera"))
    assert live <= 2 * cameras, (f"expected at most 2 live object URLs per camera tile "
                                 f"({cameras} on the screen), got {live}")
    page.close()

