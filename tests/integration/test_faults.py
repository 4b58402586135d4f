"""Faults under load, end to end (publisher -> events.raw -> validate -> events -> sink -> rows).

The quick cases of bench/bench_faults.py that no other test covers:

- the broker stopped for 10 s mid-stream and started again (a private single-node
  broker started with deploy/local/stack.sh kafka-up, never the shared one);
- kill -9 of the gateway while a client publishes over HTTP (retrying on 503 and
  connection errors, as a real client does), then kill -9 of the validate worker.

Each asserts that every event acknowledged to a publisher is stored exactly once and
that no service died by itself. kill -9 of the sink alone, the database outage and the
validate crash's effect on windows are in test_sink_events.py and
test_validate_crash.py.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import random
import secrets
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from ioc.config import Settings, load_settings
from ioc.errors import KafkaError
from ioc.gateway import hash_key, new_key

pytestmark = [pytest.mark.kafka, pytest.mark.db]

ROOT = Path(__file__).resolve().parents[2]
STACK = str(ROOT / "deploy" / "local" / "stack.sh")


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def _free_pair() -> int:
    """A port p with p and p+1 free (broker, controller)."""
    for _ in range(200):
        p = random.randrange(30000, 39000)
        if _free(p) and _free(p + 1):
            return p
    raise RuntimeError("no two consecutive free ports")


class PrivateKafka:
    """A single-node broker of one test, in a state folder of its own."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="ioc-test-kafka-"))
        self.port = _free_pair()
        self.env = dict(os.environ, IOC_STATE_DIR=str(self.dir), IOC_KAFKA_PORT=str(self.port),
                        IOC_KAFKA_BROKERS="1")

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _run(self, cmd: str) -> None:
        r = subprocess.run([STACK, cmd], env=self.env, capture_output=True, text=True, timeout=240)
        assert r.returncode == 0, f"stack.sh {cmd}: {r.stderr[-2000:]}"

    def start(self) -> None:
        self._run("kafka-up")

    def stop(self) -> None:
        self._run("kafka-down")


@pytest.fixture
def private_kafka() -> Iterator[PrivateKafka]:
    k = PrivateKafka()
    k.start()
    try:
        yield k
    finally:
        with contextlib.suppress(AssertionError):
            k.stop()
        shutil.rmtree(k.dir, ignore_errors=True)


def _event(run: str, i: int) -> dict[str, Any]:
    return {"id": f"{run}-{i}", "source": f"fz{i % 3}", "type": "traffic.flow",
            "entity": f"loop-{i % 50}", "time": time.time() - 5,
            "values": {"intensity": float(i % 40), "speed": 50.0}}


class Feed(threading.Thread):
    """``rate`` events/s in chunks; a chunk that is not acknowledged is sent again every
    0.3 s. ``acked``: the ids acknowledged so far are ``<run>-0 .. <run>-(acked-1)``."""

    def __init__(self, run: str, rate: float, chunk: int) -> None:
        super().__init__(daemon=True)
        self.run_id, self.rate, self.chunk = run, rate, chunk
        self.stopping = threading.Event()
        self.acked = 0
        self.retries = 0
        self.failure: str | None = None  # an answer no retry can fix
        self.last_error = ""

    def send(self, events: list[dict[str, Any]]) -> None:
        raise NotImplementedError

    def run(self) -> None:
        t0, i = time.monotonic(), 0
        while not self.stopping.is_set():
            self.stopping.wait(max(0.0, t0 + i / self.rate - time.monotonic()))
            events = [_event(self.run_id, j) for j in range(i, i + self.chunk)]
            for _ in range(400):  # ~2 min of retries at most
                try:
                    self.send(events)
                    break
                except (OSError, http.client.HTTPException, KafkaError) as exc:
                    self.retries += 1  # what a real client retries
                    self.last_error = repr(exc)
                    time.sleep(0.3)
                except Exception as exc:  # anything else is a failure of the test subject
                    self.failure = repr(exc)
                    return
            else:
                self.failure = f"not acknowledged after 400 tries: {self.last_error}"
                return
            i += self.chunk
            self.acked = i

    def ids(self) -> set[str]:
        return {f"{self.run_id}-{j}" for j in range(self.acked)}


class KafkaFeed(Feed):
    def __init__(self, s: Settings, run: str, rate: float, chunk: int) -> None:
        super().__init__(run, rate, chunk)
        from ioc.publish import Publisher

        self.pub = Publisher(s, ack_timeout_s=5.0)

    def send(self, events: list[dict[str, Any]]) -> None:
        res = self.pub.send_many(events)
        assert not res.rejected, res.rejected[:2]


class HttpFeed(Feed):
    def __init__(self, port: int, key: str, run: str, rate: float, chunk: int) -> None:
        super().__init__(run, rate, chunk)
        self.port, self.key = port, key
        self.conn: http.client.HTTPConnection | None = None

    def send(self, events: list[dict[str, Any]]) -> None:
        try:
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)
            self.conn.request("POST", "/v1/events", body=orjson.dumps(events), headers={
                "Content-Type": "application/json", "Authorization": f"Bearer {self.key}"})
            r = self.conn.getresponse()
            body = r.read()
        except (OSError, http.client.HTTPException):
            if self.conn is not None:
                self.conn.close()
            self.conn = None
            raise
        if r.status == 503:
            raise ConnectionError("503")
        if r.status != 200:
            raise RuntimeError(f"gateway answered {r.status}: {body[:300]!r}")


