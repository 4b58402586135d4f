"""The DNN people detector's output parsing, on tiny ONNX graphs built here (no download).

Each graph ignores its input (adds 0 x its mean) and returns a fixed detection tensor in
one of the supported layouts, so the expected boxes are known exactly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from vision import AnalyticsConfig, CameraAnalyzer
from vision.config import PeopleConfig
from vision.people import make_people_detector

SIZE = 64


def _onnx(det: np.ndarray, path: Path) -> Path:
    inp = helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, SIZE, SIZE])
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, list(det.shape))
    nodes = [
        helper.make_node("ReduceMean", ["images"], ["m"], keepdims=0),
        helper.make_node("Mul", ["m", "zero"], ["z"]),
        helper.make_node("Add", ["z", "det"], ["out"]),
    ]
    graph = helper.make_graph(nodes, "fixed", [inp], [out], initializer=[
        numpy_helper.from_array(np.zeros((1,), np.float32), "zero"),
        numpy_helper.from_array(det.astype(np.float32), "det"),
    ])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _detector(path: Path, output: str):
    cfg = PeopleConfig.model_validate({
        "enabled": True, "detector": "dnn",
        "dnn": {"model": str(path), "output": output, "input_width": SIZE,
                "input_height": SIZE, "score_threshold": 0.5},
    })
    det = make_people_detector(cfg)
    assert det is not None
    return det


def _close(box, expected: tuple[float, float, float, float]) -> bool:
    return bool(np.allclose([box.x, box.y, box.w, box.h], expected, atol=1e-3))


def test_yolov8_layout(tmp_path: Path) -> None:
    det = np.zeros((1, 6, 4), np.float32)  # 4 box values + 2 classes, 4 candidates
    det[0, :, 0] = [32, 32, 16, 32, 0.9, 0.1]  # person
    det[0, :, 1] = [10, 10, 8, 8, 0.1, 0.95]   # another class
    det[0, :, 2] = [33, 32, 16, 32, 0.8, 0.0]  # the same person again: NMS drops it
    det[0, :, 3] = [50, 50, 10, 20, 0.3, 0.0]  # under the score threshold
    boxes = _detector(_onnx(det, tmp_path / "v8.onnx"), "yolov8").detect(
        np.zeros((128, 256, 3), np.uint8))
    assert len(boxes) == 1
    assert _close(boxes[0], (0.375, 0.25, 0.25, 0.5)) and boxes[0].score == pytest.approx(0.9)


def test_yolov5_layout(tmp_path: Path) -> None:
    det = np.zeros((1, 3, 7), np.float32)  # box, objectness, 2 classes
    det[0, 0] = [16, 16, 8, 16, 0.9, 0.9, 0.0]   # person 0.81
    det[0, 1] = [48, 40, 16, 16, 0.9, 0.5, 0.5]  # 0.45: under the threshold
    det[0, 2] = [48, 40, 16, 16, 0.2, 0.0, 1.0]  # not a person
    boxes = _detector(_onnx(det, tmp_path / "v5.onnx"), "yolov5").detect(
        np.zeros((64, 64, 3), np.uint8))
    assert len(boxes) == 1
    assert _close(boxes[0], (12 / 64, 8 / 64, 8 / 64, 16 / 64))
    assert boxes[0].score == pytest.approx(0.81, abs=1e-4)


def test_ssd_layout(tmp_path: Path) -> None:
    det = np.zeros((1, 1, 2, 7), np.float32)
    det[0, 0, 0] = [0, 0, 0.7, 0.1, 0.2, 0.3, 0.6]  # person, normalized corners
    det[0, 0, 1] = [0, 3, 0.9, 0.5, 0.5, 0.6, 0.6]  # class 3
    boxes = _detector(_onnx(det, tmp_path / "ssd.onnx"), "ssd").detect(
        np.zeros((100, 200, 3), np.uint8))
    assert len(boxes) == 1
    assert _close(boxes[0], (0.1, 0.2, 0.2, 0.4))


def test_dnn_people_counted_per_zone_by_foot_point(tmp_path: Path) -> None:
    det = np.zeros((1, 6, 2), np.float32)
    det[0, :, 0] = [16, 32, 8, 32, 0.9, 0.0]  # feet at (0.25, 0.75): in zone 'left'
    det[0, :, 1] = [48, 32, 8, 32, 0.9, 0.0]  # feet at (0.75, 0.75): right half
    path = _onnx(det, tmp_path / "zones.onnx")
    cfg = AnalyticsConfig.model_validate({
        "zones": [{"name": "left", "polygon": [[0, 0], [0.5, 0], [0.5, 1], [0, 1]]}],
        "people": {"enabled": True, "detector": "dnn", "interval_s": 0.3,
                   "dnn": {"model": str(path), "input_width": SIZE, "input_height": SIZE}},
    })
    an = CameraAnalyzer("cam", cfg)
    r1 = an.process(np.zeros((120, 160, 3), np.uint8), 0.0)
    r2 = an.process(np.zeros((120, 160, 3), np.uint8), 0.2)
    assert r1.people is not None and r2.people is not None
    assert (r1.people.total, r1.people.zones, r1.people.fresh) == (2, {"left": 1}, True)
    assert (r2.people.total, r2.people.fresh, r2.people.age_frames) == (2, False, 1)
    assert an.stats.people_runs == 1


def test_masked_feet_are_not_counted(tmp_path: Path) -> None:
    det = np.zeros((1, 6, 2), np.float32)
    det[0, :, 0] = [16, 32, 8, 32, 0.9, 0.0]  # feet at (0.25, 0.75)
    det[0, :, 1] = [48, 32, 8, 32, 0.9, 0.0]  # feet at (0.75, 0.75): masked
    path = _onnx(det, tmp_path / "mask.onnx")
    cfg = AnalyticsConfig.model_validate({
        "masks": [{"name": "bus-stop", "polygon": [[0.5, 0], [1, 0], [1, 1], [0.5, 1]]}],
        "people": {"enabled": True, "detector": "dnn",
                   "dnn": {"model": str(path), "input_width": SIZE, "input_height": SIZE}},
    })
    r = CameraAnalyzer("cam", cfg).process(np.zeros((120, 160, 3), np.uint8), 0.0)
    assert r.people is not None and r.people.total == 1
    assert r.people.boxes[0].x < 0.5


def test_yolov8_full_size_output_class_filter_and_nms(tmp_path: Path) -> None:
    """The shape ultralytics exports for an 80-class model at 640x640 ([1, 84, 8400]),
    here with an input of 64: boxes of other classes, a box whose best class is not
    'person', and overlapping duplicates."""
    det = np.zeros((1, 84, 8400), np.float32)
    det[0, :4, 10] = [20, 20, 10, 20]
    det[0, 4, 10] = 0.92                       # person
    det[0, :4, 11] = [21, 21, 10, 20]
    det[0, 4, 11] = 0.7                        # its duplicate: suppressed
    det[0, :4, 500] = [44, 40, 12, 24]
    det[0, 4, 500] = 0.6                       # another person, apart
    det[0, :4, 900] = [40, 10, 10, 10]
    det[0, 4, 900], det[0, 4 + 2, 900] = 0.55, 0.9  # person 0.55 but a car 0.9: not a person
    det[0, :4, 901] = [10, 50, 8, 8]
    det[0, 4 + 16, 901] = 0.99                 # a dog
    boxes = _detector(_onnx(det, tmp_path / "v8full.onnx"), "yolov8").detect(
        np.zeros((64, 64, 3), np.uint8))
    got = sorted((round(b.x * 64), round(b.y * 64), round(b.w * 64), round(b.h * 64))
                 for b in boxes)
    assert got == [(15, 10, 10, 20), (38, 28, 12, 24)]


def test_hog_person_height_range_is_validated() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as err:
        PeopleConfig.model_validate({"hog": {"person_height": [0.5, 0.2]}})
    assert "person_height" in str(err.value)


def test_frame_based_people_key_is_refused_naming_the_new_key() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as err:
        PeopleConfig.model_validate({"every_n_frames": 5})
    assert "'every_n_frames'" in str(err.value) and "'interval_s'" in str(err.value)


def test_person_heights_learn_a_ground_plane() -> None:
    from vision.people import PersonHeights

    ph = PersonHeights()
    rng = np.random.default_rng(3)
    for _ in range(40):
        y = float(rng.uniform(0.4, 0.95))
        ph.add(y, (0.05 + 0.3 * y) * float(rng.uniform(0.9, 1.1)))
    ph.add(0.5, 0.9)  # an outlier (a door taken for a person)
    assert ph.fitted
    assert ph.at(0.5) == pytest.approx(0.2, rel=0.1)
    assert ph.at(0.9) == pytest.approx(0.32, rel=0.1)
    lo, hi = ph.range()
    assert lo < 0.2 < hi < 0.4


def test_hog_scale_follows_the_configured_person_height() -> None:
    from vision.people import HogPeopleDetector

    cfg = PeopleConfig.model_validate({"enabled": True, "hog": {"person_height": [0.1, 0.2]}})
    det = HogPeopleDetector(cfg.hog)
    det.detect(np.zeros((480, 640, 3), np.uint8))
    assert det.upscale == pytest.approx(2.5)  # 48 px people: as far as the cap goes
    cfg = PeopleConfig.model_validate({"enabled": True, "hog": {"person_height": [0.5, 0.8]}})
    det = HogPeopleDetector(cfg.hog)
    det.detect(np.zeros((480, 640, 3), np.uint8))
    assert det.upscale == pytest.approx(1.0)  # tall people: native size


def test_hog_drops_implausible_heights_and_weak_still_detections() -> None:
    from vision.people import HogPeopleDetector, _moving_share
    from vision.result import Box

    cfg = PeopleConfig.model_validate({"enabled": True, "hog": {"person_height": [0.2, 0.3]}})
    det = HogPeopleDetector(cfg.hog)
    assert det._plausible(Box(0.1, 0.1, 0.05, 0.25, 0.0))
    assert not det._plausible(Box(0.1, 0.1, 0.2, 0.6, 3.0))  # twice the tallest x1.5
    assert not det._plausible(Box(0.1, 0.1, 0.02, 0.1, 3.0))
    motion = np.zeros((90, 160), np.uint8)
    motion[0:45, 0:80] = 255
    assert _moving_share(motion, Box(0.0, 0.0, 0.5, 0.5)) == pytest.approx(1.0)
    assert _moving_share(motion, Box(0.5, 0.5, 0.5, 0.5)) == 0.0
    assert _moving_share(motion, Box(0.25, 0.0, 0.5, 0.5)) == pytest.approx(0.5, abs=0.02)
