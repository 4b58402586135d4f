"""Capture core without Kafka: sampling, latest-wins queue, backoff, encoding, headers,
and the capture thread on a real (and a truncated) video file."""

from __future__ import annotations

import random
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ioc.config import load_settings
from ioc.config._cameras import ReconnectSettings
from ioc.errors import ConfigError
from vision.capture import (
    Backoff,
    CameraCapture,
    EncodedFrame,
    FrameSampler,
    LatestQueue,
    encode_frame,
    frame_headers,
    output_size,
    parse_frame_headers,
)

CLIP = "video/traffic_cctv/motorway_bgslibrary_video02.avi"


@given(src_fps=st.floats(1, 60), target=st.floats(0.5, 30), seconds=st.integers(5, 30))
def test_sampler_keeps_about_the_target_rate(src_fps, target, seconds):
    s = FrameSampler(target)
    n_src = int(src_fps * seconds)
    kept = [i / src_fps for i in range(n_src) if s.offer(i / src_fps)]
    expected = min(src_fps, target) * seconds
    # Quantised to source frames: never more than ~25% over the target, and not starved.
    assert len(kept) <= expected * 1.25 + 1
    assert len(kept) >= min(expected * 0.6, n_src) - 1
    gaps = np.diff(kept) if len(kept) > 1 else np.array([1.0])
    assert gaps.min() >= min(0.8 / target, 1 / src_fps) - 1e-9


def test_sampler_restarts_after_a_gap_instead_of_bursting():
    s = FrameSampler(5)
    assert s.offer(0.0)
    assert s.offer(10.0)  # 10 s silence
    assert not s.offer(10.04)
    assert s.offer(10.2)


def test_sampler_rejects_bad_fps():
    with pytest.raises(ValueError, match="fps must be a positive number"):
        FrameSampler(0)


@given(st.lists(st.integers(), max_size=50), st.integers(1, 8))
def test_latest_queue_is_bounded_keeps_newest_and_counts_drops(items, size):
    q = LatestQueue(size)
    for x in items:
        q.put(x)
    assert len(q) == min(len(items), size)
    assert q.dropped == max(0, len(items) - size)
    out = [q.get(0) for _ in range(len(q))]
    assert out == items[-size:] if items else out == []
    assert q.get(0.01) is None


def test_backoff_grows_caps_and_jitters():
    b = Backoff(ReconnectSettings(initial_s=0.5, max_s=4, multiplier=2, jitter=0.2),
                rng=random.Random(1))
    delays = [b.next_delay() for _ in range(8)]
    bases = [0.5, 1, 2, 4, 4, 4, 4, 4]
    for d, base in zip(delays, bases, strict=True):
        assert base * 0.8 <= d <= base
    assert len(set(delays)) == len(delays)  # jittered
    b.reset()
    assert b.next_delay() <= 0.5


def test_output_size_keeps_aspect_and_never_upscales():
    assert output_size(1280, 720, 640, None) == (640, 360)
    assert output_size(320, 240, 640, None) == (320, 240)
    assert output_size(768, 576, 640, 360) == (640, 360)
    assert output_size(321, 241, 640, None) == (320, 240)
    with pytest.raises(ValueError):
        output_size(0, 10, 640, None)


def test_encode_frame_resizes_and_decodes_back():
    img = np.random.default_rng(0).integers(0, 255, (720, 1280, 3), dtype=np.uint8)
    jpeg = encode_frame(img, 640, None, 70)
    assert jpeg is not None and jpeg[:2] == b"\xff\xd8"
    back = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert back.shape == (360, 640, 3)


def test_headers_round_trip_and_bad_headers_are_lenient():
    f = EncodedFrame("c1", 42, 1700000000.125, 640, 360, b"x")
    m = parse_frame_headers(frame_headers(f), fallback_ts=0)
    assert (m.seq, m.ts, m.width, m.height, m.problem) == (42, 1700000000.125, 640, 360, None)
    m = parse_frame_headers({"seq": b"nope", "ts": b"nan"}, fallback_ts=5.0)
    assert m.seq == -1 and m.ts == 5.0 and "seq" in (m.problem or "")
    m = parse_frame_headers(None, fallback_ts=7.0)
    assert m.ts == 7.0 and m.problem


def test_config_overrides_and_validation():
    s = load_settings(env={}, overrides={"cameras": {"fps": 4, "cameras": [
        {"id": "a", "url": "/x.avi", "loop": True},
        {"id": "b", "url": "rtsp://u:secret@h/s", "fps": 2, "width": 320},
    ]}})
    a, b = s.cameras.effective("a"), s.cameras.effective("b")
    assert (a.fps, a.width, a.kind, a.loop) == (4, 640, "file", True)
    assert (b.fps, b.width, b.kind) == (2, 320, "rtsp")
    assert "secret" not in s.cameras.cameras[1].redacted_url()
    assert s.cameras.effective("unknown").fps == 4
    with pytest.raises(ConfigError) as ei:
        load_settings(env={}, overrides={"cameras": {"cameras": [
            {"id": "a", "url": "rtsp://h/s", "loop": True},
            {"id": "a", "url": "/y.avi", "colour": 1},
        ], "reconnect": {"initial_s": 5, "max_s": 1}}})
    text = str(ei.value)
    assert "loop is for file sources" in text
    assert "cameras.cameras.1.colour: unknown key" in text
    assert "max_s (1.0) must be >= initial_s (5.0)" in text


def _capture(shared_data: Path | str, **over) -> CameraCapture:
    cams = {"id": "c", "url": str(shared_data), "loop": True, "fps": 25}
    cams.update(over)
    s = load_settings(env={}, overrides={"cameras": {"cameras": [cams], "reconnect": {
        "initial_s": 0.05, "max_s": 0.2}}})
    return CameraCapture(s.cameras.effective("c"), LatestQueue(1000), reconnect=s.cameras.reconnect)


def test_capture_truncated_file_loops_without_crashing(shared_data, tmp_path):
    data = (shared_data / CLIP).read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: len(data) // 10])  # ~70 of 748 frames, cut mid-frame
    cap = _capture(cut)
    cap.start()
    deadline = time.monotonic() + 20
    while cap.stats.loops < 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    cap.stop()
    cap.join(5)
    assert not cap.is_alive()
    assert cap.stats.loops >= 1, cap.stats.as_dict()
    assert cap.stats.opens >= 2
    first = cap.queue.get(0)
    assert isinstance(first, EncodedFrame) and first.width == 320 and first.jpeg[:2] == b"\xff\xd8"


def test_capture_of_garbage_file_backs_off_and_counts(tmp_path):
    junk = tmp_path / "junk.avi"
    junk.write_bytes(np.random.default_rng(1).bytes(50_000))
    cap = _capture(junk)
    cap.start()
    time.sleep(1.0)
    cap.stop()
    cap.join(5)
    st_ = cap.stats
    assert st_.open_failures + st_.read_failures >= 2, st_.as_dict()
    assert cap.backoff.failures >= 2
    assert len(cap.queue) == 0
