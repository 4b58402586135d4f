"""People detection: OpenCV's built-in HOG detector, or an operator's ONNX model via cv2.dnn.

Both return normalized ``Box`` es. Nothing is downloaded: the HOG SVM ships inside
OpenCV 4.x wheels, and the DNN model is a file the operator names in the config (a
missing or unreadable file is a ``ConfigError`` at start-up, not a failure per frame).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import cv2
import numpy as np

from ioc.errors import ConfigError

from .config import DnnPeopleConfig, HogPeopleConfig, PeopleConfig
from .result import Box

__all__ = [
    "DnnPeopleDetector",
    "HogPeopleDetector",
    "PeopleDetector",
    "PersonHeights",
    "make_people_detector",
]


_MARGIN_X = 0.2  # share of the HOG window's width left and right of the person
_MARGIN_Y = 0.1  # share of its height above the head and below the feet
_WINDOW_PERSON = 120.0  # px: the smallest expected person is resized to this (window: 128)
_SEARCH_UPSCALE = 2.0  # before any height is known: finds people from ~50 px tall
_MIN_UPSCALE, _MAX_UPSCALE = 1.0, 2.5
_HEIGHT_SLACK = 1.5  # a detection within x/÷ this of the expected height is plausible
_SCALE_SLACK = 1.5  # the scale and pyramid cover the learnt heights x/÷ this (1.15: MAE +0.3)
_MIN_MOVING = 0.05  # share of a box's pixels that must be moving (when motion is known)
_HEIGHT_SAMPLES = 200  # detections kept for the height model
_MIN_SAMPLES = 12  # detections before the height model is used


class PeopleDetector(ABC):
    """One method: boxes of the people in a BGR frame."""

    @abstractmethod
    def detect(self, frame: np.ndarray, motion: np.ndarray | None = None) -> list[Box]:
        """Normalized boxes (with scores) of the people in ``frame``; ``motion`` is the
        camera's current foreground mask (0/255, any size) or None."""


def _nms(boxes: list[tuple[int, int, int, int]], scores: list[float], score_min: float,
         iou: float) -> list[int]:
    if not boxes:
        return []
    keep = cv2.dnn.NMSBoxes(boxes, scores, score_min, iou)
    return [int(i) for i in np.asarray(keep).reshape(-1)]


class PersonHeights:
    """Expected person height (fraction of the frame height) as a function of the foot's
    y (fraction of the frame height): ``h = a + b * y``, the ground plane seen in
    perspective, fitted to confident, moving detections of the scene itself.

    ``add`` keeps at most ``_HEIGHT_SAMPLES`` samples (oldest dropped); ``fitted`` is
    True once ``_MIN_SAMPLES`` are in and the fit is plausible (heights > 0 over the
    observed feet).
    """

    def __init__(self) -> None:
        self._ys: list[float] = []
        self._hs: list[float] = []
        self.a = 0.0
        self.b = 0.0
        self.y_lo = 0.0
        self.y_hi = 1.0
        self.fitted = False

    def add(self, foot_y: float, h: float) -> None:
        self._ys.append(foot_y)
        self._hs.append(h)
        if len(self._ys) > _HEIGHT_SAMPLES:
            del self._ys[0], self._hs[0]
        if len(self._ys) >= _MIN_SAMPLES:
            self._fit()

    def _fit(self) -> None:
        y, h = np.asarray(self._ys), np.asarray(self._hs)
        keep = np.ones(len(y), bool)
        for _ in range(3):  # least squares, then refit without the worst outliers
            if keep.sum() < _MIN_SAMPLES // 2:
                return
            b, a = np.polyfit(y[keep], h[keep], 1) if np.ptp(y[keep]) > 0.05 else (
                0.0, float(np.median(h[keep])))
            rel = np.abs(h - (a + b * y)) / np.maximum(a + b * y, 1e-3)
            keep = rel <= max(0.25, float(np.percentile(rel, 80)))
        lo, hi = float(np.percentile(y[keep], 2)), float(np.percentile(y[keep], 98))
        if min(a + b * lo, a + b * hi) <= 0.01:
            return
        self.a, self.b, self.y_lo, self.y_hi = float(a), float(b), lo, hi
        self.fitted = True

    def at(self, foot_y: float) -> float:
        """Expected height at ``foot_y`` (clamped to the feet seen so far)."""
        return self.a + self.b * min(self.y_hi, max(self.y_lo, foot_y))

    def range(self) -> tuple[float, float]:
        """Smallest and largest expected height where people were seen."""
        h1, h2 = self.at(self.y_lo), self.at(self.y_hi)
        return min(h1, h2), max(h1, h2)


