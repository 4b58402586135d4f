"""``ioc status``: exposition text -> rows (pure), and the screen against loopback servers
that answer contract-shaped metrics, nothing, or too slowly."""

from __future__ import annotations

import http.server
import io
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from ioc.cli import main
from ioc.config import load_settings
from ioc.status import (
    SERVICES,
    ServiceRow,
    Snapshot,
    StatusScreen,
    parse_exposition,
    render,
    service_row,
)
from tests.fixtures.contract_metrics import exposition

URL = "http://127.0.0.1:1/metrics"


def _text(snap: Snapshot) -> str:
    con = Console(file=io.StringIO(), width=120, color_system=None)
    con.print(render(snap))
    return con.file.getvalue()  # type: ignore[attr-defined]


# -- parsing -------------------------------------------------------------------------------


def test_parse_reads_labels_values_and_skips_comments() -> None:
    e = parse_exposition(b'# HELP x y\n# TYPE x counter\nx_total{a="1",b="q\\"uote"} 3.5\n'
                         b'x_total{a="2"} 1e3 1700000000000\nup 1\nbad line here\n'
                         b'y{a="1",} +Inf\nz{} NaN\n')
    assert e.series("x_total") == {(("a", "1"), ("b", 'q"uote')): 3.5, (("a", "2"),): 1000.0}
    assert e.total("x_total") == 1003.5
    assert e.total("x_total", a="2") == 1000.0
    assert e.total("up") == 1.0
    assert e.total("y") is None  # infinite values are not summed
    assert e.bad_lines == 1
    assert e.total("missing") is None


def test_rates_from_two_scrapes_of_contract_metrics() -> None:
    before, now = parse_exposition(exposition("worker", 10)), parse_exposition(exposition("worker", 14))
    r = service_row("worker", URL, now, before, dt=2.0)
    assert r.up
    assert r.rate_in == pytest.approx(100 * 4 / 2)  # the validate stage's intake
    assert r.rate_out == pytest.approx((50 + 5) * 4 / 2)
    assert r.dead_letters == pytest.approx(3 * 4 / 2)
    assert r.lag == 42
    assert dict(r.groups) == {"ioc.validate": 42}
    assert r.stages["validate"] == (pytest.approx(200), pytest.approx(100))
    assert "late" in r.detail


def test_first_scrape_and_counter_reset_give_no_rate() -> None:
    assert service_row("worker", URL, parse_exposition(exposition("worker", 5))).rate_in is None
    reset = service_row("worker", URL, parse_exposition(exposition("worker", 1)),
                        parse_exposition(exposition("worker", 9)), dt=1.0)
    assert reset.rate_in is None and reset.lag == 42


def test_rows_of_every_service() -> None:
    rows = {s: service_row(s, URL, parse_exposition(exposition(s, 3, paused=True,
                                                                cameras_down=("highway",))),
                           parse_exposition(exposition(s, 1)), dt=1.0)
            for s in SERVICES}
    assert rows["sink"].rate_out == 100 and rows["sink"].lag == 7
    assert "PAUSED (database down?): events;" in rows["sink"].detail
    assert "database down 30 s" in rows["sink"].detail  # the longest table, not the sum
    assert rows["gateway"].rate_in == 40 and "3 connections" in rows["gateway"].detail
    assert rows["wall"].rate_out == 16 and rows["wall"].drops == 2
    assert rows["wall"].oldest_tile_s == 75 and "2 clients" in rows["wall"].detail
    assert rows["camera"].rate_in == 60 and rows["camera"].rate_out == 16
    assert rows["camera"].drops == 4  # queue_full only: sampled_out is not a loss
    assert "1/2 cameras up (offline: highway)" in rows["camera"].detail
    assert rows["feeds"].rate_out == 12
    text = _text(Snapshot(tuple(rows.values()), time.time(), "ioc"))
    assert "PAUSED" in text and "offline: highway" in text and "75 s" in text


def test_a_port_of_another_deployment_is_named() -> None:
    e = parse_exposition(exposition("worker", 1))  # ioc_build_info: worker of namespace ioc
    assert "NOT OURS" not in service_row("worker", URL, e, namespace="ioc").detail
    assert "NOT OURS: serves worker of namespace ioc" in service_row(
        "worker", URL, e, namespace="other").detail
    assert "NOT OURS: serves worker" in service_row("sink", URL, e, namespace="ioc").detail


def test_a_down_service_renders_as_down() -> None:
    row = service_row("sink", URL, None, error="connection refused")
    assert not row.up
    text = _text(Snapshot((row,), time.time(), "ioc"))
    assert "DOWN" in text and "connection refused" in text


