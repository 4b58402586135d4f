"""Tamper detection: lens covered, lost focus, camera moved, against a frozen reference.

Each kind changes something different, so each is measured on its own terms, on a
frame at ``cfg.width`` (BGR) and two half-size levels below it (1/2, 1/4):

- **match**: per tile of a 8x6 grid at the 1/2 level, the zero-mean correlation of the
  edge map (Sobel magnitude of the lightly smoothed image) with the reference's. A
  tile whose correlation falls under ``lost_match`` x its usual value has *lost* the
  reference; tiles with no texture in the reference, or whose usual correlation is
  low (busy roads, trees), are not scored. ``lost`` is the share of scored tiles that
  lost the reference: a crowd or traffic loses a few tiles, a camera that moved or a
  cover loses nearly all of them.
- **sharpness** at three scales: mean absolute Laplacian at each level divided by the
  contrast (std-dev) of the coarsest level, as a ratio to the reference's. Defocus
  takes the fine scale first; gain and lighting change every scale alike and cancel.
- **coarse**: correlation of the 1/4 level (blurred scene layout) with the reference's.
  A defocused view keeps its layout; a moved or covered one does not.
- **colour**: spread of the chroma (Cr, Cb of every 4th pixel) over brightness, as a
  ratio to the reference's. A cloth or a spray pulls every pixel toward one colour.
- **shift**: phase correlation of the 1/2 level with the reference (only computed
  when a third of the tiles lost the reference): a pan or tilt is a clean shift, and
  undoing it restores the match (``aligned``).

Decisions (``lost >= covered_area`` means the view no longer matches):

- defocused: fine sharpness < ``defocus_ratio``, mid sharpness < (1 + defocus_ratio) / 2
  and the coarse layout still matches (>= 0.6);
- covered: the view does not match, no shift explains it, and the texture or colour
  changed: colour collapsed (< 0.45), the mid scale lost most of its energy (< 0.5),
  the contrast collapsed, or the fine/mid texture is foreign (< 0.5 or > 2 of the
  reference's);
- moved: the view does not match, or a shift over ``moved_min_shift`` undoing which
  restores the match (>= 0.5) explains it, and it is neither covered nor defocused:
  the scene's own texture and colour are still there.

Times are seconds of frame timestamps: a condition raises after holding ``confirm_s``
(moved: ``moved_confirm_s``) and clears after ``clear_s`` without it. The reference is
the mean of the frames of the first ``warmup_s`` (nothing is raised before), then
follows the scene with time constant ``reference_time_constant_s`` while the view
matches and nothing is pending; it is frozen while anything is pending or raised, so
a blur growing over a second or two is measured against the sharp view. A change that
raised nothing but kept the reference frozen for ``relearn_after_s`` becomes the new
reference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from .config import TamperConfig
from .result import TamperEvent, TamperState

__all__ = ["TamperDetector", "TamperMeasures"]

_KINDS = ("covered", "defocused", "moved")
_GRID_X, _GRID_Y = 8, 6
_WATCH_LOST = 0.3        # tiles lost beyond which the reference stops following
_WATCH_FINE = 0.8        # fine sharpness ratio under which it stops following
_EPS = 1e-6


@dataclass(frozen=True, slots=True)
class TamperMeasures:
    """The per-frame measures the decisions are made on (ratios are to the reference)."""

    lost: float
    fine: float
    mid: float
    coarse_sharp: float
    coarse: float
    colour: float
    contrast: float  # flatness (contrast over brightness) as a ratio to the reference
    shift: float
    aligned: float


@dataclass(slots=True)
class _Features:
    edges: np.ndarray      # float32 at the 1/2 level, cropped to the tile grid
    half: np.ndarray       # smoothed float32 1/2 level (phase correlation)
    quarter: np.ndarray    # float32 1/4 level (coarse layout)
    sharp: tuple[float, float, float]
    contrast: float        # std-dev of the 1/4 level (+2)
    flatness: float        # that std-dev over the brightness: gain and lighting cancel
    colour: float


def _levels(image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    if image.ndim == 3:
        # Every 4th pixel: the spread of colours needs no smoothing, and a pyramid of
        # the BGR frame would cost more than everything else here.
        q = cv2.cvtColor(np.ascontiguousarray(image[::4, ::4]), cv2.COLOR_BGR2YCrCb)
        mean, std = cv2.meanStdDev(q)
        spread = math.hypot(float(std[1, 0]), float(std[2, 0]))
        colour = spread / (float(mean[0, 0]) + 16.0)
        g0 = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    else:
        g0, colour = image, -1.0
    g1 = cv2.pyrDown(g0)
    g2 = cv2.pyrDown(g1)
    return g0, g1, g2, colour


def _mean_abs_laplacian(img: np.ndarray) -> float:
    lap = cv2.Laplacian(img, cv2.CV_16S, ksize=1)
    return float(cv2.norm(lap, cv2.NORM_L1)) / lap.size


def features(image: np.ndarray) -> _Features:
    """Everything measured on one frame (BGR or gray, already ``cfg.width`` wide)."""
    g0, g1, g2, colour = _levels(image)
    mean, std = cv2.meanStdDev(g2)
    contrast = float(std[0, 0]) + 2.0
    flatness = contrast / (float(mean[0, 0]) + 16.0)
    sharp = (_mean_abs_laplacian(g0) / contrast, _mean_abs_laplacian(g1) / contrast,
             _mean_abs_laplacian(g2) / contrast)
    h, w = g1.shape
    th, tw = h // _GRID_Y, w // _GRID_X
    half = cv2.GaussianBlur(g1.astype(np.float32), (0, 0), 1.0)
    crop = half[: th * _GRID_Y, : tw * _GRID_X]
    edges = cv2.magnitude(cv2.Sobel(crop, cv2.CV_32F, 1, 0), cv2.Sobel(crop, cv2.CV_32F, 0, 1))
    return _Features(edges, half, g2.astype(np.float32), sharp, contrast, flatness, colour)


def _tile_stats(e: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Zero-mean tiles (grid, pixels) and their norms."""
    h, w = e.shape
    grid = e.reshape(_GRID_Y, h // _GRID_Y, _GRID_X, w // _GRID_X).transpose(0, 2, 1, 3)
    t: np.ndarray = grid.reshape(_GRID_Y * _GRID_X, -1)
    t = t - t.mean(axis=1, keepdims=True)
    return t, np.sqrt((t * t).sum(axis=1))


def tile_match(e: np.ndarray, ref_tiles: np.ndarray, ref_norms: np.ndarray) -> np.ndarray:
    """Zero-mean normalized correlation of each tile of ``e`` with the reference's."""
    t, n = _tile_stats(e)
    return np.asarray((t * ref_tiles).sum(axis=1) / (n * ref_norms + _EPS))


def _ncc(a: np.ndarray, b: np.ndarray) -> float:
    """Zero-mean normalized correlation of two same-size images; 0 when either is flat
    (a covered lens must not correlate with anything)."""
    am, bm = a - a.mean(), b - b.mean()
    den = float(np.sqrt(float((am * am).sum()) * float((bm * bm).sum())))
    return float((am * bm).sum()) / den if den > 1e-3 * a.size else 0.0


class _Reference:
    """The reference view: running images and scalars, and per-tile usual matches."""

    def __init__(self, f: _Features) -> None:
        self.edges = f.edges.copy()
        self.half = f.half.copy()
        self.quarter = f.quarter.copy()
        self.sharp = list(f.sharp)
        self.contrast = f.contrast
        self.flatness = f.flatness
        self.colour = f.colour
        self.usual: np.ndarray | None = None  # per-tile usual correlation
        self.n = 1
        self._tiles: tuple[np.ndarray, np.ndarray] | None = None

    def tiles(self) -> tuple[np.ndarray, np.ndarray]:
        if self._tiles is None:
            self._tiles = _tile_stats(self.edges)
        return self._tiles

    def follow(self, f: _Features, rate: float) -> None:
        """Move toward ``f`` by ``rate`` (0..1)."""
        cv2.accumulateWeighted(f.edges, self.edges, rate)
        cv2.accumulateWeighted(f.half, self.half, rate)
        cv2.accumulateWeighted(f.quarter, self.quarter, rate)
        self.sharp = [s + (x - s) * rate for s, x in zip(self.sharp, f.sharp, strict=True)]
        self.contrast += (f.contrast - self.contrast) * rate
        self.flatness += (f.flatness - self.flatness) * rate
        self.colour += (f.colour - self.colour) * rate
        self._tiles = None


class TamperDetector:
    """Raises and clears covered / defocused / moved for one camera."""

    def __init__(self, cfg: TamperConfig) -> None:
        self.cfg = cfg
        self.reset()

    def reset(self) -> None:
        """Forget the reference: the next ``warmup_s`` of frames build it again."""
        self.frames = 0
        self._ref: _Reference | None = None
        self._shape: tuple[int, ...] | None = None
        self._first_ts: float | None = None
        self._last_ts: float | None = None
        self._ready = False
        self._window: np.ndarray | None = None
        self.state = dict.fromkeys(_KINDS, False)
        self._since: dict[str, float | None] = dict.fromkeys(_KINDS, None)
        self._clear_since: dict[str, float | None] = dict.fromkeys(_KINDS, None)
        self._frozen_since: float | None = None
        self._corr: np.ndarray | None = None
        self.last: TamperMeasures | None = None

    @property
    def ready(self) -> bool:
        """True once the reference is built (warm-up over)."""
        return self._ready

    # -- measures ---------------------------------------------------------------------

    def _measure(self, f: _Features, ref: _Reference) -> TamperMeasures:
        rt, rn = ref.tiles()
        corr = self._corr = tile_match(f.edges, rt, rn)
        usual = ref.usual if ref.usual is not None else np.full_like(corr, 0.8)
        # Tiles without texture in the reference, or busy ones that never match well,
        # say nothing about the camera.
        scored = (rn > 1e-3 * max(float(rn.max()), _EPS)) & (usual >= 0.3)
        if not scored.any():
            scored = np.ones_like(scored)
        lost_t = corr < self.cfg.lost_match * usual
        lost = float(np.count_nonzero(lost_t & scored)) / float(np.count_nonzero(scored))
        fine, mid, coarse_s = (x / max(r, _EPS) for x, r in zip(f.sharp, ref.sharp, strict=True))
        coarse = _ncc(f.quarter, ref.quarter) if min(f.contrast, ref.contrast) > 2.5 else 0.0
        colour = 1.0 if f.colour < 0 or ref.colour <= 0.02 else f.colour / ref.colour
        contrast = f.flatness / max(ref.flatness, _EPS)
        shift, aligned = 0.0, 0.0
        if lost >= min(_WATCH_LOST, self._unmatched_at()):
            if self._window is None or self._window.shape != f.half.shape:
                self._window = cv2.createHanningWindow((f.half.shape[1], f.half.shape[0]),
                                                       cv2.CV_32F)
            # phaseCorrelate multiplies its inputs by the window in place: hand it copies.
            (dx, dy), _ = cv2.phaseCorrelate(ref.half.copy(), f.half.copy(), self._window)
            shift = math.hypot(dx, dy) / f.half.shape[1]
            if shift > 0.5 * self.cfg.moved_min_shift:
                aligned = self._aligned(f, ref, dx, dy)
        return TamperMeasures(lost, fine, mid, coarse_s, coarse, colour, contrast, shift,
                              aligned)

    @staticmethod
    def _aligned(f: _Features, ref: _Reference, dx: float, dy: float) -> float:
        """Edge correlation over the overlap once the shift is undone."""
        h, w = f.edges.shape
        ix, iy = round(dx), round(dy)
        if abs(ix) >= w // 2 or abs(iy) >= h // 2:
            return 0.0
        cur = f.edges[max(0, iy): h + min(0, iy), max(0, ix): w + min(0, ix)]
        old = ref.edges[max(0, -iy): h + min(0, -iy), max(0, -ix): w + min(0, -ix)]
        return _ncc(cur, old)

    def _unmatched_at(self) -> float:
        # Hysteresis: a view already found unmatched (pending or raised) stays so until
        # most of it matches again; a zoom keeps its centre tiles near the threshold.
        busy = any(self.state[k] or self._since[k] is not None for k in ("covered", "moved"))
        return self.cfg.covered_area * (0.65 if busy else 1.0)

    def _conditions(self, m: TamperMeasures) -> dict[str, bool]:
        cfg = self.cfg
        unmatched = m.lost >= self._unmatched_at()
        # Translucent cover (cloth, plastic, spray): the scene still shows through and
        # matches, but flattened (contrast over brightness) and pulled to one colour or
        # overlaid with a texture of its own. Lighting, dusk and IR keep the contrast.
        foreign_texture = not (0.5 <= m.fine <= 2.0) or not (0.5 <= m.mid <= 2.0)
        translucent = m.contrast < 0.4 and (m.colour < 0.45 or foreign_texture)
        defocused = (m.fine < cfg.defocus_ratio and m.mid < (1 + cfg.defocus_ratio) / 2
                     and m.coarse >= 0.6 and m.colour >= 0.45 and m.contrast >= 0.4)
        shifted = m.shift >= cfg.moved_min_shift and m.aligned >= 0.5
        foreign = m.colour < 0.45 or m.mid < 0.5 or m.contrast < 0.3 or foreign_texture
        covered = ((unmatched and not shifted and foreign) or translucent) and not defocused
        # A clean shift (pan, tilt, knock) that undoing restores: moved, even when the
        # edges along the shift still match in many tiles.
        moved = (unmatched or shifted) and not covered and not defocused
        return {"covered": covered, "defocused": defocused, "moved": moved}

    @staticmethod
    def _abnormal(m: TamperMeasures) -> bool:
        """Anything far from the reference: the reference stops following it."""
        return (m.lost > _WATCH_LOST or not (_WATCH_FINE <= m.fine <= 1 / _WATCH_FINE)
                or not (_WATCH_FINE <= m.mid <= 1 / _WATCH_FINE) or m.colour < 0.7
                or not (0.6 <= m.contrast <= 1.7))

    # -- the state machine ---------------------------------------------------------------

    def detect(self, image: np.ndarray, ts: float) -> TamperState:
        """Update with one frame taken at ``ts`` (seconds, non-decreasing) and return the
        state. ``image`` is BGR (colour is measured) or gray, ``cfg.width`` wide."""
        cfg = self.cfg
        if self._shape is not None and self._shape != image.shape:
            self.reset()
        self._shape = image.shape
        f = features(image)
        self.frames += 1
        dt = 0.0 if self._last_ts is None else max(0.0, ts - self._last_ts)
        self._last_ts = ts
        if self._first_ts is None:
            self._first_ts = ts
        if not self._ready:
            # Warm-up: the reference is the running mean of the first frames.
            if self._ref is None:
                self._ref = _Reference(f)
            else:
                self._ref.n += 1
                self._ref.follow(f, 1.0 / self._ref.n)
            if ts - self._first_ts >= cfg.warmup_s and self._ref.n >= 2:
                self._ready = True
                self._ref.usual = tile_match(f.edges, *self._ref.tiles())
            return TamperState(ready=False)
        ref = self._ref
        assert ref is not None
        m = self._measure(f, ref)
        self.last = m
        now = self._conditions(m)
        changed = []
        for kind in _KINDS:
            if now[kind]:
                self._clear_since[kind] = None
                if self._since[kind] is None:
                    self._since[kind] = ts
                need = cfg.moved_confirm_s if kind == "moved" else cfg.confirm_s
                since = self._since[kind]
                if not self.state[kind] and since is not None and ts - since >= need:
                    self.state[kind] = True
                    changed.append(TamperEvent(kind, True, ts, _value(kind, m)))
            else:
                self._since[kind] = None
                if self.state[kind]:
                    if self._clear_since[kind] is None:
                        self._clear_since[kind] = ts
                    since = self._clear_since[kind]
                    if since is not None and ts - since >= cfg.clear_s:
                        self.state[kind] = False
                        self._clear_since[kind] = None
                        changed.append(TamperEvent(kind, False, ts, _value(kind, m)))
        self._update_reference(f, m, now, ts, dt)
        return TamperState(
            covered=self.state["covered"],
            defocused=self.state["defocused"],
            moved=self.state["moved"],
            changed=changed,
            ready=True,
        )

    def _update_reference(self, f: _Features, m: TamperMeasures, now: dict[str, bool],
                          ts: float, dt: float) -> None:
        cfg = self.cfg
        ref = self._ref
        assert ref is not None
        raised = any(self.state.values())
        watch = any(now.values()) or self._abnormal(m)
        if raised or watch:
            if self._frozen_since is None:
                self._frozen_since = ts
            if not raised and ts - self._frozen_since >= cfg.relearn_after_s:
                # A lasting change that is no tamper: it becomes the reference.
                usual = ref.usual
                self._ref = _Reference(f)
                self._ref.usual = usual
                self._frozen_since = None
            return
        self._frozen_since = None
        tau = cfg.reference_time_constant_s
        if tau <= 0 or dt <= 0:
            return
        rate = 1.0 - math.exp(-dt / tau)
        ref.follow(f, rate)
        # The usual correlation of each tile follows faster: it only sets the scale.
        assert ref.usual is not None and self._corr is not None
        ref.usual += (self._corr - ref.usual) * min(1.0, 5 * rate)

def _value(kind: str, m: TamperMeasures) -> float:
    """The event's value: covered, tiles lost; defocused, the fine sharpness ratio; moved,
    the larger of tiles lost and the shift (fraction of the width)."""
    if kind == "covered":
        return m.lost
    if kind == "defocused":
        return m.fine
    return max(m.shift, m.lost)
