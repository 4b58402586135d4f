"""``ioc status``: one terminal screen of every service, read from their ``/metrics``.

The pure part turns exposition text into figures: ``parse_exposition(bytes | str) ->
Exposition`` never raises (a line it cannot read is counted in ``bad_lines`` and
skipped), and ``service_row(service, now, before, error)`` turns two scrapes of one
service into a ``ServiceRow`` (rates are the counter increase between the two scrapes
divided by the seconds between them; a counter that went down, a restarted service,
gives no rate rather than a negative one). ``render(snapshot)`` builds the rich table.

The I/O part (``scrape``, ``StatusScreen``) reads each endpoint with a timeout and a
size bound; a service that does not answer, or answers something else than metrics,
shows as down with the reason, and the screen goes on.
"""

from __future__ import annotations

import http.client
import math
import re
import sys
import time
import urllib.request
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from .config import Settings

__all__ = [
    "SERVICES",
    "Exposition",
    "ServiceRow",
    "Snapshot",
    "StatusScreen",
    "parse_exposition",
    "render",
    "run_status",
    "scrape",
    "service_row",
]

# The services of `settings.metrics`, in screen order.
SERVICES: tuple[str, ...] = ("worker", "sink", "gateway", "wall", "camera", "feeds")

OFF = "metrics switched off in settings"
MAX_BODY = 8 * 2**20  # an exposition larger than this is not read further (bad_lines += 1)

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*(,|\})')
_UNESCAPE = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}

Labels = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Exposition:
    """The samples of one scrape: ``samples[name][labels] = value``."""

    samples: Mapping[str, Mapping[Labels, float]] = field(default_factory=dict)
    bad_lines: int = 0

    def series(self, name: str) -> Mapping[Labels, float]:
        return self.samples.get(name, {})

    def total(self, name: str, **match: str) -> float | None:
        """Sum of the finite samples of ``name`` whose labels include ``match``; None when
        there is none."""
        vals = [v for lab, v in self.series(name).items()
                if math.isfinite(v) and all((k, w) in lab for k, w in match.items())]
        return math.fsum(vals) if vals else None

    def by_label(self, name: str, label: str) -> dict[str, float]:
        """Finite samples of ``name`` summed per value of ``label`` (missing label: "")."""
        out: dict[str, float] = {}
        for lab, v in self.series(name).items():
            if math.isfinite(v):
                key = dict(lab).get(label, "")
                out[key] = out.get(key, 0.0) + v
        return out

    def maximum(self, name: str) -> float | None:
        vals = [v for v in self.series(name).values() if math.isfinite(v)]
        return max(vals) if vals else None


def _labels(text: str) -> tuple[Labels, str] | None:
    """Parse ``{a="x",b="y"}`` at the start of ``text``: (labels, rest) or None."""
    if not text.startswith("{"):
        return (), text
    pos, out = 1, []
    if text[pos:].lstrip().startswith("}"):
        return (), text[text.index("}") + 1:]
    while True:
        m = _LABEL.match(text, pos)
        if m is None:
            return None
        value = re.sub(r"\\[\\\"n]", lambda e: _UNESCAPE[e.group(0)], m.group(2))
        out.append((m.group(1), value))
        pos = m.end()
        if m.group(3) == "}":
            return tuple(sorted(out)), text[pos:]
        if text[pos:].lstrip().startswith("}"):  # trailing comma
            return tuple(sorted(out)), text[text.index("}", pos) + 1:]


def _value(word: str) -> float | None:
    low = word.lower()
    if low in ("nan", "+inf", "-inf", "inf"):
        return float(low)
    try:
        return float(word)
    except ValueError:
        return None


def parse_exposition(data: bytes | str) -> Exposition:
    """Read Prometheus text exposition (format 0.0.4, also OpenMetrics' sample lines).

    Never raises: undecodable bytes are replaced, a line that is not a comment, blank
    or ``name{labels} value [timestamp]`` is counted in ``bad_lines``. A repeated series
    keeps its last value.
    """
    text = data.decode("utf-8", errors="replace") if isinstance(data, bytes | bytearray) else data
    samples: dict[str, dict[Labels, float]] = {}
    bad = 0
    for raw in text.split("\n"):  # the format's only line end (splitlines() knows 8 more)
        line = raw.strip(" \t\r")
        if not line or line.startswith("#"):
            continue
        m = _NAME.match(line)
        if m is None:
            bad += 1
            continue
        parsed = _labels(line[m.end():])
        if parsed is None:
            bad += 1
            continue
        labels, rest = parsed
        words = rest.split(" ")
        words = [w for w in words if w]
        value = _value(words[0]) if 1 <= len(words) <= 3 else None
        if value is None:
            bad += 1
            continue
        samples.setdefault(m.group(0), {})[labels] = value
    return Exposition(samples, bad)


