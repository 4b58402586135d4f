"""The project's exception tree: one root, a few branches.

::

    IOCError
     ├── ConfigError          bad settings file or environment value (carries every problem)
     ├── InvalidEvent         an event that fails validation (carries the reason and field)
     ├── InvalidFrame         a camera frame that cannot be decoded or analysed
     ├── InvalidRecord        a record of an internal topic (rollup, KPI, alert, tile...)
     │                        that cannot be decoded (carries the reason)
     ├── KafkaError           the broker is unreachable or refused an operation
     │    └── TopicMismatch   a topic exists with other partitions or cleanup policy
     ├── StorageError         the database is unreachable or refused a write
     │    └── MigrationError  a schema migration failed
     ├── AuthError            a publisher or wall screen failed authentication
     └── RecordingError       a recording file is damaged or does not fit the target

Third-party errors are wrapped with ``raise ... from exc``; messages say what was
expected, what arrived and where (topic/partition/offset or file and line).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import orjson

T = TypeVar("T")

__all__ = [
    "JSON_SHAPE_ERRORS",
    "AuthError",
    "ConfigError",
    "IOCError",
    "InvalidEvent",
    "InvalidFrame",
    "InvalidRecord",
    "KafkaError",
    "MigrationError",
    "RecordingError",
    "StorageError",
    "TopicMismatch",
    "load_json_state",
]


class IOCError(Exception):
    """Root of every error raised on purpose by this project."""


class ConfigError(IOCError):
    """Settings could not be loaded; ``problems`` lists ``(path, message)`` pairs."""

    def __init__(self, problems: list[tuple[str, str]], *, source: str | None = None) -> None:
        self.problems = list(problems)
        self.source = source
        where = f" in {source}" if source else ""
        lines = "\n".join(f"  {path}: {msg}" for path, msg in self.problems)
        super().__init__(f"{len(self.problems)} problem(s){where}:\n{lines}")


class InvalidEvent(IOCError):
    """An event failed validation. ``reason`` is a short machine-friendly code."""

    def __init__(self, reason: str, message: str, *, field: str | None = None) -> None:
        self.reason = reason
        self.field = field
        super().__init__(message)


class InvalidFrame(IOCError):
    """A camera frame was unusable (corrupt JPEG, zero or odd size...)."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


class InvalidRecord(IOCError):
    """A record of a topic other than the events (a rollup, KPI value, alert, tile,
    detection...) could not be decoded. ``reason`` is a short code (``undecodable``)."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)

    @classmethod
    def undecodable(cls, expected: str, exc: BaseException) -> InvalidRecord:
        """The error of every state/record loader: ``expected`` against what was raised."""
        return cls("undecodable", f"undecodable: expected {expected}, got "
                                  f"{type(exc).__name__}: {str(exc)[:200]}")


# What the JSON state loaders meet on hostile bytes besides their own checks
# (orjson.JSONDecodeError is a ValueError; missing keys, wrong shapes, deep nesting).
JSON_SHAPE_ERRORS = (ValueError, TypeError, KeyError, AttributeError, IndexError,
                     OverflowError, RecursionError)


def load_json_state(data: bytes, from_dict: Callable[[Any], T], expected: str) -> T:
    """``from_dict(JSON of data)``: the shared body of the JSON state loaders.

    Raises:
        InvalidRecord: ``data`` is not JSON, or ``from_dict`` met a wrong shape
            (``JSON_SHAPE_ERRORS``); nothing else, whatever the bytes.
    """
    try:
        return from_dict(orjson.loads(data))
    except JSON_SHAPE_ERRORS as exc:
        raise InvalidRecord.undecodable(expected, exc) from exc


class KafkaError(IOCError):
    """The broker is unreachable or refused an operation."""


class TopicMismatch(KafkaError):
    """A topic exists but with other settings than the catalogue says."""


class StorageError(IOCError):
    """The database is unreachable or refused a statement."""


class MigrationError(StorageError):
    """A schema migration could not be applied."""


class AuthError(IOCError):
    """Authentication or authorisation failed."""


class RecordingError(IOCError):
    """A recording is damaged or does not match what it is replayed into."""
