"""Every decoder of bytes from Kafka raises only its documented error, whatever arrives.

Arbitrary bytes, arbitrary JSON (10,000 deep, large, every unicode plane, lone
surrogates, NaN/Infinity, 10**400, invalid UTF-8 inside strings) and arbitrary shapes
of each record type: the decoder returns a value or raises the one error its
docstring names (which the consumers turn into a dead letter); valid records pass.
"""

from __future__ import annotations

import math
import string

import msgspec
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ioc.aggregate import Rollup
from ioc.aggregate._window import Agg
from ioc.errors import InvalidEvent, InvalidFrame, InvalidRecord, RecordingError
from ioc.events import (
    DEAD_LETTER_REASONS,
    DLQ_HEADERS,
    Event,
    LogThrottle,
    dead_letter_headers,
    decode_event,
    encode_event,
    internal_error_message,
    raw_origin,
    split_raw,
    validate_event,
)
from ioc.events._route import route_raw
from ioc.kpi import KpiValue
from ioc.replay.format import (
    IMAGE_SCHEMA,
    RECORD_SCHEMA,
    KafkaRecord,
    decode_message,
    encode_message,
    event_time_ns,
)
from ioc.rules import Alert
from ioc.tiles import Tile, TileDecodeError, decode_tile, encode_tile
from tests.fixtures.hostile import (
    DEEP,
    deep_json,
    hostile_bytes,
    hostile_headers,
    hostile_json_bytes,
    hostile_json_bytes_for,
    hostile_json_values,
    hostile_text,
    invalid_utf8_in_string,
    mutated_json_objects,
)

