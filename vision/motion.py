"""Motion: MOG2 background subtraction on a downscaled frame, ratios per zone.

The detector keeps one background model per camera. Two situations would flood the
foreground mask without anything moving, and both return an empty mask instead:

- warm-up: frames in the first ``warmup_s`` seconds (of frame timestamps) only teach
  the model;
- a sudden global change (lights switched, auto exposure): when more than
  ``lighting_ratio`` of the valid area changes at once, the model is relearned from
  this frame (learning rate 1), as Frigate recalibrates on large changes.

MOG2 counts its history in frames; ``history_s`` is turned into frames with the
measured frame interval (a running mean of timestamp steps), so the model forgets at
the same speed in seconds whatever the camera's frame rate.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .config import MotionConfig
from .geometry import SceneRasters

__all__ = ["MotionDetector", "MotionOutput", "history_frames"]

_FG = 200  # MOG2 marks foreground 255 and shadows 127: keep only the former
_ASSUMED_INTERVAL = 0.2  # s; until two frames have been seen (what `camera run` samples)
_MIN_HISTORY, _MAX_HISTORY = 10, 100_000


def history_frames(history_s: float, interval_s: float) -> int:
    """MOG2's history in frames for ``history_s`` seconds at one frame per ``interval_s``."""
    return max(_MIN_HISTORY, min(_MAX_HISTORY, round(history_s / max(interval_s, 1e-3))))


@dataclass(slots=True)
class MotionOutput:
    """Foreground mask (uint8 0/255, processing size) and activity ratios."""

    mask: np.ndarray
    ratio: float
    zones: dict[str, float]
    active: list[str]
    warming_up: bool
    relearned: bool


class MotionDetector:
    """MOG2 on a frame already downscaled to ``cfg.width`` by the caller."""

    def __init__(self, cfg: MotionConfig) -> None:
        self.cfg = cfg
        self.frames = 0
        self.relearn_count = 0
        self.interval_s = _ASSUMED_INTERVAL
        self._first_ts: float | None = None
        self._last_ts = 0.0
        self._intervals = 0
        self._mog = self._new_model()
        k = cfg.close_kernel
        self._kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)) if k > 1 else None
        self._median = 0 if cfg.median <= 1 else cfg.median | 1  # medianBlur needs odd sizes

    def _new_model(self) -> cv2.BackgroundSubtractorMOG2:
        return cv2.createBackgroundSubtractorMOG2(
            history=history_frames(self.cfg.history_s, self.interval_s),
            varThreshold=self.cfg.var_threshold,
            detectShadows=self.cfg.detect_shadows,
        )

    def reset(self) -> None:
        """Forget the background model (the next frames warm it up again)."""
        self._mog = self._new_model()
        self.frames = 0
        self._first_ts = None

    @property
    def history(self) -> int:
        """MOG2's current history in frames."""
        return int(self._mog.getHistory())

    def _timing(self, ts: float) -> float:
        """Update the measured frame interval; return seconds since the first frame."""
        if self._first_ts is None:
            self._first_ts = ts
        else:
            dt = ts - self._last_ts
            if 0 < dt <= 60:  # a gap (camera offline) says nothing about the frame rate
                self._intervals += 1
                # Mean of the first steps, then a running mean that follows rate changes.
                k = max(1.0 / self._intervals, 0.05)
                self.interval_s += (dt - self.interval_s) * k
                want = history_frames(self.cfg.history_s, self.interval_s)
                if abs(want - self.history) > 0.1 * self.history:
                    self._mog.setHistory(want)
        self._last_ts = ts
        return ts - self._first_ts

    def detect(self, image: np.ndarray, scene: SceneRasters, ts: float) -> MotionOutput:
        """Update the model with ``image`` taken at ``ts`` (seconds, non-decreasing) and
        return this frame's foreground and ratios.

        ``image`` is BGR when ``cfg.color`` else gray, already ``cfg.width`` wide (the
        caller shares the downscaled frame with other stages).
        """
        if not self.cfg.color and image.ndim == 3:
            image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        self.frames += 1
        age = self._timing(ts)
        raw = self._mog.apply(image)
        warming = age < self.cfg.warmup_s
        _, fg = cv2.threshold(raw, _FG, 255, cv2.THRESH_BINARY)
        if self._median:
            # Removes speckle noise without eroding thin objects the way opening does.
            fg = cv2.medianBlur(fg, self._median)
        if self._kernel is not None:
            fg = cv2.morphologyEx(fg, cv2.MORPH_CLOSE, self._kernel)
        fg = cv2.bitwise_and(fg, scene.valid)
        moving = cv2.countNonZero(fg)
        ratio = moving / scene.valid_count if scene.valid_count else 0.0
        relearned = False
        if not warming and ratio > self.cfg.lighting_ratio:
            # Most of the view changed at once: lighting, not motion. Relearn from here.
            self._mog.apply(image, learningRate=1.0)
            self.relearn_count += 1
            relearned = True
        if warming or relearned:
            fg = np.zeros_like(fg)
            zones = dict.fromkeys(scene.zones, 0.0)
            return MotionOutput(fg, 0.0, zones, [], warming, relearned)
        zones = {}
        active = []
        for name, zm in scene.zones.items():
            n = scene.zone_counts[name]
            r = cv2.countNonZero(cv2.bitwise_and(fg, zm)) / n if n else 0.0
            zones[name] = r
            if r >= self.cfg.activity_threshold and r > 0:
                active.append(name)
        return MotionOutput(fg, ratio, zones, active, False, False)
