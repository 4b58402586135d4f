"""NGSI-LD TrafficFlowObserved / AirQualityObserved -> envelope (normalized and keyValues)."""

from __future__ import annotations

import pytest

from ioc.errors import InvalidEvent
from ioc.events import validate_event
from ioc.events._ngsi import ngsi_to_event

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