FAST = settings(max_examples=200, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

NOW = 1_750_000_000.0
_name = st.text(string.ascii_letters + string.digits + "_", min_size=1, max_size=12)
valid_event_dicts = st.fixed_dictionaries(
    {"id": _name, "source": st.from_regex(r"\A[a-z][a-z0-9_]{0,10}\Z"),
     "type": st.sampled_from(["air.quality", "traffic.flow", "noise.level"]),
     "entity": _name, "time": st.floats(1.6e9, NOW)},
    optional={"values": st.dictionaries(_name, st.floats(-1e12, 1e12), max_size=5),
              "attributes": st.dictionaries(_name, st.one_of(
                  st.text(string.printable, max_size=20), st.integers(-(2**63), 2**63 - 1),
                  st.booleans()), max_size=3)})
VALID = {"id": "e1", "source": "sensors", "type": "air.quality", "entity": "s-1",
         "time": NOW - 10, "values": {"pm25": 12.5}, "attributes": {"channel": "online"}}

# --- events.raw: split_raw, validate_event, route_raw ---------------------------------


@FAST
@given(hostile_json_bytes_for(VALID))
def test_split_raw_returns_bytes_or_raises_invalid_event(data):
    try:
        items = split_raw(data)
    except InvalidEvent as exc:
        assert exc.reason in DEAD_LETTER_REASONS
        return
    assert all(isinstance(i, bytes) for i in items)


@FAST
@given(hostile_bytes())
def test_split_raw_on_arbitrary_bytes(data):
    try:
        assert all(isinstance(i, bytes) for i in split_raw(data))
    except InvalidEvent as exc:
        assert exc.reason in DEAD_LETTER_REASONS


@pytest.mark.parametrize("kind", ["list", "object", "mixed", "unclosed"])
def test_nesting_10000_deep_is_not_json_not_a_crash(kind):
    data = deep_json(DEEP, kind)
    for decode in (split_raw, validate_event, decode_event):
        try:
            decode(data)
        except InvalidEvent as exc:
            assert exc.reason in ("not_json", "not_object", "unknown_field", "too_large")
    with pytest.raises(InvalidRecord):
        Rollup.from_bytes(data)


@FAST
@given(invalid_utf8_in_string())
def test_invalid_utf8_inside_a_string_is_not_json(data):
    """The issue's record: bytes that are not UTF-8 inside a JSON string."""
    with pytest.raises(InvalidEvent) as exc:
        validate_event(data)
    assert exc.value.reason == "not_json"
    with pytest.raises(InvalidEvent):
        decode_event(data)
    assert route_raw(b"[" + data + b"]", None, [], topic="t", partition=0, offset=1)[0].suffix \
        == "dlq"


@FAST
@given(hostile_json_bytes_for(VALID))
def test_validate_event_bytes_returns_an_event_or_invalid_event(data):
    try:
        e = validate_event(data, now=NOW)
    except InvalidEvent as exc:
        assert exc.reason in DEAD_LETTER_REASONS and str(exc)
        return
    assert isinstance(e, Event)
    assert decode_event(encode_event(e)) == e  # what passes can be stored and read back


@FAST
@given(mutated_json_objects(VALID))
def test_validate_event_dict_returns_an_event_or_invalid_event(obj):
    try:
        e = validate_event(obj, now=NOW)
    except InvalidEvent as exc:
        assert exc.reason in DEAD_LETTER_REASONS
        return
    assert decode_event(encode_event(e)) == e


@FAST
@given(hostile_json_values())
def test_validate_event_any_python_value(value):
    try:
        validate_event(value, now=NOW)
    except InvalidEvent as exc:
        assert exc.reason in DEAD_LETTER_REASONS


@FAST
@given(valid_event_dicts)
def test_valid_events_still_pass(obj):
    raw = orjson.dumps(obj)
    e = validate_event(raw, now=NOW)
    assert (e.id, e.entity) == (obj["id"], obj["entity"])
    out = route_raw(raw, b"k", [], topic="ns.events.raw", partition=2, offset=7, now=NOW)
    assert [r.suffix for r in out] == ["events"]
    assert decode_event(out[0].value) == e


@FAST
@given(st.lists(st.one_of(valid_event_dicts.map(orjson.dumps), hostile_json_bytes()),
                max_size=8), hostile_headers(), st.one_of(st.none(), hostile_bytes(max_size=30)))
def test_route_raw_never_raises_and_every_bad_one_is_a_dead_letter_with_its_origin(
        parts, headers, key):
    value = b"[" + b",".join(parts) + b"]"
    for v in (value, *parts, None):
        out = route_raw(v, key, headers, topic="ns.events.raw", partition=3, offset=42, now=NOW)
        assert out, "every record gives an output (an empty batch a dead letter)"
        for r in out:
            if r.suffix == "events":
                assert isinstance(decode_event(r.value), Event)
                continue
            assert r.suffix == "dlq"
            h = dict(r.headers)
            assert set(DLQ_HEADERS) <= set(h)
            assert h["dlq.reason"].decode() in DEAD_LETTER_REASONS
            assert (h["dlq.topic"], h["dlq.partition"], h["dlq.offset"], h["dlq.stage"]) == (
                b"ns.events.raw", b"3", b"42", b"validate")


def test_valid_events_in_a_batch_with_bad_ones_pass_and_the_bad_ones_name_their_index():
    good = orjson.dumps(VALID)
    value = b"[" + good + b',{"id":"x\xff"},' + deep_json(50) + b"," + good + b"]"
    out = route_raw(value, None, [], topic="t", partition=0, offset=5, now=NOW)
    assert [r.suffix for r in out] == ["events", "dlq", "dlq", "events"]
    assert [dict(r.headers).get("dlq.index") for r in out] == [None, b"1", b"2", None]


@FAST
@given(hostile_headers())
def test_raw_origin_of_any_headers(headers):
    o = raw_origin([*headers, ("ioc.raw", b"1:2:x")])
    assert o is None or (isinstance(o, tuple) and len(o) == 3)
    assert raw_origin([("ioc.raw", None)]) is None  # type: ignore[list-item]


# --- events: the canonical decoder ----------------------------------------------------


@FAST
@given(hostile_json_bytes_for(VALID))
def test_decode_event_returns_an_event_or_invalid_event(data):
    try:
        e = decode_event(data)
    except InvalidEvent as exc:
        assert exc.reason in DEAD_LETTER_REASONS
        return
    assert 946_684_800.0 <= e.time <= 32_503_680_000.0
    assert all(math.isfinite(v) for v in e.values.values())


def test_decode_event_refuses_times_no_validator_lets_through():
    for t in (0, -1, 1e300, 4e10):
        with pytest.raises(InvalidEvent) as exc:
            decode_event(orjson.dumps({**VALID, "time": t}))
        assert exc.value.reason == "bad_time"
    with pytest.raises(InvalidEvent):
        decode_event(b'{"id":"a","source":"s","type":"a.b","entity":"e","time":1.7e9,'
                     b'"attributes":{"x":1' + b"0" * 400 + b"}}")


# --- rollups, KPI values, alerts, tiles -----------------------------------------------

ROLLUP = Rollup("s-1", "pm25", 60, 1_700_000_040, Agg(3, 30.0, 5.0, 15.0, 10.0, 1.7e9),
                "updated")
KPI = KpiValue("egov.share_online", "agency-1", "day", "2026-12-01", 3.0, 4.0, 75.0)
ALERT = Alert("a1", "pm25-high", "s-1", "pm25", "warning", "raised", 1_700_000_000,
              1.7e9, None, 55.0, "pm25 above 50", "air")


@FAST
@given(hostile_json_bytes_for(orjson.loads(ROLLUP.to_bytes())))
def test_rollup_from_bytes(data):
    try:
        r = Rollup.from_bytes(data)
    except InvalidRecord as exc:
        assert exc.reason == "undecodable"
        return
    assert isinstance(r, Rollup) and isinstance(r.size, int)


@FAST
@given(hostile_json_bytes_for(orjson.loads(KPI.to_bytes())))
def test_kpi_value_from_bytes(data):
    try:
        v = KpiValue.from_bytes(data)
    except InvalidRecord as exc:
        assert exc.reason == "undecodable"
        return
    assert isinstance(v.kpi, str) and isinstance(v.numerator, float)


@FAST
@given(hostile_json_bytes_for(orjson.loads(ALERT.to_bytes())))
def test_alert_from_bytes(data):
    try:
        a = Alert.from_bytes(data)
    except InvalidRecord as exc:
        assert exc.reason == "undecodable"
        return
    assert a.state in ("raised", "cleared") and isinstance(a.start, int)


@FAST
@given(hostile_bytes())
def test_record_decoders_on_arbitrary_bytes(data):
    for decode in (Rollup.from_bytes, KpiValue.from_bytes, Alert.from_bytes):
        with pytest.raises(InvalidRecord) if data[:1] != b"{" else _maybe(InvalidRecord):
            decode(data)


def test_valid_records_still_decode():
    assert Rollup.from_bytes(ROLLUP.to_bytes()).key == ROLLUP.key
    assert KpiValue.from_bytes(KPI.to_bytes()) == KPI
    assert Alert.from_bytes(ALERT.to_bytes()) == ALERT
    for bad in (None, 17, "text"):
        with pytest.raises(InvalidRecord):
            KpiValue.from_bytes(bad)  # type: ignore[arg-type]


TILE = Tile("sensor:s-1:pm25", "series", 3, 1.7e9, {"value": 1.5}, b"\xff\xd8jpeg\xff\xd9")


@FAST
@given(st.one_of(
    hostile_bytes(),
    hostile_json_bytes_for(TILE.header()).map(
        lambda h: b"IOCT" + len(h).to_bytes(4, "big") + h),
    st.tuples(hostile_json_bytes(), st.integers(0, 2**32 - 1), hostile_bytes(max_size=64)).map(
        lambda t: b"IOCT" + t[1].to_bytes(4, "big") + t[0] + t[2]),
    st.tuples(mutated_json_objects(TILE.header()), hostile_bytes(max_size=64)).map(
        lambda t: _tile_of(t[0], t[1]))))
def test_decode_tile(data):
    try:
        tile = decode_tile(data)
    except TileDecodeError:
        return
    assert isinstance(tile, Tile) and isinstance(tile.version, int)


def _tile_of(header: dict, image: bytes) -> bytes:
    try:
        h = orjson.dumps(header, option=orjson.OPT_NON_STR_KEYS)
    except (TypeError, orjson.JSONEncodeError):
        h = b"{}"
    return encode_tile(TILE)[:4] + len(h).to_bytes(4, "big") + h + image


def test_valid_tiles_still_decode():
    t = decode_tile(encode_tile(TILE))
    assert (t.id, t.version, t.image, t.payload) == (TILE.id, 3, TILE.image, TILE.payload)


# --- camera frames: keys, headers, JPEG bytes -----------------------------------------


@FAST
@given(hostile_headers(), st.one_of(st.none(), st.floats(0, 4e9)),
       st.one_of(st.none(), hostile_bytes(max_size=80)))
def test_frame_headers_and_keys_never_raise(headers, kafka_ts, key):
    from streams.vision_agent import MAX_CLOCK_SKEW_S, camera_of, frame_meta
    from vision.capture import parse_frame_headers

    for hs in (headers, dict(headers), [(k.encode("utf-8", "replace"), v) for k, v in headers]):
        meta = frame_meta(parse_frame_headers, hs, kafka_ts, NOW)
        assert math.isfinite(meta.ts)
        assert abs(meta.ts - NOW) <= MAX_CLOCK_SKEW_S or meta.ts == (kafka_ts or 0.0)
        assert isinstance(meta.seq, int) and -1 <= meta.seq < 2**63
        assert 0 <= meta.width < 2**31 and 0 <= meta.height < 2**31
    cam = camera_of(key)
    assert cam is None or (0 < len(cam) <= 64 and cam.isascii())


def test_a_far_capture_time_is_a_bad_header():
    from streams.vision_agent import frame_meta
    from vision.capture import parse_frame_headers

    meta = frame_meta(parse_frame_headers, [("ts", b"1e300"), ("seq", b"1"), ("width", b"4"),
                                            ("height", b"3")], 1_750_000_000.0, NOW)
    assert meta.ts == 1_750_000_000.0 and meta.problem and "ts" in meta.problem


_JPEG_HEAD = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00"


def _real_jpeg() -> bytes:
    import cv2
    import numpy as np

    ok, buf = cv2.imencode(".jpg", np.full((120, 160, 3), 90, np.uint8))
    assert ok
    return buf.tobytes()


@FAST
@given(st.one_of(hostile_bytes(), hostile_bytes().map(lambda b: _JPEG_HEAD + b),
                 hostile_bytes().map(lambda b: _JPEG_HEAD + b + b"\xff\xd9")))
def test_decode_jpeg_returns_an_image_or_invalid_frame(data):
    from vision.frames import decode_jpeg

    try:
        img = decode_jpeg(data)
    except InvalidFrame as exc:
        assert exc.reason
        return
    assert img.ndim == 3


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(hostile_bytes(max_size=512), hostile_bytes().map(lambda b: _JPEG_HEAD + b),
                 st.sampled_from([_real_jpeg()[:n] for n in (0, 2, 100, 400, 10**6)])),
       st.floats(allow_nan=True, allow_infinity=True))
