"""Motion: MOG2 background subtraction on a downscaled frame, ratios per zone.

The detector keeps one background model per camera. Two situations would flood the
foreground mask without anything moving, and both return an empty mask instead:

- warm-up: the first ``warmup_frames`` frames only teach the model;
- a sudden global change (lights switched, auto exposure): when more than
  ``lighting_ratio`` of the valid area changes at once, the model is relearned from
  this frame (learning rate 1), as Frigate recalibrates on large changes.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .config import MotionConfig
from .geometry import SceneRasters

__all__ = ["MotionDetector", "MotionOutput"]

_FG = 200  # MOG2 marks foreground 255 and shadows 127: keep only the former


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
        self._mog = self._new_model()
        k = cfg.close_kernel
        self._kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)) if k > 1 else None
        self._median = 0 if cfg.median <= 1 else cfg.median | 1  # medianBlur needs odd sizes

    def _new_model(self) -> cv2.BackgroundSubtractorMOG2:
        return cv2.createBackgroundSubtractorMOG2(
            history=self.cfg.history,
            varThreshold=self.cfg.var_threshold,
            detectShadows=self.cfg.detect_shadows,
        )

    def reset(self) -> None:
        """Forget the background model (the next frames warm it up again)."""
        self._mog = self._new_model()
        self.frames = 0

    def detect(self, image: np.ndarray, scene: SceneRasters) -> MotionOutput:
        """Update the model with ``image`` and return this frame's foreground and ratios.

        ``image`` is BGR when ``cfg.color`` else gray, already ``cfg.width`` wide (the
        caller shares the downscaled frame with other stages).
        """
        if not self.cfg.color and image.ndim == 3:
            image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        self.frames += 1
        raw = self._mog.apply(image)
        warming = self.frames <= self.cfg.warmup_frames
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
