"""The events sink's pre-encoded COPY rows say what ``event_rows`` says (pure, no I/O)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ioc.errors import InvalidEvent
from ioc.events import Event, encode_event
from ioc.events._storage import EVENTS_SINK, event_copy_rows, event_rows, pg_time_us

_PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)

# decode_event lets through 2000-01-01 .. 3000-01-01
times = st.floats(min_value=946_684_800.0, max_value=32_503_680_000.0,
                  allow_nan=False, allow_infinity=False)


@settings(max_examples=500, deadline=None)
@given(times)
def test_pg_time_us_rounds_as_datetime_fromtimestamp(t: float) -> None:
    assert pg_time_us(t) == (datetime.fromtimestamp(t, UTC) - _PG_EPOCH) // _US


@pytest.mark.parametrize("t", [946_684_800.0, 1_700_000_000.0000005, 1_700_000_000.0000015,
                               1_700_000_000.9999996, 1_764_633_600.123456])
def test_pg_time_us_at_rounding_edges(t: float) -> None:
    assert pg_time_us(t) == (datetime.fromtimestamp(t, UTC) - _PG_EPOCH) // _US


names = st.text(min_size=1, max_size=20)
attrs = st.dictionaries(names, st.one_of(st.text(max_size=30), st.booleans(),
                                         st.integers(-(2**63), 2**63 - 1),
                                         st.floats(allow_nan=False, allow_infinity=False)),
                        max_size=5)
values = st.dictionaries(names, st.floats(allow_nan=False, allow_infinity=False), max_size=5)


@settings(max_examples=300, deadline=None)
@given(times, values, attrs, names)
def test_copy_rows_hold_what_event_rows_hold(t: float, v: dict, a: dict, ident: str) -> None:
    e = Event(id=ident, source="s", type="air.quality", entity="x", time=t, values=v,
              attributes=a)
    raw = encode_event(e)
    [plain] = event_rows(b"x", raw, ())
    [enc] = event_copy_rows(b"x", raw, ())
    assert enc[0] == (plain[0] - _PG_EPOCH) // _US
    assert enc[1:5] == plain[1:5]
    for got, want in zip(enc[5:], plain[5:], strict=True):
        assert got[:1] == b"\x01"  # jsonb's binary format version
        assert orjson.loads(got[1:]) == want


def test_copy_types_match_the_encoded_row() -> None:
    assert EVENTS_SINK.copy_types is not None
    assert len(EVENTS_SINK.copy_types) == len(EVENTS_SINK.columns)
    assert event_copy_rows(None, None, ()) == []


@pytest.mark.parametrize("bad", [b"", b"\xff\xfe", b"[]", b'{"id": 1}', b"{" * 10_000])
def test_copy_rows_refuse_what_event_rows_refuses(bad: bytes) -> None:
    with pytest.raises(InvalidEvent):
        event_rows(None, bad, ())
    with pytest.raises(InvalidEvent):
        event_copy_rows(None, bad, ())
