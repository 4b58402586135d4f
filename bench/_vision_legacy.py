"""The motion and tamper analyzers as they were before issue 14, for bench/bench_vision.py only.

Frame-counted settings (``warmup_frames``, ``confirm_frames``, ``reference_rate`` per
frame) and a single-scale tamper detector. Kept verbatim (config classes renamed
``Legacy*``) so the bench measures the old and the new analyzers side by side in the
same run; nothing in ``vision/`` imports it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import cv2
import numpy as np
from pydantic import Field

from ioc.config._base import Section
from vision.config import AnalyticsConfig, CountingLine
from vision.frames import decode_jpeg, fit_width
from vision.geometry import SceneRasters, line_side
from vision.result import FrameResult, LineCount, MotionResult, TamperEvent, TamperState
from vision.thumbnail import ThumbnailRenderer


class LegacyMotionConfig(Section):
    """Background subtraction (MOG2) on a downscaled frame.

    Defaults were chosen on the CDnet highway clip (see docs/performance/vision.md):
    color input and a 5x5 median filter beat gray input with blur and opening by
    about 0.2 F1 there, for about 15% more time.
    """

    enabled: bool = Field(True, description="run motion detection (tracking needs it)")
    width: int = Field(320, ge=64, le=1920, description="processing width in px (aspect kept)")
    color: bool = Field(True, description="model color pixels (False: gray, a bit cheaper)")
    history: int = Field(300, ge=10, le=10_000, description="MOG2 history in frames")
    var_threshold: float = Field(16.0, gt=0, le=1000, description="MOG2 variance threshold")
    detect_shadows: bool = Field(True, description="classify shadows (not counted as motion)")
    median: int = Field(
        5, ge=0, le=15, description="median filter kernel on the foreground (0 or 1 = none)"
    )
    close_kernel: int = Field(
        0, ge=0, le=15, description="morphological closing kernel filling holes (0 = none)"
    )
    activity_threshold: float = Field(
        0.005, ge=0, le=1, description="a zone is 'active' when its moving-pixel ratio reaches this"
    )
    lighting_ratio: float = Field(
        0.6,
        gt=0,
        le=1,
        description="when this share of the frame changes at once (lights, auto exposure), "
        "the model is relearned and the frame reports no motion",
    )
    warmup_frames: int = Field(
        20, ge=0, le=1000, description="frames learned before motion is reported"
    )



class LegacyTamperConfig(Section):
    """Lens covered, lost focus, camera moved: compared with a slowly updated reference."""

    enabled: bool = Field(True, description="run tamper detection")
    width: int = Field(160, ge=64, le=640, description="analysis width in px")
    covered_std_max: float = Field(
        5.0, ge=0, le=128, description="block std-dev (at mean gray 128) below which it is flat"
    )
    covered_edge_max: float = Field(
        0.01, ge=0, le=1, description="edge-pixel ratio below which the view is 'covered'"
    )
    covered_area: float = Field(
        0.7, gt=0, le=1, description="share of the frame that must be featureless to be 'covered'"
    )
    defocus_ratio: float = Field(
        0.35, gt=0, lt=1, description="sharpness below this share of the reference is 'defocused'"
    )
    moved_min_shift: float = Field(
        0.04, gt=0, le=1, description="global shift (fraction of width) that counts as 'moved'"
    )
    moved_similarity_ratio: float = Field(
        0.65,
        gt=0,
        lt=1,
        description="edge correlation with the reference below this share of its usual "
        "value is 'moved' (a small turn of the camera)",
    )
    covered_max_similarity: float = Field(
        0.6, ge=-1, le=1, description="edge correlation must also fall below this to be 'covered'"
    )
    confirm_frames: int = Field(
        3, ge=1, le=50, description="consecutive frames to raise covered/defocused"
    )
    moved_confirm_frames: int = Field(
        5,
        ge=1,
        le=50,
        description="consecutive frames to raise 'moved' (longer: a truck close to the "
        "lens lowers the correlation for a moment)",
    )
    clear_frames: int = Field(5, ge=1, le=100, description="consecutive frames to clear")
    reference_frames: int = Field(
        10, ge=1, le=500, description="frames averaged into the first reference (warm-up)"
    )
    reference_rate: float = Field(
        0.02, ge=0, le=1, description="update rate of the reference while nothing is raised"
    )




class LegacyTrackingConfig(Section):
    """Centroid tracking of moving blobs (vehicles) for line counting."""

    enabled: bool = Field(True, description="track blobs and count line crossings")
    min_area: float = Field(
        0.0015, gt=0, le=0.5, description="smallest blob, as a fraction of the frame area"
    )
    max_distance: float = Field(
        0.08, gt=0, le=1, description="largest centroid jump between frames (fraction of width)"
    )
    max_missed: int = Field(5, ge=0, le=100, description="frames a track survives unseen")
    min_hits: int = Field(2, ge=1, le=50, description="frames seen before a track may count")
    hysteresis: float = Field(
        0.01,
        ge=0,
        le=0.2,
        description="distance from the line (fraction of width) inside which a centroid "
        "keeps its previous side; an object lingering on the line is counted once",
    )
    max_tracks: int = Field(64, ge=1, le=1000, description="bound on live tracks; extra dropped")


_FG = 200  # MOG2 marks foreground 255 and shadows 127: keep only the former


@dataclass(slots=True)
class LegacyMotionOutput:
    """Foreground mask (uint8 0/255, processing size) and activity ratios."""

    mask: np.ndarray
    ratio: float
    zones: dict[str, float]
    active: list[str]
    warming_up: bool
    relearned: bool


class LegacyMotionDetector:
    """MOG2 on a frame already downscaled to ``cfg.width`` by the caller."""

    def __init__(self, cfg: LegacyMotionConfig) -> None:
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

    def detect(self, image: np.ndarray, scene: SceneRasters) -> LegacyMotionOutput:
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
            return LegacyMotionOutput(fg, 0.0, zones, [], warming, relearned)
        zones = {}
        active = []
        for name, zm in scene.zones.items():
            n = scene.zone_counts[name]
            r = cv2.countNonZero(cv2.bitwise_and(fg, zm)) / n if n else 0.0
            zones[name] = r
            if r >= self.cfg.activity_threshold and r > 0:
                active.append(name)
        return LegacyMotionOutput(fg, ratio, zones, active, False, False)


_BLOCK = 8
_K5 = np.ones((5, 5), np.uint8)
_KINDS = ("covered", "defocused", "moved")


@dataclass(frozen=True, slots=True)
class TamperMeasures:
    """The per-frame measures the decisions are made on."""

    flat: float
    sharpness: float
    shift: float
    similarity: float


def _flat_share(gray: np.ndarray, std_max: float) -> float:
    h, w = gray.shape
    hb, wb = h // _BLOCK, w // _BLOCK
    g = gray[: hb * _BLOCK, : wb * _BLOCK].astype(np.float32)
    # Block means of x and x^2 by area resampling: var = E[x^2] - E[x]^2, no Python loop.
    m = cv2.resize(g, (wb, hb), interpolation=cv2.INTER_AREA)
    m2 = cv2.resize(g * g, (wb, hb), interpolation=cv2.INTER_AREA)
    var = m2 - m * m
    return float(np.count_nonzero(var < std_max * std_max)) / var.size


def _sharpness(gray: np.ndarray) -> float:
    lap = cv2.Laplacian(gray, cv2.CV_32F, ksize=3)
    _, lstd = cv2.meanStdDev(lap)
    _, gstd = cv2.meanStdDev(gray)
    return float(lstd[0, 0] ** 2) / (float(gstd[0, 0] ** 2) + 1.0)


def _smooth(gray: np.ndarray) -> np.ndarray:
    return cv2.GaussianBlur(gray.astype(np.float32), (0, 0), 2.0)


def _edges(smooth: np.ndarray) -> np.ndarray:
    gx = cv2.Sobel(smooth, cv2.CV_32F, 1, 0)
    gy = cv2.Sobel(smooth, cv2.CV_32F, 0, 1)
    return cv2.magnitude(gx, gy)


def _ncc(a: np.ndarray, b: np.ndarray) -> float:
    am, bm = a - a.mean(), b - b.mean()
    den = float(np.sqrt((am * am).sum() * (bm * bm).sum()))
    return float((am * bm).sum()) / den if den > 1e-6 else 0.0


def _ncc_full(a: np.ndarray, b: np.ndarray) -> float:
    # Same-size matchTemplate is one zero-mean normalized correlation, in C. It answers
    # 1.0 for a featureless image, which must count as no correlation (a covered lens).
    if float(cv2.meanStdDev(a)[1][0, 0]) < 1e-3 or float(cv2.meanStdDev(b)[1][0, 0]) < 1e-3:
        return 0.0
    return float(cv2.matchTemplate(a, b, cv2.TM_CCOEFF_NORMED)[0, 0])


def measure(gray: np.ndarray, ref: np.ndarray | None, window: np.ndarray | None,
            cfg: LegacyTamperConfig) -> tuple[TamperMeasures, np.ndarray]:
    """Measures of ``gray`` against the reference image ``ref`` (smoothed float32).

    Returns the measures and this frame's smoothed image (to update the reference).
    """
    sm = _smooth(gray)
    shift, sim = 0.0, 1.0
    if ref is not None:
        # Half size is plenty for a shift of several % of the width, and 4x cheaper.
        # phaseCorrelate multiplies its inputs by the window in place (OpenCV 4.14):
        # hand it fresh arrays, or the reference fades a little more every frame.
        (dx, dy), _ = cv2.phaseCorrelate(cv2.pyrDown(ref), cv2.pyrDown(sm), window)
        shift = 2 * float((dx * dx + dy * dy) ** 0.5) / gray.shape[1]
        # Edges of the smoothed images: a few pixels of misalignment (a small turn of
        # the camera) decorrelate edges far more than lighting, blur or passing traffic.
        # Clipped pixels (strong light, auto exposure) lose their edges: leave them out.
        er, es = _edges(ref), _edges(sm)
        clipped = gray >= 245
        if not clipped.any():
            sim = _ncc_full(er, es)
        else:
            keep = cv2.erode((~clipped).astype(np.uint8), _K5).astype(bool)
            sim = _ncc(er[keep], es[keep]) if keep.mean() > 0.3 else 0.0
    flat_max = cfg.covered_std_max * max(float(gray.mean()), 16.0) / 128.0
    return TamperMeasures(_flat_share(gray, flat_max), _sharpness(gray), shift, sim), sm


class LegacyTamperDetector:
    """Raises and clears covered / defocused / moved for one camera."""

    def __init__(self, cfg: LegacyTamperConfig) -> None:
        self.cfg = cfg
        self.reset()

    def reset(self) -> None:
        """Forget the reference: the next ``reference_frames`` frames warm it up again."""
        self.frames = 0
        self._ref: np.ndarray | None = None
        self._ref_flat = 0.0
        self._ref_sharp = 0.0
        self._ref_sim: float | None = None
        self._window: np.ndarray | None = None
        self.state = {k: False for k in _KINDS}
        self._pos = dict.fromkeys(_KINDS, 0)
        self._neg = dict.fromkeys(_KINDS, 0)
        self.last: TamperMeasures | None = None

    @property
    def ready(self) -> bool:
        """True once the reference is built (warm-up over)."""
        return self.frames >= self.cfg.reference_frames

    def detect(self, gray: np.ndarray, ts: float) -> TamperState:
        """Update with one gray frame (already ``cfg.width`` wide) and return the state."""
        cfg = self.cfg
        if self._ref is not None and self._ref.shape != gray.shape:
            self.reset()
        if self._window is None:
            half = cv2.pyrDown(gray)
            self._window = cv2.createHanningWindow((half.shape[1], half.shape[0]), cv2.CV_32F)
        ready = self.ready
        m, sm = measure(gray, self._ref if ready else None, self._window, cfg)
        self.last = m
        self.frames += 1
        if not ready:
            # Warm-up: the reference is the running mean of the first frames.
            n = self.frames
            if self._ref is None:
                self._ref = sm
            else:
                cv2.accumulateWeighted(sm, self._ref, 1.0 / n)
            self._ref_flat += (m.flat - self._ref_flat) / n
            self._ref_sharp += (m.sharpness - self._ref_sharp) / n
            return TamperState(ready=False)

        covered = (m.flat >= cfg.covered_area and m.flat - self._ref_flat >= 0.25
                   and m.similarity < cfg.covered_max_similarity)
        # A covered lens is also blurry and unaligned: report only 'covered' then.
        defocused = (not covered) and m.sharpness < cfg.defocus_ratio * self._ref_sharp
        if self._ref_sim is None:
            self._ref_sim = m.similarity
        # Blur weakens edges too; a defocused view is reported as that, not as moved.
        moved = (not covered) and (
            m.shift > cfg.moved_min_shift
            or (not defocused and m.similarity < cfg.moved_similarity_ratio * self._ref_sim)
        )
        changed = []
        for kind, now in (("covered", covered), ("defocused", defocused), ("moved", moved)):
            if now:
                self._pos[kind] += 1
                self._neg[kind] = 0
                need = cfg.moved_confirm_frames if kind == "moved" else cfg.confirm_frames
                if not self.state[kind] and self._pos[kind] >= need:
                    self.state[kind] = True
                    changed.append(TamperEvent(kind, True, ts, _value(kind, m)))
            else:
                self._neg[kind] += 1
                self._pos[kind] = 0
                if self.state[kind] and self._neg[kind] >= cfg.clear_frames:
                    self.state[kind] = False
                    changed.append(TamperEvent(kind, False, ts, _value(kind, m)))
        quiet = not any(self.state.values()) and not any(self._pos.values())
        if quiet and cfg.reference_rate > 0 and self._ref is not None:
            r = cfg.reference_rate
            cv2.accumulateWeighted(sm, self._ref, r)
            self._ref_flat += (m.flat - self._ref_flat) * r
            self._ref_sharp += (m.sharpness - self._ref_sharp) * r
            # The usual similarity follows faster: it only sets the scale of 'moved'.
            self._ref_sim += (m.similarity - self._ref_sim) * min(1.0, 5 * r)
        return TamperState(
            covered=self.state["covered"],
            defocused=self.state["defocused"],
            moved=self.state["moved"],
            changed=changed,
            ready=True,
        )


def _value(kind: str, m: TamperMeasures) -> float:
    if kind == "covered":
        return m.flat
    if kind == "defocused":
        return m.sharpness
    return max(m.shift, 1.0 - m.similarity)



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

    def __init__(self, cfg: LegacyTrackingConfig) -> None:
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

    def __init__(self, lines: tuple[CountingLine, ...], cfg: LegacyTrackingConfig) -> None:
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


class LegacyAnalyzer:
    """The old CameraAnalyzer loop: reduced decode, motion, blobs, tracks, lines, tamper at
    ``tamper.width`` gray, thumbnails; the same stages as ``CameraAnalyzer._run`` had."""

    def __init__(self, camera_id: str, cfg: AnalyticsConfig) -> None:
        self.camera_id = camera_id
        self.cfg = cfg
        self.mcfg = LegacyMotionConfig()
        self.tcfg = LegacyTamperConfig()
        self.trcfg = LegacyTrackingConfig()
        self.motion = LegacyMotionDetector(self.mcfg)
        self.tracker = BlobTracker(self.trcfg)
        self.counter = LineCounter(cfg.lines, self.trcfg)
        self.tamper = LegacyTamperDetector(self.tcfg)
        self.thumbnails = ThumbnailRenderer(cfg)
        self._scene: SceneRasters | None = None
        self._seq = 0
        self._need = max(self.mcfg.width, self.tcfg.width, cfg.thumbnail.width)
        self._reduce = 1

    def process_jpeg(self, data: bytes, ts: float) -> FrameResult:
        """Decode (reduced toward the widest stage) and analyze one JPEG."""
        t0 = time.perf_counter()
        frame = decode_jpeg(data, reduce=self._reduce)
        if self._reduce == 1:
            for r in (8, 4, 2):
                if frame.shape[1] // r >= self._need:
                    self._reduce = r
                    break
        frame = fit_width(frame, self.cfg.max_width)
        self._seq += 1
        h, w = frame.shape[:2]
        res = FrameResult(camera=self.camera_id, ts=ts, seq=self._seq, width=w, height=h)
        small = fit_width(frame, self.mcfg.width)
        gray = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)
        if self._scene is None or self._scene.width != gray.shape[1]:
            self._scene = SceneRasters.build(self.cfg, gray.shape[1], gray.shape[0])
        mo = self.motion.detect(small if self.mcfg.color else gray, self._scene)
        res.motion = MotionResult(mo.ratio, mo.zones, mo.active)
        seen = self.tracker.update(find_blobs(mo.mask, self.trcfg.min_area))
        res.crossings = self.counter.update(seen)
        res.counts = {k: LineCount(v.in_, v.out) for k, v in self.counter.totals.items()}
        res.tamper = self.tamper.detect(fit_width(gray, self.tcfg.width), ts)
        if self.thumbnails.due(self._seq):
            res.thumbnail = self.thumbnails.render(frame, res)
        res.elapsed_ms = (time.perf_counter() - t0) * 1000
        return res
