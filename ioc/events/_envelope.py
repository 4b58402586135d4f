"""The event envelope: one msgspec Struct, its JSON codec and validation of raw input.

Canonical events (on ``<ns>.events``) are always produced by ``encode_event`` and read
back with ``decode_event`` (typed, no re-validation). Anything that comes from outside
(HTTP bodies, ``<ns>.events.raw``) goes through ``validate_event``, which accepts a
little more (ISO-8601 times, integers for floats) and returns the canonical ``Event``
or raises ``InvalidEvent`` with a reason code, the field and a clear message.
"""

from __future__ import annotations

import math
import re
import time as _time
from datetime import datetime
from typing import Annotated, Any

import msgspec
import orjson

from ..errors import InvalidEvent

__all__ = [
    "LIMITS",
    "REASONS",
    "TYPE_ATTRIBUTE_RULES",
    "AttributeValue",
    "Event",
    "decode_event",
    "encode_event",
    "encode_events",
    "validate_event",
]

AttributeValue = str | int | float | bool

# Bounds that keep one event small and every field usable as a key or a label.
LIMITS = {
    "id": 200,
    "source": 100,
    "type": 64,
    "entity": 200,
    "name": 64,  # a key of values or attributes
    "entries": 64,  # entries in values, and in attributes
    "attribute": 1024,  # length of a string attribute
    "event_bytes": 64 * 1024,
}
# Events before 2000-01-01 or more than a day ahead of the validator's clock are
# almost always unit errors (ms instead of s) or broken clocks.
_MIN_TIME = 946_684_800.0
_MAX_AHEAD_S = 86_400.0

REASONS = {
    "not_json": "the bytes are not one JSON document",
    "not_object": "the event is not a JSON object",
    "too_large": "the encoded event exceeds the size limit",
    "missing_field": "a required field is absent",
    "unknown_field": "a field that the envelope does not have",
    "wrong_type": "a field has the wrong JSON type",
    "bad_value": "a field has a value outside its allowed form or range",
    "bad_time": "the event time is not a unix time or ISO-8601 time with zone, or is implausible",
    "not_finite": "a value is NaN or infinite",
    "bad_attribute": "a type-specific attribute is missing or has a value not allowed",
}

_NAME = r"^[A-Za-z0-9_][A-Za-z0-9_.:\-]*$"
_TYPE = r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)+$"

_Id = Annotated[str, msgspec.Meta(min_length=1, max_length=LIMITS["id"])]
# ``source`` and ``type`` patterns are checked by ``_check_names`` (a regex in the
# decoder cost ~4 µs per event; a publisher sends few distinct names, remembered once
# they passed).
_Source = Annotated[str, msgspec.Meta(min_length=1, max_length=LIMITS["source"])]
_Type = Annotated[str, msgspec.Meta(min_length=3, max_length=LIMITS["type"])]
_Entity = Annotated[str, msgspec.Meta(min_length=1, max_length=LIMITS["entity"])]
# Keys are bounded but not pattern-checked: a regex per key doubled the decode cost.
_Key = Annotated[str, msgspec.Meta(min_length=1, max_length=LIMITS["name"])]
# Integers beyond int64 would pass JSON but not storage (jsonb via orjson, bigint).
_Int64 = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]
_Attr = Annotated[str, msgspec.Meta(max_length=LIMITS["attribute"])] | _Int64 | float | bool
_Values = Annotated[dict[_Key, float], msgspec.Meta(max_length=LIMITS["entries"])]
_Attrs = Annotated[dict[_Key, _Attr], msgspec.Meta(max_length=LIMITS["entries"])]