def test_the_camera_analyzer_survives_any_frame(data, ts):
    """The real analyzer on any bytes and capture time: a result (``skipped`` for bad
    frames), never an exception (the agent would count one as ``error``)."""
    from streams.vision_agent import _analyze
    from vision import AnalyticsConfig, CameraAnalyzer

    an = CameraAnalyzer("cam-1", AnalyticsConfig())
    out = _analyze(an, [(_real_jpeg(), NOW, 1), (data, ts, 2)])
    assert out[0] is not None and out[0].skipped is None
    assert out[1] is not None, "the analyzer raised on a hostile frame"


# --- record and replay (MCAP messages) ------------------------------------------------

kafka_records = st.builds(
    KafkaRecord, topic=st.just("ns.events.raw"), partition=st.integers(0, 2**31 - 1),
    offset=st.integers(0, 2**63 - 1), timestamp_ms=st.integers(0, 2**43),
    key=st.one_of(st.none(), hostile_bytes(max_size=64)),
    value=st.one_of(st.none(), hostile_bytes(), hostile_json_bytes()),
    headers=hostile_headers().map(tuple), timestamp_type=st.sampled_from([0, 1]))


@FAST
@given(kafka_records, st.sampled_from([RECORD_SCHEMA, IMAGE_SCHEMA]))
def test_any_kafka_record_is_recorded_and_read_back(rec, schema):
    rec.event_time_ns = event_time_ns(rec.value, rec.headers)
    assert rec.event_time_ns is None or 0 <= rec.event_time_ns < 2**63
    data = encode_message(rec, schema)
    back = decode_message(data, topic=rec.topic, schema=schema, where="test")
    assert (back.key, back.value, back.partition, back.offset) == (
        rec.key, rec.value, rec.partition, rec.offset)
    assert back.headers == tuple((k, v if v is not None else None) for k, v in rec.headers)


