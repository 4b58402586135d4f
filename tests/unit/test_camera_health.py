"""The pure camera-health tracker, and the tile/row shapes the camera agents produce."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ioc.camera_storage import detection_rows, health_rows
from ioc.tiles import decode_tile, encode_tile
from streams.camera_health_agent import partition_for
from streams.vision_agent import camera_tile
from vision.health import CameraHealthTracker, HealthPolicy

P = HealthPolicy(offline_after_s=3, fps_window_s=5, fps_drop_ratio=0.5, fps_recover_ratio=0.8)


def feed(t: CameraHealthTracker, start: float, end: float, fps: float, cam: str = "c",
         target: float = 5.0) -> list:
    out = []
    n = int((end - start) * fps)
    for i in range(n):
        ts = start + i / fps
        out += t.observe(cam, ts, ts + 0.05, target)
        out += t.check(ts + 0.05)
    return out


def test_first_frame_online_then_offline_after_silence_then_online_again():
    t = CameraHealthTracker(P)
    ev = feed(t, 0, 10, 5)
    assert [(e.state, e.previous) for e in ev] == [("online", None)]
    assert t.check(10 + 2.0) == []  # not yet: 2 s < 3 s
    off = t.check(10 + 3.1)
    assert [(e.state, e.previous) for e in off] == [("offline", "online")]
    assert "no frame for" in off[0].reason and off[0].silent_s >= 3
    assert t.check(20) == []  # reported once
    back = t.observe("c", 30, 30.05, 5)
    assert [(e.state, e.previous) for e in back] == [("online", "offline")]


def test_fps_drop_reported_and_recovered_with_hysteresis():
    t = CameraHealthTracker(P)
    ev = feed(t, 0, 10, 5)  # healthy
    ev += feed(t, 10, 25, 1)  # drops to 1 fps (< 2.5)
    states = [(e.state, e.previous) for e in ev]
    assert states == [("online", None), ("degraded", "online")]
    deg = ev[-1]
    assert deg.fps < 2.5 and deg.target_fps == 5 and "below 50%" in deg.reason
    ev = feed(t, 25, 27, 3.5)  # 3.5 fps: between 2.5 and 4 -> stays degraded
    assert ev == []
    ev = feed(t, 27, 40, 5)
    assert [(e.state, e.previous) for e in ev] == [("online", "degraded")]


def test_no_fps_judgement_before_a_full_window():
    t = CameraHealthTracker(P)
    assert [e.state for e in feed(t, 0, 4, 1)] == ["online"]


def test_expected_camera_goes_offline_without_any_frame():
    t = CameraHealthTracker(P)
    t.expect("dead", 5, now=100)
    assert t.state("dead") is None
    assert t.check(102) == []
    ev = t.check(103.5)
    assert [(e.camera, e.state, e.previous) for e in ev] == [("dead", "offline", None)]


def test_forget_and_bound_on_cameras():
    t = CameraHealthTracker(P, max_cameras=2)
    t.observe("a", 0, 0, 5)
    t.observe("b", 0, 0, 5)
    assert t.observe("c", 0, 0, 5) == [] and t.ignored == 1
    t.forget("a")
    assert t.cameras() == ["b"]


@given(st.lists(st.tuples(st.floats(0, 100), st.booleans()), max_size=60))
def test_events_alternate_consistently(steps):
    """Whatever the arrivals, each event's previous state is the last reported state."""
    t = CameraHealthTracker(P)
    last = None
    now = 0.0
    for dt, frame in steps:
        now += dt / 10
        evs = t.observe("c", now, now, 5) if frame else t.check(now)
        for e in evs:
            assert e.previous == last and e.state != last
            last = e.state


def test_policy_validation():
    with pytest.raises(ValueError, match="fps_drop_ratio <= fps_recover_ratio"):
        HealthPolicy(fps_drop_ratio=0.9, fps_recover_ratio=0.5)


def test_camera_tile_shape_follows_the_contract():
    tile = camera_tile("cam1", ts=1700000000.5, version=3, width=320, height=240, motion=0.123456,
                       counts={"people": 2}, health="online", fps=4.987, image=b"\xff\xd8jpeg")
    back = decode_tile(encode_tile(tile))
    assert back.id == "camera:cam1" and back.kind == "camera" and back.image == b"\xff\xd8jpeg"
    assert set(back.payload) == {"camera", "width", "height", "motion", "counts", "health", "fps"}
    assert back.payload["motion"] == 0.1235 and back.payload["fps"] == 4.99


def test_partition_for_spreads_ids_over_partitions():
    # That it equals the broker-side placement is checked against the real broker in
    # tests/integration/test_cameras_e2e.py.
    assert {partition_for(f"c{i}", 4) for i in range(50)} == {0, 1, 2, 3}
    assert all(0 <= partition_for(f"c{i}", 2) < 2 for i in range(20))


def test_sink_rows_from_detection_and_health_json():
    det = {"camera": "c", "ts": 1700000000.0, "seq": 7, "skipped": None, "motion": {"ratio": 0.2},
           "people": {"total": 3}, "tracks": 1, "tamper": {"covered": True}}
    (row,) = detection_rows(b"c", orjson.dumps(det), [])
    assert row[1:8] == ("c", 7, None, 0.2, 3, 1, True)
    skipped = {"camera": "c", "ts": 1700000001.0, "seq": 8, "skipped": "corrupt_jpeg"}
    (row,) = detection_rows(b"c", orjson.dumps(skipped), [])
    assert row[3] == "corrupt_jpeg" and row[4] is None and row[7] is False
    h = {"camera": "c", "state": "offline", "previous": "online", "time": 1700000002.0,
         "reason": "no frame", "fps": 5.0, "target_fps": 5.0, "last_frame_ts": None}
    (row,) = health_rows(b"c", orjson.dumps(h), [])
    assert row[1:5] == ("c", "offline", "online", "no frame") and row[7] is None
    with pytest.raises(ValueError, match="expected a JSON object"):
        detection_rows(b"c", b"[1]", [])


def test_shed_stale_keeps_newest_and_fresh_frames():
    from streams.vision_agent import shed_stale

    items = [(b"", ts, i) for i, ts in enumerate([90.0, 95.0, 99.5, 100.0])]
    keep, stale = shed_stale(items, now=100.2, max_lag_s=2.0)
    assert [s for _, _, s in stale] == [0, 1] and [s for _, _, s in keep] == [2, 3]
    # Clock skew: every frame looks old, the newest is still analysed.
    keep, stale = shed_stale(items, now=1000.0, max_lag_s=2.0)
    assert [s for _, _, s in keep] == [3] and len(stale) == 3
    assert shed_stale(items[:1], now=1000.0, max_lag_s=2.0) == (items[:1], [])
    assert shed_stale(items, now=1000.0, max_lag_s=None) == (items, [])