class Event(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=False):
    """A city event: what happened (type), where (entity), when (time), measured values.

    Attributes:
        id: publisher-unique id; with ``source`` and ``time`` the idempotency key.
        source: the publisher (system) id.
        type: dotted lowercase type, e.g. ``air.quality``, ``egov.dossier``.
        entity: the sensor, camera or agency the event is about.
        time: event time in unix seconds (UTC).
        values: finite numbers by metric name (``{"pm25": 12.5}``).
        attributes: labels (``{"channel": "online"}``).
    """

    id: str
    source: str
    type: str
    entity: str
    time: float
    values: dict[str, float] = msgspec.field(default_factory=dict)
    attributes: dict[str, str | _Int64 | float | bool] = msgspec.field(default_factory=dict)


class _RawEvent(msgspec.Struct, forbid_unknown_fields=True):
    """What ``validate_event`` accepts from outside (before normalisation)."""

    id: _Id
    source: _Source
    type: _Type
    entity: _Entity
    time: float | Annotated[datetime, msgspec.Meta(tz=True)]
    values: _Values = msgspec.field(default_factory=dict)
    attributes: _Attrs = msgspec.field(default_factory=dict)


# Type-specific attribute rules: attribute -> allowed values. The e-government KPIs
# (share online, share by postal service, share signed) depend on these labels.
TYPE_ATTRIBUTE_RULES: dict[str, dict[str, frozenset[AttributeValue]]] = {
    "egov.dossier": {"channel": frozenset({"online", "counter"})},
    "egov.result": {"return_channel": frozenset({"postal", "counter", "online"})},
    "egov.document": {"signed": frozenset({True, False})},
}

_NAME_RE = re.compile(_NAME)
_TYPE_RE = re.compile(_TYPE)
_GOOD_NAMES: set[tuple[str, str]] = set()  # (source, type) pairs that passed
_GOOD_NAMES_MAX = 10_000  # bounded: start over when full


def _check_names(source: str, type_: str) -> None:
    """``source`` and ``type`` match their patterns (remembered once they did)."""
    if (source, type_) in _GOOD_NAMES:
        return
    for field, value, pattern in (("source", source, _NAME_RE), ("type", type_, _TYPE_RE)):
        if pattern.match(value) is None:
            raise InvalidEvent("bad_value", f"bad_value at {field}: Expected `str` matching "
                               f"regex {pattern.pattern!r}, got {value!r}", field=field)
    if len(_GOOD_NAMES) >= _GOOD_NAMES_MAX:
        _GOOD_NAMES.clear()
    _GOOD_NAMES.add((source, type_))


_encoder = msgspec.json.Encoder()
_event_decoder = msgspec.json.Decoder(Event)
_raw_decoder = msgspec.json.Decoder(_RawEvent)


def encode_event(event: Event) -> bytes:
    """The canonical JSON bytes of ``event``."""
    return _encoder.encode(event)


def encode_events(events: list[Event]) -> bytes:
    """A JSON array of canonical events (HTTP bodies, files)."""
    return _encoder.encode(events)


def decode_event(data: bytes) -> Event:
    """Decode canonical bytes (from ``<ns>.events``) without re-validating the content.

    Raises:
        InvalidEvent: the bytes are not a canonical event (reason ``not_json`` or
            ``wrong_type``/``missing_field``..., ``bad_time`` for a time outside
            2000-3000); nothing else, whatever the bytes.
    """
    try:
        e = _event_decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise _from_msgspec(exc, data) from exc
    except _NOT_MSGSPEC as exc:
        raise _not_json(exc) from exc
    except TypeError as exc:  # not bytes-like (a stage handed something else)
        raise InvalidEvent("not_json", f"not_json: expected bytes, got "
                           f"{type(data).__name__}") from exc
    # Canonical events come from validate, so their time passed its bounds; a record
    # written to <ns>.events by anything else must not reach the window and calendar
    # maths (datetime overflows) with a time no validator would have let through.
    if not _MIN_TIME <= e.time <= _MAX_CANONICAL_TIME:
        raise InvalidEvent("bad_time", f"bad_time at time: expected unix seconds between "
                           f"2000-01-01 and 3000-01-01, got {e.time!r}", field="time")
    return e


