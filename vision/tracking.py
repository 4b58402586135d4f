"""Moving-blob tracking with a constant-velocity Kalman filter, and counting across lines.

Contract:

- ``BlobTracker.update(blobs, ts)`` takes the blobs of one frame and its timestamp in
  seconds. Every track carries a constant-velocity Kalman filter in normalized image
  coordinates; its prediction for ``ts`` and the blob's size-dependent measurement noise
  give a Mahalanobis distance per (track, blob) pair. Pairs beyond the gate are never
  matched; the rest are matched greedily by that distance. A new track does not know its
  velocity: its uncertainty is ``tracking.max_speed``, so at 5 fps the gate is wide for
  a new track and narrows once its motion is known. A blob whose centre lies inside a
  track's predicted box is a fragment of it and starts no track.
  ``BlobTracker(cfg, fragments=False)`` tracks detector boxes (people by foot point):
  no fragment logic (people in a group overlap), and a track measured once survives
  missed frames like any other (detections come seconds apart).
- Every time is in seconds of frame timestamps (``max_missed_s``, ``min_age_s``), so one
  setting behaves the same at 2 and 30 fps.
- ``LineCounter.update(tracks)`` counts a crossing when the path of a track between two
  of its positions crosses the line *segment* (segment intersection; the side it came
  from gives the direction). A position inside the ``hysteresis`` band keeps the side
  remembered before it, so a centroid jittering on the line makes no crossing. Each
  track counts at most once per line; a crossing made before the track is confirmed
  (seen for ``min_age_s``) is counted when it is, and forgotten if the track dies first.
  A track once confirmed stays confirmed (a walker may stroll before crossing).
- ``BlobTracker.reset()`` forgets every track (the analyzer calls it on a scene change:
  a cut or a moved camera must not become crossings).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from .config import CountingLine, PeopleTrackingConfig, TrackingConfig
from .geometry import line_side
from .result import LineCount

__all__ = ["Blob", "BlobTracker", "LineCounter", "Track", "find_blobs", "segments_cross"]

_GATE = 9.21  # Mahalanobis d^2 of a match: chi-square, 2 degrees of freedom, p = 0.01
_MEAS_SHARE = 0.2  # centroid noise, as a share of the blob's box side (fragments, shadows)
_MEAS_MIN = 0.004  # and at least this (normalized), for tiny blobs
_FRAGMENT_GROW = 0.1  # a predicted box grown by this share on each side catches fragments
_MIN_STRAIGHTNESS = 0.5  # net displacement / path length of a track that may count
_MIN_TRAVEL = 0.05  # normalized distance a track must have gone before it may count
_MIN_DT = 1e-3  # s; frames with equal timestamps still advance the filter a little


@dataclass(frozen=True, slots=True)
class Blob:
    """A moving region: normalized centroid and bounding box ``(x, y, w, h)``."""

    cx: float
    cy: float
    box: tuple[float, float, float, float]
    area: float


@dataclass(slots=True)
class Track:
    """One tracked blob across frames.

    ``cx``/``cy`` and ``box`` are the last *measured* position; ``state`` is the
    filter's ``[x, y, vx, vy]`` (velocity in normalized units per second).
    """

    id: int
    cx: float
    cy: float
    box: tuple[float, float, float, float]
    hits: int = 1
    missed: int = 0
    first_ts: float = 0.0
    last_ts: float = 0.0
    state: np.ndarray = field(default_factory=lambda: np.zeros(4))
    cov: np.ndarray = field(default_factory=lambda: np.eye(4))
    # line -> (side -1 left / +1 right, x, y of the position where that side was seen)
    sides: dict[str, tuple[int, float, float]] = field(default_factory=dict)
    counted: set[str] = field(default_factory=set)  # lines this track has been counted on
    pending: dict[str, bool] = field(default_factory=dict)  # line -> left_to_right, unconfirmed
    x0: float = 0.0  # first measured position
    y0: float = 0.0
    path: float = 0.0  # length of the filtered path so far
    confirmed: bool = False  # once confirmed, for good (a walker may later turn around)

    @property
    def straightness(self) -> float:
        """Distance from the first position over the path length (1: a straight line)."""
        if self.path <= 0:
            return 0.0
        return self.travel / self.path

    @property
    def travel(self) -> float:
        """Distance of the filtered position from the first measured one."""
        return float(np.hypot(self.state[0] - self.x0, self.state[1] - self.y0))

    @property
    def age(self) -> float:
        """Seconds between the first and the last measurement."""
        return self.last_ts - self.first_ts


def find_blobs(mask: np.ndarray, min_area: float, min_fill: float = 0.0) -> list[Blob]:
    """Blobs of a 0/255 mask whose box area is at least ``min_area`` (fraction of the
    frame) and whose box is at least ``min_fill`` covered by foreground pixels."""
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
        # Speckle (leaves, shimmer, a ghost MOG2 is still unlearning) spreads thin over
        # its box; a vehicle or a person fills most of it.
        if min_fill > 0 and cv2.countNonZero(mask[y:y + bh, x:x + bw]) < min_fill * bw * bh:
            continue
        m = cv2.moments(c)
        if m["m00"] > 0:
            cx, cy = m["m10"] / m["m00"] / w, m["m01"] / m["m00"] / h
        else:
            cx, cy = (x + bw / 2) / w, (y + bh / 2) / h
        blobs.append(Blob(cx, cy, (x / w, y / h, bw / w, bh / h), area))
    return blobs


def _meas_var(box: tuple[float, float, float, float]) -> tuple[float, float]:
    sx = max(_MEAS_MIN, _MEAS_SHARE * box[2])
    sy = max(_MEAS_MIN, _MEAS_SHARE * box[3])
    return sx * sx, sy * sy


class BlobTracker:
    """Kalman-predicted, gated, greedy blob tracker with a bound on live tracks."""

    def __init__(self, cfg: TrackingConfig | PeopleTrackingConfig, *,
                 fragments: bool = True) -> None:
        self.cfg = cfg
        # Blobs fragment (a roof rack, a shadow); detector boxes do not, and people in a
        # group overlap: a people tracker keeps every box.
        self.fragments = fragments
        self.tracks: dict[int, Track] = {}
        self._next_id = 1
        self.dropped = 0  # blobs not tracked because max_tracks was reached
        self.resets = 0
        # A new track's unknown velocity: the gate's edge lies at max_speed.
        v = cfg.max_speed / _GATE**0.5
        self._v0 = v * v
        q = cfg.max_accel
        self._q = q * q

    def reset(self) -> None:
        """Forget every track (scene change, camera moved, state reset)."""
        self.tracks.clear()
        self.resets += 1

    def _predict(self, t: Track, ts: float) -> tuple[np.ndarray, np.ndarray]:
        dt = max(ts - t.last_ts, _MIN_DT)
        f = np.array([[1, 0, dt, 0], [0, 1, 0, dt], [0, 0, 1, 0], [0, 0, 0, 1]], float)
        # White-noise acceleration of spectral density max_accel^2 on each axis.
        q3, q2, q1 = dt**3 / 3 * self._q, dt**2 / 2 * self._q, dt * self._q
        qm = np.array([[q3, 0, q2, 0], [0, q3, 0, q2], [q2, 0, q1, 0], [0, q2, 0, q1]])
        return f @ t.state, f @ t.cov @ f.T + qm

    def update(self, blobs: list[Blob], ts: float) -> list[Track]:
        """Match ``blobs`` of the frame at ``ts`` (seconds) to tracks; return the tracks
        measured on this frame (matched or new)."""
        for tid in [tid for tid, t in self.tracks.items()
                    if ts - t.last_ts > self.cfg.max_missed_s]:
            del self.tracks[tid]  # unseen too long: never re-acquired after that
        preds: dict[int, tuple[np.ndarray, np.ndarray]] = {
            tid: self._predict(t, ts) for tid, t in self.tracks.items()}
        pairs: list[tuple[float, float, int, int]] = []
        reach = self.cfg.max_speed
        for tid, (x, p) in preds.items():
            t = self.tracks[tid]
            far = reach * (ts - t.last_ts)
            for bi, b in enumerate(blobs):
                # Nothing moves faster than max_speed: a long-coasting track's filter is
                # too unsure to gate by itself (it would jump to any new blob).
                if (abs(b.cx - t.cx) > far + (t.box[2] + b.box[2]) / 2
                        or abs(b.cy - t.cy) > far + (t.box[3] + b.box[3]) / 2):
                    continue
                rx, ry = _meas_var(b.box)
                sxx, syy, sxy = p[0, 0] + rx, p[1, 1] + ry, p[0, 1]
                det = sxx * syy - sxy * sxy
                dx, dy = b.cx - x[0], b.cy - x[1]
                d2 = (syy * dx * dx - 2 * sxy * dx * dy + sxx * dy * dy) / det
                if d2 <= _GATE:
                    # Tracks whose motion is known choose first: a new track's wide
                    # gate makes every blob look close to it.
                    pairs.append((float(t.hits < 2), d2, tid, bi))
        pairs.sort()
        used_t: set[int] = set()
        used_b: set[int] = set()
        seen: list[Track] = []
        for _, _, tid, bi in pairs:
            if tid in used_t or bi in used_b:
                continue
            used_t.add(tid)
            used_b.add(bi)
            t, b = self.tracks[tid], blobs[bi]
            x, p = preds[tid]
            rx, ry = _meas_var(b.box)
            h = np.array([[1.0, 0, 0, 0], [0, 1.0, 0, 0]])
            s = h @ p @ h.T + np.diag([rx, ry])
            k = p @ h.T @ np.linalg.inv(s)
            new = x + k @ (np.array([b.cx, b.cy]) - x[:2])
            t.path += float(np.hypot(new[0] - t.state[0], new[1] - t.state[1]))
            t.state = new
            t.cov = (np.eye(4) - k @ h) @ p
            t.cx, t.cy, t.box = b.cx, b.cy, b.box
            t.hits += 1
            t.missed = 0
            t.last_ts = ts
            seen.append(t)
        for tid in [tid for tid in self.tracks if tid not in used_t]:
            t = self.tracks[tid]
            t.missed += 1
            # A track seen once and not on the next frame was noise (or a fragment).
            # One predicted out of the frame has left it.
            x = preds[tid][0]
            if ((t.hits < 2 and self.fragments) or ts - t.last_ts > self.cfg.max_missed_s
                    or not (0.0 <= x[0] <= 1.0 and 0.0 <= x[1] <= 1.0)):
                del self.tracks[tid]
        for bi, b in enumerate(blobs):
            if bi in used_b or (self.fragments and self._fragment(b, preds)):
                continue
            if len(self.tracks) >= self.cfg.max_tracks:
                self.dropped += 1
                continue
            t = Track(self._next_id, b.cx, b.cy, b.box, first_ts=ts, last_ts=ts, x0=b.cx,
                      y0=b.cy)
            t.state = np.array([b.cx, b.cy, 0.0, 0.0])
            rx, ry = _meas_var(b.box)
            t.cov = np.diag([rx, ry, self._v0, self._v0])
            self._next_id += 1
            self.tracks[t.id] = t
            seen.append(t)
        return self._drop_fragments(seen) if self.fragments else seen

    def _drop_fragments(self, seen: list[Track]) -> list[Track]:
        """Drop tracks whose box lies mostly inside a larger track's box on this frame."""
        gone: set[int] = set()
        for a in seen:
            ax, ay, aw, ah = a.box
            for b in seen:
                bx, by, bw, bh = b.box
                if b is a or b.id in gone or bw * bh <= aw * ah:
                    continue
                ix = min(ax + aw, bx + bw) - max(ax, bx)
                iy = min(ay + ah, by + bh) - max(ay, by)
                if ix > 0 and iy > 0 and ix * iy >= 0.5 * aw * ah:
                    gone.add(a.id)
                    break
        for tid in gone:
            del self.tracks[tid]
        return [t for t in seen if t.id not in gone]

    def _fragment(self, b: Blob, preds: dict[int, tuple[np.ndarray, np.ndarray]]) -> bool:
        """True when most of ``b``'s box lies in the (grown) predicted box of a live track
        (a roof rack, a trailer, a shadow torn off a vehicle: not a new object)."""
        bx, by, bw, bh = b.box
        for tid, (x, _) in preds.items():
            t = self.tracks.get(tid)
            if t is None:
                continue
            _, _, tw, th = t.box
            gx, gy = tw * (0.5 + _FRAGMENT_GROW), th * (0.5 + _FRAGMENT_GROW)
            ix = min(bx + bw, x[0] + gx) - max(bx, x[0] - gx)
            iy = min(by + bh, x[1] + gy) - max(by, x[1] - gy)
            if ix > 0 and iy > 0 and ix * iy >= 0.5 * bw * bh:
                return True
        return False


