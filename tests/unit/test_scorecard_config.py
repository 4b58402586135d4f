"""Scorecard settings: bad keys and inconsistent indicators reported at their path."""

from __future__ import annotations

from pathlib import Path

import pytest

from ioc.config import load_settings
from ioc.errors import ConfigError

GOOD = """
scorecards:
  areas:
    - {id: online, label: Online, max_points: 60}
    - {id: rest, label: Rest, max_points: 40}
  indicators:
    - id: dossiers_online
      label: Dossiers online
      area: online
      max_score: 20
      numerator: {event_type: egov.dossier, where: {channel: [online]}}
      denominator: {event_type: egov.dossier}
      targets: {"2021": 40}
"""


def problems(tmp_path: Path, text: str) -> dict[str, str]:
    p = tmp_path / "c.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as ei:
        load_settings(p, env={})
    return {k.split(" [")[0]: v for k, v in ei.value.problems}


def test_good_config_loads(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text(GOOD)
    s = load_settings(p, env={}).scorecards
    assert s.indicators[0].targets == {"2021": 40.0}


@pytest.mark.parametrize(("old", "new", "path", "words"), [
    ("where: {channel", "wher: {channel", "scorecards.indicators.0.numerator.wher", "unknown key"),
    ("area: online\n", "area: nowhere\n", "scorecards.indicators.0.area", "not an area id"),
    ("max_points: 40", "max_points: 30", "scorecards.areas", "expected 100"),
    ("max_score: 20", "max_score: 70", "scorecards.areas.0.max_points", "above its max_points"),
    ('targets: {"2021": 40}', 'targets: {"2021-13": 40}', "scorecards.indicators.0.targets.2021-13",
     "pattern"),
    ('targets: {"2021": 40}', "scoring: {rule: linear}", "scorecards.indicators.0", "needs a target"),
    ("id: rest,", "id: online,", "scorecards.areas.1.id", "duplicate id"),
    ('targets: {"2021": 40}', "target: 5\n      scoring: {rule: thresholds, steps: [{at: 5, points: 30}]}",
     "scorecards.indicators.0", "above max_score"),
    ('targets: {"2021": 40}', "target: 5\n      scoring: {rule: bands, bands: [{lower: 0, upper: 10, "
     "points: 1}, {lower: 5, upper: 20, points: 2}]}", "scorecards.indicators.0.scoring", "overlap"),
    ("scorecards:\n", "scorecards:\n  tile_period_key: '2021-Q3'\n", "scorecards.tile_period_key",
     "not a key of tile_period"),
])
def test_bad_settings_are_reported_at_their_path(tmp_path, old, new, path, words):
    assert old in GOOD
    got = problems(tmp_path, GOOD.replace(old, new, 1))
    assert path in got, got
    assert words in got[path], got


def test_every_cross_key_problem_at_once(tmp_path):
    text = GOOD.replace("max_points: 40", "max_points: 30").replace("area: online\n", "area: x\n")
    got = problems(tmp_path, text)
    assert {"scorecards.areas", "scorecards.indicators.0.area"} <= set(got)


def test_expected_units_are_drill_paths(tmp_path):
    text = GOOD + "  expected_units: [[province, district, d1, all, extra]]\n"
    got = problems(tmp_path, text)
    assert "scorecards.expected_units.0" in got and "1 to 4 units" in got["scorecards.expected_units.0"]


# Per-level targets: units of scorecards.target_level, which lists them.
LEVELS = GOOD.replace("scorecards:\n", """scorecards:
  target_level: admin_level
  levels:
    - {id: province, attribute: province, default: province}
    - {id: admin_level, attribute: admin_level, default: province, units: [province, district, commune]}
    - {id: agency, source: entity}
""").replace('targets: {"2021": 40}', 'targets: {"2021": 40, "2025": {province: 90, district: 80, commune: 60}}')


def test_per_level_targets_load(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text(LEVELS)
    s = load_settings(p, env={}).scorecards
    assert s.indicators[0].targets == {"2021": 40.0, "2025": {"province": 90.0, "district": 80.0,
                                                              "commune": 60.0}}
    assert s.target_level == "admin_level" and s.levels[1].units == ["province", "district", "commune"]


@pytest.mark.parametrize(("old", "new", "path", "words"), [
    ("district: 80", "distrct: 80", "scorecards.indicators.0.targets.2025.distrct",
     "not a unit of the target level 'admin_level'"),
    ("district: 80", "district: high", "scorecards.indicators.0.targets.2025",
     "level 'district': expected a target ratio"),
    ('"2025": {province: 90, district: 80, commune: 60}', '"2025": {}',
     "scorecards.indicators.0.targets.2025", "empty mapping"),
    ('"2021": 40', '"2021": [40]', "scorecards.indicators.0.targets.2021", "expected a target ratio"),
    ("  target_level: admin_level\n", "", "scorecards.indicators.0.targets.2025",
     "need scorecards.target_level"),
    ("target_level: admin_level", "target_level: agency", "scorecards.levels.2.units",
     "lists no units"),
    ("target_level: admin_level", "target_level: ward", "scorecards.target_level", "not a level id"),
    ("units: [province, district,", "units: [district, district,", "scorecards.levels.1.units",
     "listed twice"),
])
def test_bad_per_level_targets_are_reported_at_their_path(tmp_path, old, new, path, words):
    assert old in LEVELS
    got = problems(tmp_path, LEVELS.replace(old, new, 1))
    assert path in got, got
    assert words in got[path], got
