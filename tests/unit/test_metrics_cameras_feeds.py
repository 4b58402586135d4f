"""Unit: the camera capture and feed collectors (ioc.metrics.cameras, ioc.metrics.feeds),
and the vision agent's analysis collector over a real ``CameraAnalyzer``."""

from __future__ import annotations

import time
from types import SimpleNamespace

import cv2
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.registry import Collector

from ioc.config import load_settings
from ioc.metrics.cameras import DROP_LABELS, SKIP_LABELS, AnalysisCollector, CaptureCollector
from ioc.metrics.feeds import FEEDS, FeedCollector, FeedCounts
from tests.fixtures.metrics import Scrape
from vision.capture import CaptureStats


def _scrape(c: Collector) -> Scrape:
    reg = CollectorRegistry()
    reg.register(c)
    return Scrape(generate_latest(reg).decode())


class _Capture:
    def __init__(self, cam: str) -> None:
        self.cam = SimpleNamespace(id=cam)
        self.stats = CaptureStats()
        self.finished = False
        self.alive = True

    def is_alive(self) -> bool:
        return self.alive


def test_capture_counts_drops_by_reason_and_up_follows_arriving_frames():
    cap = _Capture("gate")
    col = CaptureCollector([cap], up_s=0.3)
    s = _scrape(col)
    assert s.value("ioc_camera_up", camera="gate") == 0  # nothing read yet
    cap.stats.read += 5
    cap.stats.published += 2
    cap.stats.drop("sampled_out", 2)
    cap.stats.drop("queue_full")
    s = _scrape(col)
    assert s.value("ioc_camera_up", camera="gate") == 1
    assert s.value("ioc_camera_frames_captured_total", camera="gate") == 5
    assert s.value("ioc_camera_frames_published_total", camera="gate") == 2
    assert s.value("ioc_camera_frames_dropped_total", camera="gate", reason="sampled_out") == 2
    assert s.value("ioc_camera_frames_dropped_total", camera="gate", reason="queue_full") == 1
    time.sleep(0.4)  # no frame for longer than up_s: offline
    assert _scrape(col).value("ioc_camera_up", camera="gate") == 0
    cap.stats.read += 1
    assert _scrape(col).value("ioc_camera_up", camera="gate") == 1
    cap.alive = False  # the capture thread ended
    assert _scrape(col).value("ioc_camera_up", camera="gate") == 0


@settings(max_examples=200, deadline=None)
@given(reasons=st.lists(st.text(max_size=12), max_size=6))
def test_drop_reasons_stay_bounded(reasons):
    cap = _Capture("gate")
    for r in reasons:
        cap.stats.drop(r)
    labels = _scrape(CaptureCollector([cap])).labels("ioc_camera_frames_dropped_total")
    assert {d["reason"] for d in labels} <= DROP_LABELS
    assert _scrape(CaptureCollector([cap])).value(
        "ioc_camera_frames_dropped_total", 0, camera="gate") == len(reasons)


def test_analysis_collector_reads_the_vision_runtime():
    from streams.vision_agent import _RUNTIMES, CameraRuntime

    s = load_settings(env={}, overrides={"cameras": {"cameras": [
        {"id": "gate", "url": "file:///dev/null"}]}})
    class _App:  # a stand-in for the Faust app (weakly referenced like it)
        pass

    app = _App()
    rt = CameraRuntime(s)
    _RUNTIMES[app] = rt  # type: ignore[index]
    col = AnalysisCollector(app, ["gate"])
    a = rt.analyzer("gate")
    assert a is not None
    frame = np.zeros((120, 160, 3), np.uint8)
    ok, jpeg = cv2.imencode(".jpg", frame)
    assert ok
    a.process_jpeg(jpeg.tobytes(), time.time())
    a.process_jpeg(b"not a jpeg", time.time())
    rogue = rt.analyzer("unconfigured-key")  # any Kafka key: exported as "other"
    assert rogue is not None
    rogue.process_jpeg(b"", time.time())
    rt.skipped["stale"] += 4
    sc = _scrape(col)
    assert sc.value("ioc_camera_frames_analysed_total", camera="gate") == 1
    assert sc.value("ioc_camera_analysis_seconds_count", camera="gate") == 1
    assert sc.value("ioc_camera_frames_skipped_total", camera="gate", reason="not_jpeg") == 1
    assert sc.value("ioc_camera_frames_skipped_total", camera="other", reason="stale") == 4
    cams = {d["camera"] for n in ("ioc_camera_frames_analysed_total",
                                  "ioc_camera_frames_skipped_total") for d in sc.labels(n)}
    assert cams <= {"gate", "other"}
    assert {d["reason"] for d in sc.labels("ioc_camera_frames_skipped_total")} <= SKIP_LABELS


def test_feed_counts_by_feed():
    c = FeedCounts()
    col = FeedCollector(c)
    c.add(c.published, "sensors", 3)
    c.add(c.errors, "egov", 2)
    c.add(c.published, "something-else")
    s = _scrape(col)
    assert s.value("ioc_feed_events_published_total", feed="sensors") == 3
    assert s.value("ioc_feed_publish_errors_total", feed="egov") == 2
    assert s.value("ioc_feed_events_published_total", feed="other") == 1
    assert {d["feed"] for d in s.labels("ioc_feed_events_published_total")} <= {*FEEDS, "other"}
