"""The foundation against the real broker and database."""

from __future__ import annotations

import subprocess
import sys
import uuid

import psycopg
import pytest

from ioc.health import probe_worker
from ioc.kafka import admin_client, ensure_topics
from ioc.storage import applied_versions, connect, migrate
from ioc.topics import CATALOGUE, spec


def test_topics_exist_with_catalogue_settings(settings):
    report = ensure_topics(settings)
    assert report.success, report.lines()
    assert sorted(report.ok) == sorted(t.name(settings.namespace) for t in CATALOGUE)
    assert report.created == []


def test_topic_with_wrong_settings_is_reported(stack, fresh_namespace):
    from kafka.admin import NewTopic

    s = fresh_namespace("mm")
    admin = admin_client(s.kafka)
    name = f"{s.namespace}.extra"
    admin.create_topics([NewTopic(name, 3, 1, topic_configs={"cleanup.policy": "delete"})])
    admin.close()
    from dataclasses import replace

    wrong = replace(spec("wall.tiles"), suffix="extra")  # catalogue says 2 partitions, compact
    report = ensure_topics(s, [wrong])
    assert not report.success
    why = " ".join(report.mismatched[name])
    assert "partitions: expected 2, found 3" in why
    assert "cleanup.policy: expected compact, found delete" in why


def test_schema_created_and_migrations_idempotent(settings):
    with connect(settings.database, autocommit=True) as conn:
        versions = applied_versions(conn, settings.db_schema)
        assert versions and versions[0] == 1
        row = conn.execute(
            psycopg.sql.SQL("select value from {} where key = 'storage'").format(
                psycopg.sql.Identifier(settings.db_schema, "namespace_info"))
        ).fetchone()
        assert row is not None and "timescaledb" in row[0]
    _, ran = migrate(settings)
    assert ran == []


@pytest.mark.timeout(180)
def test_real_faust_worker_consumes_and_produces(settings, spawn):
    """A real `ioc worker` process (faust-streaming + aiokafka) echoes probes via Kafka 4."""
    worker = spawn(["worker", "--agents", "probe"], settings=settings, name="worker")
    rtt = None
    for _ in range(6):  # the first probe may arrive before the group is assigned
        assert worker.alive(), worker.output()[-3000:]
        try:
            rtt = probe_worker(settings, timeout=20, probe_id=uuid.uuid4().hex)
            break
        except Exception:
            continue
    assert rtt is not None, worker.output()[-3000:]
    assert rtt < 20
    assert worker.stop() in (0, -15), worker.output()[-3000:]


def test_cli_health(settings):
    from tests.conftest import settings_env

    r = subprocess.run([sys.executable, "-m", "ioc", "health", "--no-worker"],
                       capture_output=True, text=True, env=settings_env(settings))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "kafka       ok" in r.stdout and "postgresql  ok" in r.stdout
