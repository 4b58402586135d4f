"""Normalized geometry to pixels: zone and mask rasters, line sides.

Rasters are built once per frame size and cached, because polygons do not change
while a camera runs and ``fillPoly`` per frame would be wasted work.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from .config import AnalyticsConfig, CountingLine, Point

__all__ = ["SceneRasters", "line_side", "polygon_px", "rasterize"]


def polygon_px(points: Sequence[Point], width: int, height: int) -> np.ndarray:
    """Normalized points to an ``int32`` pixel polygon of shape ``(n, 1, 2)``."""
    pts = np.array([[x * (width - 1), y * (height - 1)] for x, y in points], dtype=np.float64)
    return np.round(pts).astype(np.int32).reshape(-1, 1, 2)


def rasterize(polygons: Sequence[Sequence[Point]], width: int, height: int) -> np.ndarray:
    """A ``uint8`` mask (255 inside any polygon) of ``height x width``."""
    mask = np.zeros((height, width), dtype=np.uint8)
    if polygons:
        cv2.fillPoly(mask, [polygon_px(p, width, height) for p in polygons], 255)
    return mask


def line_side(line: CountingLine, x: float, y: float) -> float:
    """Signed distance (normalized units) of ``(x, y)`` from ``line``: > 0 right, < 0 left.

    Sides are as seen from ``a`` looking toward ``b`` on screen (y down).
    """
    (ax, ay), (bx, by) = line.a, line.b
    dx, dy = bx - ax, by - ay
    norm = (dx * dx + dy * dy) ** 0.5
    return (dx * (y - ay) - dy * (x - ax)) / norm


@dataclass(frozen=True, slots=True)
class SceneRasters:
    """Per-size rasters of one camera's config: the valid area and each zone."""

    width: int
    height: int
    valid: np.ndarray  # 255 where not masked
    valid_count: int
    zones: dict[str, np.ndarray]  # zone name -> bool mask already intersected with valid
    zone_counts: dict[str, int]

    @classmethod
    def build(cls, cfg: AnalyticsConfig, width: int, height: int) -> SceneRasters:
        """Rasterize masks and zones for a ``width x height`` frame."""
        masked = rasterize([m.polygon for m in cfg.masks], width, height)
        valid = cv2.bitwise_not(masked)
        zones: dict[str, np.ndarray] = {}
        counts: dict[str, int] = {}
        for z in cfg.zones:
            zm = cv2.bitwise_and(rasterize([z.polygon], width, height), valid)
            zones[z.name] = zm
            counts[z.name] = int(cv2.countNonZero(zm))
        return cls(width, height, valid, int(cv2.countNonZero(valid)), zones, counts)
