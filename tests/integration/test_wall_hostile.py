"""Hostile clients, stalled clients and poison tiles against a real WallServer (port 0).

The promises under test: whatever a client sends, it gets a close code naming what was
wrong and the server goes on serving everyone else; a client that stops reading is
closed with 4029 and counted while the others keep receiving; no record on the tiles
topic stops the tile source.
"""

from __future__ import annotations

import base64
import json
import os
import random
import secrets
import socket
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from ioc.config import Settings, load_settings
from ioc.tiles import Tile, encode_tile
from ioc.wall.exceptions import CloseCode
from ioc.wall.kafka_source import KafkaTileSource
from ioc.wall.state import TileStore
from tests.fixtures.hostile import (
    BIG_INT_LITERALS,
    deep_json,
    hostile_bytes,
    hostile_json_bytes,
    hostile_text,
    mutated_json_objects,
)
from tests.fixtures.stalled_ws import StalledClient

from .wall_fixtures import ServerThread, TileProducer, layout_of, recv_until, wall_settings

pytestmark = [pytest.mark.timeout(300)]

#: What a hostile client may be told; 1011 (our bug) and a silent abort are failures.
CLIENT_CODES = {CloseCode.PROTOCOL, CloseCode.UNAUTHORIZED, CloseCode.FORBIDDEN,
                CloseCode.UNKNOWN_SCREEN, CloseCode.MESSAGE_TOO_BIG, 1002, 1007}
IDS = ["kpi:h1", "camera:h2"]


def _offline() -> Settings:
    return load_settings(env={}, overrides={"namespace": "hostile"})


@pytest.fixture(scope="module")
def wall() -> Iterator[ServerThread]:
    """One server for every hostile client of this module: it must outlive them all."""
    st_ = ServerThread(wall_settings(_offline(), {"s": layout_of(IDS)}), kafka=False)
    st_.call(lambda: st_.server.store.apply(Tile(IDS[0], "kpi", 1, time.time(), {"value": 1})))
    yield st_
    st_.stop()


def _close_code(ws: Any, timeout: float = 10) -> int | None:
    """Read until the server closes; its close code (None: it aborted without one)."""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ws.recv(timeout=deadline - time.monotonic())
    except ConnectionClosed as exc:
        return exc.rcvd.code if exc.rcvd else None
    raise AssertionError(f"expected the server to close within {timeout}s")


def _good_client_works(wall: ServerThread, version: int) -> None:
    with connect(wall.url, open_timeout=10) as ws:
        ws.send(json.dumps({"type": "hello", "token": wall.token("s"), "screen": "s"}))
        snap = orjson.loads(ws.recv(timeout=10))
        assert snap["type"] == "snapshot" and snap["full"] is True
        tile = Tile(IDS[0], "kpi", version, time.time(), {"value": version})
        wall.call(lambda: wall.server.store.apply(tile))
        recv_until(ws, lambda m: isinstance(m, dict) and m.get("type") == "tile"
                   and m["tile"]["version"] == version, timeout=10)


def _frames() -> st.SearchStrategy[str | bytes]:
    text = st.one_of(
        # websockets sends str as UTF-8: lone surrogates cannot be sent (the raw-socket
        # tests below send invalid UTF-8 as bytes).
        hostile_text(max_size=200).map(lambda t: t.encode("utf-8", "replace").decode()),
        hostile_json_bytes().map(lambda b: b.decode("utf-8", "replace")),
        mutated_json_objects({"type": "hello", "token": "a.b", "screen": "s"}).map(
            lambda d: orjson.dumps(d, option=orjson.OPT_NON_STR_KEYS, default=str).decode()
            if _ok(d) else "{}"),
        st.sampled_from(['{"type":"ping","t":' + deep_json(300).decode() + "}",
                         '{"type":"pong","t":{"a":[1]}}', '{"type":"hello"}',
                         '{"type":"ping","t":1}', '{"type":"pong"}', "x" * 70_000]),
    )
    return st.one_of(text, hostile_bytes(max_size=512))


def _ok(d: Any) -> bool:
    try:
        orjson.dumps(d, option=orjson.OPT_NON_STR_KEYS, default=str)
    except (TypeError, orjson.JSONEncodeError):
        return False
    return True


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(frames=st.lists(_frames(), min_size=1, max_size=3), after_hello=st.booleans())
def test_any_client_messages_get_a_close_code_and_the_server_stays_up(
        wall: ServerThread, frames: list[str | bytes], after_hello: bool) -> None:
    with connect(wall.url, open_timeout=10, max_size=2**22) as ws:
        if after_hello:
            ws.send(json.dumps({"type": "hello", "token": wall.token("s"), "screen": "s"}))
            assert orjson.loads(ws.recv(timeout=10))["type"] == "snapshot"
        try:
            for f in frames:
                ws.send(f)
            # Still open? Then everything sent was acceptable: a ping must be answered.
            ws.send(json.dumps({"type": "ping", "t": "end"}))
            while True:
                raw = ws.recv(timeout=10)
                msg = orjson.loads(raw) if isinstance(raw, str) else None
                if msg and msg.get("type") == "pong" and msg.get("t") == "end":
                    assert after_hello, "a client without a hello was answered"
                    return
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd else None
            assert code in CLIENT_CODES, (code, exc)
    assert wall.call(lambda: wall.server.counters["handler_errors"]) == 0


