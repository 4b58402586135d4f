"""The recording format: how one Kafka record becomes one MCAP message, and back.

Pure functions, no I/O. A recording is an MCAP file with one channel per Kafka topic
(channel topic = the full Kafka topic name, e.g. ``ioc.events``). Every message is JSON
(``message_encoding = "json"``) so common viewers (Foxglove, ``mcap cat --json``) can
open it:

- camera frames (topic suffix ``camera.frames``) use the schema
  ``foxglove.CompressedImage``: ``{"timestamp": {"sec", "nsec"}, "frame_id": <camera>,
  "format": "jpeg", "data": <base64 JPEG>, "kafka": {...}}``; viewers show the image.
- every other topic uses the schema ``ioc.KafkaRecord``: ``{"kafka": {...},
  "value": <bytes field>}``.

``kafka`` holds what a byte-exact replay needs: ``partition``, ``offset``,
``timestamp`` (ms, as the broker stored it), ``timestamp_type``, ``key`` and
``headers`` (``[[name, <bytes field>], ...]``). A *bytes field* is ``null`` (absent),
a JSON string when the bytes are valid UTF-8 (the common case: readable in viewers and
exact, since UTF-8 round-trips), else ``{"base64": "..."}``.

Times: MCAP ``log_time`` is the Kafka timestamp (ns), made non-decreasing per source
partition by the writer so that the index's log-time order never reorders a partition
(the exact broker timestamp stays in ``kafka.timestamp``); ``publish_time`` is the
event time (from a header or the JSON value, see ``event_time_ns``), or the Kafka
timestamp when the record carries none.
"""

from __future__ import annotations

import base64
import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from ..errors import RecordingError

__all__ = [
    "FORMAT_VERSION",
    "IMAGE_SCHEMA",
    "IMAGE_SUFFIXES",
    "MESSAGE_ENCODING",
    "RECORD_SCHEMA",
    "SCHEMA_ENCODING",
    "KafkaRecord",
    "decode_message",
    "encode_message",
    "event_time_ns",
    "parse_time",
    "schema_for",
    "schema_json",
]

FORMAT_VERSION = "ioc-recording/1"
MESSAGE_ENCODING = "json"
SCHEMA_ENCODING = "jsonschema"
RECORD_SCHEMA = "ioc.KafkaRecord"
IMAGE_SCHEMA = "foxglove.CompressedImage"
IMAGE_SUFFIXES = frozenset({"camera.frames"})

_BYTES_FIELD: dict[str, Any] = {
    "anyOf": [{"type": "null"}, {"type": "string"},
              {"type": "object", "properties": {"base64": {"type": "string"}}}],
}
_KAFKA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "partition": {"type": "integer"},
        "offset": {"type": "integer"},
        "timestamp": {"type": "integer", "description": "Kafka timestamp, ms"},
        "timestamp_type": {"type": "integer"},
        "key": _BYTES_FIELD,
        "headers": {"type": "array", "items": {"type": "array"}},
    },
}
_SCHEMAS: dict[str, dict[str, Any]] = {
    RECORD_SCHEMA: {
        "title": RECORD_SCHEMA,
        "type": "object",
        "properties": {"kafka": _KAFKA, "value": _BYTES_FIELD},
    },
    # Foxglove's CompressedImage (JSON flavour) plus our "kafka" object.
    IMAGE_SCHEMA: {
        "title": IMAGE_SCHEMA,
        "type": "object",
        "properties": {
            "timestamp": {"type": "object", "properties": {
                "sec": {"type": "integer", "minimum": 0},
                "nsec": {"type": "integer", "minimum": 0, "maximum": 999999999}}},
            "frame_id": {"type": "string"},
            "data": {"type": "string", "contentEncoding": "base64"},
            "format": {"type": "string"},
            "kafka": _KAFKA,
        },
    },
}


