"""Settings of the Faust workers: windows, lateness, KPIs, alert rules and tile production."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from ._base import Section

__all__ = ["AggregateSettings", "KpiSpec", "RuleSpec", "StreamsSettings", "TileSettings"]


class AggregateSettings(Section):
    """Event-time tumbling windows per entity and metric."""

    window_sizes_s: list[int] = Field(
        default_factory=lambda: [10, 60, 3600], min_length=1,
        description="tumbling window sizes in seconds; windows are stamped with their start")
    allowed_lateness_s: float = Field(
        30.0, ge=0, le=86400,
        description="an event older than the entity's newest event time minus this is late: "
                    "counted and dead-lettered (reason 'late'); windows close this long after their end")
    update_sizes_s: list[int] | None = Field(
        None, description="window sizes whose open windows emit 'updated' rollups after each batch "
                          "(default: the smallest size); every size emits 'closed'")
    update_interval_s: float = Field(
        0.1, ge=0, le=60, description="an open window's 'updated' rollup is sent at most this often "
                                      "(latest wins); 'closed' rollups are never held back")
    max_updates_per_s: float = Field(
        2000.0, gt=0, le=1_000_000,
        description="at most this many 'updated' rollups a second in total per worker; when more "
                    "windows are busy their updates come less often (latest wins), so rollups, "
                    "tiles and upserts stay bounded however many sensors report")
    batch_max: int = Field(5000, ge=1, le=100_000,
                           description="most events a stage takes per batch (also bounds its outbox)")
    batch_within_s: float = Field(
        0.01, gt=0, le=10,
        description="how long a stage waits for records when none are buffered (it takes what "
                    "is there at once otherwise); also the finest step of its timers")

    @field_validator("window_sizes_s")
    @classmethod
    def _positive_sorted(cls, v: list[int]) -> list[int]:
        if any(s <= 0 for s in v):
            raise ValueError(f"window sizes must be positive seconds, got {v}")
        return sorted(set(v))

    @model_validator(mode="after")
    def _updates_are_windows(self) -> AggregateSettings:
        extra = set(self.update_sizes_s or ()) - set(self.window_sizes_s)
        if extra:
            raise ValueError(f"update_sizes_s {sorted(extra)} not in window_sizes_s {self.window_sizes_s}")
        return self

    @property
    def emit_update_sizes(self) -> frozenset[int]:
        return frozenset(self.update_sizes_s or self.window_sizes_s[:1])


_PERIODS: tuple[Literal["day", "month", "year"], ...] = ("day", "month", "year")


class KpiSpec(Section):
    """A ratio KPI: events matching ``numerator`` over all events of ``event_type``, per group."""

    id: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")
    label: str
    event_type: str = Field(description="events counted in the denominator, e.g. 'egov.dossier'")
    attribute: str = Field(description="attribute deciding the numerator, e.g. 'channel'")
    equals: list[str] = Field(min_length=1, description="attribute values counted in the numerator")
    count_value: str = Field("count", description="values key added per event (missing = 1)")
    unit: str = "%"
    scale: float = Field(100.0, gt=0, description="ratio multiplied by this (100 for percent)")
    decimals: int = Field(1, ge=0, le=6)
    periods: list[Literal["day", "month", "year"]] = Field(
        default_factory=lambda: list(_PERIODS), min_length=1)
    tile_period: Literal["day", "month", "year"] = Field(
        "month", description="the period whose latest value the KPI tile shows")
    overall_group: str | None = Field(
        "all", description="group summing every entity (province-wide); None for none")

    @model_validator(mode="after")
    def _tile_period_counted(self) -> KpiSpec:
        if self.tile_period not in self.periods:
            raise ValueError(f"tile_period {self.tile_period!r} is not in periods {self.periods}")
        return self


def _egov_kpis() -> list[KpiSpec]:
    return [
        KpiSpec(id="dossiers_online", label="Dossiers received online", event_type="egov.dossier",
                attribute="channel", equals=["online"]),
        KpiSpec(id="results_postal", label="Results returned by public postal service",
                event_type="egov.result", attribute="return_channel", equals=["postal"]),
        KpiSpec(id="documents_signed", label="Outgoing documents digitally signed",
                event_type="egov.document", attribute="signed", equals=["true", "True", "1"]),
    ]


class RuleSpec(Section):
    """An alert rule evaluated per entity in event time (absence: in wall-clock time)."""

    id: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")
    kind: Literal["threshold", "absence", "rate"]
    metric: str | None = Field(None, description="values key (threshold, rate); absence: any event")
    entity_prefix: str = Field("", description="only entities whose id starts with this")
    event_type: str | None = Field(None, description="only events of this type")
    op: Literal[">", ">=", "<", "<="] = ">"
    value: float = Field(0.0, description="threshold (threshold: the metric; rate: units per rate_per_s)")
    for_s: float = Field(0.0, ge=0, description="threshold held this long (event time); absence: silence this long")
    rate_per_s: float = Field(60.0, gt=0, description="rate unit: change per this many seconds")
    severity: Literal["info", "warning", "critical"] = "warning"
    message: str = Field("", description="text for the wall; {entity} {metric} {value} are filled in")
    scope: str = Field("all", pattern=r"^[a-z0-9_\-]{1,40}$", description="alert list tile alerts:<scope>")

    @model_validator(mode="after")
    def _metric_needed(self) -> RuleSpec:
        if self.kind != "absence" and not self.metric:
            raise ValueError(f"rule {self.id!r} of kind {self.kind!r} needs a metric")
        if self.kind == "absence" and self.for_s <= 0:
            raise ValueError(f"absence rule {self.id!r} needs for_s > 0")
        return self


def _demo_rules() -> list[RuleSpec]:
    return [
        RuleSpec(id="pm25_high", kind="threshold", metric="pm25", op=">", value=55, for_s=600,
                 severity="critical", message="PM2.5 {value:.0f} > 55 for 10 min at {entity}"),
        RuleSpec(id="sensor_silent", kind="absence", entity_prefix="air-", for_s=300,
                 severity="warning", message="no data from {entity} for 5 min"),
        RuleSpec(id="speed_drop", kind="rate", metric="speed", op="<", value=-20, rate_per_s=60,
                 severity="info", message="speed falling fast at {entity} ({value:.0f} km/h/min)"),
    ]


class TileSettings(Section):
    """Tile production: rate limit per tile and series length."""

    min_interval_s: float = Field(
        0.1, ge=0, le=60,
        description="a tile id is produced at most this often (latest wins); the total is "
                    "bounded by max_per_s (docs/performance/latency.md: 0.25 s gave p99 381 ms "
                    "publish->tile at 2,000 ev/s, 0.1 s 232-240 ms)")
    max_pending: int = Field(10_000, ge=1, le=1_000_000, description="tiles waiting; beyond it new ids are dropped and counted")
    max_per_s: float = Field(
        1000.0, gt=0, le=1_000_000,
        description="at most this many tiles a second in total per worker; when more tiles are "
                    "busy each is sent less often (latest wins, oldest waiting first)")
    series_points: int = Field(60, ge=2, le=10_000, description="points in a sensor tile's sparkline")
    trend_points: int = Field(12, ge=1, le=1000, description="past periods in a KPI tile's trend")
    alert_items: int = Field(50, ge=1, le=1000, description="items in an alert-list tile")
    flush_every_s: float = Field(0.05, gt=0, le=10, description="how often due tiles are sent")
    views_cleared_retention_s: float = Field(
        3600.0, gt=0, le=30 * 86400,
        description="a cleared alert leaves the global views (alerts:all, alerts:<scope>) this "
                    "long after it cleared, in event time: against the newest raised or cleared "
                    "time of the alerts the views have seen (a replay keeps its alerts as long)")
    views_max_facts: int = Field(
        100_000, ge=100, le=10_000_000,
        description="most KPI values and alerts the views stage holds (memory and its state "
                    "changelog); beyond it the least recently updated leave first, counted")


class StreamsSettings(Section):
    """The Faust workers."""

    app_id: str | None = Field(
        None, description="Faust app id and consumer group of the Faust agents (default "
                          "'<namespace>-streams'); batch stages use '<app id>.<stage names>'")
    web_enabled: bool = Field(False, description="Faust's own web server (127.0.0.1 only)")
    web_port: int = Field(6066, ge=1, le=65535)
    data_dir: Path | None = Field(None, description="Faust's data folder; default in the state dir")
    state_dir: Path | None = Field(
        None, description="where the batch stages keep local snapshots of their state tables "
                          "(a file per table partition with the changelog offset it includes: "
                          "a restart reads only the changelog's tail); default "
                          "'<data_dir>/snapshots'")
    log_level: str = Field("WARNING", pattern=r"^(DEBUG|INFO|WARNING|ERROR)$")
    session_timeout_s: float = Field(
        10.0, ge=6, le=300,
        description="consumer group session timeout: how soon a killed worker's partitions move")
    producer_linger_s: float = Field(
        0.005, ge=0, le=1, description="the workers' producer waits this long to batch records "
                                       "(0 sends one request per record: far more CPU per record)")
    commit_every_s: float = Field(
        1.0, gt=0, le=60,
        description="how often a batch stage writes its changed states to their changelogs and "
                    "commits its input offsets (outputs go out with every batch): one changelog "
                    "record per changed key per commit; a crash replays at most this much input")
    snapshot_every_s: float = Field(
        30.0, gt=0, le=86400,
        description="a batch stage writes the local snapshots of its state tables (in "
                    "state_dir) after a checkpoint at most this often, for the partitions "
                    "written since the last ones (and always when partitions are revoked "
                    "or it stops); a restart reads the changelogs only from the snapshots' "
                    "offsets, so a shorter interval means shorter restores and more disk "
                    "writes")
    aggregate: AggregateSettings = Field(default_factory=AggregateSettings)
    timezone: str = Field("UTC", description="IANA zone of KPI calendar periods (day/month/year)")
    kpis: list[KpiSpec] = Field(default_factory=_egov_kpis)
    rules: list[RuleSpec] = Field(default_factory=_demo_rules)
    absence_check_every_s: float = Field(5.0, gt=0, le=3600, description="wall-clock tick of absence rules")
    tiles: TileSettings = Field(default_factory=TileSettings)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown IANA time zone {v!r}") from exc
        return v

    @model_validator(mode="after")
    def _unique_ids(self) -> StreamsSettings:
        for what, ids in (("kpis", [k.id for k in self.kpis]), ("rules", [r.id for r in self.rules])):
            dup = sorted({i for i in ids if ids.count(i) > 1})
            if dup:
                raise ValueError(f"{what}: duplicate ids {dup}")
        return self
