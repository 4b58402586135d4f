"""City events: the envelope, its codec and validation, and NGSI-LD mapping.

``Event`` is the one shape every city event has on ``<ns>.events`` (keyed by entity).
``validate_event`` turns outside input into it or raises ``InvalidEvent``.
"""

from ._deadletter import (
    DEAD_LETTER_REASONS,
    DLQ_HEADERS,
    LogThrottle,
    dead_letter_headers,
    internal_error_message,
)
from ._envelope import (
    LIMITS,
    REASONS,
    TYPE_ATTRIBUTE_RULES,
    AttributeValue,
    Event,
    decode_event,
    encode_event,
    encode_events,
    validate_event,
)
from ._raw import MAX_RAW_BATCH_BYTES, MAX_RAW_BATCH_EVENTS, chunk_events, split_raw
from ._route import RAW_ORIGIN, origin_mark, origin_seen, raw_origin

__all__ = [
    "DEAD_LETTER_REASONS",
    "DLQ_HEADERS",
    "LIMITS",
    "MAX_RAW_BATCH_BYTES",
    "MAX_RAW_BATCH_EVENTS",
    "RAW_ORIGIN",
    "REASONS",
    "TYPE_ATTRIBUTE_RULES",
    "AttributeValue",
    "Event",
    "LogThrottle",
    "chunk_events",
    "dead_letter_headers",
    "decode_event",
    "encode_event",
    "encode_events",
    "internal_error_message",
    "origin_mark",
    "origin_seen",
    "raw_origin",
    "split_raw",
    "validate_event",
]