def schema_for(suffix: str) -> str:
    """The schema name used for a topic suffix."""
    return IMAGE_SCHEMA if suffix in IMAGE_SUFFIXES else RECORD_SCHEMA


def schema_json(name: str) -> bytes:
    """The JSON Schema text stored in the recording for ``name``."""
    return orjson.dumps(_SCHEMAS[name])


@dataclass(slots=True)
class KafkaRecord:
    """One Kafka record as recorded (``topic`` is the full source topic name).

    Not frozen: a frozen dataclass costs several microseconds per construction, which
    shows in replay rates of 50k+ records/s. Treat instances as read-only.
    """

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...] = ()
    timestamp_type: int = 0
    event_time_ns: int | None = field(default=None, compare=False)

    @property
    def size(self) -> int:
        """Bytes of key, value and headers (what MB/s figures count)."""
        n = len(self.key or b"") + len(self.value or b"")
        for k, v in self.headers:
            n += len(k) + len(v or b"")
        return n


_loads = orjson.loads
_b64decode = base64.b64decode


def _bytes_out(b: bytes | None) -> Any:
    if b is None:
        return None
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(b).decode("ascii")}


def _bytes_in(v: Any, what: str) -> bytes | None:
    if v.__class__ is str:
        return v.encode("utf-8")  # type: ignore[no-any-return]
    if v is None:
        return None
    if isinstance(v, dict) and isinstance(v.get("base64"), str):
        return base64.b64decode(v["base64"])
    raise RecordingError(f"{what}: expected null, a string or {{'base64': ...}}, got {v!r:.80}")


def encode_message(rec: KafkaRecord, schema: str) -> bytes:
    """The MCAP message data for ``rec`` under ``schema`` (see the module docstring)."""
    kafka = {
        "partition": rec.partition,
        "offset": rec.offset,
        "timestamp": rec.timestamp_ms,
        "timestamp_type": rec.timestamp_type,
        "key": _bytes_out(rec.key),
        "headers": [[k, _bytes_out(v)] for k, v in rec.headers],
    }
    if schema == IMAGE_SCHEMA and rec.value is not None:
        t = rec.event_time_ns if rec.event_time_ns is not None else rec.timestamp_ms * 1_000_000
        return orjson.dumps({
            "timestamp": {"sec": t // 1_000_000_000, "nsec": t % 1_000_000_000},
            "frame_id": (rec.key or b"").decode("utf-8", "replace"),
            "format": "jpeg",
            "data": base64.b64encode(rec.value).decode("ascii"),
            "kafka": kafka,
        })
    return orjson.dumps({"kafka": kafka, "value": _bytes_out(rec.value)})


def decode_message(data: bytes, *, topic: str, schema: str, where: str = "") -> KafkaRecord:
    """Inverse of ``encode_message``.

    Raises:
        RecordingError: the data is not a record of this format (names ``where``).
    """
    try:
        # The hot path of a replay: str fields (valid UTF-8) are encoded inline, the rare
        # {"base64": ...} form goes through _bytes_in.
        obj = _loads(data)
        k = obj["kafka"]
        key: Any = k.get("key")
        value: Any
        if key.__class__ is str:
            key = key.encode()
        elif key is not None:
            key = _bytes_in(key, "key")
        if schema == IMAGE_SCHEMA and "data" in obj:
            value = _b64decode(obj["data"])
        else:
            value = obj.get("value")
            if value.__class__ is str:
                value = value.encode()
            elif value is not None:
                value = _bytes_in(value, "value")
        hs = k.get("headers")
        headers = tuple([(h[0], h[1].encode() if h[1].__class__ is str else _bytes_in(h[1], "header"))
                         for h in hs]) if hs else ()
        return KafkaRecord(topic, int(k["partition"]), int(k["offset"]), int(k["timestamp"]),
                           key, value, headers, int(k.get("timestamp_type", 0)))
    except RecordingError as exc:
        raise RecordingError(f"{where}: {exc}") from exc
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, IndexError,
            AttributeError, OverflowError, RecursionError) as exc:
        raise RecordingError(
            f"{where}: expected a {schema} JSON message with a 'kafka' object, "
            f"got {bytes(data[:60])!r}...: {exc}") from exc


