"""NGSI-LD TrafficFlowObserved / AirQualityObserved -> envelope (normalized and keyValues)."""

from __future__ import annotations

import contextlib
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ioc.errors import InvalidEvent
from ioc.events import validate_event
from ioc.events._ngsi import NGSI_TYPES, ngsi_to_event

NOW = 1_750_000_000.0

TRAFFIC_NORMALIZED = {
    "id": "urn:ngsi-ld:TrafficFlowObserved:Valladolid-osm-1",
    "type": "TrafficFlowObserved",
    "@context": ["https://smartdatamodels.org/context.jsonld"],
    "dateObservedFrom": {"type": "Property", "value": "2025-02-03T10:00:00Z"},
    "dateObservedTo": {"type": "Property",
                       "value": {"@type": "DateTime", "@value": "2025-02-03T10:15:00Z"}},
    "intensity": {"type": "Property", "value": 197},
    "occupancy": {"type": "Property", "value": 0.76},
    "averageVehicleSpeed": {"type": "Property", "value": 52.6, "unitCode": "KMH"},
    "congested": {"type": "Property", "value": False},
    "laneDirection": {"type": "Property", "value": "forward"},
    "refRoadSegment": {"type": "Relationship", "object": "urn:ngsi-ld:RoadSegment:A-6"},
    "location": {"type": "GeoProperty",
                 "value": {"type": "Point", "coordinates": [-4.73, 41.64]}},
    "address": {"type": "Property", "value": {"streetAddress": "Calle X"}},
}
TRAFFIC_KEYVALUES = {
    "id": "urn:ngsi-ld:TrafficFlowObserved:Valladolid-osm-1", "type": "TrafficFlowObserved",
    "dateObservedTo": "2025-02-03T10:15:00Z", "intensity": 197, "occupancy": 0.76,
    "averageVehicleSpeed": 52.6, "congested": False, "laneDirection": "forward",
    "refRoadSegment": "urn:ngsi-ld:RoadSegment:A-6",
    "location": {"type": "Point", "coordinates": [-4.73, 41.64]},
    "address": {"streetAddress": "Calle X"},
}
AIR_NORMALIZED = {
    "id": "urn:ngsi-ld:AirQualityObserved:Madrid-AmbientObserved-28079004",
    "type": "AirQualityObserved",
    "dateObserved": {"type": "Property", "value": "2025-02-03T09:00:00+01:00"},
    "pm25": {"type": "Property", "value": 11.2, "unitCode": "GQ"},
    "no2": {"type": "Property", "value": 22, "unitCode": "GQ",
            "observedAt": "2025-02-03T08:00:00Z"},
    "airQualityLevel": {"type": "Property", "value": "moderate"},
    "refDevice": {"type": "Relationship", "object": "urn:ngsi-ld:Device:28079004"},
}


def test_traffic_normalized_and_key_values_map_to_the_same_event():
    a = validate_event(ngsi_to_event(TRAFFIC_NORMALIZED, source="tc"), now=NOW)
    b = validate_event(ngsi_to_event(TRAFFIC_KEYVALUES, source="tc"), now=NOW)
    assert a == b
    assert a.type == "traffic.flow" and a.entity == "Valladolid-osm-1" and a.source == "tc"
    assert a.time == 1738577700.0  # dateObservedTo
    assert a.values == {"intensity": 197.0, "occupancy": 0.76, "averageVehicleSpeed": 52.6}
    assert a.attributes == {"congested": False, "laneDirection": "forward",
                            "refRoadSegment": "urn:ngsi-ld:RoadSegment:A-6",
                            "lon": -4.73, "lat": 41.64}
    assert a.id == "Valladolid-osm-1@2025-02-03T10:15:00+00:00"


def test_air_quality_normalized():
    e = validate_event(ngsi_to_event(AIR_NORMALIZED, source="air"), now=NOW)
    assert e.type == "air.quality" and e.entity == "Madrid-AmbientObserved-28079004"
    assert e.time == 1738569600.0  # dateObserved wins over a property's observedAt
    assert e.values == {"pm25": 11.2, "no2": 22.0}
    assert e.attributes["airQualityLevel"] == "moderate"
    kv = {k: (v["value"] if isinstance(v, dict) and "value" in v else
              v.get("object", v) if isinstance(v, dict) else v)
          for k, v in AIR_NORMALIZED.items()}
    assert validate_event(ngsi_to_event(kv, source="air"), now=NOW) == e


def test_observed_at_is_used_without_date_observed():
    body = {k: v for k, v in AIR_NORMALIZED.items() if k != "dateObserved"}
    assert ngsi_to_event(body, source="air")["time"] == 1738569600.0


@pytest.mark.parametrize("entity, reason", [
    ({"id": "x", "type": "WeatherObserved"}, "unsupported_type"),
    ({"type": "AirQualityObserved", "dateObserved": "2025-01-01T00:00:00Z"}, "missing_field"),
    ({"id": "x", "type": "AirQualityObserved", "pm25": 3}, "bad_time"),
    ({"id": "x", "type": "AirQualityObserved", "dateObserved": "yesterday"}, "bad_time"),
    ([1], "not_object"),
])
def test_unusable_entities_are_rejected_with_a_reason(entity, reason):
    with pytest.raises(InvalidEvent) as ei:
        ngsi_to_event(entity, source="s")
    assert ei.value.reason == reason