# -- rows ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServiceRow:
    """What the screen shows of one service. A figure is None when unknown."""

    service: str
    url: str
    up: bool
    error: str = ""
    rate_in: float | None = None       # events (or frames) in per second
    rate_out: float | None = None      # records, rows, deliveries or events out per second
    lag: float | None = None           # records behind, summed over its groups
    dead_letters: float | None = None  # dead letters per second
    drops: float | None = None         # drops per second (wall updates, camera frames)
    oldest_tile_s: float | None = None
    detail: str = ""
    groups: Mapping[str, float] = field(default_factory=dict)  # consumer group -> lag
    stages: Mapping[str, tuple[float | None, float | None]] = field(default_factory=dict)


def _rate(name: str, now: Exposition, before: Exposition | None, dt: float,
          **match: str) -> float | None:
    if before is None or dt <= 0:
        return None
    a, b = before.total(name, **match), now.total(name, **match)
    if a is None or b is None or b < a:
        return None
    return (b - a) / dt


def _n(v: float | None) -> str:
    return "-" if v is None else f"{v:,.0f}"


def service_row(service: str, url: str, now: Exposition | None, before: Exposition | None = None,
                dt: float = 0.0, error: str = "", *, namespace: str = "") -> ServiceRow:
    """The row of ``service`` from its latest scrape ``now`` (None: it did not answer, for
    ``error``) and the one ``dt`` seconds before it (rates need both). With ``namespace``,
    a service whose ``ioc_build_info`` names another service or namespace says so in its
    detail (the port belongs to another deployment)."""
    if now is None:
        return ServiceRow(service, url, up=False, error=error or "no answer")

    def rate(name: str, **match: str) -> float | None:
        return _rate(name, now, before, dt, **match)

    lag_groups = now.by_label("ioc_consumer_lag", "group")
    lag = math.fsum(lag_groups.values()) if lag_groups else None
    dead = rate("ioc_dead_letters_total")
    notes: list[str] = []
    for lab in now.series("ioc_build_info"):
        info = dict(lab)
        if info.get("service", service) != service or (
                namespace and info.get("namespace", namespace) != namespace):
            notes.append(f"NOT OURS: serves {info.get('service', '?')} of namespace "
                         f"{info.get('namespace', '?')}")
    if now.bad_lines:
        notes.append(f"{now.bad_lines} unreadable line(s)")
    kw: dict[str, object] = {}
    if service == "worker":
        stages = {}
        for st in sorted(now.by_label("ioc_stage_events_in_total", "stage")):
            stages[st] = (rate("ioc_stage_events_in_total", stage=st),
                          rate("ioc_stage_records_out_total", stage=st))
        # in: the system's intake (the validate stage), not the sum over stages, which
        # counts one event once per stage it passes; out: records produced by all stages
        kw = {"rate_in": rate("ioc_stage_events_in_total", stage="validate") if "validate"
              in stages else rate("ioc_stage_events_in_total"),
              "rate_out": rate("ioc_stage_records_out_total"), "stages": stages}
        if (cf := now.total("ioc_commit_failures_total")):
            notes.append(f"{_n(cf)} commit failures")
        if (late := now.total("ioc_late_events_total")):
            notes.append(f"{_n(late)} late")
    elif service == "sink":
        kw = {"rate_out": rate("ioc_sink_rows_written_total")}
        paused = now.by_label("ioc_sink_paused", "table")
        if any(paused.values()):
            tables = sorted(t for t, v in paused.items() if v)
            notes.append(f"PAUSED (database down?): {', '.join(tables[:6])}"
                         + (", ..." if len(tables) > 6 else ""))
        elif paused:
            notes.append("writing")
        down = now.by_label("ioc_sink_database_down_seconds_total", "table")
        if down and max(down.values()) > 0:  # per table: the longest, not their sum
            notes.append(f"database down {max(down.values()):,.0f} s since start")
    elif service == "gateway":
        kw = {"rate_in": rate("ioc_gateway_events_accepted_total")}
        rej = rate("ioc_gateway_events_rejected_total")
        if rej:
            notes.append(f"{rej:,.1f} rejected/s")
        if (conns := now.total("ioc_gateway_open_connections")) is not None:
            notes.append(f"{_n(conns)} connections")
        if (una := now.total("ioc_gateway_broker_unavailable_total")):
            notes.append(f"{_n(una)} broker-unavailable answers")
    elif service == "wall":
        kw = {"rate_out": rate("ioc_wall_deliveries_total"),
              "drops": rate("ioc_wall_drops_total"),
              "oldest_tile_s": now.maximum("ioc_wall_oldest_tile_age_seconds")}
        if (clients := now.total("ioc_wall_clients")) is not None:
            notes.append(f"{_n(clients)} clients")
        if (tiles := now.total("ioc_wall_tiles")) is not None:
            notes.append(f"{_n(tiles)} tiles")
    elif service == "camera":
        dropped, sampled = (rate("ioc_camera_frames_dropped_total"),
                            rate("ioc_camera_frames_dropped_total", reason="sampled_out"))
        kw = {"rate_in": rate("ioc_camera_frames_captured_total"),
              "rate_out": rate("ioc_camera_frames_published_total"),
              # sampling down to the camera's fps is not a loss
              "drops": None if dropped is None else max(0.0, dropped - (sampled or 0.0))}
        ups = now.by_label("ioc_camera_up", "camera")
        if ups:
            off = sorted(c for c, v in ups.items() if v < 1)
            notes.append(f"{len(ups) - len(off)}/{len(ups)} cameras up"
                         + (f" (offline: {', '.join(off[:4])}{', ...' if len(off) > 4 else ''})"
                            if off else ""))
    elif service == "feeds":
        kw = {"rate_out": rate("ioc_feed_events_published_total")}
        if (err := now.total("ioc_feed_publish_errors_total")):
            notes.append(f"{_n(err)} publish errors")
    return ServiceRow(service, url, up=True, lag=lag, dead_letters=dead, groups=lag_groups,
                      detail="; ".join(notes), **kw)  # type: ignore[arg-type]


