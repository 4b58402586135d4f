"""Settings: validation, key paths in errors, environment overrides, secrets."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from ioc.config import load_settings
from ioc.errors import ConfigError, IOCError

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


def test_defaults_are_local_and_loopback():
    s = load_settings(env={})
    assert s.namespace == "ioc"
    assert s.kafka.bootstrap_servers == ["127.0.0.1:19092"]
    assert s.gateway.host == "127.0.0.1" and s.wall.host == "127.0.0.1"


def test_example_config_is_valid():
    s = load_settings(ROOT / "deploy" / "config.example.yaml", env={})
    assert s.namespace == "ioc"


def test_every_problem_reported_with_path_and_line(tmp_path):
    p = write(tmp_path, "namespace: ioc\nkafka:\n  bootstrap_serverz: [a:1]\nwall:\n  port: 70000\n")
    with pytest.raises(ConfigError) as ei:
        load_settings(p, env={})
    problems = dict(ei.value.problems)
    assert any(k.startswith("kafka.bootstrap_serverz [line 3]") for k in problems)
    assert any(k.startswith("wall.port [line 5]") for k in problems)
    assert isinstance(ei.value, IOCError)


def test_env_overrides_file_and_names_variable(tmp_path):
    p = write(tmp_path, "kafka:\n  bootstrap_servers: [a:1]\n")
    s = load_settings(p, env={"IOC_KAFKA__BOOTSTRAP_SERVERS": "b:2,c:3", "IOC_NAMESPACE": "x1"})
    assert s.kafka.bootstrap_servers == ["b:2", "c:3"]
    assert s.namespace == "x1"
    with pytest.raises(ConfigError) as ei:
        load_settings(p, env={"IOC_WALL__PORT": "70000"})
    assert "IOC_WALL__PORT" in str(ei.value)


def test_settings_are_frozen():
    s = load_settings(env={})
    with pytest.raises(ValidationError):
        s.namespace = "other"  # type: ignore[misc]


def test_bad_namespace_rejected():
    with pytest.raises(ConfigError) as ei:
        load_settings(env={}, overrides={"namespace": "Bad-NS"})
    assert ei.value.problems[0][0] == "namespace"


def test_secret_values_never_printed(tmp_path):
    p = write(tmp_path, "database:\n  dsn: postgresql://u:hunter2@h/db\n  timescaledb: maybe\n")
    with pytest.raises(ConfigError) as ei:
        load_settings(p, env={})
    assert "hunter2" not in str(ei.value)
    s = load_settings(write(tmp_path, "database:\n  dsn: postgresql://u:hunter2@h/db\n"), env={})
    assert "hunter2" not in repr(s) and "hunter2" not in str(s.model_dump(mode="json"))


def test_not_a_mapping_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_settings(write(tmp_path, "- a\n- b\n"), env={})
    with pytest.raises(ConfigError, match="line"):
        load_settings(write(tmp_path, "kafka: [\n"), env={})


def test_cli_config_check_exit_codes(tmp_path):
    good = write(tmp_path, "namespace: abc\n")
    r = subprocess.run([sys.executable, "-m", "ioc", "config", "check", str(good)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("wall:\n  prot: 1\n")
    r = subprocess.run([sys.executable, "-m", "ioc", "config", "check", str(bad)],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert "wall.prot [line 2]: unknown key" in r.stderr


def test_group_instance_id_from_env_and_checked():
    """Static membership (docs/adr/0007): unset by default; one name per process, from
    its environment; a name Kafka would refuse is reported with the variable."""
    assert load_settings(env={}).kafka.group_instance_id is None
    s = load_settings(env={"IOC_KAFKA__GROUP_INSTANCE_ID": "worker-1"})
    assert s.kafka.group_instance_id == "worker-1"
    with pytest.raises(ConfigError) as ei:
        load_settings(env={"IOC_KAFKA__GROUP_INSTANCE_ID": "two words"})
    assert "IOC_KAFKA__GROUP_INSTANCE_ID" in str(ei.value)


def test_group_instance_id_reaches_the_stage_and_sink_consumers(monkeypatch):
    import asyncio

    import ioc.kafka.rdkafka as rd
    from ioc.storage.sink import SinkOptions, _TableSinkRunner
    from ioc.storage.sink_tables import sink_tables
    from streams.engine import Stage, StageRunner

    captured: dict[str, object] = {}

    class _Consumer:  # what the sink would hand to librdkafka
        def __init__(self, conf: dict[str, object]) -> None:
            captured.clear()
            captured.update(conf)

    monkeypatch.setattr(rd, "Consumer", _Consumer)
    for gid in (None, "worker-7"):
        s = load_settings(env={}, overrides={"kafka": {"group_instance_id": gid}})
        stage = Stage("t", ["x.events"], lambda records, out: None)
        assert StageRunner(s, "x-app", stage)._consumer_conf().get("group.instance.id") == gid
        _TableSinkRunner(s, sink_tables()[0], SinkOptions(), asyncio.Event())._new_consumer()
        assert captured["group.id"] == f"{s.namespace}-sink-{sink_tables()[0].name}"
        assert captured.get("group.instance.id") == gid
