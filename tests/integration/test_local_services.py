"""`make up`'s services script, as a new user runs it: deploy/local/services.sh.

On the real stack (Kafka, PostgreSQL), in a namespace and a state folder of the test's
own, with the demo settings `make up` uses (deploy/local/demo.yaml), two workers
(``IOC_WORKERS=2``): every service starts and stays up, a worker answers the health
probe, events from the feeds are stored, the workers and the sink join their groups as
static members named after their service (docs/adr/0007), a worker killed with -9 is
started again by its supervisor and takes its partitions back under the same name, and
``down`` ends every process it started.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import ROOT, settings_env

SERVICES_SH = ROOT / "deploy/local/services.sh"
# and "prometheus" where it is installed (CI installs it)
NAMES = ("worker", "worker2", "sink", "gateway", "wall", "feeds", "cameras")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(what: str, check: Callable[[], object], timeout: float) -> object:
    t0 = time.monotonic()
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() - t0 > timeout:
            pytest.fail(f"{what}: not within {timeout:.0f} s (last: {got!r})")
        time.sleep(0.5)


class _Last:
    """A falsy value that shows what was seen last (for ``_wait``'s failure message)."""

    def __init__(self, seen: object) -> None:
        self.seen = seen

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return repr(self.seen)


def _children(pid: int) -> list[int]:
    try:
        return [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


@pytest.mark.timeout(420)
def test_services_sh_up_runs_static_members_restarts_a_killed_worker_and_down_ends_all(
        fresh_namespace, tmp_path):
    from confluent_kafka.admin import AdminClient
    from psycopg import sql

    from ioc.storage import connect

    s = fresh_namespace("svc")
    state = tmp_path / "state"
    env = dict(settings_env(s), IOC_CONFIG=str(ROOT / "deploy/local/demo.yaml"),
               IOC_STATE_DIR=str(state), IOC_WORKERS="2", EGOV_HISTORY_SCALE="0",
               PROMETHEUS_ADDR=f"127.0.0.1:{_free_port()}",
               IOC_GATEWAY__PORT=str(_free_port()), IOC_WALL__PORT=str(_free_port()),
               IOC_CAMERAS__FPS="1")  # the demo's 4 cameras, at a fifth of their CPU
    # the test's own state folder holds the pid files and logs: it may not hold a wall
    # secret, so give one (as an operator would in production)
    env.setdefault("IOC_WALL__SECRET", "services-test-secret-not-for-production-0123456789")

    def sh(cmd: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(SERVICES_SH), cmd], env=env, cwd=ROOT, capture_output=True,
                              text=True, timeout=timeout)

    def logs() -> str:
        return "\n".join(f"== {p.name}\n{p.read_text(errors='replace')[-3000:]}"
                         for p in sorted((state / "logs").glob("*.log")))

    run = state / "run"
    admin = AdminClient({"bootstrap.servers": ",".join(s.kafka.bootstrap_servers)})
    app = s.streams.app_id or f"{s.namespace}-streams"

    def instances(prefix: str) -> dict[str, set[str]]:
        """Stable groups named ``prefix``... -> their members' group.instance.id."""
        names = [g.group_id for g in admin.list_consumer_groups(request_timeout=10)
                 .result().valid if g.group_id.startswith(prefix)]
        if not names:
            return {}
        out = {}
        for name, fut in admin.describe_consumer_groups(names, request_timeout=10).items():
            d = fut.result()
            if str(d.state).endswith("STABLE"):
                out[name] = {m.group_instance_id or "" for m in d.members}
        return out

    up = sh("up")
    try:
        assert up.returncode == 0, up.stderr + logs()
        pids = {p.stem: int(p.read_text()) for p in run.glob("*.pid")}
        assert set(NAMES) <= set(pids), sorted(pids)
        h = subprocess.run([str(ROOT / ".venv/bin/ioc"), "health", "--timeout", "120"],
                           env=env, cwd=ROOT, capture_output=True, text=True, timeout=180)
        assert h.returncode == 0, h.stdout + h.stderr + logs()
        assert "worker      ok" in h.stdout

        # Every stage group has both workers, each under its service's name; every sink
        # table's group the sink under "sink".
        # (the demo configures scorecards: "aggregate+kpis+scorecards+rules")
        want = {f"{app}.validate", f"{app}.aggregate+kpis+scorecards+rules", f"{app}.tiles",
                f"{app}.views"}
        def both_workers() -> object:
            g = instances(app + ".")
            ok = want <= set(g) and all(v == {"worker", "worker2"} for v in g.values())
            return g if ok else _Last(g)

        stages = _wait("stage groups stable with both workers as static members", both_workers,
                       90)
        _wait("sink groups stable with the sink as static member",
              lambda: (g := instances(f"{s.namespace}-sink-")) and f"{s.namespace}-sink-events"
              in g and all(v == {"sink"} for v in g.values()), 90)

        # The feeds' events reach the database.
        with connect(s.database, autocommit=True) as c:
            q = sql.SQL("select count(*) from {}").format(sql.Identifier(s.db_schema, "events"))
            _wait("events from the feeds stored", lambda: (c.execute(q).fetchone() or (0,))[0] > 0,
                  90)

        # kill -9 of worker 1: its supervisor starts it again, and it rejoins as "worker".
        (victim,) = _children(pids["worker"])
        os.kill(victim, signal.SIGKILL)
        _wait("worker started again by its supervisor",
              lambda: [p for p in _children(pids["worker"]) if p != victim], 30)
        assert "[supervisor] ioc worker exited with code 137" in (
            state / "logs" / "worker.log").read_text()
        _wait("stage groups stable again with both workers",
              lambda: (g := instances(app + ".")) and set(g) == set(stages) and all(
                  v == {"worker", "worker2"} for v in g.values()), 90)

        # Nothing else exited on its own: no supervisor restarted any other service.
        for n in pids:
            text = (state / "logs" / f"{n}.log").read_text(errors="replace")
            restarts = text.count("[supervisor]")
            assert restarts == (1 if n == "worker" else 0), f"{n}: {restarts} restarts\n{text[-3000:]}"
        st = sh("status")
        assert st.returncode == 0
        running = {ln.split()[0] for ln in st.stdout.splitlines() if "running" in ln}
        assert running == set(pids), st.stdout
    finally:
        down = sh("down")
    assert down.returncode == 0, down.stderr
    for n, pgid in pids.items():
        _wait(f"{n}'s process group gone", lambda pgid=pgid: not _group_alive(pgid), 15)
    assert not list(run.glob("*.pid"))
    st = sh("status")
    assert all(ln.split()[1] == "stopped" for ln in st.stdout.splitlines() if ln.strip()), st.stdout
