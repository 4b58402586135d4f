"""The vision agent: ``<ns>.camera.frames`` -> ``<ns>.detections`` + camera tiles.

Glue only: the analytics are ``vision.pipeline.CameraAnalyzer``; this module moves
bytes between Kafka and it.

- Frames are taken in batches (``stream.take_events(cameras.batch_size,
  within=cameras.batch_within_s)``), grouped by camera and analysed in a small thread
  pool, one task per camera so each camera's frames stay in order (OpenCV releases
  the GIL, so two cameras use two cores).
- One ``CameraAnalyzer`` per camera lives in this worker. **State lives with the
  partition**: when a rebalance moves a camera's partition to another worker, this
  worker drops the analyzer and the new owner starts a fresh one, which warms up
  again (background model, tamper reference, tracks: see docs/cameras.md for the
  number of frames). Line totals restart from zero after such a move.
- A bad frame (corrupt/truncated JPEG, zero or odd size, random bytes) never crashes
  the agent: the analyzer returns ``skipped=<reason>``; the result is still published
  to ``<ns>.detections`` (so the reason is visible and stored) and counted in
  ``CameraRuntime.skipped``. A message without a usable key is counted as ``bad_key``;
  unreadable headers, or a capture time more than a day away from the worker's
  clock, as ``bad_headers`` (the Kafka timestamp stands in). Frames are too large for
  ``<ns>.dlq`` (up to 4 MiB): what cannot be handled is a counted skip with a
  throttled log line, never a dead letter; an error of our own code on one frame is
  counted as ``internal_error`` (docs/reliability.md).
- **Load shedding**: when the worker falls behind (a batch holds several frames of a
  camera), frames older than ``cameras.max_lag_s`` are not analysed; they are
  published as ``skipped="stale"`` and counted. The newest frame of each camera in a
  batch is always analysed. So the wall stays live at a lower analysed fps instead of
  drifting seconds behind.
- Every analysed frame's ``FrameResult.to_json()`` goes to ``<ns>.detections`` (key:
  camera id). When the analyzer rendered a thumbnail (its configured rate), a tile
  ``camera:<id>`` of kind ``camera`` goes to ``<ns>.wall.tiles`` with the thumbnail as
  its image and ``time`` = the frame's capture time.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import time
import weakref
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import faust
import orjson

from ioc.config import Settings
from ioc.events import LogThrottle
from ioc.tiles import Tile, encode_tile
from ioc.topics import topic_name

from .agent_spec import AgentSpec

__all__ = ["VISION", "CameraRuntime", "camera_tile", "runtime_for", "shed_stale"]

log = logging.getLogger(__name__)

_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# A capture time further than this from the worker's clock is a broken header.
MAX_CLOCK_SKEW_S = 86_400.0
_quiet = LogThrottle(10.0)


def camera_of(key: object) -> str | None:
    """The camera id a frame record's key names, or None (not bytes, not UTF-8, not an id)."""
    if not isinstance(key, bytes):
        return None
    try:
        cam = key.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return cam if _ID_RE.match(cam) else None


def frame_meta(parse: Any, headers: Any, kafka_ts_s: float | None, now: float) -> Any:
    """``parse(headers)`` (vision.capture.parse_frame_headers) with an implausible capture
    time replaced by the Kafka timestamp, a frame number outside -1..2**63 by -1 and a
    size outside int32 by 0x0, each reported in ``problem``."""
    # Faust's Message.timestamp is in seconds already (it divides Kafka's milliseconds)
    fallback = float(kafka_ts_s or 0.0)
    meta = parse(headers, fallback_ts=fallback)
    if abs(meta.ts - now) > MAX_CLOCK_SKEW_S and meta.ts != fallback:
        meta = dataclasses.replace(meta, ts=fallback, problem=meta.problem or (
            f"header ts: {meta.ts!r} is more than {MAX_CLOCK_SKEW_S:.0f} s from now"))
    # numbers that JSON (orjson: int64) and the database cannot carry
    if not -1 <= meta.seq < 2**63:
        meta = dataclasses.replace(meta, seq=-1, problem=meta.problem or (
            f"header seq: {meta.seq!r} is not a frame number"))
    if not (0 <= meta.width < 2**31 and 0 <= meta.height < 2**31):
        meta = dataclasses.replace(meta, width=0, height=0, problem=meta.problem or (
            f"header width/height: {meta.width!r}x{meta.height!r} is not a frame size"))
    return meta


