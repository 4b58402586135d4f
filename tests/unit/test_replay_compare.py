"""Pure parts of runs and compare: settings differences, map differences, the report."""

from __future__ import annotations

from ioc.replay.compare import SectionDiff, diff_maps, format_report
from ioc.replay.runs import settings_diff


def test_settings_diff_lists_changed_leaves_only():
    a = {"namespace": "r1", "cameras": {"motion": {"threshold": 25, "blur": 5}}, "x": [1]}
    b = {"namespace": "r1", "cameras": {"motion": {"threshold": 40, "blur": 5}}, "x": [1, 2], "y": 1}
    assert settings_diff(a, b) == {"cameras.motion.threshold": [25, 40], "x": [[1], [1, 2]],
                                   "y": [None, 1]}


def test_diff_maps_tolerates_float_order_noise_but_not_real_changes():
    a = {"k1": {"sum": 0.1 + 0.2, "count": 3}, "k2": 1.0, "k3": "raised"}
    b = {"k1": {"sum": 0.3, "count": 3}, "k2": 1.5, "k4": "cleared"}
    assert diff_maps(a, b) == [("k2", 1.0, 1.5), ("k3", "raised", None), ("k4", None, "cleared")]
    assert diff_maps(a, a) == []


def test_report_says_what_is_absent_and_what_differs():
    secs = [SectionDiff("detections", "table detections", absent=["r1"]),
            SectionDiff("rollups", "topic", 2, 2, rows=[("e|m|10|0", {"count": 1}, {"count": 2})]),
            SectionDiff("alerts", "topic", 1, 1)]
    text = "\n".join(format_report("r1", "r2", secs))
    assert "detections" in text and "ABSENT in r1" in text
    assert "1 difference(s)" in text and 'e|m|10|0' in text and '{"count":2}' in text
    assert "alerts" in text and "same" in text
