"""Per-client latest-wins queue: at most one pending item per key, newest wins.

A wall client needs the newest state of each tile, never a backlog: when a tile changes
again before the previous version left the queue, the pending version is replaced and
the replacement is counted as a drop. The queue is bounded by the number of distinct
keys (the tiles of one screen plus a few control keys), so memory per client is fixed
however slow the client is.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

__all__ = ["LatestWinsQueue", "QueueFull"]

T = TypeVar("T")


class QueueFull(Exception):
    """A new key arrived while ``max_keys`` keys are pending (a bug: keys are bounded)."""


class LatestWinsQueue(Generic[T]):
    """Pending items by key, oldest key first; ``put`` of a pending key replaces its item.

    Args:
        max_keys: hard bound on distinct pending keys; a new key beyond it raises QueueFull.
    """

    __slots__ = ("_items", "_urgent", "delivered", "drops", "max_keys")

    def __init__(self, *, max_keys: int = 256) -> None:
        self._items: OrderedDict[Hashable, T] = OrderedDict()
        self._urgent: OrderedDict[Hashable, T] = OrderedDict()
        self.max_keys = max_keys
        self.drops = 0  # items replaced before they were taken
        self.delivered = 0  # items taken

    def __len__(self) -> int:
        return len(self._items) + len(self._urgent)

    def put(self, key: Hashable, item: T, *, urgent: bool = False) -> bool:
        """Queue ``item`` under ``key``; returns True when it replaced a pending item.

        A replaced item keeps its key's place in line (a tile updating often is not
        starved by being sent to the back). ``urgent`` items (heartbeats, control
        messages) go before every non-urgent one, first in first out among themselves;
        a key is always put with the same ``urgent``.
        """
        line = self._urgent if urgent else self._items
        replaced = key in line
        if not replaced and len(self) >= self.max_keys:
            raise QueueFull(f"expected at most {self.max_keys} pending keys, got one more: {key!r}")
        line[key] = item
        if replaced:
            self.drops += 1
        return replaced

    def pop(self) -> T | None:
        """The oldest pending urgent item, else the oldest item; None when nothing is pending."""
        line = self._urgent or self._items
        if not line:
            return None
        _, item = line.popitem(last=False)
        self.delivered += 1
        return item

    def clear(self) -> None:
        self._items.clear()
        self._urgent.clear()
