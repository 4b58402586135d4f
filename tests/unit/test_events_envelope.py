"""The envelope: codec round trip, validation reasons and fields, raw batch records."""

from __future__ import annotations

import math

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ioc.errors import InvalidEvent
from ioc.events import (
    Event,
    chunk_events,
    decode_event,
    encode_event,
    split_raw,
    validate_event,
)

NOW = 1_750_000_000.0
GOOD = {"id": "a1", "source": "air", "type": "air.quality", "entity": "s-1", "time": NOW - 60,
        "values": {"pm25": 12.5, "no2": 40}, "attributes": {"unit": "ugm3", "calibrated": True}}

names = st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True)
# Canonical events travel as UTF-8 JSON: no NUL (storage) and no lone surrogates (Cs).
texts = st.text(alphabet=st.characters(blacklist_characters="\x00",
                                       blacklist_categories=("Cs",)), max_size=50)
events = st.builds(
    Event, id=texts.filter(bool), source=names,
    type=st.sampled_from(["air.quality", "traffic.flow", "noise.level", "flood.level"]),
    entity=texts.filter(bool),
    time=st.floats(min_value=1e9, max_value=NOW, allow_nan=False),
    values=st.dictionaries(names, st.floats(allow_nan=False, allow_infinity=False), max_size=5),
    attributes=st.dictionaries(names, st.one_of(texts, st.booleans(),
                                                st.integers(-(2**53), 2**53)), max_size=5))


@given(events)
def test_round_trip_and_validation_accept_every_canonical_event(e):
    b = encode_event(e)
    assert decode_event(b) == e
    assert validate_event(b, now=NOW) == e


def test_python_strings_that_are_not_unicode_text_are_refused_with_a_reason():
    with pytest.raises(InvalidEvent) as exc:
        validate_event({**GOOD, "entity": "s-\ud800"}, now=NOW)
    assert exc.value.reason == "bad_value" and "lone surrogate" in str(exc.value)


def test_iso_time_with_zone_and_int_values_are_normalised():
    e = validate_event({**GOOD, "time": "2025-06-01T12:00:00+02:00"}, now=NOW)
    assert e.time == 1748772000.0
    assert e.values == {"pm25": 12.5, "no2": 40.0} and isinstance(e.values["no2"], float)


@pytest.mark.parametrize("change, reason, field", [
    ({"time": "2025-06-01T12:00:00"}, "bad_time", "time"),  # no zone
    ({"time": 1_700_000_000_000}, "bad_time", "time"),  # milliseconds
    ({"time": NOW + 2 * 86400}, "bad_time", "time"),
    ({"values": {"pm25": "high"}}, "wrong_type", "values.pm25"),
    ({"values": {"pm25": True}}, "wrong_type", "values.pm25"),
    ({"values": {"pm25": math.nan}}, "not_finite", "values.pm25"),
    ({"values": {"k" * 65: 1}}, "bad_value", "values." + "k" * 65),
    ({"attributes": {"a": [1]}}, "wrong_type", "attributes.a"),
    ({"type": "Air"}, "bad_value", "type"),
    ({"id": ""}, "bad_value", "id"),
    ({"extra": 1}, "unknown_field", "extra"),
    ({"type": "egov.dossier"}, "bad_attribute", "attributes.channel"),
    ({"type": "egov.result", "attributes": {"return_channel": "fax"}}, "bad_attribute",
     "attributes.return_channel"),
    ({"type": "egov.document", "attributes": {"signed": 1}}, "bad_attribute",
     "attributes.signed"),
])
def test_invalid_events_name_reason_and_field(change, reason, field):
    with pytest.raises(InvalidEvent) as ei:
        validate_event({**GOOD, **change}, now=NOW)
    assert (ei.value.reason, ei.value.field) == (reason, field), str(ei.value)
    assert field.split(".")[0] in str(ei.value)


def test_missing_field_and_bad_bytes():
    body = {k: v for k, v in GOOD.items() if k != "entity"}
    with pytest.raises(InvalidEvent) as ei:
        validate_event(orjson.dumps(body), now=NOW)
    assert (ei.value.reason, ei.value.field) == ("missing_field", "entity")
    for raw, reason in [(b"{", "not_json"), (b"[]", "not_object"), (b"x" * 70000, "too_large")]:
        with pytest.raises(InvalidEvent) as ei:
            validate_event(raw, now=NOW)
        assert ei.value.reason == reason


def test_nul_characters_are_refused_before_storage():
    for body in ({**GOOD, "entity": "a\x00b"}, {**GOOD, "attributes": {"k": "x\x00"}}):
        for raw in (body, orjson.dumps(body)):
            with pytest.raises(InvalidEvent) as ei:
                validate_event(raw, now=NOW)
            assert ei.value.reason == "bad_value" and "NUL" in str(ei.value)


def test_egov_examples_are_valid():
    for t, attrs in [("egov.dossier", {"channel": "online"}),
                     ("egov.result", {"return_channel": "postal"}),
                     ("egov.document", {"signed": True})]:
        e = validate_event({**GOOD, "type": t, "entity": "agency-7", "values": {"count": 1},
                            "attributes": attrs}, now=NOW)
        assert e.attributes == attrs


def test_raw_batches_split_into_original_bytes_and_chunk_within_limits():
    evs = [validate_event({**GOOD, "id": f"x{i}"}, now=NOW) for i in range(2500)]
    chunks = list(chunk_events(evs, max_events=1000, max_bytes=10**6))
    assert [len(c) for _, c in chunks] == [1000, 1000, 500]
    parts = [b for rec, _ in chunks for b in split_raw(rec)]
    assert [decode_event(b) for b in parts] == evs
    small = list(chunk_events(evs[:100], max_bytes=2000))
    assert all(len(rec) <= 2000 for rec, _ in small) and sum(len(c) for _, c in small) == 100
    assert split_raw(b' [ {"a": 1} , 2 ]') == [b'{"a": 1}', b"2"]
    with pytest.raises(InvalidEvent):
        split_raw(b"[" + b"{}," * 1000 + b"{}]")