class HogPeopleDetector(PeopleDetector):
    """HOG + linear SVM (Dalal-Triggs, 64x128 window) at a scale chosen from the expected
    person height.

    The frame is resized so that the smallest expected person is about as tall as the
    person inside the window (``_WINDOW_PERSON`` px), and the image pyramid stops at the
    largest expected person. The expected heights come from ``hog.person_height`` when
    configured, else from ``PersonHeights`` fitted on this camera's own confident,
    moving detections (until then, a wide search at ``_SEARCH_UPSCALE``). Detections far
    from the expected height at their foot point, and (when a motion mask is given)
    weak detections (under ``calibration_score``) with under ``_MIN_MOVING`` of their box
    moving, are dropped.
    """

    def __init__(self, cfg: HogPeopleConfig) -> None:
        if not hasattr(cv2, "HOGDescriptor_getDefaultPeopleDetector"):  # pragma: no cover
            raise ConfigError(
                [("people.detector", f"OpenCV {cv2.__version__} has no HOG people detector "
                  "(opencv-python 5.0 wheels dropped it); install a 4.x wheel or use 'dnn'")]
            )
        self.cfg = cfg
        self.heights = PersonHeights()
        self._levels = -1
        self._hog = self._descriptor(64)
        self.upscale = cfg.upscale or _SEARCH_UPSCALE  # the scale of the last run

    def _descriptor(self, levels: int) -> cv2.HOGDescriptor:
        if levels != self._levels:
            hog = cv2.HOGDescriptor((64, 128), (16, 16), (8, 8), (8, 8), 9, 1, -1.0, 0, 0.2,
                                    True, levels)
            hog.setSVMDetector(np.asarray(cv2.HOGDescriptor.getDefaultPeopleDetector()))
            self._hog, self._levels = hog, levels
        return self._hog

    def _expected(self) -> tuple[float, float] | None:
        if self.cfg.person_height is not None:
            return self.cfg.person_height
        if self.heights.fitted:
            lo, hi = self.heights.range()
            return lo / _SCALE_SLACK, hi * _SCALE_SLACK
        return None

    def detect(self, frame: np.ndarray, motion: np.ndarray | None = None) -> list[Box]:
        """People in ``frame``; ``motion`` (a 0/255 foreground mask of any size, or None
        while there is none) drops detections on still background."""
        h, w = frame.shape[:2]
        want = self._expected()
        levels = 64
        if self.cfg.upscale is not None:
            s = self.cfg.upscale
        elif want is not None:
            s = min(_MAX_UPSCALE, max(_MIN_UPSCALE, _WINDOW_PERSON / (want[0] * h)))
            # Pyramid levels up to the tallest expected person (and one more step).
            ratio = max(1.0, want[1] * h * s / _WINDOW_PERSON)
            levels = max(2, math.ceil(math.log(ratio) / math.log(self.cfg.scale)) + 2)
        else:
            s = _SEARCH_UPSCALE
        self.upscale = s
        hog = self._descriptor(levels)
        img = frame
        if s != 1.0:
            img = cv2.resize(frame, (round(w * s), round(h * s)),
                             interpolation=cv2.INTER_LINEAR if s > 1 else cv2.INTER_AREA)
        if img.shape[0] < 128 or img.shape[1] < 64:
            return []  # smaller than one detection window
        stride = self.cfg.win_stride
        hit = min(self.cfg.hit_threshold, self.cfg.min_score)
        rects, weights = hog.detectMultiScale(
            img,
            hitThreshold=hit,
            winStride=(stride, stride),
            padding=(self.cfg.padding, self.cfg.padding),
            scale=self.cfg.scale,
            useMeanshiftGrouping=False,
        )
        if len(rects) == 0:
            return []
        boxes = [tuple(int(v) for v in r) for r in np.asarray(rects).reshape(-1, 4)]
        scores = [float(v) for v in np.asarray(weights).reshape(-1)]
        # NMSBoxes wants scores >= 0, SVM distances may be negative: shift both.
        lo = min(0.0, hit)
        keep = _nms(boxes, [v - lo for v in scores],  # type: ignore[arg-type]
                    self.cfg.min_score - lo, self.cfg.nms_iou)
        out = []
        iw, ih = img.shape[1], img.shape[0]
        for i in keep:
            x, y, bw, bh = boxes[i]
            # The 64x128 window holds a ~38x102 person with a margin (Dalal-Triggs):
            # report the person, so boxes compare with annotations and feet are right.
            fx, fy = x + bw * _MARGIN_X, y + bh * _MARGIN_Y
            fw, fh = bw * (1 - 2 * _MARGIN_X), bh * (1 - 2 * _MARGIN_Y)
            x0, y0 = max(0.0, fx), max(0.0, fy)
            x1, y1 = min(float(iw), fx + fw), min(float(ih), fy + fh)
            if x1 <= x0 or y1 <= y0:
                continue
            box = Box(x0 / iw, y0 / ih, (x1 - x0) / iw, (y1 - y0) / ih, scores[i])
            if not self._plausible(box):
                continue
            strong = box.score >= self.cfg.calibration_score
            moving = motion is None or _moving_share(motion, box) >= _MIN_MOVING
            if moving and strong:
                self.heights.add(box.y + box.h, box.h)
            # A weak detection on still background is the door or the sign a low threshold
            # finds; a strong one may be someone standing still (absorbed by MOG2).
            if moving or strong:
                out.append(box)
        return out

    def _plausible(self, box: Box) -> bool:
        if self.cfg.person_height is not None:
            lo, hi = self.cfg.person_height
            return lo / _HEIGHT_SLACK <= box.h <= hi * _HEIGHT_SLACK
        if self.cfg.upscale is None and self.heights.fitted:
            want = self.heights.at(box.y + box.h)
            return want / _HEIGHT_SLACK <= box.h <= want * _HEIGHT_SLACK
        return True


