"""Wall tiles: the contract between the producers (events, KPIs, cameras) and the wall.

A tile is the latest state of one thing on the wall. Tiles travel on the compacted
``<ns>.wall.tiles`` topic, keyed by tile id, so a new wall server rebuilds the latest
version of every tile by reading the topic from the start.

Tile ids (stable): ``camera:<camera>``, ``kpi:<kpi>[:<group>]``,
``sensor:<entity>:<metric>``, ``alerts:<scope>``, ``text:<name>``, and the scorecards'
``scorecard:<level>:<parent path>``, ``target:<indicator>:<unit path>``, ``card:<unit path>``.

Kinds and their payloads (JSON objects):

- ``camera``: ``{"camera", "width", "height", "motion": 0..1, "counts": {name: int},
  "health": "online"|"offline"|"degraded", "fps": float, "tamper": {"covered",
  "defocused", "moved", "ready": bool}}`` (``tamper`` only when tamper detection ran);
  the thumbnail (JPEG with the overlays drawn in) is the tile's ``image``.
- ``kpi``: ``{"label", "value": float|None, "unit", "period", "group", "trend": [float],
  "ranking": [{"group", "value"}]}``.
- ``series``: ``{"label", "entity", "metric", "unit", "value", "series": [[t, v], ...]}``.
- ``alerts``: ``{"scope", "items": [{"id", "severity": "info"|"warning"|"critical",
  "entity", "message", "raised_at", "state"}]}``.
- ``text``: ``{"text"}``.
- ``leaderboard``, ``target``, ``scorecard``: the scorecards' tiles; their payloads are
  documented in ``ioc.scorecard._tiles``. Each also has a one-line ``text``: a client
  that does not know a kind renders its ``text`` (the wall client falls back to text).

``version`` increases per tile id (producers use the data's time in ms or a counter); a
consumer ignores a version not greater than the one it holds. ``time`` is the time of the
data (unix seconds), which the wall uses for staleness; ``produced_at`` is when the tile
was produced (for latency figures).

Wire format of a message value (one shape for all tiles)::

    b"IOCT" | u32 big-endian length of the JSON header | JSON header | image bytes (may be empty)

A ``None`` value (tombstone) removes the tile.
"""

from __future__ import annotations

import math
import struct
import time as _time
from dataclasses import dataclass, field
from typing import Any

import orjson

from .errors import IOCError

__all__ = ["TILE_KINDS", "Tile", "TileDecodeError", "decode_tile", "encode_tile"]

TILE_KINDS = frozenset({"camera", "kpi", "series", "alerts", "text", "chart", "clock",
                        "leaderboard", "target", "scorecard"})
_MAGIC = b"IOCT"
_LEN = struct.Struct(">I")


class TileDecodeError(IOCError):
    """A tiles-topic message is not a valid tile."""


@dataclass(frozen=True, slots=True)
class Tile:
    id: str
    kind: str
    version: int
    time: float
    payload: dict[str, Any] = field(default_factory=dict)
    image: bytes | None = None
    image_type: str = "image/jpeg"
    produced_at: float = 0.0

    def header(self) -> dict[str, Any]:
        h: dict[str, Any] = {
            "id": self.id,
            "kind": self.kind,
            "version": self.version,
            "time": self.time,
            "produced_at": self.produced_at,
            "payload": self.payload,
        }
        if self.image is not None:
            h["image_type"] = self.image_type
            h["image_size"] = len(self.image)
        return h


def encode_tile(tile: Tile, *, stamp: bool = True) -> bytes:
    """Serialise ``tile``; ``stamp`` sets ``produced_at`` to now when it is 0."""
    h = tile.header()
    if stamp and not tile.produced_at:
        h["produced_at"] = _time.time()
    hb = orjson.dumps(h)
    return b"".join((_MAGIC, _LEN.pack(len(hb)), hb, tile.image or b""))


def decode_tile(data: bytes) -> Tile:
    """Parse a tiles-topic value.

    Raises:
        TileDecodeError: with what was expected and what arrived (nothing else,
            whatever the bytes).
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TileDecodeError(f"expected a tile (bytes), got {type(data).__name__}")
    if len(data) < 8 or data[:4] != _MAGIC:
        raise TileDecodeError(f"expected a tile starting with {_MAGIC!r}, got {data[:8]!r}")
    (n,) = _LEN.unpack_from(data, 4)
    if 8 + n > len(data):
        raise TileDecodeError(f"tile header says {n} bytes but only {len(data) - 8} follow")
    try:
        h = orjson.loads(data[8 : 8 + n])
        image = data[8 + n :] if "image_size" in h else None
        if image is not None and len(image) != h["image_size"]:
            raise TileDecodeError(f"image_size says {h['image_size']} bytes, got {len(image)}")
        payload = h.get("payload") or {}
        if not isinstance(payload, dict):
            raise TileDecodeError(f"payload: expected a JSON object, got {type(payload).__name__}")
        version = int(h["version"])
        if not 0 <= version < 2**63:
            raise TileDecodeError(f"version: expected 0 <= version < 2**63, got {version}")
        # orjson reads no NaN/Infinity today; kept so that every decoded Tile re-encodes
        time, produced_at = float(h["time"]), float(h.get("produced_at") or 0.0)
        if not (math.isfinite(time) and math.isfinite(produced_at)):
            raise TileDecodeError(f"time/produced_at: expected finite numbers, got "
                                  f"{time!r}/{produced_at!r}")
        return Tile(
            id=str(h["id"]),
            kind=str(h["kind"]),
            version=version,
            time=time,
            payload=payload,
            image=image,
            image_type=str(h.get("image_type", "image/jpeg")),
            produced_at=produced_at,
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, OverflowError,
            AttributeError, RecursionError) as exc:
        raise TileDecodeError(f"bad tile header: {exc}") from exc
