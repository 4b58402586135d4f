"""Settings of the websocket video-wall server and its screen layouts.

A *screen* is one browser page on the wall: a grid of ``columns`` x ``rows`` cells with
tiles placed on it (1-based ``col``/``row`` plus spans). Each placement names the tile id
it shows (see :mod:`ioc.tiles`), a title and the interval at which its data is expected
to change; data older than that is shown as stale.

The defaults give one demo screen, ``main``, so ``ioc wall serve`` works out of the box
(``ioc wall demo-tiles`` feeds it). ``deploy/wall.example.yaml`` shows a full layout.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Literal

import orjson
from pydantic import Field, SecretStr, field_validator, model_validator

from ._base import Section
from ._infra import default_state_dir

__all__ = ["GridLayout", "PopupSettings", "PresetRule", "ScreenLayout", "TilePlacement",
           "WallSettings", "demo_screens"]

_SCREEN_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")
_NAME = r"^[a-z][a-z0-9_-]{0,39}$"
_GRID_FIELDS = frozenset({"title", "columns", "rows", "tiles"})


class TilePlacement(Section):
    """One tile on a screen's grid."""

    tile: str = Field(
        pattern=r"^[a-z]+:[A-Za-z0-9_.:@/%-]{1,120}$",  # / and %: scorecard drill paths
        description="tile id shown here, e.g. camera:north or kpi:traffic_flow",
    )
    col: int = Field(ge=1, le=48, description="first grid column (1-based)")
    row: int = Field(ge=1, le=48, description="first grid row (1-based)")
    col_span: int = Field(1, ge=1, le=48, description="columns covered")
    row_span: int = Field(1, ge=1, le=48, description="rows covered")
    title: str = Field("", max_length=80, description="caption; empty: the payload's label")
    expected_interval_s: float | None = Field(
        60.0, gt=0, le=7 * 86400,
        description="data older than this is shown stale; null: never stale (clocks)",
    )
    view: Literal["auto", "camera", "kpi", "series", "alerts", "text", "clock"] = Field(
        "auto", description="renderer; auto: from the tile's kind (clock tiles need no data)"
    )


