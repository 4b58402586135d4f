"""Config validation, tamper on synthetic views, thumbnails, people detector set-up, JSON."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import orjson
import pytest
from pydantic import ValidationError

from ioc.config import CamerasSettings
from ioc.errors import ConfigError, IOCError
from vision import AnalyticsConfig, CameraAnalyzer
from vision.config import PeopleConfig, TamperConfig
from vision.people import make_people_detector
from vision.tamper import TamperDetector

W, H = 320, 180


def _view(seed: int = 7) -> np.ndarray:
    """A textured 'street': blocks and lines at several scales."""
    rng = np.random.default_rng(seed)
    img = cv2.resize(rng.integers(40, 200, (18, 32, 3), dtype=np.uint8), (W, H),
                     interpolation=cv2.INTER_NEAREST)
    for _ in range(40):
        p = (int(rng.integers(0, W)), int(rng.integers(0, H)))
        q = (int(rng.integers(0, W)), int(rng.integers(0, H)))
        cv2.line(img, p, q, tuple(int(v) for v in rng.integers(0, 255, 3)), 2)
    return img


def _gray160(frame: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(cv2.resize(frame, (160, 90), interpolation=cv2.INTER_AREA),
                        cv2.COLOR_BGR2GRAY)


def _tamper_run(change, frames: int = 40, onset: int = 20) -> tuple[dict[str, int], TamperDetector]:
    """Frames of a slightly noisy view; ``change`` applied from ``onset``.

    Returns, per raised kind, the number of frames from onset to the alarm.
    """
    rng = np.random.default_rng(0)
    base = _view()
    td = TamperDetector(TamperConfig())
    raised: dict[str, int] = {}
    for i in range(frames):
        f = cv2.add(base, rng.integers(0, 6, base.shape, dtype=np.uint8))
        if i >= onset:
            f = change(f)
        st = td.detect(_gray160(f), i / 5)
        if i < TamperConfig().reference_frames:
            assert not st.ready and not st.changed  # warm-up raises nothing
        for e in st.changed:
            if e.active:
                raised.setdefault(e.kind, i - onset)
    return raised, td


def _shift(f: np.ndarray, dx: float) -> np.ndarray:
    m = np.float32([[1, 0, dx * W], [0, 1, 0]])
    return cv2.warpAffine(f, m, (W, H), borderMode=cv2.BORDER_REFLECT)


@pytest.mark.parametrize(
    ("name", "change", "kind"),
    [
        ("black", lambda f: np.zeros_like(f), "covered"),
        ("hand", lambda f: cv2.rectangle(f.copy(), (0, 0), (W, int(H * 0.85)), (30, 25, 20), -1),
         "covered"),
        ("blur", lambda f: cv2.GaussianBlur(f, (0, 0), 4), "defocused"),
        ("shift", lambda f: _shift(f, 0.08), "moved"),
    ],
)
def test_tamper_raised_within_10_frames(name: str, change, kind: str) -> None:
    raised, _ = _tamper_run(change)
    assert kind in raised, f"{name}: nothing raised ({raised})"
    assert raised[kind] < 10, f"{name}: raised after {raised[kind]} frames"
    assert set(raised) == {kind}, f"{name}: also raised {set(raised) - {kind}}"


@pytest.mark.parametrize("scale", [0.5, 1.4])
def test_global_brightness_change_raises_nothing(scale: float) -> None:
    raised, _ = _tamper_run(lambda f: cv2.convertScaleAbs(f, alpha=scale))
    assert raised == {}


def test_tamper_clears_when_view_returns() -> None:
    td = TamperDetector(TamperConfig())
    base = _view()
    events = []
    for i in range(60):
        f = np.zeros_like(base) if 20 <= i < 30 else base
        events += [(e.kind, e.active, i) for e in td.detect(_gray160(f), i / 5).changed]
    assert [(k, a) for k, a, _ in events] == [("covered", True), ("covered", False)]
    assert events[1][2] - 30 < TamperConfig().clear_frames + 1


def test_config_rejects_points_outside_unit_square() -> None:
    with pytest.raises(ValidationError) as err:
        AnalyticsConfig.model_validate({"zones": [{"name": "z", "polygon": [[0, 0], [1.2, 0],
                                                                            [1, 1]]}]})
    assert "zones.0.polygon" in str(err.value).replace("\n", " ").replace(" ", "") or \
        "polygon" in str(err.value)
    assert "1.2" in str(err.value)


def test_config_rejects_unknown_keys_and_duplicates() -> None:
    with pytest.raises(ValidationError, match="extra"):
        AnalyticsConfig.model_validate({"motion": {"treshold": 3}})
    zone = {"name": "a", "polygon": [[0, 0], [1, 0], [1, 1]]}
    with pytest.raises(ValidationError, match="unique"):
        AnalyticsConfig.model_validate({"zones": [zone, zone]})
    with pytest.raises(ValidationError, match="dnn"):
        PeopleConfig(enabled=True, detector="dnn")


def test_config_embeds_in_camera_settings() -> None:
    s = CamerasSettings.model_validate({"analytics": {"thumbnail": {"width": 200}}})
    assert s.analytics.thumbnail.width == 200
    assert isinstance(s.analytics, AnalyticsConfig)


def test_missing_onnx_model_is_a_config_error(tmp_path: Path) -> None:
    cfg = AnalyticsConfig.model_validate(
        {"people": {"enabled": True, "detector": "dnn", "dnn": {"model": str(tmp_path / "no.onnx")}}}
    )
    with pytest.raises(ConfigError) as err:
        CameraAnalyzer("cam", cfg)
    assert isinstance(err.value, IOCError)
    assert "people.dnn.model" in str(err.value) and "no.onnx" in str(err.value)


def test_unreadable_onnx_model_is_a_config_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(ConfigError, match="not a loadable ONNX"):
        make_people_detector(PeopleConfig.model_validate(
            {"enabled": True, "detector": "dnn", "dnn": {"model": str(bad)}}))


def test_hog_detector_finds_nothing_in_an_empty_view() -> None:
    det = make_people_detector(PeopleConfig(enabled=True))
    assert det is not None
    assert det.detect(np.full((240, 320, 3), 128, np.uint8)) == []
    assert det.detect(np.full((40, 30, 3), 128, np.uint8)) == []  # smaller than a window


def _cfg_thumb(**thumb: object) -> AnalyticsConfig:
    return AnalyticsConfig.model_validate({
        "zones": [{"name": "door", "polygon": [[0.1, 0.1], [0.4, 0.1], [0.4, 0.9], [0.1, 0.9]]}],
        "lines": [{"name": "gate", "a": [0.5, 1.0], "b": [0.5, 0.0]}],
        "thumbnail": thumb,
    })


def test_thumbnail_width_rate_and_overlays() -> None:
    frame = _view()
    plain = CameraAnalyzer("c", _cfg_thumb(width=160, every_n_frames=3, overlays=False))
    drawn = CameraAnalyzer("c", _cfg_thumb(width=160, every_n_frames=3, overlays=True))
    got = []
    for i in range(7):
        a, b = plain.process(frame, i), drawn.process(frame, i)
        got.append(a.thumbnail is not None)
        assert (a.thumbnail is None) == (b.thumbnail is None)
    assert got == [True, False, False, True, False, False, True]
    img_plain = cv2.imdecode(np.frombuffer(a.thumbnail or b"", np.uint8), cv2.IMREAD_COLOR)
    img_drawn = cv2.imdecode(np.frombuffer(b.thumbnail or b"", np.uint8), cv2.IMREAD_COLOR)
    assert img_plain.shape == img_drawn.shape == (90, 160, 3)
    # The counting line is drawn at x = 0.5: pixels there differ from the plain thumbnail.
    col = np.abs(img_drawn[:, 78:82].astype(int) - img_plain[:, 78:82].astype(int)).mean()
    assert col > 10


def test_thumbnail_quality_changes_size() -> None:
    frame = _view()
    lo = CameraAnalyzer("c", _cfg_thumb(quality=20)).process(frame, 0).thumbnail
    hi = CameraAnalyzer("c", _cfg_thumb(quality=95)).process(frame, 0).thumbnail
    assert lo is not None and hi is not None and len(lo) < len(hi)


def test_result_json_has_no_image_bytes() -> None:
    an = CameraAnalyzer("cam-9", _cfg_thumb())
    r = an.process(_view(), 12.5)
    assert r.thumbnail is not None
    doc = r.to_json()
    raw = orjson.dumps(doc)  # must be JSON-serializable as is
    assert r.thumbnail[:20] not in raw
    assert doc["camera"] == "cam-9" and doc["ts"] == 12.5 and doc["has_thumbnail"] is True
    assert doc["counts"] == {"gate": {"in": 0, "out": 0}}
    assert set(doc["motion"]["zones"]) == {"door"}
    assert doc["warming_up"] is True


def test_frame_size_change_resets_state() -> None:
    an = CameraAnalyzer("c", AnalyticsConfig())
    for i in range(25):
        an.process(_view(), i)
    assert not an.process(_view(), 25).warming_up
    r = an.process(cv2.resize(_view(), (640, 360)), 26)
    assert r.warming_up and an.stats.resets == 1
