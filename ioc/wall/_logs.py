"""A log line per kind of event at most once per interval, with a count of the rest.

Hostile input arrives in floods (a bad producer writing thousands of records, a script
opening connections in a loop); each event is counted where it happens, and the log
says what kind it was without one line per event.
"""

from __future__ import annotations

import logging
import time

__all__ = ["LogThrottle"]


class LogThrottle:
    """Log ``kind`` at most once per ``every_s``; the next line says how many were held back.

    Args:
        logger: where the lines go.
        every_s: the least time between two lines of one kind.
        max_kinds: kinds remembered (beyond, the memory is cleared: a burst of distinct
            kinds may then log once more each; memory stays bounded).
    """

    def __init__(self, logger: logging.Logger, *, every_s: float = 30.0,
                 max_kinds: int = 256) -> None:
        self.logger = logger
        self.every_s = every_s
        self.max_kinds = max_kinds
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def log(self, level: int, kind: str, msg: str, *args: object, exc_info: bool = False,
            now: float | None = None) -> bool:
        """Log ``msg % args`` unless a line of ``kind`` went out within ``every_s``.

        Returns True when the line was logged.
        """
        now = time.monotonic() if now is None else now
        if now - self._last.get(kind, -1e18) < self.every_s:
            self._held[kind] = self._held.get(kind, 0) + 1
            return False
        if len(self._last) >= self.max_kinds and kind not in self._last:
            self._last.clear()
            self._held.clear()
        self._last[kind] = now
        held = self._held.pop(kind, 0)
        suffix = f" (and {held} more like this since the last such line)" if held else ""
        self.logger.log(level, msg + suffix, *args, exc_info=exc_info)
        return True