_ACTION = {"type": "action", "id": "r", "action": "comment", "alert": "a1", "text": "t", "to": "b"}
_PRESET = {"type": "preset", "id": 1, "preset": "p"}


@pytest.fixture(scope="module")
def wall2() -> Iterator[ServerThread]:
    """A server with a preset, pop-ups and one alert, for protocol-2 operator clients."""
    screen = layout_of(["alerts:all", IDS[0]]).model_dump(mode="json")
    screen["presets"] = {"p": layout_of([IDS[1]]).grid_dump()}
    screen["popups"] = {"enabled": True}
    st_ = ServerThread(wall_settings(_offline(), {"s": screen}, action_burst=10_000,
                                     action_rate_per_s=1000), kafka=False)
    st_.call(lambda: st_.server.store.apply(Tile("alerts:all", "alerts", 1, time.time(), {
        "items": [{"id": "a1", "severity": "critical", "entity": "h2", "state": "raised"}]})))
    yield st_
    st_.stop()


def _requests() -> st.SearchStrategy[str | bytes]:
    objs = st.one_of(mutated_json_objects(_ACTION), mutated_json_objects(_PRESET))
    return st.one_of(objs.filter(_ok).map(
        lambda d: orjson.dumps(d, option=orjson.OPT_NON_STR_KEYS, default=str).decode()),
        _frames())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(frames=st.lists(_requests(), min_size=1, max_size=4))
def test_operator_requests_are_answered_or_closed_with_a_client_code(
        wall2: ServerThread, frames: list[str | bytes]) -> None:
    with connect(wall2.url, open_timeout=10, max_size=2**22) as ws:
        ws.send(json.dumps({"type": "hello", "token": wall2.operator_token("op", "s"),
                            "screen": "s", "protocol": 2}))
        assert orjson.loads(ws.recv(timeout=10))["type"] == "snapshot"
        try:
            for f in frames:
                ws.send(f)
            ws.send(json.dumps({"type": "ping", "t": "end"}))
            while True:
                raw = ws.recv(timeout=10)
                msg = orjson.loads(raw) if isinstance(raw, str) else None
                if msg and msg.get("type") == "result":
                    assert msg["ok"] or msg["error"] in (
                        "invalid", "unknown_alert", "unknown_preset"), msg
                if msg and msg.get("type") == "pong" and msg.get("t") == "end":
                    return
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd else None
            assert code in CLIENT_CODES, (code, exc)
    assert wall2.call(lambda: wall2.server.counters["handler_errors"]) == 0


