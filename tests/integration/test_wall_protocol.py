"""The wall protocol against a real WallServer (port 0) fed by the real Kafka broker."""

from __future__ import annotations

import json
import secrets
import socket
import time
import urllib.request

import orjson
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from .wall_fixtures import ServerThread, TileProducer, layout_of, recv_until, wall_settings

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(90)]


@pytest.fixture
def uid() -> str:
    return secrets.token_hex(3)


@pytest.fixture
def producer(settings):
    p = TileProducer(settings)
    yield p
    p.close()


@pytest.fixture
def wall(settings):
    """Factory: start a ServerThread with the given screens and wall options."""
    started: list[ServerThread] = []

    def make(screens, **opts) -> ServerThread:
        st = ServerThread(wall_settings(settings, screens, **opts))
        started.append(st)
        return st

    yield make
    for st in started:
        st.stop()


def hello(ws, token, screen, **extra) -> dict:
    ws.send(json.dumps({"type": "hello", "token": token, "screen": screen, **extra}))
    msg = orjson.loads(ws.recv(timeout=10))
    assert msg["type"] == "snapshot", msg
    return msg


def close_of(ws, timeout: float = 10) -> tuple[int | None, str | None]:
    """Read until the server closes; the close code and reason it sent."""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ws.recv(timeout=deadline - time.monotonic())
    except ConnectionClosed as exc:
        return (exc.rcvd.code, exc.rcvd.reason) if exc.rcvd else (None, None)
    except TimeoutError:
        pass
    raise AssertionError(f"expected the server to close within {timeout}s; it did not")


def test_snapshot_rebuilt_from_kafka_then_live_updates(wall, producer, uid):
    ids = [f"kpi:a{uid}", f"camera:c{uid}", f"text:t{uid}"]
    jpeg = b"\xff\xd8" + secrets.token_bytes(3000) + b"\xff\xd9"
    producer.send(ids[0], 1, {"value": 1})
    producer.send(ids[0], 5, {"value": 5})
    producer.send(ids[0], 3, {"value": 3})  # older version arriving late: ignored
    producer.send(ids[1], 10, {"health": "online"}, kind="camera", image=jpeg)
    st = wall({"s": layout_of(ids)})
    with connect(st.url) as ws:
        snap = hello(ws, st.token("s"), "s")
        assert snap["full"] is True
        assert snap["layout"]["name"] == "s" and len(snap["layout"]["tiles"]) == 3
        by_id = {t["id"]: t for t in snap["tiles"]}
        assert set(by_id) == {ids[0], ids[1]}, by_id.keys()
        assert by_id[ids[0]]["version"] == 5 and by_id[ids[0]]["payload"] == {"value": 5}
        assert by_id[ids[1]]["image_size"] == len(jpeg)
        tid, version, image = recv_until(ws, lambda m: isinstance(m, tuple))[-1]
        assert (tid, version, image) == (ids[1], 10, jpeg)
        t0 = time.time()
        producer.send(ids[2], 7, {"text": "hello"}, kind="text")
        msgs = recv_until(ws, lambda m: isinstance(m, dict) and m.get("type") == "tile")
        assert msgs[-1]["tile"]["id"] == ids[2] and msgs[-1]["tile"]["payload"] == {"text": "hello"}
        assert time.time() - t0 < 2.0
        producer.send(ids[1], 11, {"health": "degraded"}, kind="camera", image=b"JPEG11")
        msgs = recv_until(ws, lambda m: isinstance(m, tuple))
        assert msgs[-2]["tile"]["version"] == 11 and msgs[-1] == (ids[1], 11, b"JPEG11")
        producer.tombstone(ids[2])
        msgs = recv_until(ws, lambda m: isinstance(m, dict) and m.get("type") == "remove")
        assert msgs[-1]["id"] == ids[2]