def _moving_share(motion: np.ndarray, box: Box) -> float:
    mh, mw = motion.shape[:2]
    x0, y0 = int(box.x * mw), int(box.y * mh)
    x1, y1 = max(x0 + 1, int((box.x + box.w) * mw)), max(y0 + 1, int((box.y + box.h) * mh))
    roi = motion[y0:y1, x0:x1]
    return cv2.countNonZero(roi) / roi.size if roi.size else 0.0


class DnnPeopleDetector(PeopleDetector):
    """An ONNX detector (YOLOv5/v8 or SSD output layout) run by ``cv2.dnn`` on the CPU."""

    def __init__(self, cfg: DnnPeopleConfig) -> None:
        self.cfg = cfg
        path = cfg.model
        if not path.is_file():
            raise ConfigError(
                [("people.dnn.model", f"expected an ONNX file, but {str(path)!r} does not exist")]
            )
        try:
            self._net = cv2.dnn.readNetFromONNX(str(path))
        except cv2.error as exc:
            raise ConfigError(
                [("people.dnn.model", f"{str(path)!r} is not a loadable ONNX model: {exc}")]
            ) from exc
        self._net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
        self._net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)

    def detect(self, frame: np.ndarray, motion: np.ndarray | None = None) -> list[Box]:
        """Run the network on ``frame`` resized to the input size; NMS on person scores."""
        c = self.cfg
        h, w = frame.shape[:2]
        blob = cv2.dnn.blobFromImage(frame, c.scale, (c.input_width, c.input_height),
                                     swapRB=c.swap_rb, crop=False)
        self._net.setInput(blob)
        out = np.asarray(self._net.forward())
        boxes: list[tuple[int, int, int, int]] = []
        scores: list[float] = []
        if c.output == "ssd":
            # [1, 1, N, 7]: image_id, class, score, x0, y0, x1, y1 (normalized)
            for det in out.reshape(-1, 7):
                if int(det[1]) != c.person_class or det[2] < c.score_threshold:
                    continue
                x0, y0, x1, y1 = (float(v) for v in det[3:7])
                boxes.append((round(x0 * w), round(y0 * h), round((x1 - x0) * w),
                              round((y1 - y0) * h)))
                scores.append(float(det[2]))
        else:
            # YOLOv8: [1, 4 + classes, N]; YOLOv5: [1, N, 5 + classes] (objectness first).
            # Centre-size boxes in input pixels.
            v5 = c.output == "yolov5"
            rows = out.reshape(out.shape[-2], out.shape[-1])
            if not v5:
                rows = rows.T
            sx, sy = w / c.input_width, h / c.input_height
            for r in rows:
                cls = r[5:] * r[4] if v5 else r[4:]
                if c.person_class >= len(cls):
                    continue
                score = float(cls[c.person_class])
                # Class filter as the exporters' own NMS does: the box's best class.
                if score < c.score_threshold or score < float(cls.max()):
                    continue
                cx, cy, bw, bh = (float(v) for v in r[:4])
                boxes.append((round((cx - bw / 2) * sx), round((cy - bh / 2) * sy),
                              round(bw * sx), round(bh * sy)))
                scores.append(score)
        result = []
        for i in _nms(boxes, scores, c.score_threshold, c.nms_iou):
            x, y, bw, bh = boxes[i]
            x0, y0, x1, y1 = max(0, x), max(0, y), min(w, x + bw), min(h, y + bh)
            if x1 > x0 and y1 > y0:
                result.append(Box(x0 / w, y0 / h, (x1 - x0) / w, (y1 - y0) / h, scores[i]))
        return result


def make_people_detector(cfg: PeopleConfig) -> PeopleDetector | None:
    """The configured detector, or None when people detection is off.

    Raises:
        ConfigError: the DNN model file is missing or unreadable, or HOG is unavailable.
    """
    if not cfg.enabled:
        return None
    if cfg.detector == "dnn":
        if cfg.dnn is None:  # the config validator already refuses this
            raise ConfigError([("people.dnn", "detector 'dnn' needs a 'dnn' section")])
        return DnnPeopleDetector(cfg.dnn)
    return HogPeopleDetector(cfg.hog)
