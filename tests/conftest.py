"""Shared fixtures: the real local stack, a fresh namespace per test run, worker processes.

Integration tests talk to the real Kafka broker and PostgreSQL. When the stack is not
reachable, the session starts it with deploy/local/stack.sh (as `make up` would). A test
needing a service or the shared data fails loudly when it is missing; nothing is skipped.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ioc.config import Settings, load_settings

ROOT = Path(__file__).resolve().parents[1]


def _reachable(hostport: str) -> bool:
    host, port = hostport.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def base_settings() -> Settings:
    """Settings from the environment (IOC_CONFIG / IOC_*), the local stack by default."""
    return load_settings()


@pytest.fixture(scope="session")
def stack(base_settings: Settings) -> Settings:
    """Make sure Kafka and PostgreSQL answer; start the local stack if they don't."""
    kafka = base_settings.kafka.bootstrap_servers[0]
    from urllib.parse import urlparse

    dsn = urlparse(base_settings.database.dsn.get_secret_value())
    pg = f"{dsn.hostname or '127.0.0.1'}:{dsn.port or 5432}"
    if not (_reachable(kafka) and _reachable(pg)):
        subprocess.run([str(ROOT / "deploy/local/stack.sh"), "up"], check=True)
    for what in (kafka, pg):
        if not _reachable(what):
            pytest.fail(f"service at {what} is not reachable even after 'stack.sh up'")
    return base_settings


@pytest.fixture(scope="session")
def namespace() -> str:
    """A namespace of its own for this test run: topics and DB schema never collide."""
    return os.environ.get("IOC_TEST_NAMESPACE") or f"t{time.strftime('%m%d%H%M')}{secrets.token_hex(3)}"


@pytest.fixture(scope="session")
def settings(stack: Settings, namespace: str) -> Iterator[Settings]:
    """Settings in the run's namespace, with its topics created and schema migrated."""
    from ioc.kafka import delete_namespace_topics, ensure_topics
    from ioc.storage import drop_schema, migrate

    s = stack.with_namespace(namespace)
    report = ensure_topics(s)
    assert report.success, report.lines()
    migrate(s)
    yield s
    if not os.environ.get("IOC_KEEP_TEST_NAMESPACE"):
        delete_namespace_topics(s)
        drop_schema(s)


@pytest.fixture
def fresh_namespace(stack: Settings) -> Iterator[Callable[[str], Settings]]:
    """Factory: a further namespace (topics + schema) for tests that need isolation."""
    from ioc.kafka import delete_namespace_topics, ensure_topics
    from ioc.storage import drop_schema, migrate

    made: list[Settings] = []

    def make(tag: str = "x") -> Settings:
        s = stack.with_namespace(f"t{tag}{secrets.token_hex(4)}")
        assert ensure_topics(s).success
        migrate(s)
        made.append(s)
        return s

    yield make
    for s in made:
        delete_namespace_topics(s)
        drop_schema(s)


def settings_env(s: Settings) -> dict[str, str]:
    """Environment that makes an `ioc` subprocess use the same settings as ``s``."""
    env = dict(os.environ)
    env["IOC_NAMESPACE"] = s.namespace
    env["IOC_KAFKA__BOOTSTRAP_SERVERS"] = ",".join(s.kafka.bootstrap_servers)
    env["IOC_DATABASE__DSN"] = s.database.dsn.get_secret_value()
    if s.database.passfile:
        env["IOC_DATABASE__PASSFILE"] = str(s.database.passfile)
    # Metrics on any free port: several workers of a test (or tests of parallel runs on
    # one machine) must not fight over the default ports 9401-9406.
    for svc in ("worker", "sink", "gateway", "wall", "camera", "feeds"):
        env.setdefault(f"IOC_METRICS__{svc.upper()}", "0")
    return env


class Proc:
    """A subprocess of ours, stopped by its PID (SIGTERM, then SIGKILL)."""

    def __init__(self, popen: subprocess.Popen[bytes], log: Path) -> None:
        self.popen = popen
        self.log = log

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill9(self) -> None:
        self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(10)

    def stop(self, timeout: float = 20) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)
        return self.popen.returncode

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., Proc]]:
    """Factory: run ``ioc ARGS`` (or any argv) as a subprocess; all are stopped at teardown."""
    procs: list[Proc] = []

    def run(args: list[str], *, settings: Settings | None = None, env: dict[str, str] | None = None,
            name: str = "proc") -> Proc:
        argv = [sys.executable, "-m", "ioc", *args] if args and not args[0].startswith("/") else args
        e = settings_env(settings) if settings else dict(os.environ)
        if env:
            e.update(env)
        log = tmp_path / f"{name}-{len(procs)}.log"
        fh = open(log, "wb")  # noqa: SIM115 - closed when the process ends
        p = subprocess.Popen(argv, env=e, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT)
        proc = Proc(p, log)
        procs.append(proc)
        return proc

    yield run
    for p in procs:
        p.stop()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The recorded videos and sensor series (../shared/data or $IOC_DATA_DIR); fails if absent."""
    path = Path(os.environ.get("IOC_DATA_DIR") or ROOT.parent / "shared" / "data")
    if not (path / "SOURCES.md").exists():
        pytest.fail(f"test data not found at {path} (set IOC_DATA_DIR)")
    return path