@FAST
@given(st.one_of(hostile_bytes(), hostile_json_bytes(),
                 hostile_json_bytes_for({"kafka": {"partition": 0, "offset": 1, "timestamp": 2,
                                                   "key": None, "headers": []},
                                         "value": "x"})),
       st.sampled_from([RECORD_SCHEMA, IMAGE_SCHEMA]))
def test_decode_message_raises_only_recording_error(data, schema):
    try:
        r = decode_message(data, topic="t", schema=schema, where="file@1")
    except RecordingError as exc:
        assert "file@1" in str(exc)
        return
    assert isinstance(r, KafkaRecord)


@FAST
@given(st.one_of(st.none(), hostile_bytes(), hostile_json_bytes(),
                 hostile_json_values().map(lambda v: orjson.dumps({"time": v},
                                                                  default=str)
                                           if _dumpable(v) else b"{}")),
       hostile_headers().map(tuple),
       st.sampled_from(["nan", "inf", "-1", "1e400", "9999-12-31T23:59:59-23:59",
                        "0001-01-01T00:00:00+23:59", "1" * 5000]))
def test_event_time_ns_never_raises(value, headers, odd):
    for hs in (headers, (("time", odd.encode()),), (("ts", odd.encode()),)):
        t = event_time_ns(value, hs)
        assert t is None or 0 <= t < 2**63