def _stored(s: Settings, run: str) -> tuple[int, set[str]]:
    """(rows, distinct ids) of this run's events."""
    from psycopg import sql

    from ioc.storage import connect

    with connect(s.database, autocommit=True) as c:
        ids = [r[0] for r in c.execute(sql.SQL("select id from {} where id like %s").format(
            sql.Identifier(s.db_schema, "events")), (f"{run}%",))]
    return len(ids), set(ids)


def _drain_and_check(s: Settings, run: str, feeds: list[Feed], procs: list[Any]) -> None:
    for f in feeds:
        f.stopping.set()
    for f in feeds:
        f.join(150)
        assert f.failure is None, f.failure
    want = set().union(*(f.ids() for f in feeds))
    assert len(want) > 0
    end = time.monotonic() + 120
    rows, ids = _stored(s, run)
    while not want <= ids and time.monotonic() < end:
        for p in procs:
            assert p.alive(), f"a service died: {p.output()[-3000:]}"
        time.sleep(1.0)
        rows, ids = _stored(s, run)
    missing = want - ids
    assert not missing, f"{len(missing)} of {len(want)} acknowledged events not stored " \
                        f"(e.g. {sorted(missing)[:3]})"
    assert rows == len(ids), f"{rows - len(ids)} duplicated rows"
    for p in procs:
        assert p.alive(), f"a service died: {p.output()[-3000:]}"


def _wait_rows(s: Settings, run: str, n: int, procs: list[Any], timeout: float = 180) -> None:
    end = time.monotonic() + timeout
    while _stored(s, run)[0] < n:
        for p in procs:
            assert p.alive(), p.output()[-3000:]
        assert time.monotonic() < end, "the pipeline did not start"
        time.sleep(0.5)


@pytest.mark.timeout(360)
def test_broker_stopped_10s_loses_and_doubles_nothing(stack, private_kafka, spawn):
    from ioc.kafka import ensure_topics
    from ioc.storage import drop_schema, migrate

    s = load_settings(overrides={"namespace": f"tbrk{secrets.token_hex(4)}",
                                 "kafka": {"bootstrap_servers": [private_kafka.bootstrap]}})
    assert ensure_topics(s).success
    migrate(s)
    try:
        worker = spawn(["worker", "--agents", "validate"], settings=s, name="worker")
        sink = spawn(["sink", "--tables", "events", "--linger", "0.2"], settings=s, name="sink")
        run = secrets.token_hex(3)
        feed = KafkaFeed(s, run, rate=300, chunk=30)
        feed.start()
        _wait_rows(s, run, 1, [worker, sink])
        time.sleep(3)
        private_kafka.stop()
        time.sleep(10)
        private_kafka.start()
        acked = feed.acked
        end = time.monotonic() + 120  # publishing works again, then a little more
        while feed.acked < acked + 1500 and time.monotonic() < end and feed.failure is None:
            time.sleep(0.5)
        assert feed.retries > 0, "the broker stop did not reach the publisher"
        _drain_and_check(s, run, [feed], [worker, sink])
    finally:
        drop_schema(s)


@pytest.mark.timeout(300)
def test_kill9_gateway_then_validate_worker_loses_and_doubles_nothing(fresh_namespace, spawn):
    s = fresh_namespace("kill")
    key = new_key()
    with socket.socket() as so:
        so.bind(("127.0.0.1", 0))
        port = so.getsockname()[1]
    gw_env = {"IOC_GATEWAY__PUBLISHERS": json.dumps(
        {"faults": {"key_sha256": hash_key(key), "sources": ["*"]}})}

    def gateway() -> Any:
        return spawn(["gateway", "--port", str(port)], settings=s, env=gw_env, name="gateway")

    def worker() -> Any:
        return spawn(["worker", "--agents", "validate"], settings=s, name="worker")

    gw, wk = gateway(), worker()
    sink = spawn(["sink", "--tables", "events", "--linger", "0.2"], settings=s, name="sink")
    run = secrets.token_hex(3)
    hfeed = HttpFeed(port, key, run + "h", rate=200, chunk=20)
    kfeed = KafkaFeed(s, run + "k", rate=200, chunk=20)
    hfeed.start()
    kfeed.start()
    _wait_rows(s, run, 1, [wk, sink])
    time.sleep(2)
    gw.kill9()
    time.sleep(1)
    gw = gateway()
    a = hfeed.acked
    end = time.monotonic() + 90
    while hfeed.acked < a + 400 and time.monotonic() < end and hfeed.failure is None:
        time.sleep(0.5)
    assert hfeed.retries > 0, "the client never saw the gateway go"
    wk.kill9()
    time.sleep(1)
    wk = worker()
    b = kfeed.acked
    time.sleep(2)
    _wait_rows(s, run + "k", b + 200, [wk, sink, gw])  # the new worker is validating
    _drain_and_check(s, run, [hfeed, kfeed], [wk, sink, gw])