# What msgspec raises besides its own errors on hostile bytes: UnicodeDecodeError (a
# ValueError) for non-UTF-8 bytes inside a string, RecursionError for deep nesting.
_NOT_MSGSPEC = (ValueError, OverflowError, RecursionError)
_MAX_CANONICAL_TIME = 32_503_680_000.0  # 3000-01-01


def _not_json(exc: BaseException) -> InvalidEvent:
    if isinstance(exc, RecursionError):
        return InvalidEvent("not_json", "not_json: nested deeper than the decoder allows")
    if isinstance(exc, UnicodeDecodeError):
        return InvalidEvent("not_json", f"not_json: the bytes are not UTF-8 text ({exc})")
    return InvalidEvent("not_json", f"not_json: {type(exc).__name__}: {exc}")


_PATH = re.compile(r" - at (?:`key` in )?`\$\.?([^`]*)`$")
_FIELD = re.compile(r"field `([^`]*)`")


def _from_msgspec(exc: msgspec.MsgspecError, raw: bytes | dict[str, Any] | None) -> InvalidEvent:
    msg = str(exc)
    m = _PATH.search(msg)
    field = m.group(1) if m else None
    if m and "`key` in" in m.group(0):
        field = f"{field}[...]"  # a bad key of values/attributes: name it below
    text = msg[: m.start()] if m else msg
    if isinstance(exc, msgspec.ValidationError):
        named = _FIELD.search(text)
        if "missing required field" in text:
            reason, field = "missing_field", named.group(1) if named else field
        elif "unknown field" in text:
            reason, field = "unknown_field", named.group(1) if named else field
        elif text.startswith("Expected `object`") and not field:
            reason = "not_object"
        elif field == "time":
            reason = "bad_time"
        elif text.startswith("Number out of range") or "nan" in text.lower():
            reason = "not_finite"
        elif text.startswith("Expected `") and ", got `" in text:
            reason = "wrong_type"
        else:
            reason = "bad_value"
    else:
        reason = "not_json"
    if field and field.endswith("[...]") and raw is not None:
        field = _find_bad_key(field[:-5], raw) or field
    where = f" at {field}" if field else ""
    return InvalidEvent(reason, f"{reason}{where}: {text.strip()}", field=field)


def _find_bad_key(container: str, raw: bytes | dict[str, Any]) -> str | None:
    """Name the offending entry of ``values``/``attributes`` (msgspec only says ``[...]``)."""
    try:
        obj = orjson.loads(raw) if isinstance(raw, bytes) else raw
        entries = obj.get(container) if isinstance(obj, dict) else None
    except (orjson.JSONDecodeError, RecursionError):
        return None
    if not isinstance(entries, dict):
        return None
    for k, v in entries.items():
        if container == "values":
            try:
                ok = isinstance(v, (int, float)) and not isinstance(v, bool) and \
                    math.isfinite(v)
            except OverflowError:  # an int beyond float range (Python dicts can hold one)
                ok = False
        else:
            ok = isinstance(v, (str, int, float, bool)) and (
                not isinstance(v, str) or len(v) <= LIMITS["attribute"])
        if not ok or not 0 < len(str(k)) <= LIMITS["name"]:
            return f"{container}.{k}"
    return None


def _bad_text(r: _RawEvent) -> str | None:
    """Why a string of an event built in Python cannot be stored or sent, or None.

    JSON input cannot carry lone surrogates (the decoder refuses them); Python strings
    can (e.g. file names read with ``surrogateescape``) and would fail later, at encode.
    """
    strings = [r.id, r.source, r.type, r.entity, *r.values, *r.attributes,
               *(v for v in r.attributes.values() if isinstance(v, str))]
    for x in strings:
        if "\x00" in x:
            return "a string contains the NUL character (\\u0000), which storage cannot hold"
        if not x.isascii():
            try:
                x.encode("utf-8")
            except UnicodeEncodeError:
                return f"a string is not valid Unicode text (lone surrogate): {x!r}"
    return None