_MAX_NS = 2**63
_TIME_HEADERS = ("event_time", "event-time", "ioc-event-time", "time", "ts")
_TIME_FIELDS = ("time", "event_time", "observed_at", "ts", "timestamp", "dateObserved")


def _as_ns(v: Any) -> int | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        try:
            x = float(v)
        except OverflowError:  # an integer beyond float range: no time
            return None
        if not math.isfinite(x):
            return None
        # Unix seconds, milliseconds, microseconds or nanoseconds, by magnitude.
        # Microsecond resolution: a float second has ~0.2 us of precision today.
        if x > 1e17:
            return int(v) if isinstance(v, int) else int(x)
        if x > 1e14:
            return round(x) * 1000
        if x > 1e11:
            return round(x * 1e3) * 1000
        return round(x * 1e6) * 1000
    if isinstance(v, (str, bytes)):
        s = v.decode("utf-8", "replace") if isinstance(v, bytes) else v
        try:
            return _as_ns(float(s))
        except ValueError:
            pass
        try:
            d = datetime.fromisoformat(s.replace("Z", "+00:00"))
        except ValueError:
            return None
        if d.tzinfo is None:
            d = d.replace(tzinfo=UTC)
        try:
            return int(d.timestamp() * 1_000_000) * 1000
        except (OverflowError, ValueError, OSError):  # at the calendar's edge
            return None
    return None


def event_time_ns(value: bytes | None, headers: tuple[tuple[str, bytes | None], ...]) -> int | None:
    """The record's event time in ns, if it carries one; None otherwise.

    Looked up in headers (``event_time``, ``time``, ``ts`` ...) first, then in the
    top level of a JSON object value (``time``, ``event_time``, ``observed_at`` ...).
    Numbers are taken as unix s/ms/us/ns by magnitude; strings may be ISO 8601. A time
    before 1970 or beyond 2**63 ns (which MCAP cannot store), NaN or infinite is no
    time. Raises nothing, whatever the bytes.
    """
    for name, raw in headers:
        if name.lower() in _TIME_HEADERS and raw:
            t = _as_ns(raw)
            if t is not None and 0 <= t < _MAX_NS:
                return t
    if value and value[:1] == b"{" and len(value) < 65536:
        try:
            obj = orjson.loads(value)
        except (orjson.JSONDecodeError, RecursionError):
            return None
        if isinstance(obj, dict):
            for name in _TIME_FIELDS:
                if name in obj:
                    v = obj[name]
                    if isinstance(v, dict):  # NGSI-LD property {"type", "value"}
                        v = v.get("value")
                    t = _as_ns(v)
                    if t is not None and 0 <= t < _MAX_NS:
                        return t
    return None


_REL = re.compile(r"^-(\d+(?:\.\d+)?)([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_time(text: str, *, now: float) -> float:
    """A CLI time as unix seconds: ISO 8601 (UTC if no zone), unix seconds, ``now``,
    or relative to ``now`` (``-30s``, ``-5m``, ``-2h``, ``-1d``).

    Raises:
        ValueError: naming what was expected and what arrived.
    """
    s = text.strip()
    if s == "now":
        return now
    m = _REL.match(s)
    if m:
        return now - float(m.group(1)) * _UNITS[m.group(2)]
    try:
        return float(s)
    except ValueError:
        pass
    try:
        d = datetime.fromisoformat(s.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"expected a time (ISO 8601 like 2026-11-26T04:00:00Z, unix seconds, 'now' "
            f"or -30s/-5m/-2h/-1d), got {text!r}") from None
    if d.tzinfo is None:
        d = d.replace(tzinfo=UTC)
    return (d - datetime(1970, 1, 1, tzinfo=UTC)) / timedelta(seconds=1)
