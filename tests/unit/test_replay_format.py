"""The recording codec and CLI time parsing (pure)."""

from __future__ import annotations

import math

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ioc.replay.exceptions import RecordingError
from ioc.replay.format import (
    IMAGE_SCHEMA,
    RECORD_SCHEMA,
    KafkaRecord,
    decode_message,
    encode_message,
    event_time_ns,
    parse_time,
    schema_for,
)

_bytes = st.one_of(st.none(), st.binary(max_size=64), st.text(max_size=32).map(str.encode))
records = st.builds(
    KafkaRecord,
    topic=st.just("ioc.events"),
    partition=st.integers(0, 63),
    offset=st.integers(0, 2**62),
    timestamp_ms=st.integers(0, 2**42),
    key=_bytes,
    value=_bytes,
    headers=st.lists(st.tuples(st.text(min_size=1, max_size=8), _bytes), max_size=4).map(tuple),
    timestamp_type=st.sampled_from([0, 1]),
)


@given(records, st.sampled_from([RECORD_SCHEMA, IMAGE_SCHEMA]))
def test_any_record_round_trips_byte_exact(rec, schema):
    back = decode_message(encode_message(rec, schema), topic=rec.topic, schema=schema)
    assert back == rec


def test_camera_frame_is_a_foxglove_compressed_image():
    jpeg = b"\xff\xd8\xff\xe0" + bytes(range(256)) + b"\xff\xd9"
    rec = KafkaRecord("ioc.camera.frames", 2, 7, 1_700_000_000_123, b"cam-1", jpeg,
                      (("seq", b"7"),), event_time_ns=1_700_000_000_100_000_001)
    obj = orjson.loads(encode_message(rec, schema_for("camera.frames")))
    assert obj["format"] == "jpeg" and obj["frame_id"] == "cam-1"
    assert obj["timestamp"] == {"sec": 1_700_000_000, "nsec": 100_000_001}
    import base64

    assert base64.b64decode(obj["data"]) == jpeg
    assert schema_for("events") == RECORD_SCHEMA


def test_utf8_stays_readable_binary_goes_base64():
    rec = KafkaRecord("t", 0, 0, 0, b"abc", b"\xff\x00", (("h", "é".encode()),))
    obj = orjson.loads(encode_message(rec, RECORD_SCHEMA))
    assert obj["kafka"]["key"] == "abc"
    assert obj["kafka"]["headers"] == [["h", "é"]]
    assert obj["value"] == {"base64": "/wA="}


def test_decode_error_says_where_and_what():
    with pytest.raises(RecordingError, match=r"chunk at byte 99: expected a ioc.KafkaRecord JSON"):
        decode_message(b'{"value": 1}', topic="t", schema=RECORD_SCHEMA, where="f.mcap: chunk at byte 99")
    with pytest.raises(RecordingError, match="value: expected null, a string"):
        decode_message(b'{"kafka": {"partition": 0, "offset": 0, "timestamp": 0}, "value": 5}',
                       topic="t", schema=RECORD_SCHEMA)


@pytest.mark.parametrize(("value", "headers", "expected"), [
    (b'{"time": 1700000000.5}', (), 1_700_000_000_500_000_000),
    (b'{"time": 1700000000500}', (), 1_700_000_000_500_000_000),
    (b'{"observed_at": "2023-11-14T22:13:20Z"}', (), 1_700_000_000_000_000_000),
    (b'{"dateObserved": {"type": "Property", "value": "2023-11-14T22:13:20+00:00"}}', (),
     1_700_000_000_000_000_000),
    (b"\xff\xd8jpeg", (("event_time", b"1700000000.25"),), 1_700_000_000_250_000_000),
    (b'{"x": 1}', (), None),
    (b"not json", (), None),
    (None, (), None),
])
def test_event_time_from_headers_or_value(value, headers, expected):
    assert event_time_ns(value, headers) == expected


def test_parse_time_forms():
    now = 1_000_000.0
    assert parse_time("now", now=now) == now
    assert parse_time("-5m", now=now) == now - 300
    assert parse_time("-1.5h", now=now) == now - 5400
    assert parse_time("1700000000", now=now) == 1_700_000_000
    assert parse_time("2023-11-14T22:13:20Z", now=now) == 1_700_000_000
    assert parse_time("2023-11-14T22:13:20", now=now) == 1_700_000_000  # UTC when no zone
    with pytest.raises(ValueError, match=r"expected a time .* got 'yesterday'"):
        parse_time("yesterday", now=now)
    assert not math.isnan(parse_time("0", now=now))