def validate_event(raw: bytes | dict[str, Any], *, now: float | None = None) -> Event:
    """Check an event from outside and return it in canonical form.

    Args:
        raw: JSON bytes of one event, or the already parsed object.
        now: the clock to judge "too far in the future" against (default: time.time()).

    Raises:
        InvalidEvent: with ``reason`` (a key of ``REASONS``), ``field`` and a message
            saying what was expected and what arrived; nothing else, whatever ``raw``
            holds (tests/unit/test_hostile_decoders.py).
    """
    from_bytes = isinstance(raw, (bytes, bytearray, memoryview))
    try:
        if from_bytes:
            if len(raw) > LIMITS["event_bytes"]:
                raise InvalidEvent("too_large", f"too_large: event of {len(raw)} bytes, "
                                   f"limit {LIMITS['event_bytes']}")
            r = _raw_decoder.decode(raw)  # type: ignore[arg-type]
        elif isinstance(raw, dict):
            r = msgspec.convert(raw, _RawEvent)
        else:
            raise InvalidEvent("not_object", f"not_object: expected a JSON object, got "
                               f"{type(raw).__name__}")
    except msgspec.MsgspecError as exc:
        raise _from_msgspec(exc, raw if isinstance(raw, (bytes, dict)) else None) from exc
    except (*_NOT_MSGSPEC, TypeError) as exc:
        if from_bytes:
            raise _not_json(exc) from exc
        raise InvalidEvent("bad_value", f"bad_value: the object cannot be read as an "
                           f"event ({type(exc).__name__}: {exc})") from exc
    _check_names(r.source, r.type)
    # PostgreSQL text and jsonb cannot hold NUL: refuse it here, not at the sink.
    if from_bytes:
        if b"\\u0000" in raw:  # type: ignore[operator]
            raise InvalidEvent("bad_value", "bad_value: a string contains the NUL character "
                               "(\\u0000), which storage cannot hold")
    elif (why := _bad_text(r)) is not None:
        raise InvalidEvent("bad_value", f"bad_value: {why}")
    try:
        t = r.time.timestamp() if isinstance(r.time, datetime) else float(r.time)
    except (OverflowError, ValueError, OSError) as exc:  # a datetime at the calendar's edge
        raise InvalidEvent("bad_time", f"bad_time at time: {r.time!r} has no unix time "
                           f"({exc})", field="time") from exc
    if not (_MIN_TIME <= t <= (now if now is not None else _time.time()) + _MAX_AHEAD_S):
        raise InvalidEvent("bad_time", f"bad_time at time: expected unix seconds between "
                           f"2000-01-01 and one day ahead, got {r.time!r}", field="time")
    values = r.values  # msgspec already made every number a float
    if not from_bytes:  # JSON cannot spell NaN/inf (msgspec rejects 1e400); dicts can
        for k, v in values.items():
            if not math.isfinite(v):
                raise InvalidEvent("not_finite", f"not_finite at values.{k}: expected a "
                                   f"finite number, got {v!r}", field=f"values.{k}")
    rules = TYPE_ATTRIBUTE_RULES.get(r.type)
    if rules:
        for name, allowed in rules.items():
            got = r.attributes.get(name, msgspec.UNSET)
            # True == 1 in Python sets: compare types too so 1 is not taken for True.
            if got is msgspec.UNSET or not any(
                    got == a and type(got) is type(a) for a in allowed):
                shown = "nothing" if got is msgspec.UNSET else repr(got)
                raise InvalidEvent(
                    "bad_attribute",
                    f"bad_attribute at attributes.{name}: type {r.type} expects one of "
                    f"{sorted(map(str, allowed))}, got {shown}", field=f"attributes.{name}")
    return Event(id=r.id, source=r.source, type=r.type, entity=r.entity, time=t,
                 values=values, attributes=r.attributes)