def segments_cross(p: tuple[float, float], q: tuple[float, float], a: tuple[float, float],
                   b: tuple[float, float]) -> bool:
    """True when segment ``p``-``q`` properly intersects segment ``a``-``b``."""
    def orient(o: tuple[float, float], u: tuple[float, float], v: tuple[float, float]) -> float:
        return (u[0] - o[0]) * (v[1] - o[1]) - (u[1] - o[1]) * (v[0] - o[0])

    d1, d2 = orient(a, b, p), orient(a, b, q)
    d3, d4 = orient(p, q, a), orient(p, q, b)
    return (d1 > 0) != (d2 > 0) and d1 != 0 and d2 != 0 and (d3 > 0) != (d4 > 0)


class LineCounter:
    """Counts tracks whose path crosses configured line segments, once per track and line."""

    def __init__(self, lines: tuple[CountingLine, ...],
                 cfg: TrackingConfig | PeopleTrackingConfig) -> None:
        self.lines = lines
        self.cfg = cfg
        self.totals: dict[str, LineCount] = {ln.name: LineCount() for ln in lines}

    def update(self, tracks: list[Track]) -> dict[str, LineCount]:
        """Crossings on this frame per line (``in_``/``out`` increments); updates totals.

        ``tracks`` are the tracks measured on this frame.
        """
        now = {ln.name: LineCount() for ln in self.lines}
        band = self.cfg.hysteresis
        for t in tracks:
            # Speckle that MOG2 has not yet learned wanders; a vehicle or a walker goes
            # somewhere: a track counts only once its path is fairly straight.
            t.confirmed = t.confirmed or (
                t.hits >= 2 and t.age >= self.cfg.min_age_s
                and t.travel >= _MIN_TRAVEL and t.straightness >= _MIN_STRAIGHTNESS)
            confirmed = t.confirmed
            for ln in self.lines:
                if ln.name in t.counted:
                    continue
                d = line_side(ln, t.cx, t.cy)
                if abs(d) > band:  # inside the band: keep the remembered side
                    side = 1 if d > 0 else -1
                    prev = t.sides.get(ln.name)
                    t.sides[ln.name] = (side, t.cx, t.cy)
                    if (prev is not None and prev[0] != side
                            and segments_cross((prev[1], prev[2]), (t.cx, t.cy), ln.a, ln.b)):
                        l2r = prev[0] < 0 < side
                        if t.pending.get(ln.name) == (not l2r):
                            del t.pending[ln.name]  # crossed back before confirmation
                        else:
                            t.pending[ln.name] = l2r
                if confirmed and ln.name in t.pending:
                    l2r = t.pending.pop(ln.name)
                    t.counted.add(ln.name)
                    target = now[ln.name], self.totals[ln.name]
                    if l2r == (ln.direction == "left_to_right"):
                        for c in target:
                            c.in_ += 1
                    else:
                        for c in target:
                            c.out += 1
        return now
