"""The video wall: websocket tile server, protocol, tokens and demo tiles.

Modules: :mod:`.protocol` (Sans-I/O messages and handshake), :mod:`.state` (tile
store), :mod:`.queues` (per-client latest-wins queue), :mod:`.auth` (screen tokens),
:mod:`.kafka_source` (the tiles topic), :mod:`.server` (websockets adapter, static
files, /healthz), :mod:`.demo` (demo tiles), :mod:`.cli` (``ioc wall``).
"""

from .auth import TokenClaims, TokenSigner, load_or_create_secret
from .exceptions import CloseCode, TokenError, WallError, WallProtocolError
from .protocol import EncodedTile, build_snapshot, encode_image_frame, parse_image_frame
from .queues import LatestWinsQueue
from .state import TileStore

__all__ = [
    "CloseCode",
    "EncodedTile",
    "LatestWinsQueue",
    "TileStore",
    "TokenClaims",
    "TokenError",
    "TokenSigner",
    "WallError",
    "WallProtocolError",
    "build_snapshot",
    "encode_image_frame",
    "load_or_create_secret",
    "parse_image_frame",
]
