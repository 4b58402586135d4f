"""Records of ``<ns>.events.raw``: one event (a JSON object) or a batch (a JSON array).

Batching events into one record on the raw topic amortises the per-record cost of
Python Kafka clients and of Faust (measured in bench/bench_events.py), while the
canonical topic ``<ns>.events`` keeps one event per record for every consumer.
``split_raw`` returns each element's exact original bytes (msgspec ``Raw``), so a
dead letter carries what the publisher sent, not a re-encoding.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import msgspec

from ..errors import InvalidEvent
from ._envelope import Event, encode_event

__all__ = ["MAX_RAW_BATCH_BYTES", "MAX_RAW_BATCH_EVENTS", "chunk_events", "split_raw"]

MAX_RAW_BATCH_EVENTS = 1000
# Under the broker's default max.message.bytes (1 MiB) with room for headers.
MAX_RAW_BATCH_BYTES = 900 * 1024

_array = msgspec.json.Decoder(list[msgspec.Raw])

# What msgspec raises besides its own errors on hostile bytes: UnicodeDecodeError (a
# ValueError) for non-UTF-8 bytes inside a string, RecursionError for deep nesting.
_HOSTILE = (msgspec.MsgspecError, ValueError, TypeError, OverflowError, RecursionError)


def split_raw(value: bytes) -> list[bytes]:
    """The events in one raw record, as their original JSON bytes.

    Raises:
        InvalidEvent: the record is not JSON, is neither an object nor an array, or
            holds more than ``MAX_RAW_BATCH_EVENTS`` events (nothing else, whatever
            the bytes).
    """
    head = value.lstrip()[:1]
    if head == b"{":
        return [value]
    if head != b"[":
        try:
            msgspec.json.decode(value)
            reason = "not_object"
        except _HOSTILE:
            reason = "not_json"
        raise InvalidEvent(reason, f"{reason}: expected a JSON object (one event) or array "
                           f"(a batch), got {value[:40]!r}")
    try:
        items = _array.decode(value)
    except _HOSTILE as exc:
        raise InvalidEvent("not_json", f"not_json: batch record: {type(exc).__name__}: "
                           f"{exc}") from exc
    if len(items) > MAX_RAW_BATCH_EVENTS:
        raise InvalidEvent("too_large", f"too_large: batch of {len(items)} events, limit "
                           f"{MAX_RAW_BATCH_EVENTS}")
    return [bytes(i) for i in items]


def chunk_events(events: Sequence[Event], *, max_events: int = MAX_RAW_BATCH_EVENTS,
                 max_bytes: int = MAX_RAW_BATCH_BYTES) -> Iterator[tuple[bytes, list[Event]]]:
    """Encode ``events`` as JSON-array records within the size limits.

    Yields ``(record bytes, events in it)``.
    """
    parts: list[bytes] = []
    chunk: list[Event] = []
    size = 2
    for e in events:
        b = encode_event(e)
        if chunk and (len(chunk) >= max_events or size + len(b) + 1 > max_bytes):
            yield b"[" + b",".join(parts) + b"]", chunk
            parts, chunk, size = [], [], 2
        parts.append(b)
        chunk.append(e)
        size += len(b) + 1
    if chunk:
        yield b"[" + b",".join(parts) + b"]", chunk
