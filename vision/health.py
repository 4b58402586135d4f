"""Camera health from frame arrivals alone: online, offline, degraded (fps drop).

Pure and clock-free: the caller passes the times. The stream worker calls
``observe`` for every frame it receives and ``check`` on a timer, so a camera whose
capture process died is still reported offline: absence is detected downstream, not
announced by the dead process.

States and transitions (each transition yields one ``HealthEvent``)::

    (unknown) --frame--> online --no frame for offline_after_s--> offline
    online  --fps < drop_ratio * target over the window--> degraded
    degraded --fps >= recover_ratio * target--> online
    degraded --no frame for offline_after_s--> offline
    offline --frame--> online (degraded again at the next check if still slow)

The fps is measured on capture times (frame header ``ts``), not on arrival times, so
a worker catching up on a backlog does not see a burst of fps. A camera is only judged
for fps once it has been online for a whole window.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["CameraHealthTracker", "HealthEvent", "HealthPolicy", "HealthState"]

HealthState = Literal["online", "offline", "degraded"]


@dataclass(frozen=True, slots=True)
class HealthPolicy:
    """Thresholds (see ``ioc.config.CameraHealthSettings`` for their meaning)."""

    offline_after_s: float = 10.0
    fps_window_s: float = 10.0
    fps_drop_ratio: float = 0.5
    fps_recover_ratio: float = 0.8

    def __post_init__(self) -> None:
        if not (self.offline_after_s > 0 and self.fps_window_s > 0):
            raise ValueError("offline_after_s and fps_window_s must be > 0, got "
                             f"{self.offline_after_s} and {self.fps_window_s}")
        if not (0 < self.fps_drop_ratio <= self.fps_recover_ratio <= 1):
            raise ValueError("expected 0 < fps_drop_ratio <= fps_recover_ratio <= 1, got "
                             f"{self.fps_drop_ratio} and {self.fps_recover_ratio}")


@dataclass(frozen=True, slots=True)
class HealthEvent:
    """A state change of one camera."""

    camera: str
    state: HealthState
    previous: HealthState | None
    time: float  # when the change was decided (worker clock, unix s)
    reason: str
    fps: float  # measured over the window (capture time)
    target_fps: float
    last_frame_ts: float | None  # capture time of the newest frame seen
    silent_s: float  # seconds since the last frame arrived

    def to_json(self) -> dict[str, Any]:
        return {
            "camera": self.camera,
            "state": self.state,
            "previous": self.previous,
            "time": self.time,
            "reason": self.reason,
            "fps": round(self.fps, 3),
            "target_fps": self.target_fps,
            "last_frame_ts": self.last_frame_ts,
            "silent_s": round(self.silent_s, 3),
        }


@dataclass
class _Camera:
    target_fps: float
    state: HealthState | None = None
    last_arrival: float = 0.0
    last_ts: float | None = None
    online_since: float = 0.0
    stamps: collections.deque[float] = field(default_factory=collections.deque)


class CameraHealthTracker:
    """Tracks the cameras this worker sees.

    Args:
        policy: thresholds.
        max_cameras: bound on tracked cameras; beyond it, new ids are ignored and counted
            in ``ignored`` (a flood of random keys must not grow memory).
    """

    def __init__(self, policy: HealthPolicy, *, max_cameras: int = 10_000) -> None:
        self.policy = policy
        self.max_cameras = max_cameras
        self.ignored = 0
        self._cams: dict[str, _Camera] = {}

    def state(self, camera: str) -> HealthState | None:
        c = self._cams.get(camera)
        return c.state if c else None

    def cameras(self) -> list[str]:
        return list(self._cams)

    def fps(self, camera: str) -> float:
        """Frames per second over the window, by capture time (0 when unknown)."""
        c = self._cams.get(camera)
        return self._fps(c) if c else 0.0

    def _fps(self, c: _Camera) -> float:
        if len(c.stamps) < 2:
            return 0.0
        span = c.stamps[-1] - c.stamps[0]
        # n stamps cover n-1 intervals; a window not yet full is measured on what it has.
        return (len(c.stamps) - 1) / span if span > 0 else 0.0

    def expect(self, camera: str, target_fps: float, now: float) -> None:
        """Start watching ``camera`` before its first frame (e.g. a configured camera
        this worker is responsible for): with no frame it goes offline after
        ``offline_after_s``."""
        if camera not in self._cams and len(self._cams) < self.max_cameras:
            # state None: known but not seen; only the silence rule applies to it.
            self._cams[camera] = _Camera(target_fps, last_arrival=now, online_since=now)

    def forget(self, camera: str) -> None:
        """Stop watching ``camera`` (its partition moved to another worker)."""
        self._cams.pop(camera, None)

    def observe(self, camera: str, ts: float, now: float, target_fps: float) -> list[HealthEvent]:
        """A frame of ``camera`` captured at ``ts`` arrived at ``now``."""
        c = self._cams.get(camera)
        if c is None:
            if len(self._cams) >= self.max_cameras:
                self.ignored += 1
                return []
            c = self._cams[camera] = _Camera(target_fps)
        c.target_fps = target_fps
        c.last_arrival = now
        if c.last_ts is None or ts >= c.last_ts:
            c.last_ts = ts
            c.stamps.append(ts)
            while c.stamps and c.stamps[0] < ts - self.policy.fps_window_s:
                c.stamps.popleft()
        if c.state in (None, "offline"):
            prev = c.state
            c.state = "online"
            c.online_since = now
            c.stamps.clear()
            c.stamps.append(ts)
            why = "first frame" if prev is None else "frames arrive again"
            return [self._event(camera, c, prev, now, why)]
        return []

    def check(self, now: float) -> list[HealthEvent]:
        """Evaluate silence and fps for every camera; returns the state changes."""
        out: list[HealthEvent] = []
        p = self.policy
        for cam, c in self._cams.items():
            if c.state == "offline":
                continue
            silent = now - c.last_arrival
            if silent >= p.offline_after_s:
                prev = c.state
                c.state = "offline"
                why = (f"no frame for {silent:.1f}s (limit {p.offline_after_s}s)" if prev
                       else f"no frame since watching started {silent:.1f}s ago")
                out.append(self._event(cam, c, prev, now, why))
                continue
            if c.state is None or now - c.online_since < p.fps_window_s or c.target_fps <= 0:
                continue
            fps = self._fps(c)
            if c.state == "online" and fps < p.fps_drop_ratio * c.target_fps:
                c.state = "degraded"
                out.append(self._event(cam, c, "online", now,
                                       f"fps {fps:.2f} below {p.fps_drop_ratio:.0%} of "
                                       f"target {c.target_fps:g}"))
            elif c.state == "degraded" and fps >= p.fps_recover_ratio * c.target_fps:
                c.state = "online"
                out.append(self._event(cam, c, "degraded", now,
                                       f"fps {fps:.2f} back to {p.fps_recover_ratio:.0%} of "
                                       f"target {c.target_fps:g}"))
        return out

    def _event(self, cam: str, c: _Camera, prev: HealthState | None, now: float,
               reason: str) -> HealthEvent:
        assert c.state is not None
        return HealthEvent(cam, c.state, prev, now, reason, self._fps(c), c.target_fps,
                           c.last_ts, max(0.0, now - c.last_arrival))
