"""Pure cores of the wall: tokens, latest-wins queue, tile store, protocol, layouts."""

from __future__ import annotations

import os
import stat

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from ioc.config import load_settings
from ioc.config._wall import ScreenLayout, TilePlacement, WallSettings, demo_screens
from ioc.errors import AuthError, ConfigError
from ioc.tiles import Tile
from ioc.wall.auth import TokenSigner, load_or_create_secret
from ioc.wall.exceptions import CloseCode, TokenError, WallProtocolError
from ioc.wall.protocol import (
    EncodedTile,
    Hello,
    build_snapshot,
    encode_image_frame,
    parse_client_message,
    parse_hello,
    parse_image_frame,
)
from ioc.wall.queues import LatestWinsQueue, QueueFull
from ioc.wall.state import TileStore

KEY = b"k" * 32


# -- tokens ----------------------------------------------------------------------------------

def test_token_roundtrip_scope_and_expiry():
    s = TokenSigner(KEY)
    tok = s.issue(["main", "ops"], 60, subject="display-3", now=1000)
    claims = s.verify(tok, "ops", now=1030)
    assert claims.screens == ("main", "ops") and claims.subject == "display-3"
    with pytest.raises(TokenError) as e:
        s.verify(tok, "other", now=1030)
    assert e.value.code == CloseCode.FORBIDDEN and "not 'other'" in e.value.reason
    with pytest.raises(TokenError) as e:
        s.verify(tok, "main", now=1061)
    assert e.value.code == CloseCode.UNAUTHORIZED and "expired 1 s ago" in e.value.reason
    assert isinstance(e.value, AuthError)
    assert s.verify(s.issue(["*"], 60), "anything").allows("x")


def test_token_tampering_and_other_key_are_refused():
    s = TokenSigner(KEY)
    body, sig = s.issue(["main"], 60).split(".")
    forged = orjson.dumps({"scr": ["*"], "exp": 2**40, "iat": 0, "sub": ""})
    import base64

    forged_body = base64.urlsafe_b64encode(forged).rstrip(b"=").decode()
    for bad in (f"{forged_body}.{sig}", f"{body}.{sig[:-2]}", "nodot", "", 42, f"{body}.{sig}.x"):
        with pytest.raises(TokenError) as e:
            s.verify(bad, "main")
        assert e.value.code == CloseCode.UNAUTHORIZED
    with pytest.raises(TokenError):
        TokenSigner(b"x" * 32).verify(f"{body}.{sig}", "main")
    assert "kkkk" not in repr(s) and "***" in repr(s)


def test_secret_file_created_once_with_mode_600(tmp_path):
    cfg = WallSettings(secret_file=tmp_path / "secrets" / "wall_secret")
    key = load_or_create_secret(cfg)
    assert len(key) >= 32
    mode = stat.S_IMODE(os.stat(cfg.secret_file).st_mode)
    assert mode == 0o600, oct(mode)
    assert load_or_create_secret(cfg) == key
    assert load_or_create_secret(WallSettings(secret="s" * 20)) == b"s" * 20
    (tmp_path / "short").write_text("abc")
    with pytest.raises(ConfigError):
        load_or_create_secret(WallSettings(secret_file=tmp_path / "short"))


# -- latest-wins queue -------------------------------------------------------------------------

def test_latest_wins_keeps_newest_per_key_in_first_arrival_order():
    q: LatestWinsQueue[int] = LatestWinsQueue(max_keys=3)
    assert q.put("a", 1) is False
    q.put("b", 1)
    assert q.put("a", 2) is True
    q.put("ping", 0, urgent=True)
    assert [q.pop(), q.pop(), q.pop(), q.pop()] == [0, 2, 1, None]
    assert q.drops == 1 and q.delivered == 3
    q.put("a", 1), q.put("b", 1), q.put("c", 1)
    with pytest.raises(QueueFull):
        q.put("d", 1)


@given(st.lists(st.tuples(st.sampled_from("abcdef"), st.integers()), max_size=200))
def test_latest_wins_property(ops):
    q: LatestWinsQueue[int] = LatestWinsQueue(max_keys=6)
    last: dict[str, int] = {}
    for k, v in ops:
        q.put(k, v)
        last[k] = v
    out = []
    while (x := q.pop()) is not None:
        out.append(x)
    assert sorted(out) == sorted(last.values())
    assert q.drops == len(ops) - len(last)
    assert len(q) == 0


# -- store -----------------------------------------------------------------------------------

def test_store_keeps_only_newer_versions_and_notifies():
    store = TileStore()
    seen: list[tuple[str, int | None]] = []
    unsub = store.subscribe(frozenset({"kpi:a"}), lambda e, i: seen.append((i, e.version if e else None)))
    assert store.apply(Tile("kpi:a", "kpi", 2, 1.0))
    assert not store.apply(Tile("kpi:a", "kpi", 2, 1.0))
    assert not store.apply(Tile("kpi:a", "kpi", 1, 1.0))
    assert store.apply(Tile("kpi:b", "kpi", 1, 1.0))  # not subscribed
    assert store.remove("kpi:a") and not store.remove("kpi:a")
    unsub()
    store.apply(Tile("kpi:a", "kpi", 9, 1.0))
    assert seen == [("kpi:a", 2), ("kpi:a", None)]
    assert store.stats.stale == 2 and store.stats.removed == 1


# -- protocol --------------------------------------------------------------------------------