def test_resume_sends_only_changes_or_full_snapshot_when_unsure(wall, producer, uid):
    ids = [f"kpi:r{uid}{i}" for i in range(4)]
    for i, t in enumerate(ids):
        producer.send(t, 100 + i)
    st = wall({"s": layout_of(ids)})
    token = st.token("s")
    with connect(st.url) as ws:
        snap = hello(ws, token, "s")
    held = {t["id"]: t["version"] for t in snap["tiles"]}
    layout = snap["layout"]["hash"]
    assert len(held) == 4
    producer.send(ids[1], 500)
    time.sleep(1.0)  # let the server read it
    with connect(st.url) as ws:
        snap = hello(ws, token, "s", layout=layout, versions=held)
        assert snap["full"] is False
        assert [(t["id"], t["version"]) for t in snap["tiles"]] == [(ids[1], 500)]
    with connect(st.url) as ws:  # another layout: the server cannot tell what changed
        snap = hello(ws, token, "s", layout="0000", versions=held)
        assert snap["full"] is True and len(snap["tiles"]) == 4
    with connect(st.url) as ws:  # client holds a version the server never saw (topic reset)
        snap = hello(ws, token, "s", layout=layout, versions={**held, ids[0]: 10**9})
        assert snap["full"] is True and len(snap["tiles"]) == 4


def test_two_servers_side_by_side_each_have_every_tile(wall, producer, uid):
    ids = [f"kpi:p{uid}{i}" for i in range(6)]  # keys spread over both partitions
    for i, t in enumerate(ids):
        producer.send(t, i + 1)
    a, b = wall({"s": layout_of(ids)}), wall({"s": layout_of(ids)})
    for st in (a, b):
        with connect(st.url) as ws:
            snap = hello(ws, st.token("s"), "s")
            assert sorted(t["id"] for t in snap["tiles"]) == sorted(ids)


@pytest.mark.parametrize("case", ["bad_signature", "expired", "wrong_screen", "unknown_screen",
                                  "not_hello", "not_json", "binary"])
def test_auth_and_protocol_failures_close_with_code_and_reason(wall, uid, case):
    st = wall({"s": layout_of([f"kpi:x{uid}"]), "other": layout_of([f"kpi:y{uid}"])})
    good = st.token("s")
    body, sig = good.split(".")
    send: str | bytes = {
        "bad_signature": json.dumps({"type": "hello", "screen": "s", "token": f"{body}.{sig[::-1]}"}),
        "expired": json.dumps({"type": "hello", "screen": "s",
                               "token": st.signer.issue(["s"], 10, now=time.time() - 60)}),
        "wrong_screen": json.dumps({"type": "hello", "screen": "other", "token": good}),
        "unknown_screen": json.dumps({"type": "hello", "screen": "nope", "token": good}),
        "not_hello": json.dumps({"type": "ping"}),
        "not_json": "{hello",
        "binary": b"\x00\x01",
    }[case]
    want = {"bad_signature": (4001, "signature"), "expired": (4001, "expired"),
            "wrong_screen": (4003, "not 'other'"), "unknown_screen": (4004, "unknown screen"),
            "not_hello": (4000, "expected hello"), "not_json": (4000, "expected JSON"),
            "binary": (4000, "binary frame")}[case]
    with connect(st.url) as ws:
        ws.send(send)
        code, reason = close_of(ws)
    assert code == want[0] and want[1] in (reason or ""), (code, reason)
    assert st.call(lambda: st.server.clients) == set()


def test_auth_timeout_and_oversized_message(wall, uid):
    st = wall({"s": layout_of([f"kpi:o{uid}"])}, auth_timeout_s=0.5, max_message_bytes=2048)
    with connect(st.url) as ws:
        t0 = time.monotonic()
        code, reason = close_of(ws)
        assert code == 4008 and "hello within 0.5 s" in reason
        assert time.monotonic() - t0 < 3
    with connect(st.url) as ws:
        ws.send(json.dumps({"type": "hello", "screen": "s", "token": "x" * 5000}))
        code, _ = close_of(ws)
        assert code == 1009  # message too big


