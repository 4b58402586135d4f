"""``ensure_topics`` describes again a topic that another process created a moment ago
and the broker has not finished setting up (no partitions, no configs described), instead
of reporting it as different (which stopped a worker when N workers started together)."""

from __future__ import annotations

from typing import Any

import pytest

import ioc.kafka.admin as admin_mod
from ioc.config import load_settings
from ioc.topics import TopicSpec

SPEC = TopicSpec("state.x.t", 4, "key", "bytes", "compact", None, "test")


class _Admin:
    """Answers like kafka-python's admin client for one topic that is still being set
    up for the first ``settling`` descriptions."""

    def __init__(self, name: str, settling: int, partitions: int = 4) -> None:
        self.name, self.settling, self.partitions = name, settling, partitions
        self.describes = 0

    def list_topics(self) -> list[str]:
        return [self.name]

    def describe_topics(self, names: list[str]) -> list[dict[str, Any]]:
        self.describes += 1
        if self.describes <= self.settling:
            return [{"name": self.name, "partitions": []}]
        return [{"name": self.name, "partitions": [{"replica_nodes": [1]}] * self.partitions}]

    def describe_configs(self, _resources: Any) -> dict[str, Any]:
        if self.describes <= self.settling:
            return {"topic": {}}
        return {"topic": {self.name: {"cleanup.policy": {"value": "compact"}}}}

    def close(self) -> None:
        pass


@pytest.fixture
def settings():
    return load_settings(env={}).with_namespace("tsettle")


def test_a_topic_still_being_set_up_is_described_again(monkeypatch, settings):
    fake = _Admin(SPEC.name("tsettle"), settling=3)
    monkeypatch.setattr(admin_mod, "admin_client", lambda _k: fake)
    monkeypatch.setattr(admin_mod.time, "sleep", lambda _s: None)
    r = admin_mod.ensure_topics(settings, [SPEC])
    assert r.success, r.lines()
    assert r.ok == [SPEC.name("tsettle")]
    assert fake.describes == 4


def test_without_settling_time_it_is_reported_as_it_was(monkeypatch, settings):
    fake = _Admin(SPEC.name("tsettle"), settling=3)
    monkeypatch.setattr(admin_mod, "admin_client", lambda _k: fake)
    r = admin_mod.ensure_topics(settings, [SPEC], settle_s=0.0)
    assert not r.success
    assert any(w.startswith("partitions: expected 4, found 0")
               for w in r.mismatched[SPEC.name("tsettle")])


def test_a_real_difference_is_reported_after_the_topic_is_set_up(monkeypatch, settings):
    fake = _Admin(SPEC.name("tsettle"), settling=1, partitions=2)
    monkeypatch.setattr(admin_mod, "admin_client", lambda _k: fake)
    monkeypatch.setattr(admin_mod.time, "sleep", lambda _s: None)
    r = admin_mod.ensure_topics(settings, [SPEC])
    assert not r.success
    assert any(w.startswith("partitions: expected 4, found 2")
               for w in r.mismatched[SPEC.name("tsettle")])
