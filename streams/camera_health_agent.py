"""The camera-health agent: online / offline / degraded from frame arrivals.

It reads only the headers of ``<ns>.camera.frames`` (cheap) and feeds the pure
``vision.health.CameraHealthTracker``; a timer checks every
``cameras.health.check_interval_s`` for cameras that went silent. That timer is what
reports a camera offline when its capture process died: absence is noticed here,
the dead process sends nothing.

Each state change goes to ``<ns>.camera.health`` (JSON, key camera id; ``ioc sink``
stores it in ``camera_health``) and updates the camera's tile (``health`` field; the
last thumbnail is kept as the image so the wall can draw it as stale).

Which cameras a worker watches: those whose frames it received, plus the configured
cameras whose partition (Kafka's murmur2 of the id) is assigned to it, so a camera
already dead when the worker starts is still reported offline. A camera whose
partition moves to another worker is forgotten here and judged there.

Hostile records: a key that is not a camera id is skipped and counted
(``health_bad_key``: no state is made for it, so random keys cannot grow the
tracker); an implausible capture time falls back to the Kafka timestamp; an error
of our own on one record is counted as ``internal_error`` and logged (throttled).
"""

from __future__ import annotations

import logging
import time

import faust
import orjson

from ioc.config import Settings
from ioc.kafka import partition_for as key_partition_for
from ioc.tiles import encode_tile
from ioc.topics import topic_name

from .agent_spec import AgentSpec
from .vision_agent import (
    assigned_partitions,
    camera_of,
    camera_tile,
    count_bug,
    frame_meta,
    runtime_for,
)

__all__ = ["CAMERA_HEALTH", "partition_for"]

log = logging.getLogger(__name__)


def partition_for(camera: str, partitions: int) -> int:
    """The partition of the camera id ``camera`` (``ioc.kafka.partition_for`` of its
    UTF-8 bytes, as the capture publisher keys its frames)."""
    return key_partition_for(camera.encode(), partitions)


def _register(app: faust.App, settings: Settings) -> None:
    from vision.capture import parse_frame_headers
    from vision.health import CameraHealthTracker, HealthEvent, HealthPolicy

    ns = settings.namespace
    cs = settings.cameras
    hs = cs.health
    rt = runtime_for(app, settings)
    rt.health = tracker = CameraHealthTracker(HealthPolicy(
        offline_after_s=hs.offline_after_s, fps_window_s=hs.fps_window_s,
        fps_drop_ratio=hs.fps_drop_ratio, fps_recover_ratio=hs.fps_recover_ratio))
    frames_name = topic_name(ns, "camera.frames")
    n_parts = settings.topics.spec("camera.frames").partitions
    frames = app.topic(frames_name, value_serializer="raw", key_serializer="raw",
                       partitions=n_parts)
    health_topic = app.topic(topic_name(ns, "camera.health"), value_serializer="raw",
                             key_serializer="raw")
    tiles = app.topic(topic_name(ns, "wall.tiles"), value_serializer="raw", key_serializer="raw")
    configured = {c.id: partition_for(c.id, n_parts) for c in cs.cameras if c.enabled}
    target_fps: dict[str, float] = {}  # per camera; settings are frozen, so cache them

    def fps_of(cam: str) -> float:
        if cam not in target_fps and len(target_fps) < 10_000:
            target_fps[cam] = cs.effective(cam).fps
        return target_fps.get(cam, cs.fps)

    async def publish(ev: HealthEvent) -> None:
        level = logging.INFO if ev.state == "online" else logging.WARNING
        log.log(level, "camera %s: %s -> %s (%s)", ev.camera, ev.previous, ev.state, ev.reason)
        await health_topic.send(key=ev.camera.encode(), value=orjson.dumps(ev.to_json()))
        async with rt.tile_lock:  # versions reach the producer in order (vision_agent)
            lt = rt.next_tile(ev.camera, ev.time)
            payload = dict(lt.payload) or {"camera": ev.camera, "width": 0, "height": 0,
                                           "motion": 0.0, "counts": {}}
            tile = camera_tile(
                ev.camera, ts=lt.ts or ev.time, version=lt.version,
                width=int(payload.get("width", 0)), height=int(payload.get("height", 0)),
                motion=float(payload.get("motion", 0.0)),
                counts=dict(payload.get("counts", {})),
                health=ev.state, fps=ev.fps, image=lt.image,
            )
            if isinstance(payload.get("tamper"), dict):  # the last analysed frame's flags
                tile.payload["tamper"] = dict(payload["tamper"])
            lt.payload = tile.payload
            await tiles.send(key=tile.id.encode(), value=encode_tile(tile))

    @app.agent(frames, name=f"{ns}.camera_health")
    async def camera_health(stream):  # type: ignore[no-untyped-def]
        async for events in stream.take_events(256, within=0.1):
            now = time.time()
            for ev in events:
                cam = camera_of(ev.key)
                if cam is None:  # not a camera id: no health state for it (bounded)
                    rt.skipped["health_bad_key"] += 1
                    continue
                try:
                    msg = ev.message
                    meta = frame_meta(parse_frame_headers, ev.headers, msg.timestamp, now)
                    rt.partition_of[cam] = msg.partition
                    changes = tracker.observe(cam, meta.ts, now, fps_of(cam))
                except Exception as exc:
                    count_bug(rt, "camera_health", exc)
                    continue
                for change in changes:
                    await publish(change)

    @app.timer(interval=hs.check_interval_s, name=f"{ns}.camera_health.check")
    async def check() -> None:
        now = time.time()
        assigned = assigned_partitions(app, frames_name)
        if assigned is not None:
            rt.drop_unassigned(assigned)
            for cam, part in configured.items():
                if part in assigned and tracker.state(cam) is None:
                    rt.partition_of.setdefault(cam, part)
                    tracker.expect(cam, fps_of(cam), now)
        for change in tracker.check(now):
            await publish(change)


CAMERA_HEALTH = AgentSpec(
    "camera_health", _register,
    "camera.frames (headers) -> camera.health online/offline/degraded + tile health",
)
