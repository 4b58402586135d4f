"""deploy/prometheus/ checked by Prometheus' own tool: the scrape config, the recording and
alert rules, and the rules' unit tests (deploy/prometheus/tests/*.yml).

promtool comes from Debian's ``prometheus`` package (deploy/local/install-deps.sh); a
machine without it fails these tests, it does not skip them.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PROM = ROOT / "deploy" / "prometheus"


@pytest.fixture(scope="module")
def promtool() -> str:
    tool = shutil.which("promtool") or ("/usr/bin/promtool" if Path("/usr/bin/promtool").exists() else None)
    if tool is None:
        pytest.fail("promtool not found: install Debian's 'prometheus' package "
                    "(deploy/local/install-deps.sh does)")
    return tool


def _run(argv: list[str]) -> str:
    r = subprocess.run(argv, cwd=PROM, capture_output=True, text=True, timeout=60)
    out = r.stdout + r.stderr
    assert r.returncode == 0, f"{' '.join(argv)} exited {r.returncode}:\n{out}"
    return out


def test_scrape_config_is_valid(promtool: str) -> None:
    out = _run([promtool, "check", "config", "prometheus.yml"])
    assert "SUCCESS" in out


def test_scrape_config_has_a_job_per_service_on_loopback() -> None:
    cfg = yaml.safe_load((PROM / "prometheus.yml").read_text())
    jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}
    ports = {"ioc-worker": 9401, "ioc-sink": 9402, "ioc-gateway": 9403, "ioc-wall": 9404,
             "ioc-camera": 9405, "ioc-feeds": 9406}
    for job, port in ports.items():
        targets = [t for sc in jobs[job]["static_configs"] for t in sc["targets"]]
        assert targets == [f"127.0.0.1:{port}"], (job, targets)
    assert cfg["global"]["scrape_interval"] == "5s"


def test_rules_are_valid(promtool: str) -> None:
    out = _run([promtool, "check", "rules", "rules/recording.yml", "rules/alerts.yml"])
    assert out.count("SUCCESS") == 2, out


def test_rule_unit_tests_pass(promtool: str) -> None:
    tests = sorted(str(p.relative_to(PROM)) for p in (PROM / "tests").glob("*.yml"))
    assert len(tests) >= 2, tests
    out = _run([promtool, "test", "rules", *tests])
    assert "FAILED" not in out, out
    tested = {t["alertname"] for f in tests for case in yaml.safe_load((PROM / f).read_text())["tests"]
              for t in case.get("alert_rule_test", [])}
    groups = yaml.safe_load((PROM / "rules" / "alerts.yml").read_text())["groups"]
    untested = {r["alert"] for g in groups for r in g["rules"]} - tested
    assert not untested, f"alert rules without a promtool test: {sorted(untested)}"


def test_dashboard_expressions_parse(promtool: str, tmp_path: Path) -> None:
    """Prometheus' own parser on every expression of the Grafana dashboard (Grafana's
    variables replaced by values), through a rules file of one recording rule each."""
    dash = json.loads((ROOT / "deploy" / "grafana" / "ioc-dashboard.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    assert exprs
    rules = [{"record": f"dashboard:expr_{i}:check",
              "expr": e.replace("$namespace", "ioc").replace("$__rate_interval", "1m")}
             for i, e in enumerate(exprs)]
    f = tmp_path / "dashboard-rules.yml"
    f.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    out = _run([promtool, "check", "rules", str(f)])
    assert f"SUCCESS: {len(exprs)} rules found" in out, out


def test_every_alert_says_what_to_do() -> None:
    groups = yaml.safe_load((PROM / "rules" / "alerts.yml").read_text())["groups"]
    alerts = [r for g in groups for r in g["rules"]]
    names = {r["alert"] for r in alerts}
    assert {"IOCServiceDown", "IOCConsumerLagGrowing", "IOCDeadLettersHigh", "IOCSinkPaused",
            "IOCCameraOffline", "IOCWallDrops"} <= names
    for r in alerts:
        assert r["labels"]["severity"] in {"critical", "warning"}, r["alert"]
        assert r["annotations"]["summary"].strip(), r["alert"]
        assert len(r["annotations"]["description"]) > 80, r["alert"]
    ops = (ROOT / "docs" / "operations.md").read_text()
    missing = [n for n in names if n not in ops]
    assert not missing, f"alerts not explained in docs/operations.md: {missing}"
