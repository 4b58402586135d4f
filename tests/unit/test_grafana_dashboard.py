"""deploy/grafana/ioc-dashboard.json: its data source is templated, it has a row per
service, and every PromQL expression in it (and in deploy/prometheus/rules/) names only
metrics the services export (the contract of issue #15, docs/metrics.md), the recording
rules' names, or Prometheus' own series (up, ALERTS)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "ioc-dashboard.json"
RULES = ROOT / "deploy" / "prometheus" / "rules"

# The metrics contract of issue #15 (docs/metrics.md): what the services export.
CONTRACT = {
    # worker stages and agents (and the sink, for lag and dead letters)
    "ioc_stage_records_in_total", "ioc_stage_events_in_total", "ioc_stage_records_out_total",
    "ioc_stage_batches_total", "ioc_stage_busy_seconds_total", "ioc_dead_letters_total",
    "ioc_late_events_total", "ioc_held_updates_total", "ioc_commit_failures_total",
    "ioc_state_entries", "ioc_state_restore_seconds", "ioc_consumer_lag",
    # sink
    "ioc_sink_rows_written_total", "ioc_sink_copy_fallbacks_total", "ioc_sink_batch_seconds",
    "ioc_sink_database_down_seconds_total", "ioc_sink_paused",
    # gateway
    "ioc_gateway_requests_total", "ioc_gateway_request_seconds",
    "ioc_gateway_events_accepted_total", "ioc_gateway_events_rejected_total",
    "ioc_gateway_broker_unavailable_total", "ioc_gateway_open_connections",
    "ioc_gateway_timeouts_total", "ioc_gateway_connections_refused_total",
    # wall
    "ioc_wall_clients", "ioc_wall_deliveries_total", "ioc_wall_drops_total",
    "ioc_wall_closes_total", "ioc_wall_fanout_seconds", "ioc_wall_snapshot_bytes",
    "ioc_wall_oldest_tile_age_seconds", "ioc_wall_tiles",
    # cameras
    "ioc_camera_frames_captured_total", "ioc_camera_frames_dropped_total",
    "ioc_camera_frames_analysed_total", "ioc_camera_frames_skipped_total",
    "ioc_camera_analysis_seconds", "ioc_camera_up",
    # feeds
    "ioc_feed_events_published_total", "ioc_feed_publish_errors_total",
    # every service
    "ioc_build_info",
    # prometheus-client's default collectors (the ones used here)
    "process_cpu_seconds_total", "process_resident_memory_bytes",
}
HISTOGRAMS = {"ioc_sink_batch_seconds", "ioc_gateway_request_seconds", "ioc_wall_fanout_seconds",
              "ioc_wall_snapshot_bytes", "ioc_camera_analysis_seconds"}
PROMETHEUS_OWN = {"up", "ALERTS"}

_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
             "unless", "offset", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, keywords, label names and
    values, durations and Grafana variables left out)."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)  # string literals
    e = re.sub(r"\{[^{}]*\}", " ", e)  # label matchers
    e = re.sub(r"\[[^\[\]]*\]", " ", e)  # ranges and subqueries
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", " ", e)
    e = re.sub(r"\$\{?\w+\}?", " ", e)  # Grafana variables
    names = set()
    for m in re.finditer(r"(?<![\w.:])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?", e):
        word, call = m.group(1), m.group(2)
        if call or word.lower() in _KEYWORDS:
            continue
        names.add(word)
    return names


def test_metric_names_are_parsed_out_of_expressions() -> None:
    assert metric_names('histogram_quantile(0.99, sum by (route, le) (rate('
                        'ioc_gateway_request_seconds_bucket{namespace="$namespace",a=~"x|y"}'
                        '[$__rate_interval])))') == {"ioc_gateway_request_seconds_bucket"}
    assert metric_names('a:b:c{x="1"} > 100 and deriv(a:b:c[2m]) > 0 or on (g) up == 0') == {
        "a:b:c", "up"}
    assert metric_names('sum without (instance) (foo_total) / ignoring(x) group_left bar') == {
        "foo_total", "bar"}
    assert metric_names('label_values(up{job=~"ioc-.*"}, namespace)') == {"up", "namespace"}


def _exported(name: str) -> bool:
    if name in CONTRACT or name in PROMETHEUS_OWN:
        return True
    base = re.sub(r"_(bucket|sum|count)$", "", name)
    return base in HISTOGRAMS


def _recording_rules() -> set[str]:
    groups = yaml.safe_load((RULES / "recording.yml").read_text())["groups"]
    return {r["record"] for g in groups for r in g["rules"]}


def _dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def dashboard_exprs(d: dict[str, Any]) -> list[str]:
    out = []
    for p in d["panels"]:
        for sub in [p, *p.get("panels", [])]:
            out += [t["expr"] for t in sub.get("targets", [])]
    return out


def test_dashboard_datasource_is_templated_and_rows_per_service() -> None:
    d = _dashboard()
    assert [i["name"] for i in d["__inputs"]] == ["DS_PROMETHEUS"]
    for p in d["panels"]:
        if p["type"] != "row":
            assert p["datasource"]["uid"] == "${DS_PROMETHEUS}", p["title"]
            for t in p["targets"]:
                assert t["datasource"]["uid"] == "${DS_PROMETHEUS}", p["title"]
    rows = [p["title"] for p in d["panels"] if p["type"] == "row"]
    for service in ("Worker", "Sink", "Gateway", "Wall", "Cameras", "Feeds"):
        assert any(r.startswith(service) for r in rows), (service, rows)
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))
    assert d["templating"]["list"][0]["name"] == "namespace"


def test_every_dashboard_expression_names_exported_metrics() -> None:
    d = _dashboard()
    exprs = dashboard_exprs(d)
    assert len(exprs) > 30
    recorded = _recording_rules()
    unknown = {}
    for e in [*exprs, d["templating"]["list"][0]["definition"]]:
        bad = {n for n in metric_names(e) if not _exported(n) and n not in recorded}
        bad.discard("namespace")  # the label of label_values(), not a metric
        if bad:
            unknown[e] = bad
    assert not unknown, unknown
    for e in exprs:  # every panel filters on the namespace variable
        assert '$namespace' in e, e


@pytest.mark.parametrize("file", ["recording.yml", "alerts.yml"])
def test_every_rule_expression_names_exported_metrics(file: str) -> None:
    recorded = _recording_rules()
    groups = yaml.safe_load((RULES / file).read_text())["groups"]
    unknown = {r["expr"]: bad for g in groups for r in g["rules"]
               if (bad := {n for n in metric_names(r["expr"])
                           if not _exported(n) and n not in recorded})}
    assert not unknown, unknown



def _real_families() -> set[str]:
    """Family names (``# TYPE`` lines) that ioc.metrics' collectors export, built on
    empty service state: what the services' /metrics declare before any traffic."""
    from prometheus_client import generate_latest

    from ioc.config import load_settings
    from ioc.gateway._app import _Gateway
    from ioc.metrics import ConsumerLag, service_registry
    from ioc.metrics.cameras import AnalysisCollector, CaptureCollector
    from ioc.metrics.feeds import FeedCollector, FeedCounts
    from ioc.metrics.gateway import GatewayCollector
    from ioc.metrics.sink import SinkCollector
    from ioc.metrics.stages import StagesCollector
    from ioc.metrics.wall import WallCollector
    from ioc.wall.auth import TokenSigner
    from ioc.wall.server import WallServer

    s = load_settings(overrides={"namespace": "dash"})

    class NoStages:  # a worker app whose stages have not started
        pass

    reg = service_registry("worker", s.namespace)
    for c in (StagesCollector(NoStages()), ConsumerLag(s, list), SinkCollector([]),
              GatewayCollector(_Gateway(s)),
              WallCollector(WallServer(s, kafka=False, signer=TokenSigner(b"k" * 32))),
              CaptureCollector([]), AnalysisCollector(NoStages(), []), FeedCollector(FeedCounts())):
        reg.register(c)
    return set(re.findall(r"^# TYPE (\S+) ", generate_latest(reg).decode(), re.M))


def test_the_real_collectors_export_what_the_dashboard_and_rules_name() -> None:
    real = _real_families()
    assert not CONTRACT - real, f"in the contract, not exported: {sorted(CONTRACT - real)}"
    named = set(metric_names(_dashboard()["templating"]["list"][0]["definition"])) - {"namespace"}
    for e in dashboard_exprs(_dashboard()):
        named |= metric_names(e)
    for file in ("recording.yml", "alerts.yml"):
        for g in yaml.safe_load((RULES / file).read_text())["groups"]:
            for r in g["rules"]:
                named |= metric_names(r["expr"])
    named -= _recording_rules() | PROMETHEUS_OWN
    named = {re.sub(r"_(bucket|sum|count)$", "", n) if re.sub(r"_(bucket|sum|count)$", "", n)
             in HISTOGRAMS else n for n in named}
    assert named, "no metric names found"
    assert not named - real, f"named but not exported: {sorted(named - real)}"