def _raw_ws(port: int) -> socket.socket:
    """A raw TCP socket past the websocket handshake (nothing read beyond the 101)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                  f"Sec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        assert chunk, f"closed during the handshake: {head!r}"
        head += chunk
    assert head.startswith(b"HTTP/1.1 101"), head[:80]
    return sock


def _frame(opcode: int, payload: bytes, *, masked: bool = True) -> bytes:
    n = len(payload)
    m = 0x80 if masked else 0
    if n < 126:
        head = bytes([0x80 | opcode, m | n])
    elif n < 65536:
        head = bytes([0x80 | opcode, m | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([0x80 | opcode, m | 127]) + n.to_bytes(8, "big")
    return head + (b"\0\0\0\0" if masked else b"") + payload  # zero mask: payload as is


def _raw_close_code(sock: socket.socket) -> int | None:
    """Read frames until a close frame (its code) or EOF (None)."""
    buf = b""
    sock.settimeout(10)
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return None
        if not chunk:
            return None
        buf += chunk
        while len(buf) >= 2:
            op, ln = buf[0] & 0x0F, buf[1] & 0x7F
            off = 2
            if ln == 126:
                ln, off = int.from_bytes(buf[2:4], "big"), 4
            elif ln == 127:
                ln, off = int.from_bytes(buf[2:10], "big"), 10
            if len(buf) < off + ln:
                break
            if op == 8:
                return int.from_bytes(buf[off:off + 2], "big") if ln >= 2 else 1005
            buf = buf[off + ln:]


@pytest.mark.parametrize("name,stream,codes", [
    ("invalid UTF-8 in a text frame", _frame(1, b'{"type":"hello","screen":"\xff"}'), {1007}),
    ("frame over max_message_bytes", _frame(1, b" " * 70_000), {CloseCode.MESSAGE_TOO_BIG}),
    ("unmasked client frame", _frame(1, b"{}", masked=False), {1002}),
    ("reserved opcode", _frame(3, b"x"), {1002}),
    ("binary hello", _frame(2, b"\x00" * 10), {CloseCode.PROTOCOL}),
    ("hello with a wrong token", _frame(1, b'{"type":"hello","token":"a.b","screen":"s"}'),
     {CloseCode.UNAUTHORIZED}),
    ("hello with a non-ASCII token", _frame(1, '{"type":"hello","token":"a.é","screen":"s"}'
                                            .encode()), {CloseCode.UNAUTHORIZED}),
    ("hello for an unknown screen", _frame(1, b'{"type":"hello","token":"a.b","screen":"zz"}'),
     {CloseCode.UNKNOWN_SCREEN}),
    ("hello with a list as type", _frame(1, b'{"type":["hello"]}'), {CloseCode.PROTOCOL}),
    ("deep JSON", _frame(1, deep_json(10_000)[:60_000]), {CloseCode.PROTOCOL}),
    ("big integer", _frame(1, b'{"type":"hello","versions":{"a":' + BIG_INT_LITERALS[3] + b"}}"),
     {CloseCode.PROTOCOL}),
])
def test_named_hostile_streams(wall: ServerThread, name: str, stream: bytes, codes: set[int]
                               ) -> None:
    with _raw_ws(wall.port) as sock:
        sock.sendall(stream)
        code = _raw_close_code(sock)
    assert code in codes, f"{name}: got close code {code}, expected one of {codes}"
    assert wall.call(lambda: wall.server.counters["handler_errors"]) == 0


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(junk=hostile_bytes(max_size=2048), handshake=st.booleans())
def test_arbitrary_bytes_on_the_socket(wall: ServerThread, junk: bytes, handshake: bool) -> None:
    if handshake:
        sock = _raw_ws(wall.port)
    else:
        sock = socket.create_connection(("127.0.0.1", wall.port), timeout=10)
    with sock:
        try:
            sock.sendall(junk)
            sock.shutdown(socket.SHUT_WR)  # nothing more will come: the server must finish
            sock.settimeout(10)
            while sock.recv(65536):
                pass
        except (ConnectionResetError, BrokenPipeError):
            pass
    assert wall.call(lambda: wall.server.counters["handler_errors"]) == 0


def test_origin_that_is_not_a_url_is_refused(wall: ServerThread) -> None:
    with socket.create_connection(("127.0.0.1", wall.port), timeout=10) as sock:
        key = base64.b64encode(os.urandom(16)).decode()
        sock.sendall((f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                      f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nOrigin: http://[\r\n"
                      f"Sec-WebSocket-Version: 13\r\n\r\n").encode())
        assert sock.recv(100).startswith(b"HTTP/1.1 403")


def test_zz_server_still_serves_a_good_client(wall: ServerThread) -> None:
    # Named to run after the hostile tests of this module (same server).
    _good_client_works(wall, 10_000 + secrets.randbelow(1000))
    health = wall.call(wall.server.health)
    assert health["status"] == "ok" and health["counters"].get("handler_errors", 0) == 0


# -- a stalled client ----------------------------------------------------------------------


def test_stalled_client_is_closed_with_4029_while_the_others_keep_receiving() -> None:
    cfg = wall_settings(_offline(), {"s": layout_of(IDS)}, stall_timeout_s=3.0,
                        write_buffer_bytes=4096, socket_send_buffer_bytes=4096)
    wall = ServerThread(cfg, kafka=False)
    try:
        stalled = StalledClient(wall.port, wall.token("s"), screen="s")
        image = secrets.token_bytes(256 * 1024)
        with connect(wall.url, open_timeout=10, max_size=2**22) as good:
            good.send(json.dumps({"type": "hello", "token": wall.token("s"), "screen": "s"}))
            assert orjson.loads(good.recv(timeout=10))["type"] == "snapshot"
            deadline = time.monotonic() + 30
            v = 0
            while wall.call(lambda: wall.server.counters["stalled"]) == 0:
                assert time.monotonic() < deadline, wall.call(wall.server.health)
                v += 1
                tile = Tile(IDS[1], "camera", v, time.time(), {"n": v}, image)
                wall.call(lambda t=tile: wall.server.store.apply(t))
                # The good client reads every version while the stalled one fills up.
                recv_until(good, lambda m, v=v: isinstance(m, tuple) and m[1] == v, timeout=10)
            health = wall.call(wall.server.health)
            assert health["counters"]["stalled"] == 1
            assert health["counters"].get(f"closed_{CloseCode.STALLED}") == 1
            # It goes (close frame, then abort after stall_close_grace_s); the good one stays.
            deadline = time.monotonic() + 15
            while wall.call(lambda: len(wall.server.clients)) != 1:
                assert time.monotonic() < deadline, wall.call(wall.server.health)
                time.sleep(0.1)
            v += 1
            tile = Tile(IDS[1], "camera", v, time.time(), {"n": v}, image)
            wall.call(lambda: wall.server.store.apply(tile))
            recv_until(good, lambda m: isinstance(m, tuple) and m[1] == v, timeout=10)
        stalled.sock.close()
    finally:
        wall.stop()


# -- poison records on the tiles topic (real broker) ------------------------------------


def _poison(rng: random.Random, i: int, uid: str) -> tuple[bytes, bytes | None]:
    """One bad (or odd) record of the tiles topic; keys are never null (compacted topic)."""
    key = f"kpi:poison-{uid}-{i % 50}".encode()
    good = encode_tile(Tile(key.decode(), "kpi", i, time.time(), {"value": i}))
    kind = i % 10
    if kind == 0:
        return key, rng.randbytes(rng.randrange(0, 300))
    if kind == 1:
        return key, good[: rng.randrange(0, len(good))]  # truncated
    if kind == 2:
        b = bytearray(good)
        for _ in range(3):
            b[rng.randrange(len(b))] = rng.randrange(256)  # bit rot
        return key, bytes(b)
    if kind == 3:
        return key, b"IOCT" + rng.randbytes(rng.randrange(4, 100))
    if kind == 4:
        hb = orjson.dumps({"id": key.decode(), "kind": "kpi", "version": i, "time": 1.0,
                           "payload": [[1, 2]]})
        return key, b"IOCT" + len(hb).to_bytes(4, "big") + hb
    if kind == 5:
        hb = deep_json(5000)
        return key, b"IOCT" + len(hb).to_bytes(4, "big") + hb
    if kind == 6:
        hb = b'{"id":"x","kind":"kpi","version":' + rng.choice(BIG_INT_LITERALS) + b',"time":1}'
        return key, b"IOCT" + len(hb).to_bytes(4, "big") + hb
    if kind == 7:
        hb = b'{"id":"x\xff","kind":"kpi","version":1,"time":1}'  # invalid UTF-8
        return key, b"IOCT" + len(hb).to_bytes(4, "big") + hb
    if kind == 8:
        return key, None  # a tombstone for a tile nobody has
    return key, rng.choice([b"", b"{}", b"null", b"\x00" * 64, deep_json(100)])


@pytest.mark.kafka
def test_thousands_of_poison_records_never_stop_the_tile_source(settings: Settings) -> None:
    uid = secrets.token_hex(3)
    good_id = f"kpi:good{uid}"
    wall = ServerThread(wall_settings(settings, {"p": layout_of([good_id])}))
    producer = TileProducer(settings)
    try:
        with connect(wall.url, open_timeout=10) as ws:
            ws.send(json.dumps({"type": "hello", "token": wall.token("p"), "screen": "p"}))
            assert orjson.loads(ws.recv(timeout=10))["type"] == "snapshot"
            rng = random.Random(12)
            records = [_poison(rng, i, uid) for i in range(3000)]
            for k, v in records:
                producer.p.send(producer.topic, key=k, value=v)
            producer.p.flush()
            # What the source must count, from the same records through the same code.
            expect = KafkaTileSource(_offline(), TileStore())
            outcomes = [expect.apply_record(k, v, 0, i) for i, (k, v) in enumerate(records)]
            bad = len(records) - outcomes.count("applied") - outcomes.count("stale") \
                - outcomes.count("absent") - outcomes.count("removed")
            assert bad > 2000, outcomes[:20]  # the records are mostly poison indeed
            for version in (1, 2, 3):
                producer.send(good_id, version, {"value": version})
                recv_until(ws, lambda m, v=version: isinstance(m, dict) and m.get("type") == "tile"
                           and m["tile"]["id"] == good_id and m["tile"]["version"] == v,
                           timeout=30)

            def skipped() -> int:
                s = wall.server.store.stats
                return s.undecodable + s.decoder_errors + s.apply_errors

            deadline = time.monotonic() + 30
            while wall.call(skipped) < bad:
                assert time.monotonic() < deadline, (wall.call(skipped), bad)
                time.sleep(0.2)
            # Other tests of this session share the topic; their bad records count too.
            assert wall.call(skipped) >= bad
            health = wall.call(wall.server.health)
            assert health["status"] == "ok", health
            assert wall.server._source_task is not None and not wall.server._source_task.done()
    finally:
        producer.close()
        wall.stop()