def test_image_frame_roundtrip_and_errors():
    data = encode_image_frame("camera:é-1", 2**40 + 3, b"\xff\xd8jpeg")
    assert parse_image_frame(data) == ("camera:é-1", 2**40 + 3, b"\xff\xd8jpeg")
    with pytest.raises(ValueError, match="IOCI"):
        parse_image_frame(b"JUNK" + data[4:])


@pytest.mark.parametrize("raw,code,text", [
    (b"\x00", 4000, "binary frame"),
    ("not json", 4000, "expected JSON"),
    ('{"type": "subscribe"}', 4000, "hello/ping/pong"),
    ("[1, 2]", 4000, "got a list"),
])
def test_bad_client_messages(raw, code, text):
    with pytest.raises(WallProtocolError) as e:
        parse_client_message(raw)
    assert e.value.code == code and text in e.value.reason


def test_hello_validation():
    h = parse_hello({"type": "hello", "token": "t", "screen": "main", "layout": "abc",
                     "versions": {"kpi:a": 3}})
    assert h == Hello("t", "main", "abc", {"kpi:a": 3})
    for bad, code in (({"type": "ping"}, 4000), ({"type": "hello", "token": "t"}, 4000),
                      ({"type": "hello", "screen": "s", "token": 5}, 4001),
                      ({"type": "hello", "screen": "s", "token": "t", "versions": {"a": "1"}}, 4000),
                      ({"type": "hello", "screen": "s", "token": "t",
                        "versions": {str(i): i for i in range(600)}}, 4000)):
        with pytest.raises(WallProtocolError) as e:
            parse_hello(bad)
        assert e.value.code == code, bad


def _layout(ids):
    return ScreenLayout(columns=len(ids), rows=1, tiles=[
        TilePlacement(tile=t, col=i + 1, row=1) for i, t in enumerate(ids)])


def test_snapshot_full_resume_and_fallbacks():
    layout = _layout(["kpi:a", "kpi:b", "camera:c"])
    tiles = {t.id: EncodedTile.of(t) for t in (
        Tile("kpi:a", "kpi", 5, 1.0), Tile("kpi:b", "kpi", 7, 1.0),
        Tile("camera:c", "camera", 3, 1.0, image=b"img"))}
    h = layout.layout_hash()

    def snap(layout_hash, versions, ready=True):
        s = build_snapshot("main", layout, tiles, Hello("t", "main", layout_hash, versions),
                           now=10.0, heartbeat_s=5, ready=ready)
        return s, orjson.loads(s.message)

    s, m = snap(None, {})
    assert m["full"] and len(m["tiles"]) == 3 and len(s.frames) == 1
    assert parse_image_frame(s.frames[0]) == ("camera:c", 3, b"img")
    s, m = snap(h, {"kpi:a": 5, "kpi:b": 6, "camera:c": 3, })
    assert not m["full"] and [t["id"] for t in m["tiles"]] == ["kpi:b"] and s.frames == []
    _, m = snap(h, {"kpi:a": 5, "kpi:b": 7, "camera:c": 3})
    assert not m["full"] and m["tiles"] == []
    # The client holds a tile the server no longer has: it is told to remove it.
    tiles_wo_b = dict(tiles)
    del tiles_wo_b["kpi:b"]
    s2 = build_snapshot("main", layout, tiles_wo_b, Hello("t", "main", h, {"kpi:a": 5, "kpi:b": 7}),
                        now=1, heartbeat_s=5)
    assert orjson.loads(s2.message)["removed"] == ["kpi:b"]
    for args in ((h, {"kpi:a": 99}), ("other", {"kpi:a": 5}), (h, {"kpi:zz": 1})):
        assert snap(*args)[1]["full"], args
    assert snap(h, {"kpi:a": 5}, ready=False)[1]["full"]


# -- layouts ---------------------------------------------------------------------------------

def test_layout_rejects_overlap_overflow_and_duplicates():
    with pytest.raises(ValidationError, match="overlaps kpi:a at column 2, row 1"):
        ScreenLayout(columns=3, rows=1, tiles=[TilePlacement(tile="kpi:a", col=1, row=1, col_span=2),
                                               TilePlacement(tile="kpi:b", col=2, row=1)])
    with pytest.raises(ValidationError, match=r"expected to fit a 2x2 grid, got columns 2\.\.3"):
        ScreenLayout(columns=2, rows=2, tiles=[TilePlacement(tile="kpi:a", col=2, row=1, col_span=2)])
    with pytest.raises(ValidationError, match="placed twice"):
        ScreenLayout(columns=2, rows=1, tiles=[TilePlacement(tile="kpi:a", col=1, row=1),
                                               TilePlacement(tile="kpi:a", col=2, row=1)])


def test_wall_settings_defaults_and_bad_keys_reported_with_path():
    s = load_settings(env={})
    assert s.wall.host == "127.0.0.1" and s.wall.compression == "off"
    assert "main" in s.wall.screens and len(s.wall.screens["main"].tiles) >= 12
    assert demo_screens()["main"].layout_hash() == s.wall.screens["main"].layout_hash()
    with pytest.raises(ConfigError) as e:
        load_settings(env={}, overrides={"wall": {"screens": {"Bad Name": {}}, "max_clients": 0,
                                                  "colour": "x"}})
    text = str(e.value)
    assert "wall.screens" in text and "wall.max_clients" in text and "wall.colour: unknown key" in text


def test_example_layout_file_is_valid():
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "deploy" / "wall.example.yaml"
    s = load_settings(path, env={})
    assert {"main", "mobility", "egov"} <= set(s.wall.screens)
