"""Bad input never crashes the analytics: it is skipped and counted with a reason."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ioc.errors import InvalidFrame
from vision import SKIP_REASONS, AnalyticsConfig, CameraAnalyzer, check_frame, decode_jpeg


def _jpeg(w: int = 64, h: int = 48, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(".jpg", img)
    assert ok
    return buf.tobytes()


@pytest.fixture
def analyzer() -> CameraAnalyzer:
    return CameraAnalyzer("cam-test", AnalyticsConfig())


def test_decode_valid_jpeg_gives_bgr() -> None:
    img = decode_jpeg(_jpeg(64, 48))
    assert img.shape == (48, 64, 3) and img.dtype == np.uint8


def test_decode_reduced() -> None:
    assert decode_jpeg(_jpeg(128, 96), reduce=2).shape == (48, 64, 3)
    with pytest.raises(ValueError, match="reduce must be"):
        decode_jpeg(_jpeg(), reduce=3)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (b"GIF89a....", "not_jpeg"),
        (_jpeg()[: len(_jpeg()) // 2], "truncated"),
        (_jpeg()[:2], "truncated"),
        (b"\xff\xd8" + b"\x00" * 200 + b"\xff\xd9", "corrupt_jpeg"),
        (_jpeg(8, 8), "bad_size"),
        (_jpeg(200, 1), "bad_size"),
        (_jpeg(1, 200), "bad_size"),
    ],
    ids=["empty", "not-jpeg", "truncated-half", "truncated-soi-only", "garbage-between-markers",
         "8x8", "200x1", "1x200"],
)
def test_decode_rejects_with_reason(data: bytes, reason: str) -> None:
    with pytest.raises(InvalidFrame) as err:
        decode_jpeg(data)
    assert err.value.reason == reason
    assert err.value.reason in SKIP_REASONS
    assert str(err.value)  # says what arrived


def test_truncated_real_file_is_skipped_and_counted(analyzer: CameraAnalyzer) -> None:
    data = _jpeg(320, 240, seed=3)
    for cut in (10, 100, len(data) // 3, len(data) - 5):
        r = analyzer.process_jpeg(data[:cut], 1.0)
        assert r.skipped == "truncated", cut
        assert r.thumbnail is None
    assert analyzer.stats.skipped["truncated"] == 4
    assert analyzer.stats.analyzed == 0
    assert analyzer.process_jpeg(data, 2.0).skipped is None
    assert analyzer.stats.analyzed == 1


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (np.zeros((0, 0, 3), np.uint8), "empty"),
        (np.zeros((0, 640, 3), np.uint8), "empty"),
        (np.zeros((1, 640, 3), np.uint8), "bad_size"),
        (np.zeros((480, 1), np.uint8), "bad_size"),
        (np.zeros((48, 64, 2), np.uint8), "bad_channels"),
        (np.zeros((48, 64, 3, 1), np.uint8), "bad_channels"),
        (np.zeros((48, 64, 3), np.float32), "bad_dtype"),
        (np.zeros((48, 64, 3), np.uint16), "bad_dtype"),
        (np.zeros((9000, 20), np.uint8), "too_large"),
    ],
)
def test_process_skips_bad_arrays(analyzer: CameraAnalyzer, frame: np.ndarray, reason: str) -> None:
    r = analyzer.process(frame, 1.0)
    assert r.skipped == reason
    assert analyzer.stats.skipped[reason] == 1
    assert r.to_json()["skipped"] == reason


def test_gray_and_bgra_frames_are_analyzed(analyzer: CameraAnalyzer) -> None:
    for i, frame in enumerate([np.full((48, 64), 100, np.uint8),
                               np.full((48, 64, 1), 100, np.uint8),
                               np.full((48, 64, 4), 100, np.uint8)]):
        r = analyzer.process(frame, float(i))
        assert r.skipped is None
        assert (r.width, r.height) == (64, 48)
    assert check_frame(np.zeros((20, 30, 4), np.uint8)).shape == (20, 30, 3)


def test_timestamps(analyzer: CameraAnalyzer) -> None:
    frame = np.zeros((48, 64, 3), np.uint8)
    assert analyzer.process(frame, 10.0).skipped is None
    assert analyzer.process(frame, 9.0).skipped == "out_of_order"
    assert analyzer.process(frame, float("nan")).skipped == "bad_ts"
    assert analyzer.process(frame, 10.0).skipped is None  # equal time is fine
    assert dict(analyzer.stats.skipped) == {"out_of_order": 1, "bad_ts": 1}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.one_of(
    st.binary(max_size=2048),
    st.binary(max_size=512).map(lambda b: b"\xff\xd8" + b),
    st.binary(max_size=512).map(lambda b: b"\xff\xd8" + b + b"\xff\xd9"),
    st.integers(0, 2000).map(lambda n: _jpeg(64, 48)[:n]),
    st.tuples(st.integers(0, 600), st.binary(min_size=1, max_size=64)).map(
        lambda t: _jpeg(64, 48)[: t[0]] + t[1] + _jpeg(64, 48)[t[0] + len(t[1]):]),
))
def test_any_bytes_never_raise(analyzer: CameraAnalyzer, data: bytes) -> None:
    r = analyzer.process_jpeg(data, 1.0)
    if r.skipped is not None:
        assert r.skipped in SKIP_REASONS
        assert r.skipped != "error", "an analyzer crashed on decodable input"
    else:
        assert r.width >= 16 and r.height >= 16
    assert analyzer.stats.frames == analyzer.stats.analyzed + sum(analyzer.stats.skipped.values())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(frame=hnp.arrays(
    dtype=st.sampled_from([np.uint8, np.uint16, np.float32]),
    shape=hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=40),
))
def test_any_array_never_raises(analyzer: CameraAnalyzer, frame: np.ndarray) -> None:
    r = analyzer.process(frame, 1.0)
    assert r.skipped is None or r.skipped in SKIP_REASONS
    assert r.skipped != "error"


def test_numpy_and_bad_timestamps(analyzer: CameraAnalyzer) -> None:
    frame = np.zeros((48, 64, 3), np.uint8)
    assert analyzer.process(frame, np.int64(3)).ts == 3.0  # type: ignore[arg-type]
    assert analyzer.process(frame, "soon").skipped == "bad_ts"  # type: ignore[arg-type]
    assert analyzer.process(frame, float("inf")).skipped == "bad_ts"