def _dumpable(v: object) -> bool:
    try:
        orjson.dumps({"time": v})
        return True
    except (TypeError, orjson.JSONEncodeError):
        return False


# --- the dead-letter headers and the log throttle -------------------------------------


@FAST
@given(hostile_text(), hostile_text(), hostile_headers(), st.one_of(st.none(), hostile_text()))
def test_dead_letter_headers_never_raise_and_keep_the_original_headers(reason, message,
                                                                       headers, field):
    h = dead_letter_headers(reason, topic="ns.rollups", partition=1, offset=2, message=message,
                            field=field, index=None, stage="tiles", headers=headers)
    assert len(h) == len(headers) + len(DLQ_HEADERS)
    assert [k for k, _ in h[len(headers):]] == list(DLQ_HEADERS)
    assert all(isinstance(v, bytes) for _k, v in h)
    assert len(dict(h[len(headers):])["dlq.message"]) <= 1000


def test_internal_error_message_names_the_type_and_where():
    try:
        {}["missing"]
    except KeyError as exc:
        text = internal_error_message(exc)
    assert text.startswith("KeyError: 'missing' (at ") and "test_hostile_decoders.py" in text
    assert len(internal_error_message(ValueError("x" * 5000))) == 400


def test_log_throttle_allows_one_line_per_key_and_counts_the_rest():
    t = LogThrottle(10.0)
    assert t.allow("a", now=0.0) == 0
    assert [t.allow("a", now=s) for s in (1.0, 2.0, 3.0)] == [None, None, None]
    assert t.allow("b", now=3.0) == 0
    assert t.allow("a", now=10.5) == 3


class _maybe:
    """A context manager that tolerates ``exc`` (a JSON-looking value may decode)."""

    def __init__(self, exc: type[BaseException]) -> None:
        self.exc = exc

    def __enter__(self) -> None:
        return None

    def __exit__(self, typ, value, tb) -> bool:
        return typ is not None and issubclass(typ, self.exc)


def test_msgspec_is_what_we_think_it_is():
    """The reason these guards exist: msgspec raises these outside MsgspecError."""
    with pytest.raises(UnicodeDecodeError):
        msgspec.json.decode(b'{"a":"\xff"}')
    with pytest.raises(RecursionError):
        msgspec.json.Decoder(list[msgspec.Raw]).decode(deep_json(DEEP))


@FAST
@given(st.one_of(st.none(), hostile_bytes(), hostile_json_bytes()))
def test_the_probe_agent_answers_any_record(value):
    from streams.probe import probe_reply

    reply = orjson.loads(probe_reply(value, "w:1", NOW))
    assert reply["worker"] == "w:1" and reply["echoed_at"] == NOW
    assert probe_reply(b'{"id": "p1"}', "w", NOW) == orjson.dumps(
        {"id": "p1", "worker": "w", "echoed_at": NOW})
