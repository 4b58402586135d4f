import pytest
from hypothesis import given
from hypothesis import strategies as st

from ioc.tiles import Tile, TileDecodeError, decode_tile, encode_tile


@given(
    tid=st.text(min_size=1, max_size=40),
    version=st.integers(min_value=0, max_value=2**62),
    image=st.one_of(st.none(), st.binary(max_size=2000)),
    value=st.floats(allow_nan=False, allow_infinity=False),
)
def test_round_trip(tid, version, image, value):
    t = Tile(tid, "kpi", version, 1.5, {"value": value}, image=image, produced_at=2.0)
    assert decode_tile(encode_tile(t)) == t


def test_produced_at_is_stamped():
    t = decode_tile(encode_tile(Tile("text:a", "text", 1, 1.0, {"text": "x"})))
    assert t.produced_at > 0


@pytest.mark.parametrize("bad", [b"", b"XXXX\x00\x00\x00\x01{", b"IOCT\x00\x00\x00\x10{}", b"IOCT\x00\x00\x00\x02{}"])
def test_garbage_is_a_clear_error(bad):
    with pytest.raises(TileDecodeError):
        decode_tile(bad)