def count_bug(rt: Any, what: str, exc: BaseException) -> None:
    """A frame our code failed on: counted as ``internal_error``, logged (throttled)."""
    rt.skipped["internal_error"] += 1
    held = _quiet.allow(f"{what}:{type(exc).__name__}")
    if held is not None:
        log.error("%s: skipped a frame record on an error of our own (%d so far, %d lines "
                  "held back)", what, rt.skipped["internal_error"], held, exc_info=exc)
MAX_CAMERAS = 256  # per worker: a flood of random keys must not grow memory


def camera_tile(
    camera: str,
    *,
    ts: float,
    version: int,
    width: int,
    height: int,
    motion: float,
    counts: dict[str, int],
    health: str,
    fps: float,
    image: bytes | None,
    tamper: Any = None,
) -> Tile:
    """A ``camera`` tile as ioc/tiles.py defines its payload.

    ``tamper``: the frame's ``vision.result.TamperState`` (None: not analysed); its flags
    go into the payload for the wall's drill-in.
    """
    payload: dict[str, Any] = {
        "camera": camera,
        "width": width,
        "height": height,
        "motion": round(float(motion), 4),
        "counts": counts,
        "health": health,
        "fps": round(float(fps), 2),
    }
    if tamper is not None:
        payload["tamper"] = {"covered": bool(tamper.covered), "defocused": bool(tamper.defocused),
                             "moved": bool(tamper.moved), "ready": bool(tamper.ready)}
    return Tile(
        id=f"camera:{camera}",
        kind="camera",
        version=version,
        time=ts,
        payload=payload,
        image=image,
    )


def _counts(result: Any) -> dict[str, int]:
    """Tile counters: people (total, per zone, per line in/out) and cumulative line
    in/out."""
    out: dict[str, int] = {}
    people = getattr(result, "people", None)
    if people is not None:
        out["people"] = int(people.total)
        for zone, n in people.zones.items():
            out[f"people:{zone}"] = int(n)
        # People across each line, from the detector's tracks (the line's own counts
        # below are of motion blobs, which merge in crowds).
        for line, c in getattr(people, "counts", {}).items():
            out[f"people:{line}:in"] = int(c.in_)
            out[f"people:{line}:out"] = int(c.out)
    for line, c in getattr(result, "counts", {}).items():
        out[f"{line}:in"] = int(c.in_)
        out[f"{line}:out"] = int(c.out)
    return out


@dataclass
class _LastTile:
    ts: float = 0.0
    version: int = 0
    payload: dict[str, Any] = field(default_factory=dict)
    image: bytes | None = None


@dataclass
class CameraRuntime:
    """Per-worker camera state shared by the vision and camera-health agents."""

    settings: Settings
    analyzers: dict[str, Any] = field(default_factory=dict)
    partition_of: dict[str, int] = field(default_factory=dict)
    last_tile: dict[str, _LastTile] = field(default_factory=dict)
    skipped: Counter[str] = field(default_factory=Counter)
    frames: int = 0
    tiles: int = 0
    # Since the last housekeeping log: the oldest frame's age when its batch was taken
    # (delay before the agent) and the longest batch (the agent's own time).
    intake_lag_max_ms: float = 0.0
    batch_max_ms: float = 0.0
    health: Any = None  # vision.health.CameraHealthTracker when that agent runs
    # Held from taking a tile version to handing the tile to the producer (both agents).
    tile_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    broken: dict[str, str] = field(default_factory=dict)  # camera -> why no analyzer

    def analyzer(self, camera: str) -> Any | None:
        a = self.analyzers.get(camera)
        if a is not None or camera in self.broken:
            return a
        if len(self.analyzers) >= MAX_CAMERAS:
            return None
        from ioc.errors import IOCError
        from vision.pipeline import CameraAnalyzer

        cfg = self.settings.cameras.effective(camera).analytics
        try:
            a = self.analyzers[camera] = CameraAnalyzer(camera, cfg)
        except (IOCError, OSError, ValueError) as exc:
            self.broken[camera] = str(exc)
            log.error("camera %s: cannot build its analyzer: %s", camera, exc)
            return None
        log.info("camera %s: new analyzer (warming up)", camera)
        return a

    def next_tile(self, camera: str, ts: float) -> _LastTile:
        lt = self.last_tile.setdefault(camera, _LastTile())
        # Versions grow with capture time, and always by at least one.
        lt.version = max(lt.version + 1, int(ts * 1000))
        return lt

    def health_of(self, camera: str) -> tuple[str, float]:
        """(state, fps) from the health tracker; "online" when it is not running here."""
        if self.health is None:
            return "online", 0.0
        return self.health.state(camera) or "online", self.health.fps(camera)

    def drop_unassigned(self, assigned: set[int]) -> list[str]:
        """Forget cameras whose frames partition left this worker (after a rebalance)."""
        gone = [c for c, p in self.partition_of.items() if p not in assigned]
        for c in gone:
            self.partition_of.pop(c, None)
            if self.analyzers.pop(c, None) is not None:
                log.info("camera %s: partition moved away; analyzer dropped", c)
            if self.health is not None:
                self.health.forget(c)
        return gone


