"""Wall thumbnails: the frame resized, overlays drawn, JPEG-encoded.

Overlays are drawn on the small image, after resizing, so their cost does not grow with
the camera resolution, and lines stay one pixel crisp at the wall's size.
"""

from __future__ import annotations

import cv2
import numpy as np

from .config import AnalyticsConfig
from .geometry import polygon_px
from .result import FrameResult

__all__ = ["ThumbnailRenderer"]

_ZONE = (0, 200, 255)      # amber (BGR)
_ACTIVE = (0, 80, 255)     # orange-red: zone with motion
_LINE = (255, 200, 0)      # cyan-blue
_PERSON = (0, 220, 0)      # green
_MASK = (90, 90, 90)
_TAMPER = (0, 0, 255)
_FONT = cv2.FONT_HERSHEY_SIMPLEX


class ThumbnailRenderer:
    """Renders the thumbnail of a frame and its result."""

    def __init__(self, cfg: AnalyticsConfig) -> None:
        self.cfg = cfg
        self.tcfg = cfg.thumbnail
        self._params = [cv2.IMWRITE_JPEG_QUALITY, self.tcfg.quality]
        self.rendered = 0
        self._next: float | None = None  # frame time from which the next one is due

    def due(self, ts: float) -> bool:
        """True when the frame of time ``ts`` should get a thumbnail: the first frame,
        then one every ``interval_s`` of frame time (a fixed schedule, so frame jitter
        does not slow the average rate). A clock that jumps back (a looped file, a
        camera restart) or far ahead starts the schedule anew."""
        if not self.tcfg.enabled:
            return False
        step = self.tcfg.interval_s
        nxt = self._next
        if nxt is not None and nxt - 2 * step <= ts < nxt:
            return False
        if nxt is None or not nxt <= ts < nxt + 2 * step:
            self._next = ts + step  # first frame, or the clock jumped
        else:
            self._next = nxt + step
        return True

    def render(self, frame: np.ndarray, result: FrameResult) -> bytes:
        """JPEG bytes of ``frame`` at the configured width, with overlays if enabled."""
        h, w = frame.shape[:2]
        tw = min(self.tcfg.width, w)
        th = max(1, round(h * tw / w))
        img = cv2.resize(frame, (tw, th), interpolation=cv2.INTER_AREA) if tw != w else frame.copy()
        if self.tcfg.overlays:
            self._draw(img, result)
        ok, buf = cv2.imencode(".jpg", img, self._params)
        if not ok:  # pragma: no cover - encoding a valid uint8 BGR image does not fail
            raise RuntimeError(f"JPEG encoding of a {tw}x{th} thumbnail failed")
        self.rendered += 1
        return buf.tobytes()

    def _draw(self, img: np.ndarray, r: FrameResult) -> None:
        h, w = img.shape[:2]
        cfg = self.cfg
        for m in cfg.masks:
            cv2.polylines(img, [polygon_px(m.polygon, w, h)], True, _MASK, 1, cv2.LINE_AA)
        active = set(r.motion.active)
        for z in cfg.zones:
            color = _ACTIVE if z.name in active else _ZONE
            pts = polygon_px(z.polygon, w, h)
            cv2.polylines(img, [pts], True, color, 1, cv2.LINE_AA)
            label = z.name
            if r.people is not None:
                label += f" {r.people.zones.get(z.name, 0)}p"
            x, y = int(pts[:, 0, 0].min()), int(pts[:, 0, 1].min())
            _text(img, label, x + 2, max(10, y + 10), color)
        for ln in cfg.lines:
            a = (round(ln.a[0] * (w - 1)), round(ln.a[1] * (h - 1)))
            b = (round(ln.b[0] * (w - 1)), round(ln.b[1] * (h - 1)))
            cv2.line(img, a, b, _LINE, 1, cv2.LINE_AA)
            c = r.counts.get(ln.name)
            label = f"{ln.name} in {c.in_} out {c.out}" if c else ln.name
            _text(img, label, min(a[0], b[0]) + 2, max(10, min(a[1], b[1]) - 3), _LINE)
        if r.people is not None:
            for bx in r.people.boxes:
                p0 = (round(bx.x * w), round(bx.y * h))
                p1 = (round((bx.x + bx.w) * w), round((bx.y + bx.h) * h))
                cv2.rectangle(img, p0, p1, _PERSON, 1)
        status = f"motion {r.motion.ratio * 100:.1f}%"
        if r.people is not None:
            status += f"  people {r.people.total}"
        _text(img, status, 3, h - 5, (255, 255, 255))
        flags = [k for k in ("covered", "defocused", "moved") if getattr(r.tamper, k)]
        if flags:
            cv2.rectangle(img, (0, 0), (w - 1, h - 1), _TAMPER, 2)
            _text(img, "TAMPER: " + ",".join(flags), 3, 12, _TAMPER)
        elif r.warming_up:
            _text(img, "warming up", 3, 12, (200, 200, 200))


def _text(img: np.ndarray, s: str, x: int, y: int, color: tuple[int, int, int]) -> None:
    # A dark outline keeps labels readable on any background.
    cv2.putText(img, s, (x, y), _FONT, 0.35, (0, 0, 0), 2, cv2.LINE_AA)
    cv2.putText(img, s, (x, y), _FONT, 0.35, color, 1, cv2.LINE_AA)
