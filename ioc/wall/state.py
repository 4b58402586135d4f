"""The tile store: the latest version of every tile, and who wants to hear about each.

Pure and single-threaded (the server's event loop owns it). ``apply`` keeps a tile only
when its version is newer than the one held, so replays of the compacted topic, replicas
and out-of-order partitions converge on the same state.
"""

from __future__ import annotations

from collections.abc import Callable, KeysView
from dataclasses import dataclass

from ..tiles import Tile
from .protocol import EncodedTile

__all__ = ["StoreStats", "TileStore"]

Listener = Callable[[EncodedTile | None, str], None]


@dataclass
class StoreStats:
    applied: int = 0
    stale: int = 0  # versions not newer than the held one, ignored
    removed: int = 0
    undecodable: int = 0  # records of the tiles topic that are not tiles (skipped)
    decoder_errors: int = 0  # records the tile decoder failed on unexpectedly (skipped)
    apply_errors: int = 0  # decoded tiles that could not be stored or sent (skipped)


class TileStore:
    """Latest :class:`EncodedTile` per tile id, with per-tile listeners.

    A listener is called as ``listener(encoded, tile_id)`` on a newer version and as
    ``listener(None, tile_id)`` when the tile is removed.
    """

    def __init__(self) -> None:
        self._tiles: dict[str, EncodedTile] = {}
        self._listeners: dict[str, set[Listener]] = {}
        self._watchers: list[tuple[str, Listener]] = []
        self.stats = StoreStats()

    def ids(self) -> KeysView[str]:
        """A live view of the held tile ids."""
        return self._tiles.keys()

    def watch(self, prefix: str, listener: Listener) -> None:
        """Also call ``listener`` for every tile whose id starts with ``prefix`` (alerts:)."""
        self._watchers.append((prefix, listener))

    def _notify(self, enc: EncodedTile | None, tile_id: str) -> None:
        for fn in tuple(self._listeners.get(tile_id, ())):
            fn(enc, tile_id)
        for prefix, fn in self._watchers:
            if tile_id.startswith(prefix):
                fn(enc, tile_id)

    def __len__(self) -> int:
        return len(self._tiles)

    def get(self, tile_id: str) -> EncodedTile | None:
        return self._tiles.get(tile_id)

    def select(self, ids: frozenset[str]) -> dict[str, EncodedTile]:
        """The held tiles among ``ids``."""
        return {i: t for i in ids if (t := self._tiles.get(i)) is not None}

    def apply(self, tile: Tile) -> bool:
        """Keep ``tile`` if newer than the held version and notify; True when kept."""
        held = self._tiles.get(tile.id)
        if held is not None and tile.version <= held.version:
            self.stats.stale += 1
            return False
        enc = EncodedTile.of(tile)
        self._tiles[tile.id] = enc
        self.stats.applied += 1
        self._notify(enc, tile.id)
        return True

    def remove(self, tile_id: str) -> bool:
        """Forget a tile (tombstone) and notify; True when it was held."""
        if self._tiles.pop(tile_id, None) is None:
            return False
        self.stats.removed += 1
        self._notify(None, tile_id)
        return True

    def subscribe(self, ids: frozenset[str], listener: Listener) -> Callable[[], None]:
        """Call ``listener`` on changes of ``ids``; returns the function that unsubscribes."""
        for i in ids:
            self._listeners.setdefault(i, set()).add(listener)

        def unsubscribe() -> None:
            for i in ids:
                group = self._listeners.get(i)
                if group is not None:
                    group.discard(listener)
                    if not group:
                        del self._listeners[i]

        return unsubscribe