# --- Hostile shapes: only InvalidEvent may escape -------------------------------------

_scalars = (st.none() | st.booleans() | st.integers() | st.integers(min_value=2**63)
            | st.floats(allow_nan=True, allow_infinity=True)
            | st.text(alphabet=st.characters(codec="utf-8"), max_size=40))
_json = st.recursive(_scalars, lambda kids: st.lists(kids, max_size=4)
                     | st.dictionaries(st.text(max_size=12), kids, max_size=4), max_leaves=20)
_times = (st.integers() | st.floats(allow_nan=True, allow_infinity=True)
          | st.sampled_from(["0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00",
                             "2025-02-03T10:00:00Z", "2025-02-03T10:00:00", "yesterday", "",
                             "+10000-01-01T00:00:00Z", "2025-13-45T99:99:99Z"])
          | st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()) | _json)
_types = st.sampled_from(sorted(NGSI_TYPES)) | _json
_contexts = st.sampled_from([None, "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context.jsonld",
                             ["https://smartdatamodels.org/context.jsonld", {"a": "b"}],
                             {"@vocab": 1}, [[[]]], 42])
_props = (_json | st.builds(lambda v, t: {"type": "Property", "value": v, "observedAt": t},
                             _json, _times)
          | st.builds(lambda o: {"type": "Relationship", "object": o}, _json)
          | st.builds(lambda v: {"type": "Property", "value": {"@type": "DateTime",
                                                              "@value": v}}, _times)
          | st.builds(lambda c: {"type": "GeoProperty", "value": {"type": "Point",
                                                                 "coordinates": c}}, _json))


@st.composite
def _entities(draw: st.DrawFn) -> Any:
    e: dict[Any, Any] = {"type": draw(_types)}
    if draw(st.booleans()):
        e["id"] = draw(st.text(max_size=30) | st.just("urn:ngsi-ld:AirQualityObserved:")
                       | _json)
    ctx = draw(_contexts)
    if ctx is not None:
        e["@context"] = ctx
    for f in draw(st.lists(st.sampled_from(["dateObserved", "dateObservedTo",
                                            "dateObservedFrom"]), max_size=2)):
        e[f] = draw(_times | _props)
    e.update(draw(st.dictionaries(st.text(max_size=12) | st.sampled_from(
        ["intensity", "pm25", "location", "no2", "dateCreated"]), _props, max_size=6)))
    if draw(st.booleans()):
        e["location"] = draw(_props)
    return e


def _only_invalid_event(entity: Any) -> None:
    try:
        env = ngsi_to_event(entity, source="s")
    except InvalidEvent as exc:
        assert exc.reason and str(exc)
        return
    assert isinstance(env["time"], float) and set(env) == {
        "id", "source", "type", "entity", "time", "values", "attributes"}
    # The gateway validates what the mapping made: that must not raise otherwise either.
    with contextlib.suppress(InvalidEvent):
        validate_event(env, now=NOW)


@settings(max_examples=400, deadline=None)
@given(_entities())
def test_any_ngsi_ld_shape_maps_or_raises_invalid_event(entity):
    _only_invalid_event(entity)


@settings(max_examples=200, deadline=None)
@given(_json | _entities().map(lambda e: [e]))
def test_any_json_value_maps_or_raises_invalid_event(value):
    _only_invalid_event(value)


@pytest.mark.parametrize("entity, reason", [
    ({"id": "x", "type": ["AirQualityObserved"]}, "unsupported_type"),
    ({"id": "x", "type": {"a": 1}}, "unsupported_type"),
    ({"id": "x", "type": "AirQualityObserved", "dateObserved": 1e300}, "bad_time"),
    ({"id": "x", "type": "AirQualityObserved", "dateObserved": 10**400}, "bad_time"),
    ({"id": "x", "type": "AirQualityObserved", "dateObserved": math.nan}, "bad_time"),
    ({"id": "x", "type": "AirQualityObserved",
      "dateObserved": "0001-01-01T00:00:00+05:00"}, "bad_time"),
    ({"id": "x", "type": "AirQualityObserved", "pm25": {"type": "Property", "value": 1,
                                                       "observedAt": -1e20}}, "bad_time"),
    ({"id": "x", "type": "AirQualityObserved", "dateObserved": 1.7e9,
      "pm25": 10**400}, "not_finite"),
])
def test_reported_crashes_are_invalid_events(entity, reason):
    with pytest.raises(InvalidEvent) as ei:
        ngsi_to_event(entity, source="s")
    assert ei.value.reason == reason


def test_deep_and_huge_values_are_ignored_or_rejected_with_a_short_message():
    deep: Any = 1
    for _ in range(50_000):
        deep = [deep]
    with pytest.raises(InvalidEvent) as ei:
        ngsi_to_event({"id": "x", "type": deep}, source="s")
    assert ei.value.reason == "unsupported_type" and len(str(ei.value)) < 400
    e = ngsi_to_event({"id": "x", "type": "AirQualityObserved", "dateObserved": 1.7e9,
                       "address": deep, "pm25": 3, "location": {"type": "Point",
                                                                "coordinates": [10**400, 1]}},
                      source="s")
    assert e["values"] == {"pm25": 3.0} and "lon" not in e["attributes"]
