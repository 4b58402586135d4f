"""Tamper on real footage with known onsets (tests/fixtures/tamper_cases.json), defaults.

Each tamper must be raised as its own kind within 2 s of being complete, never
dropped while it holds, and cleared after the view is restored; the negatives
(lighting, IR switch, crowds, traffic) must raise nothing. A selection of the cases
runs here at a reduced view size, at 5 fps (what ``ioc camera run`` samples) and at
the clip's own rate; ``bench/bench_vision.py`` runs all of them at both rates.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.tamper_cases import CLIPS, TamperCase, load_cases, run_case
from vision import AnalyticsConfig, CameraAnalyzer

CASES = {c.name: c for c in load_cases()}
AT_5_FPS = [
    "defocus-ramp-0.3s-pets", "defocus-ramp-2s-highway", "defocus-disc-0.5s-motorway",
    "cover-fabric-highway", "cover-bubble-pets", "cover-crop-motorway", "cover-hand-pets",
    "cover-spray-highway", "pan-1s-highway", "tilt-1s-pets", "zoom-1s-motorway",
    "knock-pets", "lighting-ramp-down-pets", "ir-switch-motorway", "dusk-highway", "rain-pets",
    "crowd-pets",
]
AT_NATIVE = ["defocus-ramp-2s-highway", "cover-fabric-highway", "cover-bubble-pets",
             "zoom-1s-motorway", "knock-pets", "ir-switch-pets"]
WIDTH = 320  # the view handed to the analyzer (its tamper width): smaller frames, same result


def _run(case: TamperCase, shared_data: Path, fps: float | None) -> str:
    an = CameraAnalyzer(case.name, AnalyticsConfig.model_validate(
        {"thumbnail": {"enabled": False}, "tracking": {"enabled": False}}))
    o = run_case(case, shared_data, lambda f, t: an.process(f, t).tamper, fps=fps, width=WIDTH)
    events = [(round(t, 2), k, a) for t, k, a in o.events]
    if case.expect is None:
        assert not o.events, f"{case.name} at {o.fps} fps raised {events}"
        return "none"
    assert o.detected, (f"{case.name} at {o.fps} fps: {case.expect} not raised by "
                        f"{case.complete_s + 2.0} s: {events}")
    assert not o.wrong, f"{case.name} at {o.fps} fps: wrong kinds {o.wrong}: {events}"
    assert not o.early, f"{case.name} at {o.fps} fps: raised before the onset: {events}"
    assert not o.dropped, f"{case.name} at {o.fps} fps: cleared while tampered: {events}"
    assert o.cleared and o.clear_delay_s is not None, (
        f"{case.name} at {o.fps} fps: not cleared after restoration: {events}")
    return case.expect


@pytest.mark.parametrize("name", AT_5_FPS)
def test_tamper_case_at_5_fps(shared_data: Path, name: str) -> None:
    case = CASES[name]
    assert _run(case, shared_data, 5.0) == (case.expect or "none")


@pytest.mark.parametrize("name", AT_NATIVE)
def test_tamper_case_at_native_rate(shared_data: Path, name: str) -> None:
    case = CASES[name]
    assert CLIPS[case.clip][1] >= 7.0
    assert _run(case, shared_data, None) == (case.expect or "none")


def test_every_case_is_well_formed() -> None:
    kinds = {c.expect for c in CASES.values()}
    assert kinds == {"covered", "defocused", "moved", None}
    for c in CASES.values():
        assert c.clip in CLIPS and c.onset_s >= 4.0 and c.hold_s >= 4.0 and c.after_s >= 2.0
    assert set(AT_5_FPS) <= set(CASES) and set(AT_NATIVE) <= set(CASES)
