"""Camera capture: open a source with OpenCV/FFmpeg, sample, resize, JPEG-encode.

Pipeline per camera (one thread each; OpenCV releases the GIL while it decodes)::

    cv2.VideoCapture --grab--> FrameSampler --retrieve, resize, encode--> LatestQueue
                                   (dropped: "sampled_out")        (full: drop oldest)

Nothing here knows Kafka: a publisher drains the ``LatestQueue`` (see
``ioc.cameras_cli``). Every frame not published is counted in ``CaptureStats`` by
reason: ``sampled_out`` (between two sampled frames), ``queue_full`` (oldest dropped
because the publisher was slower), ``empty`` (decoder gave no image), ``encode_failed``.

Sources: ``rtsp://`` and ``http(s)://`` (MJPEG) are paced by the camera; a file is
paced by its own frame rate (so a looped clip plays in real time) and, with ``loop``,
starts again at its end. A source that fails to open or stops delivering is reopened
after an exponential backoff with jitter; the wait resets after a good frame.
"""

from __future__ import annotations

import collections
import logging
import math
import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from ioc.config._cameras import EffectiveCamera, ReconnectSettings

__all__ = [
    "Backoff",
    "CameraCapture",
    "CaptureStats",
    "EncodedFrame",
    "FrameMeta",
    "FrameSampler",
    "LatestQueue",
    "encode_frame",
    "frame_headers",
    "output_size",
    "parse_frame_headers",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class EncodedFrame:
    """One sampled frame, ready to publish."""

    camera: str
    seq: int
    ts: float  # capture time, unix seconds
    width: int
    height: int
    jpeg: bytes


@dataclass
class CaptureStats:
    """Counters of one camera's capture (all monotonic)."""

    read: int = 0
    published: int = 0
    dropped: dict[str, int] = field(default_factory=lambda: collections.defaultdict(int))
    opens: int = 0
    open_failures: int = 0
    read_failures: int = 0
    loops: int = 0

    def drop(self, reason: str, n: int = 1) -> None:
        self.dropped[reason] += n

    def as_dict(self) -> dict[str, Any]:
        return {
            "read": self.read,
            "published": self.published,
            "dropped": dict(self.dropped),
            "opens": self.opens,
            "open_failures": self.open_failures,
            "read_failures": self.read_failures,
            "loops": self.loops,
        }


class FrameSampler:
    """Keeps frames at ``fps`` out of a faster source, on the source's own clock.

    ``offer(t)`` says whether the frame at time ``t`` (seconds, any monotonic clock)
    is kept. Kept frames are at least ~``0.8/fps`` apart; when the source is slower
    than ``fps`` every frame is kept, and after a gap the schedule restarts instead of
    bursting to catch up.
    """

    def __init__(self, fps: float) -> None:
        if not (fps > 0 and math.isfinite(fps)):
            raise ValueError(f"fps must be a positive number, got {fps!r}")
        self.period = 1.0 / fps
        self._next: float | None = None

    def offer(self, t: float) -> bool:
        if self._next is None or t >= self._next - 0.2 * self.period:
            nxt = (t if self._next is None else self._next) + self.period
            # After a gap longer than one period, restart the schedule from now.
            self._next = nxt if nxt > t else t + self.period
            return True
        return False

    def reset(self) -> None:
        self._next = None


class LatestQueue:
    """A bounded FIFO where ``put`` never blocks: when full, the oldest item is dropped.

    Latest wins, because a wall wants the newest frame, not a backlog. ``dropped``
    counts what was thrown away; ``get`` blocks up to ``timeout``.
    """

    def __init__(self, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize must be >= 1, got {maxsize}")
        self.maxsize = maxsize
        self._items: collections.deque[Any] = collections.deque()
        self._cond = threading.Condition()
        self.dropped = 0

    def put(self, item: Any) -> bool:
        """Append ``item``; returns False when an older item had to be dropped."""
        with self._cond:
            dropped = False
            if len(self._items) >= self.maxsize:
                self._items.popleft()
                self.dropped += 1
                dropped = True
            self._items.append(item)
            self._cond.notify()
            return not dropped

    def get(self, timeout: float | None = None) -> Any | None:
        """The oldest item, or None after ``timeout`` seconds without one."""
        with self._cond:
            if not self._items:
                self._cond.wait(timeout)
            return self._items.popleft() if self._items else None

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)


class Backoff:
    """Exponential backoff with jitter: initial, initial*m, ... up to max, shortened randomly."""

    def __init__(self, cfg: ReconnectSettings, *, rng: random.Random | None = None) -> None:
        self.cfg = cfg
        self.failures = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        base = min(self.cfg.max_s, self.cfg.initial_s * self.cfg.multiplier ** self.failures)
        self.failures += 1
        return base * (1.0 - self.cfg.jitter * self._rng.random())

    def reset(self) -> None:
        self.failures = 0


def output_size(src_w: int, src_h: int, width: int, height: int | None) -> tuple[int, int]:
    """Output size for a source of ``src_w x src_h``: ``height`` None keeps the aspect.

    Never upscales (a 320 px source stays 320 px: more pixels would add bytes, not
    detail). Sizes are rounded to even numbers (what most video tooling expects).
    """
    if src_w <= 0 or src_h <= 0:
        raise ValueError(f"source size must be positive, got {src_w}x{src_h}")
    if width >= src_w and (height is None or height >= src_h):
        return max(2, src_w - src_w % 2), max(2, src_h - src_h % 2)
    h = height if height is not None else round(src_h * width / src_w)
    return max(2, width - width % 2), max(2, h - h % 2)


def encode_frame(frame: np.ndarray, width: int, height: int | None, quality: int) -> bytes | None:
    """Resize ``frame`` (BGR) and JPEG-encode it; None when OpenCV refuses."""
    h0, w0 = frame.shape[:2]
    w, h = output_size(w0, h0, width, height)
    if (w, h) != (w0, h0):
        interp = cv2.INTER_AREA if w < w0 else cv2.INTER_LINEAR
        frame = cv2.resize(frame, (w, h), interpolation=interp)
    ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, quality])
    return buf.tobytes() if ok else None


