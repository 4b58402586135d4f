"""NGSI-LD entities (Smart Data Models) mapped to the event envelope. Pure functions.

Supported types: ``TrafficFlowObserved`` -> ``traffic.flow`` and
``AirQualityObserved`` -> ``air.quality``, in both representations:

- normalized: ``"intensity": {"type": "Property", "value": 197, "unitCode": "..."}``,
  relationships ``{"type": "Relationship", "object": "urn:..."}``, dates as
  ``{"type": "Property", "value": {"@type": "DateTime", "@value": "..."}}``;
- keyValues (``options=keyValues``): ``"intensity": 197``.

Mapping: ``entity`` is the NGSI-LD id without its ``urn:ngsi-ld:<Type>:`` prefix;
``time`` is ``dateObserved`` (else ``dateObservedTo``, ``dateObservedFrom``, else the
latest ``observedAt`` of a property); numeric properties become ``values``; text and
boolean properties and relationship targets become ``attributes``; GeoProperty
``location`` (a Point) becomes ``lon``/``lat`` attributes; ``@context`` and other
structured values are ignored. ``id`` is ``<entity id>@<time>``, so the same
observation sent twice is stored once.
"""

from __future__ import annotations

import contextlib
import math
import re
import reprlib
from datetime import UTC, datetime
from typing import Any

from ..errors import InvalidEvent

__all__ = ["NGSI_TYPES", "ngsi_to_event"]

NGSI_TYPES = {"TrafficFlowObserved": "traffic.flow", "AirQualityObserved": "air.quality"}

_TIME_FIELDS = ("dateObserved", "dateObservedTo", "dateObservedFrom")
_SKIP = {"id", "type", "@context", "location", "dateCreated", "dateModified",
         *_TIME_FIELDS}
_NAME_OK = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:\-]*$")
# datetime's range (years 1..9999): a time outside it cannot be printed as an id.
_MIN_TS = -62_135_596_800.0
_MAX_TS = 253_402_300_799.0
_repr = reprlib.Repr()
_repr.maxstring = _repr.maxother = 80
_repr.maxlevel = 3


def _shown(v: Any) -> str:
    """A short repr of client input for a message (bounded in length and depth)."""
    return _repr.repr(v)


def _finite(v: int | float) -> float:
    """``v`` as a finite float (an integer beyond 1.8e308, NaN or infinity: InvalidEvent)."""
    try:
        f = float(v)
    except OverflowError:
        f = math.inf
    if not math.isfinite(f):
        raise InvalidEvent("not_finite", f"not_finite: expected a finite number, got "
                           f"{_shown(v)}")
    return f


def _unwrap(v: Any) -> tuple[Any, str | None]:
    """(plain value, observedAt) of a normalized or keyValues attribute."""
    if isinstance(v, dict):
        kind = v.get("type")
        if kind == "Relationship":
            return v.get("object"), v.get("observedAt")
        if kind in ("Property", "GeoProperty") or "value" in v:
            inner = v.get("value")
            if isinstance(inner, dict) and "@value" in inner:  # {"@type": "DateTime", ...}
                inner = inner["@value"]
            return inner, v.get("observedAt")
    return v, None


def _parse_time(v: Any, field: str) -> float:
    """Unix seconds of an NGSI-LD time (a number, or ISO-8601 with zone) in years 1..9999."""
    t: float | None = None
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        try:
            t = float(v)
        except OverflowError:
            t = None
    elif isinstance(v, str):
        try:
            dt = datetime.fromisoformat(v.replace("Z", "+00:00"))
            # An offset can push year 1 or 9999 out of range: OverflowError.
            t = dt.timestamp() if dt.tzinfo is not None else None
        except (ValueError, OverflowError):
            t = None
    if t is not None and _MIN_TS <= t <= _MAX_TS:  # also False for NaN
        return t
    raise InvalidEvent("bad_time", f"bad_time at {field}: expected an ISO-8601 date-time "
                       f"with zone (or unix seconds) in years 1-9999, got {_shown(v)}",
                       field=field)


def ngsi_to_event(entity: Any, *, source: str) -> dict[str, Any]:
    """Map one NGSI-LD entity to an envelope dict (validate it with ``validate_event``).

    ``entity`` may be anything a JSON decoder returns (any shape, depth or size):
    ``InvalidEvent`` is the only exception this function raises on purpose for it.

    Raises:
        InvalidEvent: not an object, unsupported type (``unsupported_type``), no id,
            no usable observation time (``bad_time``), a number no float can hold
            (``not_finite``).
    """
    if not isinstance(entity, dict):
        raise InvalidEvent("not_object", f"not_object: expected an NGSI-LD entity object, "
                           f"got {type(entity).__name__}")
    ngsi_type = entity.get("type")
    # ``type`` may be a list or an object (unhashable): compare only strings.
    if not isinstance(ngsi_type, str) or ngsi_type not in NGSI_TYPES:
        raise InvalidEvent("unsupported_type", f"unsupported_type at type: expected one of "
                           f"{sorted(NGSI_TYPES)}, got {_shown(ngsi_type)}", field="type")
    nid = entity.get("id")
    if not isinstance(nid, str) or not nid:
        raise InvalidEvent("missing_field", "missing_field at id: an NGSI-LD entity needs an "
                           "id (urn:ngsi-ld:<Type>:<local id>)", field="id")
    prefix = f"urn:ngsi-ld:{ngsi_type}:"
    local = nid[len(prefix):] if nid.startswith(prefix) and len(nid) > len(prefix) else nid
    when: float | None = None
    for f in _TIME_FIELDS:
        if f in entity:
            when = _parse_time(_unwrap(entity[f])[0], f)
            break
    values: dict[str, float] = {}
    attributes: dict[str, str | int | float | bool] = {}
    observed: list[float] = []
    for name, raw in entity.items():
        if not isinstance(name, str) or name in _SKIP or not _NAME_OK.match(name):
            continue
        value, observed_at = _unwrap(raw)
        if observed_at is not None:
            observed.append(_parse_time(observed_at, f"{name}.observedAt"))
        if isinstance(value, bool):
            attributes[name] = value
        elif isinstance(value, (int, float)):
            try:
                values[name] = _finite(value)
            except InvalidEvent:
                raise InvalidEvent("not_finite", f"not_finite at {name}: expected a finite "
                                   f"number, got {_shown(value)}", field=name) from None
        elif isinstance(value, str):
            attributes[name] = value
        # lists and objects (e.g. address) carry no metric or label: left out.
    loc, _ = _unwrap(entity.get("location"))
    if isinstance(loc, dict) and loc.get("type") == "Point":
        coords = loc.get("coordinates")
        if isinstance(coords, list) and len(coords) >= 2 and all(
                isinstance(c, (int, float)) and not isinstance(c, bool) for c in coords[:2]):
            # A location no float can hold is left out, like any other odd shape.
            with contextlib.suppress(InvalidEvent):
                attributes["lon"], attributes["lat"] = _finite(coords[0]), _finite(coords[1])
    if when is None and observed:
        when = max(observed)
    if when is None:
        raise InvalidEvent("bad_time", "bad_time at dateObserved: the entity has no "
                           "dateObserved/dateObservedTo/dateObservedFrom or observedAt",
                           field="dateObserved")
    stamp = datetime.fromtimestamp(when, UTC).isoformat()
    return {"id": f"{local}@{stamp}", "source": source, "type": NGSI_TYPES[ngsi_type],
            "entity": local, "time": when, "values": values, "attributes": attributes}