class GridLayout(Section):
    """A grid and the tiles placed on it: a screen's default layout or one of its presets."""

    title: str = Field("", max_length=80, description="shown in the page's header bar")
    columns: int = Field(4, ge=1, le=24, description="grid columns")
    rows: int = Field(4, ge=1, le=24, description="grid rows")
    tiles: list[TilePlacement] = Field(default_factory=list, max_length=96)

    @model_validator(mode="after")
    def _fits_and_no_overlap(self) -> GridLayout:
        taken: dict[tuple[int, int], str] = {}
        seen: set[str] = set()
        for i, t in enumerate(self.tiles):
            if t.tile in seen:
                raise ValueError(f"tiles.{i}: tile {t.tile!r} is placed twice on this screen")
            seen.add(t.tile)
            last_col, last_row = t.col + t.col_span - 1, t.row + t.row_span - 1
            if last_col > self.columns or last_row > self.rows:
                raise ValueError(
                    f"tiles.{i} ({t.tile}): expected to fit a {self.columns}x{self.rows} grid, "
                    f"got columns {t.col}..{last_col}, rows {t.row}..{last_row}"
                )
            for c in range(t.col, last_col + 1):
                for r in range(t.row, last_row + 1):
                    if (c, r) in taken:
                        raise ValueError(
                            f"tiles.{i} ({t.tile}) overlaps {taken[(c, r)]} at column {c}, row {r}"
                        )
                    taken[(c, r)] = t.tile
        return self

    def tile_ids(self) -> frozenset[str]:
        """The ids of the tiles placed on this screen."""
        return frozenset(t.tile for t in self.tiles)

    def grid_dump(self) -> dict[str, object]:
        """The grid fields only (title, columns, rows, tiles): what clients are sent."""
        return self.model_dump(mode="json", include=set(_GRID_FIELDS))

    def layout_hash(self) -> str:
        """A short digest of the grid; a client holding another hash gets a full snapshot.

        Only the grid fields count, so adding presets or rules to a screen does not
        change the hash of its default layout (protocol-1 pages resume as before).
        """
        return hashlib.sha256(orjson.dumps(self.grid_dump(),
                                           option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


_SEVERITY = Literal["info", "warning", "critical"]


class PresetRule(Section):
    """Switch the screen to ``preset`` while an alert matching every given condition is raised.

    An alert matches when its rule id equals ``rule`` (unset: any), its entity starts
    with ``entity_prefix`` and its severity is at least ``severity``. The first rule
    (in list order) with a raised, not closed, matching alert wins; when none matches
    the screen goes back to its default layout (unless an operator chose a preset).
    """

    id: str = Field(pattern=_NAME, description="rule name, shown as by: rule:<id>")
    preset: str = Field(pattern=_NAME, description="a preset of this screen")
    rule: str | None = Field(None, max_length=64,
                             description="alert rule id (the alert's kind); unset: any")
    entity_prefix: str = Field("", max_length=120, description="entity id starts with this")
    severity: _SEVERITY = Field("info", description="lowest severity that matches")


class PopupSettings(Section):
    """Pop-ups: an alert's camera or sensor tile shown enlarged until acknowledged or cleared."""

    enabled: bool = Field(False, description="show pop-ups on this screen")
    severity: _SEVERITY = Field("critical", description="lowest severity that pops up")
    entity_prefix: str = Field("", max_length=120, description="only alerts of these entities")
    max_open: int = Field(1, ge=1, le=8, description="pop-ups open at once (newest first)")


class ScreenLayout(GridLayout):
    """A screen: its default grid, named preset layouts, preset rules and pop-ups."""

    presets: dict[str, GridLayout] = Field(
        default_factory=dict, max_length=32,
        description="preset name -> layout; switched to by rule or by an operator",
    )
    preset_rules: list[PresetRule] = Field(default_factory=list, max_length=64,
                                           description="alerts that switch to a preset")
    popups: PopupSettings = Field(default_factory=PopupSettings)

    @model_validator(mode="after")
    def _presets_known(self) -> ScreenLayout:
        bad = [k for k in self.presets if not _SCREEN_NAME.match(k) or k == "default"]
        if bad:
            raise ValueError(f"presets: names must match {_SCREEN_NAME.pattern} and not be "
                             f"'default' (the default layout), got {bad}")
        for i, r in enumerate(self.preset_rules):
            if r.preset not in self.presets:
                raise ValueError(f"preset_rules.{i}.preset: expected one of "
                                 f"{sorted(self.presets)}, got {r.preset!r}")
        return self

    def preset_layout(self, preset: str | None) -> GridLayout:
        """The grid shown for ``preset`` (None or unknown: the default grid)."""
        return self.presets.get(preset, self) if preset is not None else self

    def all_tile_ids(self) -> frozenset[str]:
        """The tile ids of the default layout and of every preset."""
        ids = set(self.tile_ids())
        for p in self.presets.values():
            ids |= p.tile_ids()
        return frozenset(ids)


def _p(tile: str, col: int, row: int, title: str, every: float | None = 60.0, *,
       cs: int = 1, rs: int = 1, view: str = "auto") -> TilePlacement:
    return TilePlacement(tile=tile, col=col, row=row, col_span=cs, row_span=rs, title=title,
                         expected_interval_s=every, view=view)  # type: ignore[arg-type]


def demo_screens() -> dict[str, ScreenLayout]:
    """The built-in demo screen ``main`` (6 x 4 cells) fed by ``ioc wall demo-tiles``."""
    main = ScreenLayout(
        title="City operations - overview",
        columns=6,
        rows=4,
        tiles=[
            _p("camera:north-gate", 1, 1, "North gate", 5),
            _p("camera:river-bridge", 2, 1, "River bridge", 5),
            _p("camera:market-square", 1, 2, "Market square", 5),
            _p("camera:central-station", 2, 2, "Central station", 5),
            _p("kpi:traffic_flow", 3, 1, "Traffic flow", 10),
            _p("kpi:air_quality", 4, 1, "Air quality (PM2.5)", 10),
            _p("kpi:dossiers_received", 3, 2, "Dossiers received today", 10),
            _p("kpi:noise", 4, 2, "Noise, city centre", 10),
            _p("alerts:city", 5, 1, "Active alerts", 10, cs=2, rs=2),
            _p("sensor:river-01:level", 1, 3, "River level, bridge gauge", 10, cs=2),
            _p("sensor:ring-road:flow", 3, 3, "Ring road traffic", 10, cs=2),
            _p("kpi:documents_signed", 5, 3, "Documents signed today", 10),
            _p("kpi:postal_returns", 6, 3, "Postal results returned", 10),
            _p("sensor:park-03:pm25", 1, 4, "PM2.5, park station", 10, cs=2),
            _p("text:notice", 3, 4, "Notice", 3600, cs=2),
            _p("kpi:response_time", 5, 4, "Median response time", 10),
            _p("clock:local", 6, 4, "Local time", None, view="clock"),
        ],
    )
    return {"main": main}


class WallSettings(Section):
    """The websocket video-wall server: binding, limits, security and screen layouts."""

    host: str = Field("127.0.0.1", description="bind address; beyond loopback only on purpose")
    port: int = Field(8765, ge=0, le=65535, description="0 picks a free port (tests)")
    ws_path: str = Field("/ws", pattern=r"^/[A-Za-z0-9_/-]*$", description="websocket endpoint")
    secret: SecretStr | None = Field(
        None, min_length=16,
        description="HMAC key for screen tokens; unset: read or create secret_file (never logged)",
    )
    secret_file: Path = Field(
        default_factory=lambda: default_state_dir() / "secrets" / "wall_secret",
        description="where the generated token key lives (mode 600) when secret is unset",
    )
    token_ttl_s: float = Field(12 * 3600, gt=0, le=366 * 86400,
                               description="default lifetime of issued tokens")
    allowed_origins: list[str] = Field(
        default_factory=list,
        description="Origin values accepted besides the server's own (same-origin pages)",
    )
    allow_missing_origin: bool = Field(
        True, description="accept clients that send no Origin (non-browsers; still need a token)"
    )
    auth_timeout_s: float = Field(5.0, gt=0, le=120, description="time allowed for the hello")
    max_message_bytes: int = Field(64 * 1024, ge=1024, le=16 * 1024 * 1024,
                                   description="largest message accepted from a client")
    max_clients: int = Field(1000, ge=1, le=100_000, description="connections beyond are refused")
    heartbeat_s: float = Field(10.0, gt=0, le=300, description="ping interval, both ways")
    heartbeat_timeout_s: float = Field(30.0, gt=0, le=900,
                                       description="silence from a client before it is closed")
    stall_timeout_s: float = Field(
        15.0, gt=0, le=600,
        description="a client whose socket accepts nothing for this long is disconnected",
    )
    stall_close_grace_s: float = Field(
        1.0, gt=0, le=60,
        description="after stall_timeout_s, time given to the 4029 close frame before the "
                    "socket is aborted",
    )
    log_every_s: float = Field(
        30.0, ge=0, le=3600,
        description="refused/closed clients and skipped tiles: one log line per kind per this "
                    "many seconds (every one is counted in /healthz)",
    )
    write_buffer_bytes: int = Field(
        256 * 1024, ge=4096, le=64 * 1024 * 1024,
        description="per-client send buffer high-water mark before latest-wins takes over",
    )
    socket_send_buffer_bytes: int = Field(
        128 * 1024, ge=0, le=64 * 1024 * 1024,
        description="kernel send buffer per client socket (0: autotune, up to MBs per client); "
                    "small keeps memory bounded and lets latest-wins start early",
    )
    compression: Literal["off", "deflate"] = Field(
        "off", description="permessage-deflate costs 2x server CPU per delivery; off for tiles"
    )
    action_rate_per_s: float = Field(
        5.0, gt=0, le=1000,
        description="operator actions and preset switches per second per connection (token bucket)",
    )
    action_burst: int = Field(20, ge=1, le=10_000, description="token bucket size")
    action_flood_close: int = Field(
        100, ge=1, le=100_000,
        description="rate-limited requests in a row before the connection is closed with 1008",
    )
    action_timeout_s: float = Field(
        5.0, gt=0, le=60, description="time allowed to store an action in Kafka before "
                                      "the operator gets an error",
    )
    max_alert_states: int = Field(
        10_000, ge=10, le=1_000_000,
        description="alert workflow states held; beyond, the oldest closed (else oldest) is "
                    "forgotten (counted)",
    )
    screens: dict[str, ScreenLayout] = Field(
        default_factory=demo_screens, description="screen name -> layout"
    )

    @field_validator("screens")
    @classmethod
    def _screen_names(cls, v: dict[str, ScreenLayout]) -> dict[str, ScreenLayout]:
        bad = [k for k in v if not _SCREEN_NAME.match(k)]
        if bad:
            raise ValueError(f"screen names must match {_SCREEN_NAME.pattern}, got {bad}")
        if not v:
            raise ValueError("expected at least one screen, got none")
        return v