def test_origin_check_max_clients_health_and_static(wall, uid):
    st = wall({"s": layout_of([f"kpi:m{uid}"])}, max_clients=2,
              allowed_origins=["https://wall.example.org"])
    with pytest.raises(InvalidStatus) as err:
        connect(st.url, origin="https://evil.example.com")
    assert err.value.response.status_code == 403
    token = st.token("s")
    with connect(st.url, origin="https://wall.example.org") as a, \
            connect(st.url, origin=f"http://127.0.0.1:{st.port}") as b:
        hello(a, token, "s")
        hello(b, token, "s")
        with connect(st.url) as c:
            code, reason = close_of(c)
            assert code == 1013 and "server full: 2" in reason
        health = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{st.port}/healthz").read())
        assert health["status"] == "ok" and health["clients"] == 2 and health["screens"] == {"s": 2}
    page = urllib.request.urlopen(f"http://127.0.0.1:{st.port}/")
    assert page.status == 200 and b"<html" in page.read().lower()
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    with pytest.raises(urllib.error.HTTPError) as nf:
        urllib.request.urlopen(f"http://127.0.0.1:{st.port}/../ioc/config/_wall.py")
    assert nf.value.code == 404


def test_heartbeats_both_ways(wall, uid):
    st = wall({"s": layout_of([f"kpi:h{uid}"])}, heartbeat_s=0.4)
    with connect(st.url) as ws:
        snap = hello(ws, st.token("s"), "s")
        assert snap["heartbeat_s"] == 0.4
        recv_until(ws, lambda m: m.get("type") == "ping", timeout=3)
        ws.send(json.dumps({"type": "ping", "t": 42}))
        msgs = recv_until(ws, lambda m: m.get("type") == "pong", timeout=3)
        assert msgs[-1]["t"] == 42


def _stalling_client(url: str):
    """A client whose socket buffers almost nothing and whose reader stops at one message."""
    host, port = url.split("//")[1].split("/")[0].split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, int(port)))
    return connect(url, sock=sock, max_queue=1)


def test_slow_client_gets_latest_wins_others_unaffected_then_stalled_is_closed(wall, producer, uid):
    ids = [f"camera:s{uid}{i}" for i in range(3)] + [f"kpi:s{uid}"]
    st = wall({"s": layout_of(ids)}, write_buffer_bytes=4096, stall_timeout_s=3)
    token = st.token("s")
    big = secrets.token_bytes(200_000)
    with _stalling_client(st.url) as slow, connect(st.url) as fast:
        hello(slow, token, "s")
        hello(fast, token, "s")
        # 60 versions of 3 image tiles (12 MB) while `slow` reads nothing.
        last = {}
        for v in range(1, 21):
            for tid in ids[:3]:
                producer.send(tid, v, {"health": "online"}, kind="camera", image=big, flush=False)
                last[tid] = v
        producer.send(ids[3], 1, {"value": 1}, flush=False)
        producer.p.flush()
        t_produced = time.time()
        # The fast client gets the newest version of each tile promptly.
        got: dict[str, int] = {}
        deadline = time.monotonic() + 10
        while got != {**last, ids[3]: 1} and time.monotonic() < deadline:
            m = fast.recv(timeout=5)
            if isinstance(m, str) and (d := orjson.loads(m)).get("type") == "tile":
                got[d["tile"]["id"]] = d["tile"]["version"]
        assert got == {**last, ids[3]: 1}
        assert time.time() - t_produced < 5, "fast client was slowed down"
        clients = st.call(lambda: {c.ws.remote_address: c.queue.drops for c in st.server.clients})
        assert sum(clients.values()) > 0, f"expected drops for the slow client, got {clients}"
        # The slow client stays stalled: closed with 4029 after stall_timeout_s.
        deadline = time.monotonic() + 15
        while st.call(lambda: st.server.counters["stalled"]) == 0:
            assert time.monotonic() < deadline, st.call(st.server.health)
            time.sleep(0.1)
        health = st.call(st.server.health)
        assert health["counters"].get("closed_4029") == 1 and health["drops"] > 0
        # Draining now shows the latest-wins effect: far fewer than 60 image versions, and
        # the connection ends (with the 4029 reason if the close frame got through).
        images = 0
        try:
            while True:
                m = slow.recv(timeout=10)
                images += isinstance(m, bytes)
        except ConnectionClosed as exc:
            if exc.rcvd is not None:
                assert exc.rcvd.code == 4029 and "stalled" in exc.rcvd.reason
        except TimeoutError:
            pytest.fail("the stalled client's connection was not closed")
        assert images < 60, images
        # The fast client is still served.
        producer.send(ids[3], 2, {"value": 2})
        msgs = recv_until(fast, lambda m: isinstance(m, dict) and m.get("type") == "tile")
        assert msgs[-1]["tile"]["version"] == 2