_RUNTIMES: weakref.WeakKeyDictionary[faust.App, CameraRuntime] = weakref.WeakKeyDictionary()


def runtime_for(app: faust.App, settings: Settings) -> CameraRuntime:
    """The one ``CameraRuntime`` of ``app`` (created on first use)."""
    rt = _RUNTIMES.get(app)
    if rt is None:
        rt = _RUNTIMES[app] = CameraRuntime(settings)
    return rt


def assigned_partitions(app: faust.App, topic: str) -> set[int] | None:
    """Partitions of ``topic`` assigned to this worker; None before the first assignment."""
    try:
        tps = app.consumer.assignment()
    except Exception:  # consumer not started yet
        return None
    return {tp.partition for tp in tps if tp.topic == topic}


Item = tuple[bytes, float, int]  # (JPEG, capture ts, seq)


def shed_stale(items: list[Item], now: float, max_lag_s: float | None) -> tuple[list[Item], list[Item]]:
    """Split one camera's batch into (to analyse, stale).

    A frame is stale when it is older than ``max_lag_s`` and a newer frame of the camera
    is in the batch. The newest frame is always analysed, so a clock skew between the
    capture host and the worker can only thin a backlog, never starve a camera.
    """
    if max_lag_s is None or len(items) < 2:
        return items, []
    keep: list[Item] = []
    stale: list[Item] = []
    for it in items[:-1]:
        (stale if now - it[1] > max_lag_s else keep).append(it)
    keep.append(items[-1])
    return keep, stale


def _analyze(analyzer: Any, items: list[tuple[bytes, float, int]]) -> list[Any]:
    """Run one camera's frames in order (in a pool thread); None for a frame that broke it.

    ``process_jpeg`` is documented never to raise on bad input; this guard keeps a bug
    in an analyzer from stopping the agent (the frame is counted as ``error``).
    """
    out: list[Any] = []
    for value, ts, seq in items:
        try:
            r = analyzer.process_jpeg(value, ts)
        except Exception:
            log.exception("camera %s: analyzer failed on frame seq %d", analyzer.camera_id, seq)
            out.append(None)
            continue
        r.seq = seq
        out.append(r)
    return out