def _open(cam: EffectiveCamera, open_timeout_s: float, read_timeout_s: float) -> cv2.VideoCapture:
    if cam.kind == "file" and not os.path.exists(cam.url):
        raise FileNotFoundError(cam.url)
    params = [
        cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(open_timeout_s * 1000),
        cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(read_timeout_s * 1000),
    ]
    cap = cv2.VideoCapture(cam.url, cv2.CAP_FFMPEG, params)
    if not cap.isOpened():
        cap.release()
        raise OSError(f"OpenCV/FFmpeg could not open {cam.kind} source")
    return cap


class CameraCapture(threading.Thread):
    """Captures one camera into ``queue`` until ``stop()``; never raises out of ``run``.

    Args:
        cam: the camera with defaults resolved.
        queue: where encoded frames go (latest wins when full).
        reconnect: backoff between reopen attempts.
        clock: unix time source (tests may replace it).
    """

    def __init__(
        self,
        cam: EffectiveCamera,
        queue: LatestQueue,
        *,
        reconnect: ReconnectSettings,
        open_timeout_s: float = 10.0,
        read_timeout_s: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(name=f"capture-{cam.id}", daemon=True)
        self.cam = cam
        self.queue = queue
        self.stats = CaptureStats()
        self.backoff = Backoff(reconnect)
        self.open_timeout_s = open_timeout_s
        self.read_timeout_s = read_timeout_s
        self.clock = clock
        self.seq = 0
        self.finished = False  # a non-looping file reached its end
        self._stop_evt = threading.Event()

    def stop(self) -> None:
        self._stop_evt.set()

    @property
    def stopping(self) -> bool:
        return self._stop_evt.is_set()

    def run(self) -> None:
        while not self.stopping:
            try:
                cap = _open(self.cam, self.open_timeout_s, self.read_timeout_s)
            except (OSError, cv2.error) as exc:
                self.stats.open_failures += 1
                self._wait_backoff(f"cannot open: {exc}")
                continue
            self.stats.opens += 1
            try:
                got = self._pump(cap)
            except Exception:  # a capture thread must survive anything the decoder does
                log.exception("camera %s: capture failed; reopening", self.cam.id)
                got = 0
            finally:
                cap.release()
            if self.stopping:
                break
            if self.cam.kind == "file":
                if got and self.cam.loop:
                    self.stats.loops += 1
                    self.backoff.reset()
                    continue
                if got:
                    log.info("camera %s: end of file after %d frames", self.cam.id, got)
                    self.finished = True
                    return
            self.stats.read_failures += 1
            self._wait_backoff("stream ended or stopped delivering frames")

    def _wait_backoff(self, why: str) -> None:
        delay = self.backoff.next_delay()
        log.warning("camera %s (%s): %s; retry in %.1fs", self.cam.id,
                    self.cam.url if self.cam.kind == "file" else self.cam.kind, why, delay)
        self._stop_evt.wait(delay)

    def _pump(self, cap: cv2.VideoCapture) -> int:
        """Read until the source ends or we stop; returns the number of frames read."""
        sampler = FrameSampler(self.cam.fps)
        is_file = self.cam.kind == "file"
        src_fps = cap.get(cv2.CAP_PROP_FPS) if is_file else 0.0
        if not (0.5 <= src_fps <= 240):
            src_fps = 25.0
        start = time.monotonic()
        n = 0
        while not self.stopping:
            if is_file:
                # Play the file in real time on its own clock; sample on media time.
                media_t = n / src_fps
                wait = start + media_t - time.monotonic()
                if wait > 0:
                    self._stop_evt.wait(wait)
                elif wait < -1.0:
                    start = time.monotonic() - media_t  # fell behind: don't burst
            if not cap.grab():
                return n
            ts = self.clock()
            n += 1
            self.stats.read += 1
            if not sampler.offer(media_t if is_file else time.monotonic()):
                self.stats.drop("sampled_out")
                continue
            ok, frame = cap.retrieve()
            if not ok or frame is None or frame.size == 0 or frame.ndim < 2:
                self.stats.drop("empty")
                continue
            self.backoff.reset()
            jpeg = encode_frame(frame, self.cam.width, self.cam.height, self.cam.jpeg_quality)
            if jpeg is None:
                self.stats.drop("encode_failed")
                continue
            h0, w0 = frame.shape[:2]
            w, h = output_size(w0, h0, self.cam.width, self.cam.height)
            if not self.queue.put(EncodedFrame(self.cam.id, self.seq, ts, w, h, jpeg)):
                self.stats.drop("queue_full")
            self.seq += 1
        return n


# -- wire format of a frame message (Kafka headers) ------------------------------------

HEADER_SEQ = "seq"
HEADER_TS = "ts"
HEADER_WIDTH = "width"
HEADER_HEIGHT = "height"


def frame_headers(f: EncodedFrame) -> list[tuple[str, bytes]]:
    """Kafka headers of a frame: seq, capture time (unix s), width, height, as ASCII."""
    return [
        (HEADER_SEQ, str(f.seq).encode()),
        (HEADER_TS, repr(f.ts).encode()),
        (HEADER_WIDTH, str(f.width).encode()),
        (HEADER_HEIGHT, str(f.height).encode()),
    ]


@dataclass(frozen=True, slots=True)
class FrameMeta:
    """What the headers of a frame message say; ``problem`` names a bad or missing one."""

    seq: int
    ts: float
    width: int
    height: int
    problem: str | None = None


def parse_frame_headers(headers: Any, fallback_ts: float) -> FrameMeta:
    """Read frame headers (a mapping or a list of pairs) leniently.

    A missing or unreadable header does not lose the frame: ``seq`` becomes -1, ``ts``
    the Kafka timestamp ``fallback_ts``, and ``problem`` says which header was bad.
    """
    items = headers.items() if hasattr(headers, "items") else (headers or [])
    h: dict[str, bytes] = {}
    for k, v in items:
        key = k.decode("utf-8", "replace") if isinstance(k, bytes) else str(k)
        h[key] = v if isinstance(v, bytes) else (str(v).encode() if v is not None else b"")
    problem = None

    def num(name: str, conv: Callable[[str], Any], default: Any) -> Any:
        nonlocal problem
        raw = h.get(name)
        try:
            if raw is None:
                raise ValueError("missing")
            val = conv(raw.decode("ascii"))
            if isinstance(val, float) and not math.isfinite(val):
                raise ValueError("not finite")
            return val
        except (ValueError, UnicodeDecodeError):
            problem = problem or f"header {name!r}: expected a number, got {raw!r}"
            return default

    return FrameMeta(
        seq=num(HEADER_SEQ, int, -1),
        ts=num(HEADER_TS, float, fallback_ts),
        width=num(HEADER_WIDTH, int, 0),
        height=num(HEADER_HEIGHT, int, 0),
        problem=problem,
    )
