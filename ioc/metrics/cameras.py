"""Collectors of the cameras: capture (``ioc camera run``) and analysis (the worker).

``camera`` labels are configured camera ids only (``cameras.cameras``); frames of any
other key are exported under ``camera="other"``, so Kafka keys cannot grow the series.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ._registry import histogram_family, snapshot_items
from .hist import Histogram

__all__ = ["DROP_LABELS", "SKIP_LABELS", "AnalysisCollector", "CaptureCollector"]

#: Reasons a captured frame is not published (``vision.capture.CaptureStats.dropped``
#: and the publisher's ``publish_failed``); anything else is exported as ``other``.
DROP_LABELS = frozenset({"sampled_out", "empty", "encode_failed", "queue_full",
                         "publish_failed", "other"})

#: Reasons a frame is not analysed (``vision.frames.SKIP_REASONS`` and the agent's own);
#: anything else is exported as ``other``.
SKIP_LABELS = frozenset({
    "empty", "too_large", "not_jpeg", "truncated", "corrupt_jpeg", "bad_size",
    "bad_channels", "bad_dtype", "bad_ts", "out_of_order", "error", "stale", "no_analyzer",
    "bad_key", "bad_headers", "internal_error", "other"})


def _skip_label(reason: str) -> str:
    return reason if reason in SKIP_LABELS else "other"


class CaptureCollector(Collector):
    """``ioc camera run``: frames captured and dropped, and whether frames arrive.

    ``captures`` are ``vision.capture.CameraCapture`` threads (``.cam.id``, ``.stats``).
    ``ioc_camera_up`` is 1 while the capture read a frame within the last ``up_s``
    seconds (as seen by successive scrapes), 0 while it is offline or retrying.
    """

    def __init__(self, captures: Sequence[Any], *, up_s: float = 10.0) -> None:
        self.captures = captures
        self.up_s = up_s
        self._seen: dict[str, tuple[int, float]] = {}  # camera -> (frames read, when it moved)

    def collect(self) -> Iterator[Metric]:
        cap = CounterMetricFamily("ioc_camera_frames_captured", "frames read from the "
                                  "camera (before sampling)", labels=["camera"])
        pub = CounterMetricFamily("ioc_camera_frames_published", "frames published to "
                                  "<ns>.camera.frames", labels=["camera"])
        drop = CounterMetricFamily("ioc_camera_frames_dropped", "frames read but not "
                                   "published, by reason (sampled_out is the sampling to "
                                   "the camera's fps, not a loss)", labels=["camera", "reason"])
        up = GaugeMetricFamily("ioc_camera_up", "1: frames arriving; 0: offline or "
                               "retrying", labels=["camera"])
        now = time.monotonic()
        for c in list(self.captures):
            cam, s = c.cam.id, c.stats
            read = s.read
            last = self._seen.get(cam)
            if last is None or read != last[0]:
                self._seen[cam] = last = (read, now if read else -1e18)
            alive = c.is_alive() and not getattr(c, "finished", False)
            cap.add_metric([cam], read)
            pub.add_metric([cam], s.published)
            by: dict[str, int] = {}
            for reason, n in snapshot_items(s.dropped):
                k = reason if reason in DROP_LABELS else "other"
                by[k] = by.get(k, 0) + n
            for reason, n in sorted(by.items()):
                drop.add_metric([cam, reason], n)
            up.add_metric([cam], 1.0 if alive and now - last[1] <= self.up_s else 0.0)
        yield from (cap, pub, drop, up)


class AnalysisCollector(Collector):
    """The worker's vision agent: frames analysed and skipped, analysis seconds, health.

    Reads the app's ``streams.vision_agent.CameraRuntime`` (absent when the vision agent
    does not run here). An analyzer starts anew when its camera's partition moves to
    another worker, so its counters restart from 0 (Prometheus' ``rate`` handles resets).
    """

    def __init__(self, app: Any, cameras: Sequence[str]) -> None:
        self.app = app
        self.cameras = frozenset(cameras)

    def _label(self, cam: str) -> str:
        return cam if cam in self.cameras else "other"

    def collect(self) -> Iterator[Metric]:
        from streams.vision_agent import _RUNTIMES

        rt = _RUNTIMES.get(self.app)
        analysed = CounterMetricFamily("ioc_camera_frames_analysed", "frames analysed",
                                       labels=["camera"])
        skipped = CounterMetricFamily("ioc_camera_frames_skipped", "frames not analysed, "
                                      "by reason", labels=["camera", "reason"])
        up = GaugeMetricFamily("ioc_camera_up", "1: frames arriving; 0: offline (the "
                               "camera-health agent's view)", labels=["camera"])
        hists: dict[str, Histogram] = {}
        if rt is not None:
            counts: dict[str, int] = {}
            skips: dict[tuple[str, str], int] = {}
            for cam, a in snapshot_items(rt.analyzers):
                label = self._label(cam)
                st = a.stats
                counts[label] = counts.get(label, 0) + st.analyzed
                for reason, n in snapshot_items(st.skipped):
                    k = (label, _skip_label(reason))
                    skips[k] = skips.get(k, 0) + n
                if label == cam:
                    hists[cam] = st.seconds
            # frames no analyzer saw (the others are in the analyzers' own counts)
            for reason, n in snapshot_items(rt.skipped):
                if reason in ("bad_key", "no_analyzer", "stale", "internal_error"):
                    k = ("other", _skip_label(reason))
                    skips[k] = skips.get(k, 0) + n
            for label, n in sorted(counts.items()):
                analysed.add_metric([label], n)
            for (label, reason), n in sorted(skips.items()):
                skipped.add_metric([label, reason], n)
            if rt.health is not None:
                for cam in sorted(self.cameras):
                    state = rt.health.state(cam)
                    if state is not None:
                        up.add_metric([cam], 0.0 if state == "offline" else 1.0)
        yield analysed
        yield skipped
        yield histogram_family("ioc_camera_analysis_seconds", "seconds to analyse one frame",
                               ["camera"], sorted(([c], h) for c, h in hists.items()))
        yield up
