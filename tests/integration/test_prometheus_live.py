"""A real Prometheus (Debian's /usr/bin/prometheus) scraping a worker, a sink and a gateway
of a test namespace, checked through its HTTP API.

The configuration is deploy/prometheus/prometheus.yml with the test's targets and 1 s
scrapes; the rules are deploy/prometheus/rules/ with every ``for:`` shortened to 2 s.
Every process is started here and stopped by its PID (the ``spawn`` fixture).

What it asserts, in order:
1. events published through the gateway (valid and invalid) and bad records written to
   ``events.raw``: the gateway's accepted/rejected counters, the validate stage's events
   in and dead letters, and the sink's rows, as Prometheus has them, equal what was
   sent; the recording rules give non-zero rates; the groups' lag comes back to 0;
   ``ioc status --once`` reads every line of the services' exposition and shows them up;
2. the sink stopped: IOCServiceDown fires for job ioc-sink (and for nothing else), and
   ``ioc status --once`` shows it DOWN (exit code 1);
3. the sink started against an unreachable database: IOCSinkPaused fires and the sink
   group's lag grows to the records published meanwhile;
4. the sink started again against the real database: that lag drains to 0 and every
   event is stored.
"""

from __future__ import annotations

import http.client
import json
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from ioc.config import Settings
from ioc.gateway import hash_key, new_key
from ioc.status import parse_exposition, scrape
from ioc.topics import topic_name
from tests.conftest import settings_env

pytestmark = [pytest.mark.kafka, pytest.mark.db]

ROOT = Path(__file__).resolve().parents[2]
PROM_DIR = ROOT / "deploy" / "prometheus"
JOBS = ("ioc-worker", "ioc-sink", "ioc-gateway")


