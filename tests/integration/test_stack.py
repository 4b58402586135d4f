"""The local stack script is idempotent and reports status truthfully."""

import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STACK = str(ROOT / "deploy/local/stack.sh")


def test_up_twice_is_harmless_and_keeps_the_same_processes(stack):
    before = subprocess.run([STACK, "status"], capture_output=True, text=True, check=True).stdout
    t0 = time.monotonic()
    r = subprocess.run([STACK, "up"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "already running" in r.stderr
    assert time.monotonic() - t0 < 30
    after = subprocess.run([STACK, "status"], capture_output=True, text=True, check=True).stdout
    # same PIDs: nothing was restarted
    assert [ln.split()[:4] for ln in before.splitlines()[:2]] == [ln.split()[:4] for ln in after.splitlines()[:2]]


def test_env_lines_point_at_loopback(stack):
    out = subprocess.run([STACK, "env"], capture_output=True, text=True, check=True).stdout
    assert "IOC_KAFKA__BOOTSTRAP_SERVERS=127.0.0.1:" in out
    assert "password" not in out.lower() or "PASSFILE" in out
