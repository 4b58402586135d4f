"""Tamper detection: lens covered, lost focus, camera moved, against a slow reference.

Measures on each frame (gray, downscaled to ``cfg.width``):

- **flat share**: the share of 8x8 blocks whose std-dev is under ``covered_std_max``
  (scaled by the frame's mean brightness / 128, so a darker scene is not "flat").
- **sharpness**: variance of the Laplacian divided by the variance of the gray image.
  Dividing by contrast makes it indifferent to global brightness and gain changes.
- **shift**: phase correlation of the smoothed frame with the reference image.
- **similarity**: zero-mean normalized correlation of the edge maps (Sobel magnitude of
  the smoothed images) of frame and reference, clipped pixels left out. A few pixels of
  misalignment (a small turn) decorrelate edges far more than lighting, blur or
  passing traffic do.

Decisions:

- covered: flat share >= ``covered_area``, at least 0.25 above the reference's (a
  naturally flat scene does not alarm) and similarity < ``covered_max_similarity``;
- defocused (when not covered): sharpness < ``defocus_ratio`` x the reference's;
- moved (when not covered): shift > ``moved_min_shift`` of the width, or (when not
  defocused) similarity < ``moved_similarity_ratio`` x its usual value.

A condition is raised after ``confirm_frames`` (moved: ``moved_confirm_frames``)
consecutive positive frames and cleared after ``clear_frames`` negative ones. The
reference (image, flat share, sharpness) is the mean of the first ``reference_frames``
frames (the warm-up: nothing is raised before), then follows the scene at
``reference_rate`` per frame while nothing is raised or pending, so slow changes (dusk,
seasons) never alarm; the usual similarity follows at 5x that rate.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .config import TamperConfig
from .result import TamperEvent, TamperState

__all__ = ["TamperDetector", "TamperMeasures", "measure"]

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
            cfg: TamperConfig) -> tuple[TamperMeasures, np.ndarray]:
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


class TamperDetector:
    """Raises and clears covered / defocused / moved for one camera."""

    def __init__(self, cfg: TamperConfig) -> None:
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