# -- screen --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Snapshot:
    """One frame: a row per service, when it was taken, and the refresh interval."""

    rows: tuple[ServiceRow, ...]
    taken_at: float
    namespace: str = ""


def _fmt_rate(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:,.1f}" if v < 100 else f"{v:,.0f}"


def _fmt_age(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:,.0f} s" if v < 120 else f"{v / 60:,.0f} min"


def render(snap: Snapshot) -> RenderableType:
    """The rich renderable of one frame: a table of figures (a row per service), the
    notes (why a service is down, paused sink, offline cameras, ...), the stages and the
    consumer groups' lag."""
    when = time.strftime("%H:%M:%S", time.localtime(snap.taken_at))
    t = Table(title=f"ioc status  namespace {snap.namespace or '?'}  {when}",
              title_justify="left", expand=False)
    for col in ("service", "state", "in/s", "out/s", "lag", "dead/s", "drops/s", "oldest tile"):
        t.add_column(col, justify="left" if col in ("service", "state") else "right",
                     no_wrap=True)
    notes = Text()
    groups: list[tuple[str, str, float]] = []
    stages: list[tuple[str, float | None, float | None]] = []
    for r in snap.rows:
        if not r.up:
            off = r.error == OFF
            t.add_row(r.service, Text("off" if off else "DOWN", style="dim" if off else "bold red"),
                      *([""] * 6))
            notes.append(f"{r.service}: ", style="bold")
            notes.append(f"{r.error}{'' if off else f' ({r.url})'}\n",
                         style="dim" if off else "red")
            continue
        dead = Text(_fmt_rate(r.dead_letters), style="yellow" if r.dead_letters else "")
        drops = Text(_fmt_rate(r.drops), style="yellow" if r.drops else "")
        t.add_row(r.service, Text("up", style="green"), _fmt_rate(r.rate_in), _fmt_rate(r.rate_out),
                  _n(r.lag), dead, drops, _fmt_age(r.oldest_tile_s))
        if r.detail:
            notes.append(f"{r.service}: ", style="bold")
            notes.append(f"{r.detail}\n")
        groups += [(r.service, g, v) for g, v in sorted(r.groups.items())]
        stages += [(s, i, o) for s, (i, o) in r.stages.items()]
    parts: list[RenderableType] = [t]
    if notes:
        notes.rstrip()
        parts.append(notes)
    if stages:
        st = Table(title="stages", title_justify="left")
        for col in ("stage", "events in", "records out"):
            st.add_column(col, justify="left" if col == "stage" else "right")
        for s, i, o in stages:
            st.add_row(s, _fmt_rate(i), _fmt_rate(o))
        parts.append(st)
    if groups:
        gt = Table(title="consumer lag", title_justify="left")
        for col in ("service", "group", "lag"):
            gt.add_column(col, justify="right" if col == "lag" else "left")
        for svc, g, v in groups:
            gt.add_row(svc, g, _n(v))
        parts.append(gt)
    return Group(*parts)


