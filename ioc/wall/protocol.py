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

Protocol 2 (hello ``"protocol": 2``; docs/wall.md "Protocol v2") adds, client -> server,
``{"type": "action", "id": REQ, "action": "ack"|"assign"|"comment"|"close", "alert": A,
"to": NAME, "text": STR, "idempotency_key"?: KEY}`` and ``{"type": "preset", "id": REQ, "preset": NAME|null}``,
each answered by ``{"type": "result", "id": REQ, "ok": bool, "error"?, "detail"?}``;
server -> client ``alert_state``, ``preset``, ``popup``, ``popup_end``, and more fields
in the snapshot. A protocol-1 connection is sent none of these.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field
from typing import Any

import orjson

from ..config._wall import GridLayout
from ..tiles import Tile
from .exceptions import CloseCode, WallProtocolError

__all__ = [
    "PROTOCOL_VERSION",
    "EncodedTile",
    "Hello",
    "Rejected",
    "Request",
    "Snapshot",
    "build_snapshot",
    "encode_image_frame",
    "encode_message",
    "layout_message",
    "parse_client_message",
    "parse_hello",
    "parse_image_frame",
    "parse_request",
    "result_message",
]

PROTOCOL_VERSION = 2
_CLIENT_TYPES = ("hello", "ping", "pong", "action", "preset")
_MAX_ID_CHARS = 64
_MAX_FIELD_CHARS = 500

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
    protocol: int = 1


