"""Motion timing in seconds: warm-up and MOG2 history follow the measured frame rate."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from vision import AnalyticsConfig
from vision.geometry import SceneRasters
from vision.motion import MotionDetector, history_frames

W, H = 64, 48


def _run(fps: float, seconds: float, cfg: AnalyticsConfig) -> tuple[MotionDetector, list[bool]]:
    md = MotionDetector(cfg.motion)
    scene = SceneRasters.build(cfg, W, H)
    rng = np.random.default_rng(1)
    warming = []
    for i in range(int(seconds * fps)):
        img = rng.integers(0, 255, (H, W, 3), dtype=np.uint8)
        warming.append(md.detect(img, scene, 100.0 + i / fps).warming_up)
    return md, warming


@settings(max_examples=40, deadline=None)
@given(fps=st.floats(2.0, 30.0), history_s=st.floats(2.0, 120.0))
def test_history_in_frames_follows_the_frame_rate(fps: float, history_s: float) -> None:
    cfg = AnalyticsConfig.model_validate({"motion": {"history_s": history_s, "warmup_s": 0}})
    md, _ = _run(fps, 3.0, cfg)
    assert abs(md.interval_s - 1 / fps) < 1e-6
    want = history_frames(history_s, 1 / fps)
    assert abs(md.history - want) <= 0.1 * want + 1


@settings(max_examples=30, deadline=None)
@given(fps=st.sampled_from([2.0, 5.0, 15.0, 30.0]), warmup_s=st.floats(0.5, 4.0))
def test_warm_up_lasts_the_same_seconds_at_any_rate(fps: float, warmup_s: float) -> None:
    cfg = AnalyticsConfig.model_validate({"motion": {"warmup_s": warmup_s}})
    _, warming = _run(fps, warmup_s + 1.0, cfg)
    ts = [i / fps for i in range(len(warming))]
    # Frames at the boundary itself may go either way (timestamps are floats).
    assert all(w == (t < warmup_s) for w, t in zip(warming, ts, strict=True)
               if abs(t - warmup_s) > 1e-6)
    assert warming[0] and not warming[-1]


def test_history_frames_bounds() -> None:
    assert history_frames(10.0, 0.2) == 50
    assert history_frames(10.0, 1 / 30) == 300
    assert history_frames(1.0, 1.0) == 10          # MOG2 needs a few frames
    assert history_frames(3600.0, 1e-9) == 100_000  # a bogus interval is bounded
