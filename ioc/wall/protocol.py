"""The wall protocol, Sans-I/O: message shapes, the hello/resume handshake, image frames.

Nothing here touches a socket; :mod:`ioc.wall.server` moves the bytes. Messages:

client -> server (JSON text frames)
    ``{"type": "hello", "token": T, "screen": S, "layout": H | null, "versions": {id: v}}``
        first message, within the authentication timeout. ``layout``/``versions`` are
        what the client already holds (empty on a first connect).
    ``{"type": "ping", "t": any}``  answered by ``{"type": "pong", "t": same}``
    ``{"type": "pong", "t": any}``  answer to a server ping

server -> client
    ``{"type": "snapshot", "screen": S, "full": bool, "layout": {...,"hash": H},
    "tiles": [header, ...], "removed": [id, ...], "server_time": s, "heartbeat_s": n}``
        after a hello. ``full``: forget everything held and take ``tiles``; otherwise
        (resume) ``tiles`` are only those that changed and ``removed`` those gone.
    ``{"type": "tile", "tile": header}``  a newer version of one tile
    ``{"type": "remove", "id": id}``      the tile was deleted (tombstone)
    ``{"type": "ping", "t": s}`` / ``{"type": "pong", "t": any}``
    binary image frame, right after the JSON of a tile whose header has ``image_size``::

        b"IOCI" | u16 BE id length | u64 BE version | id (UTF-8) | image bytes

A tile header is :meth:`ioc.tiles.Tile.header`: id, kind, version, time, produced_at,
payload, and image_type/image_size for image tiles.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

import orjson

from ..config._wall import ScreenLayout
from ..tiles import Tile
from .exceptions import CloseCode, WallProtocolError

__all__ = [
    "EncodedTile",
    "Hello",
    "Snapshot",
    "build_snapshot",
    "encode_image_frame",
    "encode_message",
    "layout_message",
    "parse_client_message",
    "parse_hello",
    "parse_image_frame",
]

IMAGE_MAGIC = b"IOCI"
_IMG = struct.Struct(">4sHQ")
_MAX_VERSIONS = 512
_MAX_T_CHARS = 64


def encode_message(msg: dict[str, Any]) -> bytes:
    """JSON bytes of a server message (sent as a text frame)."""
    return orjson.dumps(msg)


def encode_image_frame(tile_id: str, version: int, image: bytes) -> bytes:
    """The binary frame carrying ``image`` for ``tile_id`` at ``version``."""
    tid = tile_id.encode()
    return b"".join((_IMG.pack(IMAGE_MAGIC, len(tid), version), tid, image))


def parse_image_frame(data: bytes) -> tuple[str, int, bytes]:
    """``(tile id, version, image)`` from a binary frame; ValueError on another shape."""
    if len(data) < _IMG.size or data[:4] != IMAGE_MAGIC:
        raise ValueError(f"expected an image frame starting with {IMAGE_MAGIC!r}, got {data[:8]!r}")
    _, n, version = _IMG.unpack_from(data)
    start = _IMG.size
    return data[start : start + n].decode(), version, data[start + n :]


@dataclass(frozen=True, slots=True)
class EncodedTile:
    """A tile with its messages serialised once, shared by every client that gets it."""

    tile: Tile
    text: bytes
    frame: bytes | None

    @classmethod
    def of(cls, tile: Tile) -> EncodedTile:
        text = encode_message({"type": "tile", "tile": tile.header()})
        frame = encode_image_frame(tile.id, tile.version, tile.image) if tile.image is not None else None
        return cls(tile, text, frame)

    @property
    def id(self) -> str:
        return self.tile.id

    @property
    def version(self) -> int:
        return self.tile.version


@dataclass(frozen=True, slots=True)
class Hello:
    """A parsed hello."""

    token: str
    screen: str
    layout_hash: str | None
    versions: dict[str, int]


def parse_client_message(data: str | bytes) -> dict[str, Any]:
    """Decode a client frame into a message dict with a known ``type``.

    Total over its input: any ``str`` or ``bytes`` either gives a message whose ``type`` is
    hello/ping/pong (and whose ping/pong ``t`` is null, a boolean, a number or a string of
    at most 64 characters, so echoing it cannot fail) or raises ``WallProtocolError``.

    Raises:
        WallProtocolError: 4000 for binary frames, bad JSON, an unknown type or a bad ``t``.
    """
    if isinstance(data, bytes):
        raise WallProtocolError(CloseCode.PROTOCOL,
                                f"expected JSON text frames, got a binary frame of {len(data)} bytes")
    try:
        msg = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise WallProtocolError(CloseCode.PROTOCOL, f"expected JSON, got: {exc}") from exc
    if not isinstance(msg, dict):
        raise WallProtocolError(CloseCode.PROTOCOL,
                                f"expected a JSON object of type hello/ping/pong, got a "
                                f"{type(msg).__name__}")
    kind = msg.get("type")
    if not isinstance(kind, str) or kind not in ("hello", "ping", "pong"):
        raise WallProtocolError(CloseCode.PROTOCOL,
                                f"expected a message of type hello/ping/pong, got {_short(kind)}")
    if kind != "hello":
        t = msg.get("t")
        if not (t is None or isinstance(t, bool | int | float)
                or (isinstance(t, str) and len(t) <= _MAX_T_CHARS)):
            raise WallProtocolError(CloseCode.PROTOCOL,
                                    f"{kind}.t: expected null, a number or a string of at most "
                                    f"{_MAX_T_CHARS} characters, got {_short(t)}")
    return msg


def _short(value: Any) -> str:
    """``repr`` of a client-sent value, cut so an error message stays small."""
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:37]}..."


def parse_hello(msg: dict[str, Any]) -> Hello:
    """Check the shape of a hello message.

    Raises:
        WallProtocolError: 4000 naming the bad field.
    """
    if msg.get("type") != "hello":
        raise WallProtocolError(CloseCode.PROTOCOL,
                                f"expected hello as the first message, got {_short(msg.get('type'))}")
    token, screen = msg.get("token"), msg.get("screen")
    if not isinstance(screen, str) or not screen:
        raise WallProtocolError(CloseCode.PROTOCOL,
                                f"hello.screen: expected a name, got {_short(screen)}")
    if not isinstance(token, str):
        raise WallProtocolError(CloseCode.UNAUTHORIZED,
                                f"hello.token: expected a string, got {type(token).__name__}")
    layout = msg.get("layout")
    versions = msg.get("versions") or {}
    if not isinstance(versions, dict) or len(versions) > _MAX_VERSIONS:
        raise WallProtocolError(CloseCode.PROTOCOL,
                                f"hello.versions: expected a map of at most {_MAX_VERSIONS} "
                                f"tile versions, got {type(versions).__name__}")
    clean: dict[str, int] = {}
    for k, v in versions.items():
        if not isinstance(v, int) or isinstance(v, bool):
            raise WallProtocolError(CloseCode.PROTOCOL,
                                    f"hello.versions[{_short(k)}]: expected an integer, "
                                    f"got {_short(v)}")
        clean[str(k)] = v
    return Hello(token, screen, layout if isinstance(layout, str) else None, clean)


def layout_message(name: str, layout: ScreenLayout) -> dict[str, Any]:
    """The layout as the client sees it (with its hash)."""
    d = layout.model_dump(mode="json")
    d["name"] = name
    d["hash"] = layout.layout_hash()
    return d


@dataclass
class Snapshot:
    """What to send after a hello: the snapshot message and the image frames that follow."""

    message: bytes
    frames: list[bytes] = field(default_factory=list)
    full: bool = True
    tile_count: int = 0


def build_snapshot(name: str, layout: ScreenLayout, tiles: dict[str, EncodedTile], hello: Hello,
                   *, now: float, heartbeat_s: float, ready: bool = True) -> Snapshot:
    """The reply to ``hello`` for screen ``name``, given the current tiles of that screen.

    A resume (only changed tiles) is possible when the client holds the same layout hash,
    the server has finished rebuilding from the topic, and no version the client holds is
    newer than the server's (which would mean the topic was reset). Otherwise: full.
    """
    layout_hash = layout.layout_hash()
    held = hello.versions
    full = (
        not ready
        or hello.layout_hash != layout_hash
        or not held
        or any(tid in tiles and v > tiles[tid].version for tid, v in held.items())
        or any(tid not in layout.tile_ids() for tid in held)
    )
    if full:
        send = list(tiles.values())
        removed: list[str] = []
    else:
        send = [t for tid, t in tiles.items() if held.get(tid, -1) < t.version]
        removed = sorted(tid for tid in held if tid not in tiles)
    msg = {
        "type": "snapshot",
        "screen": name,
        "full": full,
        "layout": layout_message(name, layout),
        "tiles": [t.tile.header() for t in send],
        "removed": removed,
        "server_time": now,
        "heartbeat_s": heartbeat_s,
    }
    frames = [t.frame for t in send if t.frame is not None]
    return Snapshot(encode_message(msg), frames, full, len(send))