def parse_client_message(data: str | bytes) -> dict[str, Any]:
    """Decode a client frame into a message dict with a known ``type``.

    Total over its input: any ``str`` or ``bytes`` either gives a message whose ``type`` is
    hello/ping/pong/action/preset (whose ping/pong ``t`` and action/preset ``id`` are
    null, a boolean, a number or a string of at most 64 characters, so echoing them
    cannot fail) or raises ``WallProtocolError``. The other fields of action/preset
    are checked by :func:`parse_request`, whose refusals are answers, not closes.

    Raises:
        WallProtocolError: 4000 for binary frames, bad JSON, an unknown type, a bad ``t``
            or a bad request ``id`` (a request that cannot be answered).
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
    if not isinstance(kind, str) or kind not in _CLIENT_TYPES:
        raise WallProtocolError(CloseCode.PROTOCOL,
                                f"expected a message of type hello/ping/pong, got {_short(kind)}")
    if kind in ("action", "preset"):
        rid = msg.get("id")
        if not (rid is None or isinstance(rid, bool | int | float)
                or (isinstance(rid, str) and len(rid) <= _MAX_ID_CHARS)):
            raise WallProtocolError(CloseCode.PROTOCOL,
                                    f"{kind}.id: expected null, a number or a string of at most "
                                    f"{_MAX_ID_CHARS} characters, got {_short(rid)}")
    elif kind != "hello":
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
    protocol = msg.get("protocol", 1)
    if protocol is None:
        protocol = 1
    if not isinstance(protocol, int) or isinstance(protocol, bool) or protocol < 1:
        raise WallProtocolError(CloseCode.PROTOCOL,
                                f"hello.protocol: expected an integer >= 1, got {_short(protocol)}")
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
    return Hello(token, screen, layout if isinstance(layout, str) else None, clean,
                 min(protocol, PROTOCOL_VERSION))


@dataclass(frozen=True, slots=True)
class Request:
    """A checked ``action`` or ``preset`` message.

    ``kind`` is "action" or "preset"; for an action, ``action`` and ``alert`` are set
    (``to`` for assign, ``text`` for comment); for a preset, ``preset`` (None: back to
    the rules and the default layout). ``idempotency_key``: the client's key of an action
    it may retry (None: none given; see ``OperatorDesk.authorise``).
    """

    id: Any
    kind: str
    action: str | None = None
    alert: str | None = None
    to: str | None = None
    text: str | None = None
    preset: str | None = None
    idempotency_key: str | None = None


@dataclass(frozen=True, slots=True)
class Rejected:
    """A request answered with ``ok: false`` (the connection stays open)."""

    id: Any
    error: str  # forbidden | rate_limited | unknown_alert | unknown_preset | invalid | unavailable
    detail: str

    def message(self) -> dict[str, Any]:
        return result_message(self.id, error=self.error, detail=self.detail)


def result_message(rid: Any, *, error: str | None = None, detail: str = "") -> dict[str, Any]:
    """``{"type": "result", "id": rid, "ok": error is None, ...}``."""
    if error is None:
        return {"type": "result", "id": rid, "ok": True}
    return {"type": "result", "id": rid, "ok": False, "error": error, "detail": detail[:200]}


def _text_field(msg: dict[str, Any], name: str, *, required: bool,
                limit: int = _MAX_FIELD_CHARS) -> str | None:
    v = msg.get(name)
    if v is None and not required:
        return None
    if not isinstance(v, str) or not v.strip() or len(v) > limit:
        raise ValueError(f"{msg.get('type')}.{name}: expected a non-empty string of at most "
                         f"{limit} characters, got {_short(v)}")
    return v


_IDEMPOTENCY_KEY = re.compile(r"[A-Za-z0-9_.:-]{8,64}")


def parse_request(msg: dict[str, Any]) -> Request | Rejected:
    """Check an ``action``/``preset`` message from :func:`parse_client_message`.

    Total: a :class:`Request`, or a :class:`Rejected` with error ``invalid`` and the
    bad field named (never raises).
    """
    from .workflow import ACTIONS, MAX_ALERT_ID_CHARS, MAX_COMMENT_CHARS, MAX_NAME_CHARS

    rid = msg.get("id")
    try:
        if msg.get("type") == "preset":
            if "preset" not in msg:
                raise ValueError("preset.preset: expected a preset name or null, got nothing")
            return Request(rid, "preset", preset=_text_field(msg, "preset", required=False,
                                                               limit=40))
        action = msg.get("action")
        if not isinstance(action, str) or action not in ACTIONS:
            raise ValueError(f"action.action: expected one of {list(ACTIONS)}, got "
                             f"{_short(action)}")
        alert = _text_field(msg, "alert", required=True, limit=MAX_ALERT_ID_CHARS)
        to = _text_field(msg, "to", required=action == "assign", limit=MAX_NAME_CHARS)
        text = _text_field(msg, "text", required=action == "comment", limit=MAX_COMMENT_CHARS)
        key = msg.get("idempotency_key")
        if key is not None and not (isinstance(key, str) and _IDEMPOTENCY_KEY.fullmatch(key)):
            raise ValueError("action.idempotency_key: expected 8-64 characters of A-Z a-z 0-9 "
                             f"_ - . :, got {_short(key)}")
        return Request(rid, "action", action=action, alert=alert,
                       to=to if action == "assign" else None,
                       text=text if action == "comment" else None, idempotency_key=key)
    except ValueError as exc:
        return Rejected(rid, "invalid", str(exc))


def layout_message(name: str, layout: GridLayout) -> dict[str, Any]:
    """The layout as the client sees it (with its hash): the grid fields only."""
    d = layout.grid_dump()
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


def build_snapshot(name: str, layout: GridLayout, tiles: dict[str, EncodedTile], hello: Hello,
                   *, now: float, heartbeat_s: float, ready: bool = True,
                   v2: dict[str, Any] | None = None) -> Snapshot:
    """The reply to ``hello`` for screen ``name``, given the current tiles of that screen.

    ``v2``: the protocol-2 fields (protocol, role, operator, alert_states, preset,
    preset_by, popups, overlays), added to the message as given; None for protocol 1.

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
    if v2 is not None:
        msg.update(v2)
    frames = [t.frame for t in send if t.frame is not None]
    return Snapshot(encode_message(msg), frames, full, len(send))
