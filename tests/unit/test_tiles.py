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


def _header_record(header: bytes) -> bytes:
    import struct

    return b"".join((encode_tile(Tile(id="t", kind="kpi", version=1, time=1.0))[:4],
                     struct.pack(">I", len(header)), header))


@pytest.mark.parametrize("header, what", [
    (b'{"id":"t","kind":"kpi","version":1,"time":1,"payload":[[1,2]]}', "payload"),
    (b'{"id":"t","kind":"kpi","version":1e300,"time":1}', "version"),
    (b'{"id":"t","kind":"kpi","version":-1,"time":1}', "version"),
])
def test_headers_the_wall_cannot_serve_are_refused(header, what):
    # A tile that decodes must be one the wall can store and re-encode: a payload that is
    # not an object (dict([[1, 2]]) == {1: 2}, which orjson cannot encode), a version
    # beyond int64 or a negative one used to get past decode_tile.
    with pytest.raises(TileDecodeError, match=what):
        decode_tile(_header_record(header))
