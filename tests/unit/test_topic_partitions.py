"""topics.partitions: partition counts over the catalogue's defaults, and what reads them;
streams.snapshot_every_s."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ioc.config import load_settings
from ioc.errors import ConfigError
from ioc.kafka.admin import PARTITIONS_DIFFER
from ioc.topics import CATALOGUE, spec

CONFIGURABLE = sorted(t.suffix for t in CATALOGUE if t.suffix not in ("views", "scorecards"))


def _problems(**kw: object) -> dict[str, str]:
    with pytest.raises(ConfigError) as ei:
        load_settings(**kw)  # type: ignore[arg-type]
    return dict(ei.value.problems)


def test_defaults_are_the_catalogue_unchanged():
    s = load_settings(env={})
    assert s.topics.partitions == {}
    assert s.topics.catalogue() == CATALOGUE
    assert [spec(t).partitions for t in ("events.raw", "events", "rollups", "kpis", "alerts")] \
        == [4, 4, 4, 2, 2]


def test_a_file_sets_counts_and_the_rest_keep_theirs(tmp_path: Path):
    f = tmp_path / "c.yaml"
    f.write_text("topics:\n  partitions:\n    events.raw: 6\n    events: 6\n    rollups: 6\n")
    s = load_settings(f, env={})
    got = {t.suffix: t.partitions for t in s.topics.catalogue()}
    assert got["events.raw"] == got["events"] == got["rollups"] == 6
    assert got["kpis"] == 2 and got["views"] == 1 and got["camera.frames"] == 4
    assert s.topics.spec("events").configs() == spec("events").configs()  # only the count moves
    assert s.with_namespace("other").topics.spec("events").partitions == 6  # replays keep it


def test_environment_names_a_topic_with_underscores_and_overrides_the_file(tmp_path: Path):
    f = tmp_path / "c.yaml"
    f.write_text("topics:\n  partitions:\n    events: 6\n    rollups: 3\n")
    s = load_settings(f, env={"IOC_TOPICS__PARTITIONS__EVENTS_RAW": "8",
                              "IOC_TOPICS__PARTITIONS__EVENTS": "8"})
    assert s.topics.partitions == {"events.raw": 8, "events": 8, "rollups": 3}
    whole = load_settings(env={"IOC_TOPICS__PARTITIONS": "{events.raw: 5, wall.tiles: 3}"})
    assert whole.topics.spec("events.raw").partitions == 5
    assert whole.topics.spec("wall.tiles").partitions == 3


def test_unknown_topic_refused_at_the_path_of_its_key_with_the_known_ones(tmp_path: Path):
    f = tmp_path / "c.yaml"
    f.write_text("topics:\n  partitions:\n    events: 6\n    evnts: 6\n")
    problems = _problems(path=f, env={})
    (key, msg), = problems.items()
    assert key == "topics.partitions.evnts [line 4]"
    assert "no topic 'evnts' in the catalogue" in msg and "'events.raw'" in msg
    env = _problems(env={"IOC_TOPICS__PARTITIONS__FRAMES": "2"})
    assert list(env) == ["topics.partitions.frames [from $IOC_TOPICS__PARTITIONS__FRAMES]"]


@pytest.mark.parametrize("raw", ["0", "-3", "2.5", "true", "many", "10001"])
def test_a_count_is_a_positive_int(raw: str):
    problems = _problems(env={"IOC_TOPICS__PARTITIONS__EVENTS": raw})
    assert list(problems) == ["topics.partitions.events [from $IOC_TOPICS__PARTITIONS__EVENTS]"]


@pytest.mark.parametrize("topic", ["views", "scorecards"])
def test_single_partition_topics_are_not_configurable(topic: str):
    problems = _problems(env={f"IOC_TOPICS__PARTITIONS__{topic.upper()}": "1"})
    (key, msg), = problems.items()
    assert key.startswith(f"topics.partitions.{topic} ")
    assert "one partition by design" in msg


@given(st.dictionaries(st.sampled_from(CONFIGURABLE), st.integers(1, 64), max_size=6))
def test_every_configured_count_reaches_its_spec_and_nothing_else_moves(counts: dict[str, int]):
    s = load_settings(env={}, overrides={"topics": {"partitions": counts}})
    for t in s.topics.catalogue():
        assert t.partitions == counts.get(t.suffix, spec(t.suffix).partitions)
        assert t.configs() == spec(t.suffix).configs() and t.key == spec(t.suffix).key


def test_the_stages_state_tables_follow_the_configured_count_of_their_source():
    from streams.aggregate import AGGREGATE
    from streams.kpis import KPIS
    from streams.rules import RULES

    s = load_settings(env={}, overrides={"topics": {"partitions": {"events": 6, "kpis": 5,
                                                                   "alerts": 3}}})
    tables = {t.name: t for a in (AGGREGATE, KPIS, RULES) for st_ in a.make_stages(s)
              for t in st_.tables}
    assert {n: t.partitions for n, t in tables.items()} == {
        "agg-windows": 6, "kpi-counts": 6, "rule-states": 6}
    for t in tables.values():  # a changelog gets the partitions of its source topic
        assert t.topic_spec(s.namespace, "app").partitions == 6


def test_the_mismatch_reason_says_the_count_cannot_change_in_place():
    why = PARTITIONS_DIFFER.format(want=6, found=4, suffix="events")
    assert why.startswith("partitions: expected 6, found 4 (expected: topics.partitions, else the")
    assert "cannot be changed in place" in why
    assert "topics.partitions.events: 4" in why and "replay" in why


def test_snapshot_every_s_defaults_to_30_and_must_be_positive():
    assert load_settings(env={}).streams.snapshot_every_s == 30.0
    assert load_settings(env={"IOC_STREAMS__SNAPSHOT_EVERY_S": "5"}).streams.snapshot_every_s == 5.0
    for raw in ("0", "-1"):
        problems = _problems(env={"IOC_STREAMS__SNAPSHOT_EVERY_S": raw})
        assert list(problems) == ["streams.snapshot_every_s [from $IOC_STREAMS__SNAPSHOT_EVERY_S]"]
