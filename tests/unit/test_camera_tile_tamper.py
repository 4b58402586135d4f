"""The camera tile carries the frame's tamper flags for the wall's drill-in (issue #17)."""

from __future__ import annotations

from ioc.tiles import decode_tile, encode_tile
from streams.vision_agent import camera_tile
from vision.result import TamperState


def _tile(tamper: TamperState | None):
    return decode_tile(encode_tile(camera_tile(
        "cam1", ts=1700000000.0, version=1, width=320, height=240, motion=0.1, counts={},
        health="online", fps=5.0, image=None, tamper=tamper)))


def test_tamper_flags_reach_the_tile_payload():
    back = _tile(TamperState(covered=True, moved=False, ready=True))
    assert back.payload["tamper"] == {"covered": True, "defocused": False, "moved": False,
                                      "ready": True}
    assert _tile(TamperState()).payload["tamper"]["ready"] is False  # warming up


def test_no_tamper_analysis_no_tamper_key():
    assert "tamper" not in _tile(None).payload


def test_tile_counts_carry_people_across_lines_beside_the_blob_counts():
    from types import SimpleNamespace

    from streams.vision_agent import _counts
    from vision.result import LineCount, PeopleResult

    people = PeopleResult(total=4, zones={"platform": 3},
                          counts={"gate": LineCount(in_=12, out=3)})
    result = SimpleNamespace(people=people, counts={"gate": LineCount(in_=9, out=7)})
    assert _counts(result) == {"people": 4, "people:platform": 3, "people:gate:in": 12,
                               "people:gate:out": 3, "gate:in": 9, "gate:out": 7}
    assert _counts(SimpleNamespace(people=None, counts={})) == {}