# -- I/O -----------------------------------------------------------------------------------


def scrape(url: str, *, timeout: float) -> bytes:
    """GET ``url``: the whole answer within ``timeout`` seconds, at most ``MAX_BODY`` bytes.

    Raises:
        OSError: refused, timed out (also a server that sends slower than the deadline),
            not HTTP 200, or not HTTP at all (http.client's errors are wrapped).
    """
    deadline = time.monotonic() + timeout
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            if resp.status != 200:
                raise OSError(f"HTTP {resp.status}")
            chunks, size = [], 0
            while size < MAX_BODY:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no whole answer within {timeout:g} s")
                chunk = resp.read1(min(65536, MAX_BODY - size))
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
            return b"".join(chunks)
    except http.client.HTTPException as exc:
        raise OSError(f"not an HTTP answer: {type(exc).__name__}") from exc


class StatusScreen:
    """Scrapes every configured service and keeps the previous scrape for rates."""

    def __init__(self, settings: Settings, *, timeout: float = 2.0,
                 services: Iterable[str] = SERVICES) -> None:
        m = settings.metrics
        self.namespace = settings.namespace
        self.timeout = timeout
        self.urls: dict[str, str] = {}
        for svc in services:
            port = getattr(m, svc)
            if m.enabled and port:
                self.urls[svc] = f"http://{m.host}:{port}/metrics"
        self.off = [s for s in services if s not in self.urls]
        self._before: dict[str, tuple[float, Exposition]] = {}

    def _read(self, url: str) -> tuple[float, Exposition | None, str]:
        t = time.monotonic()
        try:
            return t, parse_exposition(scrape(url, timeout=self.timeout)), ""
        except (OSError, ValueError) as exc:  # refused, timed out, bad URL, HTTP error
            return t, None, _reason(exc)

    def snapshot(self) -> Snapshot:
        """Scrape every service at once (each within ``timeout``); one row per service."""
        rows = []
        with ThreadPoolExecutor(max_workers=max(1, len(self.urls))) as pool:
            answers = list(pool.map(self._read, self.urls.values()))
        for (svc, url), (t, now, error) in zip(self.urls.items(), answers, strict=True):
            prev = self._before.get(svc)
            rows.append(service_row(svc, url, now, prev[1] if prev else None,
                                    t - prev[0] if prev else 0.0, error,
                                    namespace=self.namespace))
            if now is not None:
                self._before[svc] = (t, now)
            else:
                self._before.pop(svc, None)
        for svc in self.off:
            rows.append(ServiceRow(svc, "", up=False, error=OFF))
        return Snapshot(tuple(rows), time.time(), self.namespace)


def _reason(exc: BaseException) -> str:
    """A short reason: "connection refused", "timed out", "HTTP 404", ..."""
    inner = getattr(exc, "reason", None)  # urllib.error.URLError wraps the socket error
    if isinstance(inner, BaseException):
        exc = inner
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__


def run_status(settings: Settings, *, once: bool, interval: float, timeout: float,
               console: Console | None = None) -> int:
    """Show the screen until Ctrl-C (0), or with ``once`` print one frame (rates over
    ``interval`` seconds) and return 1 when a service whose metrics are on is down, else 0."""
    screen = StatusScreen(settings, timeout=timeout)
    console = console or Console()
    if once:
        screen.snapshot()
        time.sleep(interval)
        snap = screen.snapshot()
        console.print(render(snap))
        return 1 if any(not r.up and r.error != OFF for r in snap.rows) else 0
    try:
        with Live(render(screen.snapshot()), console=console, auto_refresh=False,
                  transient=False) as live:
            while True:
                time.sleep(interval)
                live.update(render(screen.snapshot()), refresh=True)
    except KeyboardInterrupt:
        print(file=sys.stderr)
    return 0
