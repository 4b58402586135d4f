"""Hostile input at the wall, without I/O: client messages, tokens, tiles-topic records.

The contract under test: every parser is total. Any bytes or text give a valid result or
the wall's own error (``WallError`` with a close code the client is sent); any record of
the tiles topic gives a counted outcome; nothing else is raised.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ioc.config import load_settings
from ioc.config._wall import WallSettings
from ioc.tiles import Tile, encode_tile
from ioc.wall._logs import LogThrottle
from ioc.wall.auth import TokenSigner
from ioc.wall.desk import OperatorDesk
from ioc.wall.exceptions import CloseCode, WallError, WallProtocolError
from ioc.wall.kafka_source import KafkaTileSource
from ioc.wall.protocol import (
    Rejected,
    Request,
    encode_message,
    parse_client_message,
    parse_hello,
    parse_request,
    result_message,
)
from ioc.wall.state import TileStore
from ioc.wall.workflow import ActionRecord
from tests.fixtures.hostile import (
    deep_json,
    hostile_bytes,
    hostile_json_bytes,
    hostile_json_values,
    hostile_text,
    mutated_json_objects,
)

KEY = b"unit-test-wall-key-0123456789"
CLIENT_CODES = {CloseCode.PROTOCOL, CloseCode.UNAUTHORIZED, CloseCode.FORBIDDEN}
OUTCOMES = {"applied", "stale", "removed", "absent", "undecodable", "decoder_error", "apply_error"}
HELLO = {"type": "hello", "token": "x.y", "screen": "main", "layout": None,
         "versions": {"kpi:a": 1}}


def _as_text(data: bytes) -> str:
    """What websockets hands over for a text frame: valid UTF-8, decoded."""
    return data.decode("utf-8", "replace")


def _texts() -> st.SearchStrategy[str]:
    return st.one_of(
        hostile_text(max_size=200),
        hostile_bytes(max_size=512).map(_as_text),
        hostile_json_bytes().map(_as_text),
        st.builds(lambda v: _as_text(orjson.dumps(v, option=orjson.OPT_NON_STR_KEYS))
                  if _dumpable(v) else "{}", mutated_json_objects(HELLO)),
        st.builds(lambda t, k: orjson.dumps({"type": k, "t": t}).decode() if _dumpable(t) else "",
                  hostile_json_values(max_leaves=8), st.sampled_from(["ping", "pong", "hello"])),
    )


def _dumpable(v: Any) -> bool:
    try:
        orjson.dumps(v, option=orjson.OPT_NON_STR_KEYS)
    except (TypeError, orjson.JSONEncodeError):
        return False
    return True


@settings(max_examples=500, deadline=None)
@given(st.one_of(_texts(), hostile_bytes()))
def test_client_messages_parse_or_raise_a_protocol_error(raw: str | bytes) -> None:
    try:
        msg = parse_client_message(raw)
    except WallProtocolError as exc:
        assert exc.code == CloseCode.PROTOCOL
        assert 0 < len(exc.reason.encode()) <= 123  # fits a close frame
        return
    assert isinstance(raw, str)
    assert msg["type"] in ("hello", "ping", "pong", "action", "preset")
    if msg["type"] in ("action", "preset"):
        assert encode_message(result_message(msg.get("id")))
        return
    if msg["type"] != "hello":
        # What the server echoes must always encode.
        assert encode_message({"type": "pong", "t": msg.get("t")})
    try:
        hello = parse_hello(msg)
    except WallProtocolError as exc:
        assert exc.code in CLIENT_CODES
        return
    assert msg["type"] == "hello" and isinstance(hello.screen, str) and hello.screen
    assert all(isinstance(v, int) for v in hello.versions.values())


@pytest.mark.parametrize("raw,what", [
    (b"\x00\x01", "binary frame"),
    ("", "expected JSON"),
    ('{"type": ["ping"]}', "hello/ping/pong"),  # unhashable type
    ('{"type": "ping", "t": ' + deep_json(300).decode() + "}", "ping.t"),  # orjson.dumps limit
    ('{"type": "pong", "t": "' + "x" * 65 + '"}', "pong.t"),
    ('{"type": "ping", "t": {"a": 1}}', "ping.t"),
    (deep_json(10_000).decode(), "expected JSON"),
    ("[" * 10_000, "expected JSON"),
    ('"\\ud800"', "expected JSON"),
    ("\ud800", "expected JSON"),  # a lone surrogate in a str (never from websockets)
    ("1" * 100_000, "expected JSON"),
])
def test_named_hostile_messages(raw: str | bytes, what: str) -> None:
    with pytest.raises(WallProtocolError) as e:
        parse_client_message(raw)
    assert e.value.code == CloseCode.PROTOCOL and what in e.value.reason
    assert len(e.value.reason.encode()) <= 123


@pytest.mark.parametrize("msg,code,what", [
    ({"type": "hello", "token": 5, "screen": "main"}, CloseCode.UNAUTHORIZED, "hello.token"),
    ({"type": "hello", "token": "t", "screen": ["main"]}, CloseCode.PROTOCOL, "hello.screen"),
    ({"type": "hello", "token": "t", "screen": "main", "versions": [1]}, CloseCode.PROTOCOL,
     "hello.versions"),
    ({"type": "hello", "token": "t", "screen": "main", "versions": {"a": True}},
     CloseCode.PROTOCOL, "hello.versions"),
    ({"type": "ping"}, CloseCode.PROTOCOL, "expected hello"),
])
def test_wrong_hello_types(msg: dict[str, Any], code: int, what: str) -> None:
    with pytest.raises(WallProtocolError) as e:
        parse_hello(msg)
    assert e.value.code == code and what in e.value.reason


@settings(max_examples=300, deadline=None)
@given(st.one_of(
    hostile_text(max_size=300),
    st.builds(lambda a, b: f"{a}.{b}", hostile_text(max_size=40), hostile_text(max_size=40)),
    hostile_json_values(max_leaves=4),
))
def test_tokens_verify_or_raise_a_token_error(token: Any) -> None:
    signer = TokenSigner(KEY)
    with pytest.raises(WallError) as e:  # none of these is a valid token
        signer.verify(token, "main")
    assert e.value.code == CloseCode.UNAUTHORIZED


def test_non_ascii_token_is_refused_not_a_type_error() -> None:
    # hmac.compare_digest raises TypeError for non-ASCII str: once an unhandled crash.
    signer = TokenSigner(KEY)
    good = signer.issue(["main"], 60)
    body, _sig = good.split(".")
    with pytest.raises(WallError) as e:
        signer.verify(f"{body}.é", "main")
    assert e.value.code == CloseCode.UNAUTHORIZED
    assert signer.verify(good, "main").screens == ("main",)


# -- protocol 2: action/preset requests and hello.protocol ---------------------------------

ACTION = {"type": "action", "id": "r1", "action": "comment", "alert": "a1", "text": "hi",
          "to": "bob"}
PRESET = {"type": "preset", "id": 3, "preset": "flood"}


def _request_texts() -> st.SearchStrategy[str]:
    objs = st.one_of(mutated_json_objects(ACTION), mutated_json_objects(PRESET),
                     st.builds(lambda a, v: {**ACTION, "action": a, "alert": v},
                               st.sampled_from(["ack", "assign", "comment", "close", "x"]),
                               hostile_json_values(max_leaves=3)))
    return objs.filter(_dumpable).map(
        lambda v: _as_text(orjson.dumps(v, option=orjson.OPT_NON_STR_KEYS)))


def _desk() -> OperatorDesk:
    cfg = WallSettings.model_validate({"secret": "x" * 16, "screens": {"main": {
        "columns": 1, "rows": 1, "tiles": [{"tile": "alerts:all", "col": 1, "row": 1}],
        "presets": {"flood": {"columns": 1, "rows": 1,
                              "tiles": [{"tile": "sensor:r:level", "col": 1, "row": 1}]}}}}})
    desk = OperatorDesk(cfg)
    desk.on_alert_tile("alerts:all", {"items": [{"id": "a1", "severity": "critical",
                                                 "entity": "r", "state": "raised"}]})
    return desk


_DESK = _desk()
_OPERATOR = TokenSigner(KEY).verify(TokenSigner(KEY).issue(["main"], 600, subject="alice",
                                                           role="operator"), "main")


@settings(max_examples=300, deadline=None)
@given(_request_texts())
def test_requests_give_a_request_an_answer_or_a_protocol_error(raw: str) -> None:
    try:
        msg = parse_client_message(raw)
    except WallProtocolError as exc:
        assert exc.code == CloseCode.PROTOCOL and 0 < len(exc.reason.encode()) <= 123
        return
    if msg["type"] not in ("action", "preset"):
        return
    out = parse_request(msg)
    # every answer the server could send encodes, whatever the client sent
    if isinstance(out, Rejected):
        assert out.error == "invalid" and len(out.detail) <= 200
        assert encode_message(out.message())
        return
    assert isinstance(out, Request) and encode_message(result_message(out.id))
    for text in (out.alert, out.to, out.text, out.preset):
        assert text is None or (isinstance(text, str) and 0 < len(text) <= 500)
    decided = _DESK.authorise(_OPERATOR, "main", out, now=1.0)
    if isinstance(decided, Rejected):
        assert decided.error in ("unknown_alert", "unknown_preset", "invalid")
        assert encode_message(decided.message())
    else:  # what would be stored reads back the same
        assert ActionRecord.from_bytes(decided.to_bytes()) == decided


@settings(max_examples=300, deadline=None)
@given(hostile_json_values(max_leaves=4))
def test_hello_protocol_is_1_2_or_a_protocol_error(protocol: Any) -> None:
    try:
        hello = parse_hello({**HELLO, "protocol": protocol})
    except WallProtocolError as exc:
        assert exc.code == CloseCode.PROTOCOL and "hello.protocol" in exc.reason
        return
    assert hello.protocol in (1, 2)


# -- the tiles topic ---------------------------------------------------------------------


def _source() -> tuple[KafkaTileSource, TileStore]:
    s = load_settings(env={}, overrides={"namespace": "unit"})
    store = TileStore()
    return KafkaTileSource(s, store), store


def _tile_bytes(header: Any, image: bytes = b"") -> bytes:
    """A tiles-topic value with ``header`` (any JSON) as its header."""
    hb = orjson.dumps(header, option=orjson.OPT_NON_STR_KEYS)
    return b"IOCT" + len(hb).to_bytes(4, "big") + hb + image


_GOOD = Tile("kpi:ok", "kpi", 3, 1.7e9, {"value": 1}, produced_at=1.7e9).header()


def _header_records() -> st.SearchStrategy[bytes]:
    dumpable = mutated_json_objects(_GOOD).filter(_dumpable)
    return st.tuples(dumpable, st.binary(max_size=32)).map(lambda hi: _tile_bytes(*hi))


def _records() -> st.SearchStrategy[tuple[bytes | None, bytes | None]]:
    values = st.one_of(hostile_bytes(), hostile_json_bytes(), _header_records(), st.none(),
                       hostile_bytes(max_size=64).map(lambda b: b"IOCT" + b))
    keys = st.one_of(st.none(), hostile_bytes(max_size=40), st.just(b"kpi:ok"))
    return st.tuples(keys, values)


@settings(max_examples=500, deadline=None)
@given(st.lists(_records(), min_size=1, max_size=8))
def test_any_tiles_record_is_a_counted_outcome(records: list[tuple[bytes | None, bytes | None]]
                                                ) -> None:
    src, store = _source()
    outcomes = [src.apply_record(k, v, 0, i) for i, (k, v) in enumerate(records)]
    assert set(outcomes) <= OUTCOMES
    s = store.stats
    assert s.undecodable == outcomes.count("undecodable")
    assert s.decoder_errors == outcomes.count("decoder_error")
    assert s.apply_errors == outcomes.count("apply_error")
    assert s.applied == outcomes.count("applied")
    # Whatever was kept can be sent: its messages were encoded when it was stored.
    for tid in list(store._tiles):
        enc = store.get(tid)
        assert enc is not None and orjson.loads(enc.text)["tile"]["id"] == tid
    # And a good tile afterwards is served.
    good = Tile("kpi:after", "kpi", 1, 1.0, {"value": 2})
    assert src.apply_record(b"kpi:after", encode_tile(good), 0, 99) == "applied"


@pytest.mark.parametrize("header,outcome", [
    # Not tiles the wall can send: payload [[1, 2]] would become {1: 2} (orjson cannot
    # encode int keys); a version of 1e300 an integer beyond 64 bits. decode_tile
    # refuses both, so they are undecodable, not apply errors.
    ({**_GOOD, "payload": [[1, 2]]}, "undecodable"),
    ({**_GOOD, "version": 1e300}, "undecodable"),
    ({**_GOOD, "version": "x"}, "undecodable"),
    ([1, 2], "undecodable"),
    ({**_GOOD, "image_size": 5}, "undecodable"),
    (_GOOD, "applied"),
])
def test_named_tiles_records(header: Any, outcome: str, caplog: pytest.LogCaptureFixture) -> None:
    src, _store = _source()
    with caplog.at_level(logging.WARNING, logger="ioc.wall.kafka_source"):
        assert src.apply_record(b"kpi:ok", _tile_bytes(header), 2, 41) == outcome
    if outcome != "applied":
        assert "wall.tiles[2]@41" in caplog.text  # where: topic, partition, offset


def test_tombstones() -> None:
    src, store = _source()
    assert src.apply_record(b"kpi:a", encode_tile(Tile("kpi:a", "kpi", 1, 1.0)), 0, 0) == "applied"
    assert src.apply_record(b"kpi:a", None, 0, 1) == "removed"
    assert src.apply_record(b"\xff\xfe", None, 0, 2) == "absent"
    assert src.apply_record(None, None, 0, 3) == "undecodable"
    assert store.stats.undecodable == 1 and len(store) == 0


def test_skips_log_once_per_interval_with_a_count(caplog: pytest.LogCaptureFixture) -> None:
    src, store = _source()
    with caplog.at_level(logging.WARNING, logger="ioc.wall.kafka_source"):
        for i in range(1000):
            src.apply_record(b"k", b"junk", 0, i)
    lines = [r for r in caplog.records if "skipping" in r.getMessage()]
    assert store.stats.undecodable == 1000
    assert len(lines) == 1 and "@0:" in lines[0].getMessage()


def test_log_throttle_counts_what_it_held_back(caplog: pytest.LogCaptureFixture) -> None:
    lt = LogThrottle(logging.getLogger("t.throttle"), every_s=10)
    with caplog.at_level(logging.INFO, logger="t.throttle"):
        assert lt.log(logging.INFO, "a", "first %d", 1, now=0.0)
        assert not lt.log(logging.INFO, "a", "held", now=1.0)
        assert not lt.log(logging.INFO, "a", "held", now=2.0)
        assert lt.log(logging.INFO, "b", "other kind", now=2.0)
        assert lt.log(logging.INFO, "a", "again", now=11.0)
    msgs = [r.getMessage() for r in caplog.records]
    assert msgs == ["first 1", "other kind", "again (and 2 more like this since the last such line)"]