def _prometheus() -> str:
    found = shutil.which("prometheus") or ("/usr/bin/prometheus"
                                           if Path("/usr/bin/prometheus").exists() else None)
    if found is None:
        pytest.fail("prometheus not found: install Debian's 'prometheus' package "
                    "(deploy/local/install-deps.sh does)")
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _write_config(dir: Path, namespace: str, ports: dict[str, int]) -> Path:
    """The project's scrape config with our targets, 1 s scrapes, and rules whose
    ``for:`` is 2 s."""
    cfg = yaml.safe_load((PROM_DIR / "prometheus.yml").read_text())
    cfg["global"] = {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"}
    jobs = [j for j in cfg["scrape_configs"] if j["job_name"] in ports]
    assert {j["job_name"] for j in jobs} == set(ports), "a job is missing from prometheus.yml"
    for j in jobs:
        j["static_configs"] = [{"targets": [f"127.0.0.1:{ports[j['job_name']]}"],
                                "labels": {"namespace": namespace}}]
    cfg["scrape_configs"] = jobs
    shutil.copy(PROM_DIR / "rules" / "recording.yml", dir / "recording.yml")
    alerts = yaml.safe_load((PROM_DIR / "rules" / "alerts.yml").read_text())
    for g in alerts["groups"]:
        for r in g["rules"]:
            if "for" in r:
                r["for"] = "2s"
    (dir / "alerts.yml").write_text(yaml.safe_dump(alerts))
    cfg["rule_files"] = [str(dir / "recording.yml"), str(dir / "alerts.yml")]
    path = dir / "prometheus.yml"
    path.write_text(yaml.safe_dump(cfg))
    return path


class PromAPI:
    """Prometheus' HTTP API on 127.0.0.1:port; every read has a 5 s timeout."""

    def __init__(self, port: int, procs: list[Any]) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.procs = procs

    def _get(self, path: str) -> Any:
        with urllib.request.urlopen(self.base + path, timeout=5) as r:
            body = json.loads(r.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, q: str) -> list[dict[str, Any]]:
        return list(self._get("/api/v1/query?" + urllib.parse.urlencode({"query": q}))["result"])

    def value(self, q: str) -> float | None:
        """The value of a query that gives one series (None: no series)."""
        res = self.query(q)
        assert len(res) <= 1, f"{q}: {len(res)} series: {res}"
        return float(res[0]["value"][1]) if res else None

    def firing(self, name: str) -> list[dict[str, str]]:
        return [a["labels"] for a in self._get("/api/v1/alerts")["alerts"]
                if a["labels"]["alertname"] == name and a["state"] == "firing"]

    def wait(self, what: str, probe: Callable[[], Any], timeout: float = 60) -> Any:
        """Poll ``probe`` every 0.5 s until it returns a true value; fail with the last
        value (and the services' logs if one died) after ``timeout`` s."""
        end, last = time.monotonic() + timeout, None
        while time.monotonic() < end:
            for p in self.procs:
                assert p.alive(), f"a process died while waiting for {what}:\n{p.output()[-3000:]}"
            try:
                last = probe()
            except (OSError, http.client.HTTPException) as exc:  # Prometheus starting
                last = repr(exc)
            else:
                if last:
                    return last
            time.sleep(0.5)
        pytest.fail(f"not within {timeout:.0f} s: {what} (last: {last!r})")


def _post(port: int, key: str, events: list[dict[str, Any]]) -> dict[str, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        conn.request("POST", "/v1/events", body=orjson.dumps(events), headers={
            "Content-Type": "application/json", "Authorization": f"Bearer {key}"})
        r = conn.getresponse()
        return {"status": r.status, **orjson.loads(r.read())}
    finally:
        conn.close()


def _events(run: str, start: int, n: int) -> list[dict[str, Any]]:
    now = time.time()
    return [{"id": f"{run}-{i}", "source": "prom", "type": "traffic.flow",
             "entity": f"loop-{i % 7}", "time": now - 2, "values": {"intensity": float(i % 40)}}
            for i in range(start, start + n)]


def _stored(s: Settings, run: str) -> int:
    from psycopg import sql

    from ioc.storage import connect

    with connect(s.database, autocommit=True) as c:
        row = c.execute(sql.SQL("select count(*) from {} where id like %s").format(
            sql.Identifier(s.db_schema, "events")), (f"{run}-%",)).fetchone()
    return int(row[0]) if row else 0


def _raw_garbage(s: Settings, n: int) -> None:
    """``n`` records on events.raw that are not JSON: the validate stage dead-letters each."""
    from kafka import KafkaProducer

    from ioc.kafka.clients import kafka_python_kwargs

    p = KafkaProducer(acks="all", **kafka_python_kwargs(s.kafka))
    try:
        for i in range(n):
            p.send(topic_name(s.namespace, "events.raw"), key=b"junk", value=b"{not json %d" % i)
        p.flush(timeout=20)
    finally:
        p.close(timeout=5)


def _status(s: Settings, ports: dict[str, int], *, expect_rc: int) -> str:
    """``ioc status --once`` on the test's metrics ports (wall, camera, feeds off)."""
    env = settings_env(s)
    env.update({f"IOC_METRICS__{job.removeprefix('ioc-').upper()}": str(p) for job, p in ports.items()})
    env.update({"IOC_METRICS__WALL": "null", "IOC_METRICS__CAMERA": "null",
                "IOC_METRICS__FEEDS": "null", "COLUMNS": "160"})
    r = subprocess.run([sys.executable, "-m", "ioc", "status", "--once", "--interval", "0.5",
                        "--timeout", "3"], env=env, capture_output=True, text=True, timeout=60,
                       cwd=ROOT)
    assert r.returncode == expect_rc, r.stdout + r.stderr
    assert "unreadable" not in r.stdout and "NOT OURS" not in r.stdout, r.stdout
    return r.stdout


@pytest.mark.timeout(300)
def test_prometheus_sees_the_services_move_and_fires_alerts(fresh_namespace, spawn, tmp_path):
    s = fresh_namespace("prom")
    ns = s.namespace
    key = new_key()
    gw_port, prom_port = _free_port(), _free_port()
    ports = {job: _free_port() for job in JOBS}
    gw_env = {"IOC_GATEWAY__PUBLISHERS": json.dumps(
        {"prom": {"key_sha256": hash_key(key), "sources": ["*"]}})}

    def sink(env: dict[str, str] | None = None) -> Any:
        return spawn(["sink", "--tables", "events", "--linger", "0.2",
                      "--metrics-port", str(ports["ioc-sink"])], settings=s, env=env, name="sink")

    worker = spawn(["worker", "--agents", "validate", "--metrics-port", str(ports["ioc-worker"])],
                   settings=s, name="worker")
    sk = sink()
    gw = spawn(["gateway", "--port", str(gw_port), "--metrics-port", str(ports["ioc-gateway"])],
               settings=s, env=gw_env, name="gateway")
    cfg = _write_config(tmp_path, ns, ports)
    prom = spawn([_prometheus(), f"--config.file={cfg}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                  f"--web.listen-address=127.0.0.1:{prom_port}", "--log.level=warn"],
                 name="prometheus")
    api = PromAPI(prom_port, [worker, sk, gw, prom])
    sel = f'namespace="{ns}"'
    api.wait("all three targets up", lambda: api.value(f"count(up{{{sel}}} == 1)") == 3, 120)

    # 1. events in, dead letters, rows, rates; the lag comes back to 0 -------------------
    run = secrets.token_hex(3)
    n_ok, n_bad, n_junk = 300, 20, 25
    for start in range(0, n_ok, 100):
        r = _post(gw_port, key, _events(run, start, 100))
        assert r["status"] == 200 and r["accepted"] == 100, r
    bad = _events(run + "x", 0, n_bad)
    for e in bad:
        e["values"] = {"intensity": "high"}  # not a number: rejected at the gateway
    r = _post(gw_port, key, bad)
    assert r["status"] == 422 and r["rejected"] == n_bad, r
    # Dead letters in two rounds: a labelled series appears with its first dead letter, and
    # rate() counts only the increase after a series' first sample.
    _raw_garbage(s, 10)
    api.wait("the first dead letters seen",
             lambda: api.value(f'sum(ioc_dead_letters_total{{{sel},stage="validate"}})') == 10)
    _raw_garbage(s, n_junk - 10)
    api.wait("every event stored", lambda: _stored(s, run) == n_ok, 90)

    def total(metric: str, extra: str = "") -> Callable[[], float | None]:
        return lambda: api.value(f"sum({metric}{{{sel}{extra}}})")

    api.wait("gateway accepted = sent", lambda: total("ioc_gateway_events_accepted_total")() == n_ok)
    assert total("ioc_gateway_events_rejected_total")() == n_bad
    api.wait("sink rows = stored", lambda: total("ioc_sink_rows_written_total",
                                                 ',table="events"')() == n_ok)
    api.wait("validate dead letters = junk records",
             lambda: total("ioc_dead_letters_total", ',stage="validate"')() == n_junk)
    events_in = total("ioc_stage_events_in_total", ',stage="validate"')()
    assert events_in is not None and events_in >= n_ok, events_in
    for rule in (f'namespace:ioc_gateway_events_accepted:rate1m{{{sel}}}',
                 f'namespace_stage:ioc_stage_events_in:rate1m{{{sel},stage="validate"}}',
                 f'namespace:ioc_dead_letters:rate5m{{{sel}}}',
                 f'namespace_table:ioc_sink_rows_written:rate1m{{{sel},table="events"}}'):
        api.wait(f"{rule} > 0", lambda rule=rule: (api.value(rule) or 0) > 0)
    sink_group = f"{ns}-sink-events"
    lag = f'namespace_group:ioc_consumer_lag:sum{{{sel},group="{sink_group}"}}'
    api.wait("the sink group's lag back to 0", lambda: api.value(lag) == 0)
    # the worker's stage group too, drained
    api.wait("the validate group's lag at 0", lambda: [
        q for q in api.query(f"namespace_group:ioc_consumer_lag:sum{{{sel}}} == 0")
        if q["metric"]["group"].endswith(".validate")], 30)
    assert api.firing("IOCServiceDown") == []
    for job, port in ports.items():  # what ioc status reads: the real exposition, every line
        e = parse_exposition(scrape(f"http://127.0.0.1:{port}/metrics", timeout=5))
        assert e.bad_lines == 0 and e.samples, job
    out = _status(s, ports, expect_rc=0)
    for svc in ("worker", "sink", "gateway"):
        assert re.search(rf"^. {svc} +. up ", out, re.M), out

    # 2. the sink stopped: IOCServiceDown for it, and for nothing else ----------------------
    assert sk.stop() == 0, sk.output()[-3000:]
    api.procs = [worker, gw, prom]
    down = api.wait("IOCServiceDown firing", lambda: api.firing("IOCServiceDown"), 30)
    assert [(a["job"], a["namespace"]) for a in down] == [("ioc-sink", ns)], down
    out = _status(s, ports, expect_rc=1)
    assert re.search(r"^. sink +. DOWN ", out, re.M) and "connection refused" in out, out

    # 3. a sink that cannot reach its database: paused, and its lag grows -----------------
    n_more = 150
    for start in range(n_ok, n_ok + n_more, 50):
        assert _post(gw_port, key, _events(run, start, 50))["accepted"] == 50
    api.wait("validated while the sink is away",
             lambda: (total("ioc_stage_events_in_total", ',stage="validate"')() or 0)
             >= events_in + n_more)
    closed = _free_port()
    sk = sink({"IOC_DATABASE__DSN": f"postgresql://ioc@127.0.0.1:{closed}/ioc?connect_timeout=2"})
    api.procs = [worker, sk, gw, prom]
    api.wait("IOCSinkPaused firing", lambda: api.firing("IOCSinkPaused"), 60)
    api.wait(f"the sink group's lag = {n_more}", lambda: api.value(lag) == n_more, 30)
    assert _stored(s, run) == n_ok

    # 4. the sink back on its database: the lag drains, every event stored ------------------
    assert sk.stop() == 0, sk.output()[-3000:]
    sk = sink()
    api.procs = [worker, sk, gw, prom]
    api.wait("every event stored after the outage", lambda: _stored(s, run) == n_ok + n_more, 90)
    api.wait("the sink group's lag drained to 0", lambda: api.value(lag) == 0, 30)
    api.wait("IOCServiceDown resolved", lambda: api.firing("IOCServiceDown") == [], 30)
