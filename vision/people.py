"""People detection: OpenCV's built-in HOG detector, or an operator's ONNX model via cv2.dnn.

Both return normalized ``Box`` es. Nothing is downloaded: the HOG SVM ships inside
OpenCV 4.x wheels, and the DNN model is a file the operator names in the config (a
missing or unreadable file is a ``ConfigError`` at start-up, not a failure per frame).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import cv2
import numpy as np

from ioc.errors import ConfigError

from .config import DnnPeopleConfig, HogPeopleConfig, PeopleConfig
from .result import Box

__all__ = ["DnnPeopleDetector", "HogPeopleDetector", "PeopleDetector", "make_people_detector"]


_MARGIN_X = 0.2  # share of the HOG window's width left and right of the person
_MARGIN_Y = 0.1  # share of its height above the head and below the feet


class PeopleDetector(ABC):
    """One method: boxes of the people in a BGR frame."""

    @abstractmethod
    def detect(self, frame: np.ndarray) -> list[Box]:
        """Normalized boxes (with scores) of the people in ``frame``."""


def _nms(boxes: list[tuple[int, int, int, int]], scores: list[float], score_min: float,
         iou: float) -> list[int]:
    if not boxes:
        return []
    keep = cv2.dnn.NMSBoxes(boxes, scores, score_min, iou)
    return [int(i) for i in np.asarray(keep).reshape(-1)]


class HogPeopleDetector(PeopleDetector):
    """HOG + linear SVM (Dalal-Triggs, 64x128 window), upscaled for small people."""

    def __init__(self, cfg: HogPeopleConfig) -> None:
        if not hasattr(cv2, "HOGDescriptor_getDefaultPeopleDetector"):  # pragma: no cover
            raise ConfigError(
                [("people.detector", f"OpenCV {cv2.__version__} has no HOG people detector "
                  "(opencv-python 5.0 wheels dropped it); install a 4.x wheel or use 'dnn'")]
            )
        self.cfg = cfg
        self._hog = cv2.HOGDescriptor()
        self._hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())

    def detect(self, frame: np.ndarray) -> list[Box]:
        """Detect on ``frame`` resized by ``upscale``; NMS on the SVM scores."""
        h, w = frame.shape[:2]
        s = self.cfg.upscale
        img = frame
        if s != 1.0:
            img = cv2.resize(frame, (round(w * s), round(h * s)),
                             interpolation=cv2.INTER_LINEAR if s > 1 else cv2.INTER_AREA)
        if img.shape[0] < 128 or img.shape[1] < 64:
            return []  # smaller than one detection window
        stride = self.cfg.win_stride
        rects, weights = self._hog.detectMultiScale(
            img,
            hitThreshold=self.cfg.hit_threshold,
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
        lo = min(0.0, self.cfg.hit_threshold, self.cfg.min_score)
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
            out.append(Box(x0 / iw, y0 / ih, (x1 - x0) / iw, (y1 - y0) / ih, scores[i]))
        return out


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

    def detect(self, frame: np.ndarray) -> list[Box]:
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
                if score < c.score_threshold:
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
