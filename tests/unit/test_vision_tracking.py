"""Blob tracking and line counting on synthetic scenes (a box moving over a textured floor)."""

from __future__ import annotations

import itertools
from collections.abc import Iterable

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vision import AnalyticsConfig, CameraAnalyzer
from vision.config import CountingLine, PeopleTrackingConfig, TrackingConfig
from vision.geometry import line_side
from vision.people import PeopleDetector
from vision.result import Box, LineCount
from vision.tracking import Blob, BlobTracker, LineCounter, find_blobs

W, H = 320, 180


def _floor(seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(60, 160, (H // 8, W // 8, 3), dtype=np.uint8)
    return cv2.resize(small, (W, H), interpolation=cv2.INTER_CUBIC)


def _scene(xs: Iterable[float], *, y: float = 0.5, size: tuple[int, int] = (28, 20),
           warm: int = 30) -> list[np.ndarray]:
    """Frames: ``warm`` empty frames, then a bright box centred at each normalized x."""
    floor = _floor()
    frames = [floor.copy() for _ in range(warm)]
    bw, bh = size
    for x in xs:
        f = floor.copy()
        cx, cy = round(x * W), round(y * H)
        cv2.rectangle(f, (cx - bw // 2, cy - bh // 2), (cx + bw // 2, cy + bh // 2),
                      (250, 250, 250), -1)
        frames.append(f)
    return frames


def _cfg(direction: str = "left_to_right") -> AnalyticsConfig:
    # Line drawn bottom to top at x = 0.5: its right side is the right half of the frame.
    return AnalyticsConfig.model_validate({
        "lines": [{"name": "gate", "a": [0.5, 1.0], "b": [0.5, 0.0], "direction": direction}],
        "zones": [{"name": "left", "polygon": [[0, 0], [0.5, 0], [0.5, 1], [0, 1]]}],
        "tamper": {"enabled": False},
        "thumbnail": {"enabled": False},
    })


def _run(cfg: AnalyticsConfig, frames: list[np.ndarray]) -> CameraAnalyzer:
    an = CameraAnalyzer("cam", cfg)
    for i, f in enumerate(frames):
        r = an.process(f, i * 0.2)
        assert r.skipped is None
        # Nothing may be counted while the background is still being learned.
        if r.warming_up:
            assert r.crossings["gate"].in_ == r.crossings["gate"].out == 0
    return an


def test_line_side_convention() -> None:
    ln = CountingLine(name="l", a=(0.0, 0.5), b=(1.0, 0.5))
    assert line_side(ln, 0.5, 0.9) > 0  # below a left-to-right line is its right side
    assert line_side(ln, 0.5, 0.1) < 0


def test_crossing_left_to_right_counts_in() -> None:
    an = _run(_cfg(), _scene(np.linspace(0.1, 0.9, 30)))
    assert an.counter is not None
    c = an.counter.totals["gate"]
    assert (c.in_, c.out) == (1, 0)


def test_crossing_right_to_left_counts_out() -> None:
    an = _run(_cfg(), _scene(np.linspace(0.9, 0.1, 30)))
    assert an.counter is not None
    assert (an.counter.totals["gate"].in_, an.counter.totals["gate"].out) == (0, 1)


def test_direction_setting_swaps_in_and_out() -> None:
    an = _run(_cfg("right_to_left"), _scene(np.linspace(0.1, 0.9, 30)))
    assert an.counter is not None
    assert (an.counter.totals["gate"].in_, an.counter.totals["gate"].out) == (0, 1)


def test_object_lingering_on_the_line_is_counted_once() -> None:
    # Approach, stop on the line for 3 s at 5 fps with a small jitter (like a queued car
    # whose blob breathes), then leave to the right.
    stop = [0.5 + 0.006 * ((-1) ** i) for i in range(15)]
    xs = [*np.linspace(0.15, 0.48, 10), *stop, *np.linspace(0.52, 0.9, 10)]
    an = _run(_cfg(), _scene(xs))
    assert an.counter is not None
    c = an.counter.totals["gate"]
    assert (c.in_, c.out) == (1, 0)


def test_track_jumping_back_and_forth_over_the_line_counts_once() -> None:
    from vision.tracking import Blob

    cfg = TrackingConfig(min_age_s=0.0, max_speed=10.0, max_accel=20.0)
    ln = CountingLine(name="g", a=(0.5, 1.0), b=(0.5, 0.0))
    tr, lc = BlobTracker(cfg), LineCounter((ln,), cfg)
    xs = [0.1, 0.2, 0.3, 0.4, *[0.5 + (0.05 if i % 2 else -0.05) for i in range(20)], 0.7]
    per_frame = []
    for i, x in enumerate(xs):
        blob = Blob(x, 0.5, (x - 0.01, 0.49, 0.02, 0.02), 0.0004)
        per_frame.append(lc.update(tr.update([blob], i * 0.2))["g"])
    assert (lc.totals["g"].in_, lc.totals["g"].out) == (1, 0)
    assert sum(c.in_ for c in per_frame) == 1


def test_object_that_turns_back_before_the_line_is_not_counted() -> None:
    xs = [*np.linspace(0.1, 0.45, 12), *np.linspace(0.45, 0.1, 12)]
    an = _run(_cfg(), _scene(xs))
    assert an.counter is not None
    assert (an.counter.totals["gate"].in_, an.counter.totals["gate"].out) == (0, 0)


def test_two_objects_in_opposite_directions() -> None:
    floor = _floor()
    frames = [floor.copy() for _ in range(30)]
    for a, b in zip(np.linspace(0.1, 0.9, 30), np.linspace(0.9, 0.1, 30), strict=True):
        f = floor.copy()
        for x, y in ((a, 0.25), (b, 0.75)):
            cx, cy = round(x * W), round(y * H)
            cv2.rectangle(f, (cx - 14, cy - 10), (cx + 14, cy + 10), (250, 250, 250), -1)
        frames.append(f)
    an = _run(_cfg(), frames)
    assert an.counter is not None
    assert (an.counter.totals["gate"].in_, an.counter.totals["gate"].out) == (1, 1)


def test_motion_zone_ratio_follows_the_object() -> None:
    an = CameraAnalyzer("cam", _cfg())
    frames = _scene([0.2] * 5 + [0.8] * 5)
    results = [an.process(f, i * 0.2) for i, f in enumerate(frames)]
    assert results[31].motion.zones["left"] > 0.01 and "left" in results[31].motion.active
    assert results[-1].motion.ratio > 0.005
    # 0.8 lies outside the 'left' zone; the box left its old spot, which soon settles.
    assert results[-1].motion.zones["left"] < results[31].motion.zones["left"]


def test_tracker_bounds_live_tracks_and_counts_drops() -> None:
    tr = BlobTracker(TrackingConfig(max_tracks=3))
    mask = np.zeros((H, W), np.uint8)
    for i in range(6):
        cv2.rectangle(mask, (10 + i * 50, 50), (30 + i * 50, 80), 255, -1)
    blobs = find_blobs(mask, 0.001)
    assert len(blobs) == 6
    tr.update(blobs, 0.0)
    assert len(tr.tracks) == 3 and tr.dropped == 3


@settings(max_examples=60, deadline=None)
@given(path=st.lists(st.floats(0.0, 1.0) | st.sampled_from([0.3, 0.5, 0.7]), min_size=2,
                    max_size=40))
def test_one_track_counts_at_most_once_per_line(path: list[float]) -> None:
    """Whatever path one tracked object takes, each line counts it at most once."""
    from vision.tracking import Track

    cfg = TrackingConfig(min_age_s=0.0)
    ln = CountingLine(name="g", a=(0.5, 1.0), b=(0.5, 0.0))
    lc = LineCounter((ln,), cfg)
    # A straight track already confirmed (it travelled far), so only the path decides.
    t = Track(1, path[0], 0.5, (0, 0, 0, 0), hits=2, x0=0.5, y0=0.0, path=0.5)
    t.state[:2] = (0.5, 0.5)
    for x in path:
        t.cx = x
        t.hits += 1
        lc.update([t])
    assert lc.totals["g"].in_ + lc.totals["g"].out <= 1
    # Oracle: the sides of the points clearly off the line (band 0.01, plus rounding).
    sides = [x > 0.5 for x in path if abs(x - 0.5) > 0.0101]
    ambiguous = any(0.0099 <= abs(x - 0.5) <= 0.0101 for x in path)
    if not ambiguous:
        expected = int(any(a != b for a, b in itertools.pairwise(sides)))
        assert lc.totals["g"].in_ + lc.totals["g"].out == expected


@pytest.mark.parametrize("bad", [{"a": [0.5, 0.5], "b": [0.5, 0.5]}, {"a": [1.5, 0], "b": [0, 0]}])
def test_bad_lines_are_rejected(bad: dict[str, list[float]]) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as err:
        CountingLine.model_validate({"name": "x", **bad})
    assert "line" in str(err.value)


def test_masked_area_reports_no_motion_and_no_crossing() -> None:
    cfg = AnalyticsConfig.model_validate({
        **_cfg().model_dump(),
        "masks": [{"name": "all-but-top", "polygon": [[0, 0.2], [1, 0.2], [1, 1], [0, 1]]}],
    })
    an = _run(cfg, _scene(np.linspace(0.1, 0.9, 30)))  # the box moves at y = 0.5: masked
    assert an.counter is not None
    assert (an.counter.totals["gate"].in_, an.counter.totals["gate"].out) == (0, 0)
    r = an.process(_scene([0.3], warm=0)[0], 99.0)
    assert r.motion.ratio == 0.0


def test_fast_object_at_5_fps_is_tracked_and_counted_once() -> None:
    # 0.14 of the width per sample: faster than the old per-frame jump limit (0.08).
    an = _run(_cfg(), _scene(np.arange(0.08, 0.95, 0.14)))
    assert an.counter is not None
    assert (an.counter.totals["gate"].in_, an.counter.totals["gate"].out) == (1, 0)


@pytest.mark.parametrize("fps", [2, 5, 15, 30])
def test_same_motion_counts_the_same_at_every_frame_rate(fps: int) -> None:
    # 0.3 widths per second, 3 s of travel: the same in seconds whatever the sampling.
    n = 3 * fps
    xs = 0.05 + 0.3 * np.arange(n) / fps
    floor = _floor()
    frames = [floor.copy() for _ in range(5 * fps)]  # warm-up (seconds)
    frames += _scene(xs, warm=0)
    an = CameraAnalyzer("cam", _cfg())
    for i, f in enumerate(frames):
        assert an.process(f, i / fps).skipped is None
    assert an.counter is not None
    assert (an.counter.totals["gate"].in_, an.counter.totals["gate"].out) == (1, 0)


def test_path_beside_the_end_of_the_line_segment_is_not_counted() -> None:
    cfg = AnalyticsConfig.model_validate({
        **_cfg().model_dump(),
        "lines": [{"name": "gate", "a": [0.5, 1.0], "b": [0.5, 0.6]}],  # lower 40% only
    })
    an = _run(cfg, _scene(np.linspace(0.1, 0.9, 30), y=0.3))
    assert an.counter is not None
    assert (an.counter.totals["gate"].in_, an.counter.totals["gate"].out) == (0, 0)


def test_scene_cut_resets_tracks_instead_of_counting() -> None:
    # An edited clip: one view with a box left of the line, then a cut to another view
    # whose texture differs everywhere, with a box right of the line.
    other = _floor(seed=7)
    frames = _scene([0.3] * 10)
    for _ in range(10):
        f = other.copy()
        cv2.rectangle(f, (200, 80), (228, 100), (250, 250, 250), -1)
        frames.append(f)
    an = _run(_cfg(), frames)
    assert an.counter is not None and an.tracker is not None
    assert (an.counter.totals["gate"].in_, an.counter.totals["gate"].out) == (0, 0)
    assert an.tracker.resets >= 1


def test_blobs_that_jump_far_after_a_long_gap_are_new_tracks() -> None:
    from vision.tracking import Blob

    cfg = TrackingConfig()
    tr = BlobTracker(cfg)
    for i in range(4):  # a parked object (seen, not moving)
        tr.update([Blob(0.3, 0.5, (0.28, 0.48, 0.04, 0.04), 0.0016)], i * 0.2)
    (first,) = tr.tracks
    tr.update([Blob(0.9, 0.1, (0.88, 0.08, 0.04, 0.04), 0.0016)], 1.0)
    assert first in tr.tracks and len(tr.tracks) == 2  # not matched: a new track


@pytest.mark.parametrize(("old", "new"), [("max_distance", "max_speed"),
                                          ("max_missed", "max_missed_s"),
                                          ("min_hits", "min_age_s")])
def test_frame_based_tracking_keys_are_refused_naming_the_new_key(old: str, new: str) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as err:
        AnalyticsConfig.model_validate({"tracking": {old: 5}})
    assert f"'{old}'" in str(err.value) and f"'{new}'" in str(err.value)


# --- people: tracks of detector boxes by foot point -------------------------------------


def _feet(x: float, y: float, h: float = 0.2) -> Blob:
    w = h * 0.4
    return Blob(x, y, (x - w / 2, y - h, w, h), w * h)


def _people_lines() -> tuple[CountingLine, ...]:
    # Drawn bottom to top: walking to the right crosses it left to right ('in').
    return (CountingLine(name="gate", a=(0.5, 1.0), b=(0.5, 0.0)),)


def test_overlapping_person_boxes_are_two_tracks_and_two_crossings() -> None:
    """Two walkers side by side, the farther one's box mostly inside the nearer one's:
    blob logic would call it a fragment; the people tracker keeps both."""
    cfg = PeopleTrackingConfig()
    tr = BlobTracker(cfg, fragments=False)
    lc = LineCounter(_people_lines(), cfg)
    for i in range(12):
        x = 0.3 + 0.04 * i
        lc.update(tr.update([_feet(x, 0.8, 0.3), _feet(x + 0.01, 0.75, 0.2)], float(i)))
    assert lc.totals["gate"].in_ == 2 and lc.totals["gate"].out == 0
    blob = BlobTracker(cfg)
    blob_lc = LineCounter(_people_lines(), cfg)
    for i in range(12):
        x = 0.3 + 0.04 * i
        blob_lc.update(blob.update([_feet(x, 0.8, 0.3), _feet(x + 0.01, 0.75, 0.2)],
                                   float(i)))
    assert blob_lc.totals["gate"].in_ == 1  # the blob tracker merges them


def test_walker_missed_right_after_its_first_detection_is_still_counted() -> None:
    cfg = PeopleTrackingConfig()
    tr = BlobTracker(cfg, fragments=False)
    lc = LineCounter(_people_lines(), cfg)
    for i in range(10):
        seen = [] if i == 1 else [_feet(0.40 + 0.025 * i, 0.6)]
        lc.update(tr.update(seen, float(i)))
    assert (lc.totals["gate"].in_, lc.totals["gate"].out) == (1, 0)


def test_a_confirmed_track_that_wandered_still_counts_its_first_crossing() -> None:
    """Straightness confirms a track once; a walker who strolled about before crossing
    (straightness now low) is counted."""
    cfg = TrackingConfig(max_accel=1.0)
    tr = BlobTracker(cfg, fragments=False)
    lc = LineCounter(_people_lines(), cfg)
    leg = [0.2 + 0.03 * i for i in range(5)]  # 0.2 .. 0.32 and back, twice
    xs = leg + leg[::-1] + leg + leg[::-1] + [0.2 + 0.04 * i for i in range(11)]
    for i, x in enumerate(xs):
        lc.update(tr.update([_feet(x, 0.6, 0.3)], i * 0.5))
    assert len(tr.tracks) == 1
    assert (lc.totals["gate"].in_, lc.totals["gate"].out) == (1, 0)


class _StubPeople(PeopleDetector):
    """Returns one person box walking left to right at 0.05 of the width per second."""

    def __init__(self) -> None:
        self.t = 0.0

    def detect(self, frame: np.ndarray, motion: np.ndarray | None = None) -> list[Box]:
        x = 0.2 + 0.05 * self.t
        return [Box(x - 0.03, 0.5, 0.06, 0.2, 1.0)]


def test_analyzer_counts_people_crossings_from_detections() -> None:
    cfg = AnalyticsConfig.model_validate({
        "lines": [{"name": "gate", "a": [0.5, 0.0], "b": [0.5, 1.0]}],
        "people": {"enabled": True, "interval_s": 1.0},
        "tamper": {"enabled": False}, "thumbnail": {"enabled": False}})
    an = CameraAnalyzer("cam", cfg)
    stub = _StubPeople()
    an.people = stub
    floor = _floor()
    got = [0, 0]
    for i in range(5 * 12):  # 12 s at 5 fps: the walker crosses x = 0.5 at 6 s
        stub.t = i * 0.2
        r = an.process(floor, i * 0.2)
        assert r.people is not None
        got[0] += r.people.crossings.get("gate", LineCount()).in_
        got[1] += r.people.crossings.get("gate", LineCount()).out
        if not r.people.fresh:
            assert r.people.crossings == {}
    # Line drawn top to bottom: walking left to right crosses it right to left ('out').
    assert got == [0, 1]
    assert r.people.counts["gate"].out == 1
    assert r.to_json()["people"]["counts"] == {"gate": {"in": 0, "out": 1}}
    assert an.counter is not None and an.counter.totals["gate"].out == 0  # no blob moved
