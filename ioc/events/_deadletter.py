"""Dead letters: the one header builder for every record sent to ``<ns>.dlq``.

A consumer that cannot decode or handle a record sends its original key and bytes to
``<ns>.dlq`` with the record's own headers followed by these (all UTF-8 text)::

    dlq.reason      a code of DEAD_LETTER_REASONS
    dlq.message     what was expected and what arrived (at most 1,000 bytes)
    dlq.field       the offending field, when one is known, else empty
    dlq.topic       where the record was: topic,
    dlq.partition   partition,
    dlq.offset      offset
    dlq.index       its position in a batch record (``events.raw`` arrays), else empty
    dlq.stage       the consumer that rejected it (validate, aggregate, tiles, sink:events...)

Pure: no Kafka here. ``LogThrottle`` keeps the log of a flood of bad records to one
line per reason every few seconds (with the count it held back).
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Sequence

from ._envelope import REASONS

__all__ = ["DEAD_LETTER_REASONS", "DLQ_HEADERS", "LogThrottle", "dead_letter_headers",
           "internal_error_message"]

DLQ_HEADERS = ("dlq.reason", "dlq.message", "dlq.field", "dlq.topic", "dlq.partition",
               "dlq.offset", "dlq.index", "dlq.stage")

#: Every ``dlq.reason`` a consumer writes: the event reasons of validation, then ours.
DEAD_LETTER_REASONS: dict[str, str] = {
    **REASONS,
    "late": "an event behind its entity's watermark by more than the allowed lateness",
    "undecodable": "a record of an internal topic (rollup, KPI, alert) that is not one",
    "internal_error": "handling the record raised an error of our own code (a bug); the "
                      "exception type and where it was raised are in dlq.message",
    "sink_unreadable": "the sink could not turn the record into rows",
    "sink_unwritable": "the sink could not encode the record's rows for the database",
    "db_refused": "the database refused the record's rows",
}

_MESSAGE_MAX = 1000


def dead_letter_headers(reason: str, *, topic: str, partition: int, offset: int,
                        message: str = "", field: str | None = None, index: int | None = None,
                        stage: str = "", headers: Sequence[tuple[str, bytes | None]] = ()
                        ) -> list[tuple[str, bytes]]:
    """The headers of a dead letter: the original ``headers``, then the ``dlq.*`` ones.

    Strings that are not valid UTF-8 text (lone surrogates) are written with
    replacement characters, so building the headers never raises.
    """
    def enc(s: str) -> bytes:
        return s.encode("utf-8", "replace")

    ours = [
        ("dlq.reason", enc(reason)),
        ("dlq.message", enc(message)[:_MESSAGE_MAX]),
        ("dlq.field", enc(field or "")),
        ("dlq.topic", enc(topic)),
        ("dlq.partition", str(partition).encode()),
        ("dlq.offset", str(offset).encode()),
        ("dlq.index", b"" if index is None else str(index).encode()),
        ("dlq.stage", enc(stage)),
    ]
    return [*((k, v if v is not None else b"") for k, v in headers), *ours]


def internal_error_message(exc: BaseException, *, limit: int = 400) -> str:
    """``"<Type>: <message> (at <file>:<line> in <function>)"``, truncated to ``limit``.

    The innermost frame of the traceback names where our code failed.
    """
    where = ""
    tb = traceback.extract_tb(exc.__traceback__) if exc.__traceback__ else None
    if tb:
        f = tb[-1]
        where = f" (at {f.filename.rsplit('/', 2)[-1] if f.filename else '?'}:{f.lineno} "\
                f"in {f.name})"
    text = f"{type(exc).__name__}: {exc}"
    room = max(0, limit - len(where))
    return (text[:room] + where)[:limit]


class LogThrottle:
    """At most one log line per key every ``every_s`` seconds.

    ``allow(key)`` returns None (stay quiet) or the number of lines held back for that
    key since the last one that was allowed. Bounded: past ``max_keys`` keys the
    memory starts over.
    """

    def __init__(self, every_s: float = 10.0, *, max_keys: int = 1000) -> None:
        self.every_s = every_s
        self.max_keys = max_keys
        self._last: dict[str, tuple[float, int]] = {}

    def allow(self, key: str, now: float | None = None) -> int | None:
        now = time.monotonic() if now is None else now
        last = self._last.get(key)
        if last is not None and now - last[0] < self.every_s:
            self._last[key] = (last[0], last[1] + 1)
            return None
        if last is None and len(self._last) >= self.max_keys:
            self._last.clear()
        self._last[key] = (now, 0)
        return 0 if last is None else last[1]
