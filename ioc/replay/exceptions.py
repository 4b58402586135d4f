"""Errors of recording and replay, all under ``ioc.errors.RecordingError``.

::

    RecordingError
     ├── RecordingDamaged    truncated or corrupt file; says where (byte offset, record #)
     └── RecordingMismatch   the recording does not fit the target namespace
"""

from __future__ import annotations

from ..errors import RecordingError

__all__ = ["RecordingDamaged", "RecordingError", "RecordingMismatch"]


class RecordingDamaged(RecordingError):
    """The file is damaged at ``offset`` (top-level record number ``record_index``).

    ``messages_before`` messages lie wholly before the damage and can be replayed
    (``ioc replay --salvage``).
    """

    def __init__(self, path: str, offset: int, record_index: int, messages_before: int,
                 reason: str) -> None:
        self.path = path
        self.offset = offset
        self.record_index = record_index
        self.messages_before = messages_before
        self.reason = reason
        super().__init__(
            f"{path}: damaged at byte {offset} (record #{record_index}): {reason}; "
            f"{messages_before} message(s) before it are intact")


class RecordingMismatch(RecordingError):
    """The recording's topics, partitions or schemas do not fit the target."""

    def __init__(self, problems: list[str], *, path: str, target: str) -> None:
        self.problems = list(problems)
        super().__init__(
            f"{path} does not fit namespace {target!r}:\n" + "\n".join(f"  {p}" for p in problems))
