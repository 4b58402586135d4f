"""deploy/local/stack.sh with IOC_KAFKA_BROKERS: ports, env lines and status per node.

No broker is started here (tests/integration/test_faults.py starts a private one, and
bench/bench_faults.py a private 3-node cluster); these read what the script prints.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

STACK = str(Path(__file__).resolve().parents[2] / "deploy" / "local" / "stack.sh")


def _run(tmp_path: Path, cmd: str, brokers: str | None, port: int = 39092
         ) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, IOC_STATE_DIR=str(tmp_path), IOC_KAFKA_PORT=str(port))
    env.pop("IOC_KAFKA_BROKERS", None)
    if brokers is not None:
        env["IOC_KAFKA_BROKERS"] = brokers
    return subprocess.run([STACK, cmd], env=env, capture_output=True, text=True, timeout=30)


def _env(out: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def test_default_is_one_broker_without_a_replication_override(tmp_path):
    env = _env(_run(tmp_path, "env", None).stdout)
    assert env["IOC_KAFKA__BOOTSTRAP_SERVERS"] == "127.0.0.1:39092"
    assert "IOC_KAFKA__REPLICATION_FACTOR" not in env


@pytest.mark.parametrize(("n", "rf"), [(2, 2), (3, 3), (5, 3)])
def test_n_brokers_on_consecutive_ports_with_their_replication_factor(tmp_path, n, rf):
    env = _env(_run(tmp_path, "env", str(n)).stdout)
    assert env["IOC_KAFKA__BOOTSTRAP_SERVERS"].split(",") == [
        f"127.0.0.1:{39092 + i}" for i in range(n)]
    assert env["IOC_KAFKA__REPLICATION_FACTOR"] == str(rf)


def test_status_lists_every_node(tmp_path):
    r = _run(tmp_path, "status", "3")
    assert r.returncode == 1  # nothing runs in this state folder
    lines = r.stdout.splitlines()
    assert [ln.split()[:2] for ln in lines[:3]] == [
        ["kafka-1", "stopped"], ["kafka-2", "stopped"], ["kafka-3", "stopped"]]


@pytest.mark.parametrize("bad", ["0", "x", "10", "-1"])
def test_a_bad_broker_count_is_refused(tmp_path, bad):
    r = _run(tmp_path, "env", bad)
    assert r.returncode == 2
    assert "IOC_KAFKA_BROKERS must be 1..9" in r.stderr
