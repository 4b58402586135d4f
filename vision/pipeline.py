"""``CameraAnalyzer``: the per-camera analytics pipeline (the interface the agent uses).

One analyzer per camera holds that camera's state (background model, tracks, tamper
reference, line totals). It never raises for bad input: an undecodable or odd frame
gives a ``FrameResult`` with ``skipped=<reason>`` and is counted in
``analyzer.stats.skipped[reason]``.

Stages per frame::

    JPEG --decode (reduced when the analyzers need less)--> BGR, at most max_width wide
      gray, motion width  --> MotionDetector (foreground, ratios per zone)
                          --> find_blobs --> BlobTracker --> LineCounter
      gray, tamper width  --> TamperDetector
      BGR (every n-th)    --> PeopleDetector (HOG or DNN) --> counts per zone
      BGR (every n-th)    --> ThumbnailRenderer (JPEG with overlays)
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from ioc.errors import InvalidFrame
from ioc.metrics.hist import Histogram

from .config import AnalyticsConfig
from .frames import check_frame, decode_jpeg, fit_width
from .geometry import SceneRasters
from .motion import MotionDetector
from .people import make_people_detector
from .result import FrameResult, LineCount, MotionResult, PeopleResult, TamperState
from .tamper import TamperDetector
from .thumbnail import ThumbnailRenderer
from .tracking import Blob, BlobTracker, LineCounter, find_blobs

__all__ = ["AnalyzerStats", "CameraAnalyzer"]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class AnalyzerStats:
    """Counters of one analyzer (exported as metrics by the agent)."""

    frames: int = 0
    analyzed: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    people_runs: int = 0
    thumbnails: int = 0
    resets: int = 0
    busy_ms: float = 0.0
    seconds: Histogram = field(default_factory=Histogram)  # per analysed frame (/metrics)

    def as_dict(self) -> dict[str, Any]:
        """Plain-dict copy for logs and metrics."""
        return {
            "frames": self.frames,
            "analyzed": self.analyzed,
            "skipped": dict(self.skipped),
            "people_runs": self.people_runs,
            "thumbnails": self.thumbnails,
            "resets": self.resets,
            "busy_ms": round(self.busy_ms, 3),
        }


class CameraAnalyzer:
    """All analytics of one camera; feed it frames in time order.

    Raises (at construction only):
        ConfigError: the people detector cannot be built (missing ONNX file...).
    """

    def __init__(self, camera_id: str, cfg: AnalyticsConfig) -> None:
        self.camera_id = camera_id
        self.cfg = cfg
        self.stats = AnalyzerStats()
        self.motion = MotionDetector(cfg.motion) if cfg.motion.enabled else None
        self.tracker = (
            BlobTracker(cfg.tracking) if cfg.tracking.enabled and self.motion is not None else None
        )
        self.counter = LineCounter(cfg.lines, cfg.tracking) if self.tracker is not None else None
        self.tamper = TamperDetector(cfg.tamper) if cfg.tamper.enabled else None
        self.people = make_people_detector(cfg.people)
        # People crossings: tracks of the detector's boxes by foot point (blobs of
        # walkers merge and split in a group; vehicles keep the blob tracks).
        pt = cfg.people.tracking
        self.people_tracker = (BlobTracker(pt, fragments=False)
                               if self.people is not None and pt.enabled and cfg.lines
                               else None)
        self.people_counter = (LineCounter(cfg.lines, pt)
                               if self.people_tracker is not None else None)
        self.thumbnails = ThumbnailRenderer(cfg)
        self._scene: SceneRasters | None = None
        self._size: tuple[int, int] | None = None  # (w, h) of analyzed frames
        self._source_width = 0  # width of the JPEGs before reduced decoding
        self._last_ts = -math.inf
        self._seq = 0
        self._people_last: PeopleResult | None = None
        self._people_age = 0
        self._people_ts = -math.inf  # timestamp of the last people detection
        self._motion_ratio = 0.0  # moving share of the previous frame (scene changes)
        # Largest width any stage looks at: JPEGs are decoded reduced down toward it.
        need = [cfg.motion.width if cfg.motion.enabled else 0,
                cfg.tamper.width if cfg.tamper.enabled else 0,
                cfg.thumbnail.width if cfg.thumbnail.enabled else 0]
        if self.people is not None:
            need.append(cfg.max_width)
        self._need_width = min(cfg.max_width, max(need))

    # -- public ---------------------------------------------------------------------

    def process_jpeg(self, data: bytes, ts: float) -> FrameResult:
        """Decode and analyze one JPEG frame; bad bytes give a skipped result."""
        t0 = time.perf_counter()
        self.stats.frames += 1
        reduce = self._reduce_for(self._source_width)
        try:
            frame = decode_jpeg(data, reduce=reduce)
            if reduce > 1 and frame.shape[1] < self._need_width:
                # The camera's resolution dropped: decode this one at full size.
                reduce = 1
                frame = decode_jpeg(data)
        except InvalidFrame as exc:
            return self._skip(exc.reason, str(exc), ts, t0)
        self._source_width = frame.shape[1] * reduce
        return self._analyze(frame, ts, t0)

    def process(self, frame: np.ndarray, ts: float) -> FrameResult:
        """Analyze one decoded frame (BGR, gray or BGRA ``uint8``); bad input is skipped."""
        t0 = time.perf_counter()
        self.stats.frames += 1
        return self._analyze(frame, ts, t0)

    def reset(self) -> None:
        """Forget all per-camera state (as after a rebalance); line totals start at 0."""
        if self.motion is not None:
            self.motion.reset()
        if self.tracker is not None:
            self.tracker.reset()
        if self.counter is not None:
            self.counter = LineCounter(self.cfg.lines, self.cfg.tracking)
        if self.people_tracker is not None:
            self.people_tracker.reset()
            self.people_counter = LineCounter(self.cfg.lines, self.cfg.people.tracking)
        if self.tamper is not None:
            self.tamper.reset()
        self._people_last = None
        self._last_ts = -math.inf
        self.stats.resets += 1

    # -- internals --------------------------------------------------------------------

    def _reduce_for(self, source_width: int) -> int:
        if source_width <= 0:
            return 1
        for r in (8, 4, 2):
            if source_width // r >= self._need_width:
                return r
        return 1

    def _skip(self, reason: str, message: str, ts: float, t0: float) -> FrameResult:
        self.stats.skipped[reason] += 1
        if log.isEnabledFor(logging.DEBUG):
            log.debug("camera %s: frame at ts=%s skipped (%s): %s", self.camera_id, ts, reason,
                      message)
        ms = (time.perf_counter() - t0) * 1000
        self.stats.busy_ms += ms
        return FrameResult(camera=self.camera_id, ts=ts, skipped=reason, elapsed_ms=ms)

    def _analyze(self, frame: np.ndarray, ts: float, t0: float) -> FrameResult:
        try:
            ts = float(ts)  # numpy scalars and ints are fine
        except (TypeError, ValueError):
            ts = math.nan
        if not math.isfinite(ts):
            return self._skip("bad_ts", "timestamp is not a finite number", 0.0, t0)
        if ts < self._last_ts:
            return self._skip("out_of_order", f"timestamp {ts} is older than {self._last_ts}",
                              ts, t0)
        try:
            frame = fit_width(check_frame(frame), self.cfg.max_width)
        except InvalidFrame as exc:
            return self._skip(exc.reason, str(exc), ts, t0)
        try:
            result = self._run(frame, ts)
        except Exception as exc:  # one camera's bad frame must not stop the worker
            log.exception("camera %s: analytics failed on frame at ts=%s", self.camera_id, ts)
            return self._skip("error", f"{type(exc).__name__}: {exc}", ts, t0)
        self._last_ts = ts
        result.elapsed_ms = (time.perf_counter() - t0) * 1000
        self.stats.busy_ms += result.elapsed_ms
        self.stats.seconds.observe(result.elapsed_ms / 1000)
        self.stats.analyzed += 1
        return result

    def _run(self, frame: np.ndarray, ts: float) -> FrameResult:
        cfg = self.cfg
        h, w = frame.shape[:2]
        if self._size != (w, h):
            if self._size is not None:
                log.info("camera %s: frame size changed %s -> %s, state reset",
                         self.camera_id, self._size, (w, h))
                self.reset()
            self._size = (w, h)
            self._scene = None
        self._seq += 1
        res = FrameResult(camera=self.camera_id, ts=ts, seq=self._seq, width=w, height=h)
        warming = False
        # One downscale shared by motion and tamper; converting the small frame is cheap.
        small = fit_width(frame, cfg.motion.width)
        gray = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)
        if self._scene is None or self._scene.width != gray.shape[1]:
            self._scene = SceneRasters.build(cfg, gray.shape[1], gray.shape[0])
        scene = self._scene

        fg = None  # this frame's foreground, once the background model is ready
        if self.motion is not None:
            mo = self.motion.detect(small if cfg.motion.color else gray, scene, ts)
            warming |= mo.warming_up
            if not (mo.warming_up or mo.relearned):
                fg = mo.mask
            res.motion = MotionResult(mo.ratio, mo.zones, mo.active)
            if self.tracker is not None and self.counter is not None:
                jump = mo.ratio - self._motion_ratio
                self._motion_ratio = mo.ratio
                if mo.relearned or jump >= cfg.tracking.scene_change_ratio:
                    # A cut or a moved camera: new blobs everywhere at once. Counting
                    # them against the old tracks would make crossings out of nothing.
                    self.tracker.reset()
                    if self.people_tracker is not None:
                        self.people_tracker.reset()
                    seen = []
                else:
                    blobs = find_blobs(mo.mask, cfg.tracking.min_area, cfg.tracking.min_fill)
                    seen = self.tracker.update(blobs, ts)
                res.crossings = self.counter.update(seen)
                res.counts = {k: LineCount(v.in_, v.out) for k, v in self.counter.totals.items()}
                res.tracks = len(self.tracker.tracks)

        if self.tamper is not None:
            # BGR: the tamper detector also measures colour (a cloth or spray flattens it).
            res.tamper = self.tamper.detect(fit_width(small, cfg.tamper.width), ts)
            warming |= not res.tamper.ready
            if self.tracker is not None and any(e.kind == "moved" and e.active
                                                for e in res.tamper.changed):
                self.tracker.reset()  # the lines no longer lie where they were drawn
                if self.people_tracker is not None:
                    self.people_tracker.reset()
        else:
            res.tamper = TamperState(ready=True)

        if self.people is not None:
            res.people = self._people(frame, scene, ts, fg)

        res.warming_up = warming
        if self.thumbnails.due(ts):
            res.thumbnail = self.thumbnails.render(frame, res)
            self.stats.thumbnails += 1
        return res

    def _people(self, frame: np.ndarray, scene: SceneRasters, ts: float,
                motion: np.ndarray | None) -> PeopleResult:
        assert self.people is not None
        if self._people_last is not None and ts - self._people_ts < self.cfg.people.interval_s:
            self._people_age += 1
            last = self._people_last
            return PeopleResult(last.total, dict(last.zones), list(last.boxes), False,
                                self._people_age, {}, dict(last.counts))
        self._people_ts = ts
        boxes = self.people.detect(frame, motion)
        self.stats.people_runs += 1
        kept = []
        zones = dict.fromkeys(scene.zones, 0)
        sw, sh = scene.width, scene.height
        for b in boxes:
            # A person stands where their feet are: zone and mask tests use the foot point.
            fx = min(sw - 1, max(0, int((b.x + b.w / 2) * sw)))
            fy = min(sh - 1, max(0, int((b.y + b.h) * sh) - 1))
            if not scene.valid[fy, fx]:
                continue
            kept.append(b)
            for name, zm in scene.zones.items():
                if zm[fy, fx]:
                    zones[name] += 1
        self._people_last = PeopleResult(len(kept), zones, kept, True, 0)
        if self.people_tracker is not None and self.people_counter is not None:
            feet = [Blob(b.x + b.w / 2, b.y + b.h, (b.x, b.y, b.w, b.h), b.w * b.h)
                    for b in kept]
            self._people_last.crossings = self.people_counter.update(
                self.people_tracker.update(feet, ts))
            self._people_last.counts = {k: LineCount(v.in_, v.out)
                                        for k, v in self.people_counter.totals.items()}
        self._people_age = 0
        return self._people_last