_names = st.from_regex(r"[a-zA-Z_:][a-zA-Z0-9_:]{0,20}", fullmatch=True)
_lnames = st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]{0,10}", fullmatch=True)
_values = st.floats(allow_nan=False, allow_infinity=False, width=64)


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_names, st.dictionaries(_lnames, st.text(max_size=12), max_size=3),
                          _values), max_size=8))
def test_what_is_written_is_read_back(samples: list[tuple[str, dict[str, str], float]]) -> None:
    want: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    lines = []
    for name, labels, value in samples:
        lab = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
        lines.append(f"{name}{{{lab}}} {value!r}" if labels else f"{name} {value!r}")
        want.setdefault(name, {})[tuple(sorted(labels.items()))] = value
    e = parse_exposition("\n".join(lines).encode())
    assert e.bad_lines == 0
    assert {k: dict(v) for k, v in e.samples.items()} == want


def _check_never_crashes(data: bytes | str) -> None:
    e = parse_exposition(data)
    assert e.bad_lines >= 0
    rows = []
    for s in SERVICES:
        r = service_row(s, URL, e, e, dt=1.0, namespace="ioc")
        assert r.up
        for v in (r.rate_in, r.rate_out, r.dead_letters, r.drops):
            assert v is None or v >= 0  # a counter that went down gives no rate
        rows.append(r)
    _text(Snapshot(tuple(rows), time.time(), "ioc"))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_never_crash(data: bytes) -> None:
    _check_never_crashes(data)


_line = st.one_of(
    st.text(max_size=60),
    st.builds(lambda n, lab, v: f"{n}{{{lab}}} {v}", st.sampled_from(
        ["ioc_consumer_lag", "ioc_stage_events_in_total", "ioc_camera_up", "ioc_sink_paused",
         "ioc_wall_oldest_tile_age_seconds", "ioc_wall_drops_total", "ioc_build_info",
         "ioc_camera_frames_dropped_total", "ioc_sink_database_down_seconds_total", "x"]),
        st.text(alphabet='a="\\,} {\n', max_size=20),
        st.sampled_from(["1", "-1", "NaN", "+Inf", "-Inf", "1e308", "1e309", "", "x", "1 2 3 4"])),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_line, max_size=12))
def test_arbitrary_exposition_text_never_crashes(lines: list[str]) -> None:
    _check_never_crashes("\n".join(lines))


# -- the screen, against loopback servers ----------------------------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    body: bytes = b""
    delay: float = 0.0

    def do_GET(self) -> None:
        time.sleep(self.delay)
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def servers() -> Iterator[dict[str, int]]:
    """worker and wall answer contract metrics; the sink answers only after 3 s; the
    gateway's port has nothing listening; the others are switched off."""
    made = []
    ports = {}
    for svc, delay in (("worker", 0.0), ("wall", 0.0), ("sink", 3.0)):
        handler = type(f"H{svc}", (_Handler,), {"body": exposition(svc, 5), "delay": delay})
        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        srv.daemon_threads = True
        srv.handle_error = lambda *a: None  # type: ignore[method-assign]  # the client left
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        made.append(srv)
        ports[svc] = srv.server_address[1]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        ports["gateway"] = s.getsockname()[1]  # closed again: nothing listens there
    yield ports
    for srv in made:
        srv.shutdown()
        srv.server_close()


def test_screen_shows_up_down_and_slow_services(servers: dict[str, int]) -> None:
    s = load_settings(overrides={"metrics": {**servers, "camera": None, "feeds": None}})
    screen = StatusScreen(s, timeout=0.5)
    rows = {r.service: r for r in screen.snapshot().rows}
    assert rows["worker"].up and rows["worker"].lag == 42
    assert rows["wall"].up and rows["wall"].oldest_tile_s == 75
    assert not rows["sink"].up and rows["sink"].error == "timed out"
    assert not rows["gateway"].up and rows["gateway"].error == "connection refused"
    assert rows["camera"] == ServiceRow("camera", "", up=False,
                                        error="metrics switched off in settings")


def test_status_once_prints_one_frame(servers: dict[str, int], monkeypatch: pytest.MonkeyPatch) -> None:
    for svc, port in servers.items():
        monkeypatch.setenv(f"IOC_METRICS__{svc.upper()}", str(port))
    monkeypatch.setenv("IOC_METRICS__CAMERA", "null")
    monkeypatch.setenv("IOC_METRICS__FEEDS", "null")
    monkeypatch.delenv("IOC_CONFIG", raising=False)
    res = CliRunner().invoke(main, ["status", "--once", "--interval", "0.1", "--timeout", "0.3"])
    assert res.exit_code == 1, res.output  # the sink and the gateway are down
    assert "worker" in res.output and "DOWN" in res.output and "off" in res.output
    assert "timed out" in res.output and "connection refused" in res.output
