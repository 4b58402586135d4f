"""Moving-blob tracking (centroid tracker) and counting across lines with a direction.

Blobs are the external contours of the motion foreground. Tracks are matched to blobs
greedily by the distance between a blob's centroid and the track's predicted position
(constant velocity). Each track remembers, per line, the side it was last
seen on *outside* a hysteresis band around the line; a crossing is a change of that
remembered side. So an object that stops on the line, or whose centroid jitters around
it, does not produce a crossing per jitter, and each track counts at most once per line.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from .config import CountingLine, TrackingConfig
from .geometry import line_side
from .result import LineCount

__all__ = ["Blob", "BlobTracker", "LineCounter", "Track", "find_blobs"]


@dataclass(frozen=True, slots=True)
class Blob:
    """A moving region: normalized centroid and bounding box ``(x, y, w, h)``."""

    cx: float
    cy: float
    box: tuple[float, float, float, float]
    area: float


@dataclass(slots=True)
class Track:
    """One tracked blob across frames."""

    id: int
    cx: float
    cy: float
    box: tuple[float, float, float, float]
    hits: int = 1
    missed: int = 0
    vx: float = 0.0  # per-frame velocity, for predicting where to look next
    vy: float = 0.0
    sides: dict[str, int] = field(default_factory=dict)  # line -> -1 left, +1 right
    counted: set[str] = field(default_factory=set)  # lines this track has been counted on


def find_blobs(mask: np.ndarray, min_area: float) -> list[Blob]:
    """Blobs of a 0/255 mask whose area is at least ``min_area`` (fraction of the frame)."""
    h, w = mask.shape[:2]
    total = float(h * w)
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    blobs = []
    for c in contours:
        x, y, bw, bh = cv2.boundingRect(c)
        # Box area, not contour area: vehicles break into fragments with holes.
        area = bw * bh / total
        if area < min_area:
            continue
        m = cv2.moments(c)
        if m["m00"] > 0:
            cx, cy = m["m10"] / m["m00"] / w, m["m01"] / m["m00"] / h
        else:
            cx, cy = (x + bw / 2) / w, (y + bh / 2) / h
        blobs.append(Blob(cx, cy, (x / w, y / h, bw / w, bh / h), area))
    return blobs


class BlobTracker:
    """Greedy nearest-centroid tracker with a bound on live tracks."""

    def __init__(self, cfg: TrackingConfig) -> None:
        self.cfg = cfg
        self.tracks: dict[int, Track] = {}
        self._next_id = 1
        self.dropped = 0  # blobs not tracked because max_tracks was reached

    def reset(self) -> None:
        """Forget every track."""
        self.tracks.clear()

    def update(self, blobs: list[Blob]) -> list[Track]:
        """Match ``blobs`` to tracks; return the tracks seen on this frame."""
        maxd = self.cfg.max_distance
        pairs = []
        for tid, t in self.tracks.items():
            # Constant-velocity prediction: at 5 fps a car moves further between frames
            # than the gap to its neighbour, so match against where it should be now.
            k = t.missed + 1
            px, py = t.cx + t.vx * k, t.cy + t.vy * k
            for bi, b in enumerate(blobs):
                d = ((px - b.cx) ** 2 + (py - b.cy) ** 2) ** 0.5
                if d <= maxd:
                    pairs.append((d, tid, bi))
        pairs.sort()
        used_t: set[int] = set()
        used_b: set[int] = set()
        seen: list[Track] = []
        for _, tid, bi in pairs:
            if tid in used_t or bi in used_b:
                continue
            used_t.add(tid)
            used_b.add(bi)
            t, b = self.tracks[tid], blobs[bi]
            k = t.missed + 1
            vx, vy = (b.cx - t.cx) / k, (b.cy - t.cy) / k
            if t.hits == 1:
                t.vx, t.vy = vx, vy
            else:
                t.vx, t.vy = 0.5 * (t.vx + vx), 0.5 * (t.vy + vy)
            t.cx, t.cy, t.box = b.cx, b.cy, b.box
            t.hits += 1
            t.missed = 0
            seen.append(t)
        for tid in [tid for tid in self.tracks if tid not in used_t]:
            t = self.tracks[tid]
            t.missed += 1
            if t.missed > self.cfg.max_missed:
                del self.tracks[tid]
        for bi, b in enumerate(blobs):
            if bi in used_b:
                continue
            if len(self.tracks) >= self.cfg.max_tracks:
                self.dropped += 1
                continue
            t = Track(self._next_id, b.cx, b.cy, b.box)
            self._next_id += 1
            self.tracks[t.id] = t
            seen.append(t)
        return seen


class LineCounter:
    """Counts tracks crossing configured lines, with hysteresis and one count per track."""

    def __init__(self, lines: tuple[CountingLine, ...], cfg: TrackingConfig) -> None:
        self.lines = lines
        self.cfg = cfg
        self.totals: dict[str, LineCount] = {ln.name: LineCount() for ln in lines}

    def update(self, tracks: list[Track]) -> dict[str, LineCount]:
        """Crossings on this frame per line (``in_``/``out`` increments); updates totals."""
        now = {ln.name: LineCount() for ln in self.lines}
        band = self.cfg.hysteresis
        for t in tracks:
            for ln in self.lines:
                d = line_side(ln, t.cx, t.cy)
                if abs(d) <= band or not _within_segment(ln, t.cx, t.cy):
                    continue  # on the line (or beside its ends): keep the remembered side
                side = 1 if d > 0 else -1
                prev = t.sides.get(ln.name)
                t.sides[ln.name] = side
                if prev is None or prev == side or t.hits < self.cfg.min_hits:
                    continue
                if ln.name in t.counted:
                    continue
                t.counted.add(ln.name)
                left_to_right = prev < 0 < side
                is_in = left_to_right == (ln.direction == "left_to_right")
                if is_in:
                    now[ln.name].in_ += 1
                    self.totals[ln.name].in_ += 1
                else:
                    now[ln.name].out += 1
                    self.totals[ln.name].out += 1
        return now


def _within_segment(ln: CountingLine, x: float, y: float, margin: float = 0.05) -> bool:
    (ax, ay), (bx, by) = ln.a, ln.b
    dx, dy = bx - ax, by - ay
    t = ((x - ax) * dx + (y - ay) * dy) / (dx * dx + dy * dy)
    return -margin <= t <= 1 + margin
