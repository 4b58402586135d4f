"""How camera results land in PostgreSQL: sink specs for ``detections`` and ``camera_health``.

Both run on the generic batched, idempotent sink (``ioc sink``; see
``ioc.storage.sink``): COPY into a staging table, ``INSERT ... ON CONFLICT DO NOTHING``
on the tables' unique keys, Kafka offsets committed only after the rows are.
Tables: migration 0200 (``ioc/storage/migrations/m0200_cameras.py``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

from .storage.sink import Headers, TableSink

__all__ = ["CAMERA_HEALTH_SINK", "DETECTIONS_SINK", "detection_rows", "health_rows"]

_fromts = datetime.fromtimestamp


def _obj(value: bytes | None, what: str) -> dict[str, Any] | None:
    if value is None:
        return None
    d = orjson.loads(value)
    if not isinstance(d, dict):
        raise ValueError(f"{what}: expected a JSON object, got {type(d).__name__}")
    return d


def detection_rows(key: bytes | None, value: bytes | None, headers: Headers) -> list[tuple[Any, ...]]:
    """One row per ``FrameResult.to_json()`` on ``<ns>.detections``."""
    d = _obj(value, "detection")
    if d is None:
        return []
    people = d.get("people")
    tamper = d.get("tamper") or {}
    motion = d.get("motion")
    return [(
        _fromts(float(d["ts"]), UTC),
        str(d["camera"]),
        int(d["seq"]),
        d.get("skipped"),
        float(motion["ratio"]) if isinstance(motion, dict) else None,
        int(people["total"]) if isinstance(people, dict) else None,
        int(d["tracks"]) if "tracks" in d else None,
        bool(tamper.get("covered") or tamper.get("defocused") or tamper.get("moved")),
        d,
    )]


def health_rows(key: bytes | None, value: bytes | None, headers: Headers) -> list[tuple[Any, ...]]:
    """One row per ``HealthEvent.to_json()`` on ``<ns>.camera.health``."""
    d = _obj(value, "camera health event")
    if d is None:
        return []
    last = d.get("last_frame_ts")
    return [(
        _fromts(float(d["time"]), UTC),
        str(d["camera"]),
        str(d["state"]),
        d.get("previous"),
        str(d.get("reason", "")),
        float(d.get("fps", 0.0)),
        float(d.get("target_fps", 0.0)),
        _fromts(float(last), UTC) if last is not None else None,
    )]


DETECTIONS_SINK = TableSink(
    name="detections",
    topic_suffix="detections",
    table="detections",
    columns=("time", "camera", "seq", "skipped", "motion", "people", "tracks", "tamper", "result"),
    types=("timestamptz", "text", "int8", "text", "float4", "int4", "int4", "bool", "jsonb"),
    conflict=("camera", "time", "seq"),
    to_rows=detection_rows,
    description="per-frame camera analytics (and skipped frames with their reason)",
)

CAMERA_HEALTH_SINK = TableSink(
    name="camera_health",
    topic_suffix="camera.health",
    table="camera_health",
    columns=("time", "camera", "state", "previous", "reason", "fps", "target_fps",
             "last_frame_at"),
    types=("timestamptz", "text", "text", "text", "text", "float4", "float4", "timestamptz"),
    conflict=("camera", "time", "state"),
    to_rows=health_rows,
    description="camera online/offline/degraded changes",
)