def _register(app: faust.App, settings: Settings) -> None:
    from vision.capture import parse_frame_headers
    from vision.result import FrameResult

    ns = settings.namespace
    cs = settings.cameras
    rt = runtime_for(app, settings)
    frames_name = topic_name(ns, "camera.frames")
    frames = app.topic(frames_name, value_serializer="raw", key_serializer="raw",
                       partitions=settings.topics.spec("camera.frames").partitions)
    detections = app.topic(topic_name(ns, "detections"), value_serializer="raw",
                           key_serializer="raw")
    tiles = app.topic(topic_name(ns, "wall.tiles"), value_serializer="raw", key_serializer="raw")
    pool = ThreadPoolExecutor(max_workers=cs.analysis_threads, thread_name_prefix="vision")

    @app.agent(frames, name=f"{ns}.vision")
    async def vision(stream):  # type: ignore[no-untyped-def]
        loop = asyncio.get_running_loop()
        async for events in stream.take_events(cs.batch_size, within=cs.batch_within_s):
            by_cam: dict[str, list[tuple[bytes, float, int]]] = {}
            wall = time.time()
            for ev in events:
                cam = camera_of(ev.key)
                if cam is None:
                    rt.skipped["bad_key"] += 1
                    continue
                try:
                    msg = ev.message
                    meta = frame_meta(parse_frame_headers, ev.headers, msg.timestamp, wall)
                except Exception as exc:
                    count_bug(rt, "vision", exc)
                    continue
                if meta.problem:
                    rt.skipped["bad_headers"] += 1
                rt.partition_of[cam] = msg.partition
                value = ev.value if isinstance(ev.value, bytes) else b""
                by_cam.setdefault(cam, []).append((value, meta.ts, meta.seq))
            rt.frames += len(events)
            jobs = []
            now = time.time()
            oldest = min((ts for items in by_cam.values() for _, ts, _ in items), default=now)
            rt.intake_lag_max_ms = max(rt.intake_lag_max_ms, (now - oldest) * 1000)
            for cam, all_items in by_cam.items():
                items, stale = shed_stale(all_items, now, cs.max_lag_s)
                for _, ts, seq in stale:
                    await _publish(FrameResult(camera=cam, ts=ts, seq=seq, skipped="stale"))
                a = rt.analyzer(cam)
                if a is None:
                    rt.skipped["no_analyzer"] += len(items)
                    continue
                jobs.append(loop.run_in_executor(pool, _analyze, a, items))
            # Publish each camera's results as soon as its job is done, not after the
            # slowest camera of the batch: the delay to the wall is what matters.
            for job in asyncio.as_completed(jobs):
                for r in await job:
                    if r is None:
                        rt.skipped["error"] += 1
                    else:
                        await _publish(r)
            rt.batch_max_ms = max(rt.batch_max_ms, (time.time() - now) * 1000)

    async def _publish(r: Any) -> None:
        try:
            key = r.camera.encode()
            value = orjson.dumps(r.to_json())
        except Exception as exc:
            count_bug(rt, "vision", exc)
            return
        if r.skipped is not None:
            rt.skipped[r.skipped] += 1
        await detections.send(key=key, value=value)
        if r.skipped is None and r.thumbnail is not None:
            # The version is taken and the tile handed to the producer under one lock:
            # the camera-health agent sends tiles of the same id, and a send can wait
            # (metadata, a full buffer), so without it a later version could be
            # appended first and the wall would drop the earlier one as stale.
            async with rt.tile_lock:
                try:
                    health, fps = rt.health_of(r.camera)
                    lt = rt.next_tile(r.camera, r.ts)
                    tile = camera_tile(r.camera, ts=r.ts, version=lt.version, width=r.width,
                                       height=r.height, motion=r.motion.ratio,
                                       counts=_counts(r), health=health, fps=fps,
                                       image=r.thumbnail, tamper=getattr(r, "tamper", None))
                    lt.ts, lt.payload, lt.image = r.ts, tile.payload, r.thumbnail
                    tile_bytes = encode_tile(tile)
                except Exception as exc:
                    count_bug(rt, "vision", exc)
                    return
                await tiles.send(key=tile.id.encode(), value=tile_bytes)
            rt.tiles += 1

    @app.timer(interval=5.0, name=f"{ns}.vision.housekeeping")
    async def housekeeping() -> None:
        assigned = assigned_partitions(app, frames_name)
        if assigned is not None:
            rt.drop_unassigned(assigned)
        if rt.frames:
            log.info("vision: frames=%d tiles=%d cameras=%d skipped=%s max_intake_lag_ms=%.0f "
                     "max_batch_ms=%.0f", rt.frames, rt.tiles, len(rt.analyzers),
                     dict(rt.skipped), rt.intake_lag_max_ms, rt.batch_max_ms)
            rt.intake_lag_max_ms = rt.batch_max_ms = 0.0


VISION = AgentSpec(
    "vision", _register,
    "camera.frames -> detections (motion, people, lines, tamper) + camera tiles",
)
