"""`ioc runs`: the registry in the live schema, one run per namespace, and compare."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import orjson
from kafka import KafkaProducer

from ioc.kafka import kafka_python_kwargs
from ioc.storage import connect
from tests.integration.test_replay_kafka import ioc


def seed(s, rollups: dict[str, dict], detections: list[tuple[str, float, int, dict]]) -> None:
    p = KafkaProducer(acks="all", **kafka_python_kwargs(s.kafka))
    for k, v in rollups.items():
        p.send(f"{s.namespace}.rollups", key=k.encode(), value=orjson.dumps(v))
    p.flush()
    p.close()
    with connect(s.database, autocommit=True) as conn, conn.cursor() as cur:
        cur.executemany(
            f'insert into "{s.namespace}".detections (time, camera, seq, motion, people, result) '
            "values (%s, %s, %s, %s, %s, %s::jsonb)",
            [(datetime.fromtimestamp(1_700_000_000 + i, UTC), cam, i, motion, people, json.dumps(res))
             for i, (cam, motion, people, res) in enumerate(detections)])


def test_runs_register_refuse_compare_and_finish(settings, fresh_namespace, tmp_path):
    a, b = fresh_namespace("ra"), fresh_namespace("rb")
    other = tmp_path / "other.yaml"
    other.write_text("streams:\n  aggregate:\n    allowed_lateness_s: 5\n")

    r = ioc(["runs", "start", "--namespace", a.namespace, "--config", str(other), "--no-worker",
             "--label", "lateness 5"], settings)
    assert f"in namespace {a.namespace}" in r.stdout
    assert "setting streams.aggregate.allowed_lateness_s: 30.0 -> 5.0" in r.stdout, r.stdout
    run_id = r.stdout.split()[1]

    r = ioc(["runs", "start", "--namespace", a.namespace, "--no-worker"], settings, ok=False)
    assert r.returncode == 1 and f"already holds run {run_id}" in r.stderr, r.stderr
    r = ioc(["runs", "start", "--namespace", settings.namespace, "--no-worker"], settings, ok=False)
    assert r.returncode == 1 and "is the live one" in r.stderr, r.stderr
    r = ioc(["runs", "list"], settings)
    assert run_id in r.stdout and "lateness 5" in r.stdout and "running" in r.stdout

    with connect(a.database, autocommit=True) as conn:  # the run's namespace is tagged
        tag = conn.execute(f'select value from "{a.namespace}".namespace_info where key = %s',
                           ("run",)).fetchone()
    assert tag is not None and tag[0]["id"] == run_id

    same = {"entity": "pm-1", "metric": "pm25", "size": 60, "start": 0, "count": 3, "sum": 0.6}
    zones = {"motion": {"active": ["door"]}, "people": {"zones": {"door": 2, "street": 1}}}
    seed(a, {"k1": same, "k2": {**same, "count": 4}, "only-a": same},
         [("cam1", 0.2, 3, zones), ("cam1", 0.3, 3, zones), ("cam2", 0.0, 0, {})])
    seed(b, {"k1": same, "k2": {**same, "count": 5}},
         [("cam1", 0.2, 3, zones), ("cam2", 0.0, 0, {})])

    r = ioc(["runs", "compare", run_id, b.namespace], settings, ok=False)
    out = r.stdout
    assert r.returncode == 1, out + r.stderr
    assert f"compare A={a.namespace} B={b.namespace}" in out
    line = next(x for x in out.splitlines() if x.startswith("rollups@topic"))
    assert "2 difference(s)" in line, out
    assert "only-a" in out and '"count":4' in out and '"count":5' in out
    assert "cam1 frames" in out and "cam1 zone=door people_sum" in out and "cam1 zone=door motion_frames" in out
    assert "cam2 frames" not in out  # equal counts are not listed
    for line in out.splitlines():
        if line.startswith(("kpis@topic", "alerts@topic", "rollups ", "kpi_values", "alerts ")):
            assert "same" in line, out  # empty topics and tables on both sides

    ghost = "tnoschema" + a.namespace[-6:]
    r = ioc(["runs", "compare", a.namespace, ghost], settings, ok=False)
    assert r.returncode == 1
    for name in ("events ", "detections ", "rollups ", "kpi_values ", "alerts ", "rollups@topic",
                 "kpis@topic", "alerts@topic"):
        line = next(x for x in r.stdout.splitlines() if x.startswith(name))
        assert f"ABSENT in {ghost}" in line, r.stdout

    r = ioc(["runs", "finish", a.namespace, "--note", "seen"], settings)
    assert f"run {run_id}: finished" in r.stdout
