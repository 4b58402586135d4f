"""``ensure_topics`` from several processes at once: N identical workers start together
and each creates the stages' state topics; the one that finds a topic another has just
created must not call it different while the broker is still setting it up (seen in the
fault suite: "partitions: expected 4, found 0", and the worker exited)."""

from __future__ import annotations

import secrets
import threading

import pytest

from ioc.kafka import delete_namespace_topics, ensure_topics
from ioc.topics import TopicSpec

pytestmark = pytest.mark.kafka


def _specs(n: int) -> list[TopicSpec]:
    return [TopicSpec(f"state.race.t{i}", 4, "key", "bytes", "compact", None, "race test")
            for i in range(n)]


def test_concurrent_ensure_of_the_same_new_topics_agrees(stack):
    specs = _specs(8)
    for round_ in range(4):
        s = stack.with_namespace(f"trace{secrets.token_hex(4)}")
        reports: list = [None] * 4
        go = threading.Barrier(len(reports))

        def run(i: int, s=s, go=go, reports=reports) -> None:
            go.wait()
            reports[i] = ensure_topics(s, specs)

        threads = [threading.Thread(target=run, args=(i,)) for i in range(len(reports))]
        try:
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
            for r in reports:
                assert r is not None
                assert r.success, (round_, r.lines())
                assert sorted(r.ok + r.created) == sorted(x.name(s.namespace) for x in specs)
            # every topic created exactly once, by one of them
            created = [n for r in reports for n in r.created]
            assert sorted(created) == sorted(x.name(s.namespace) for x in specs)
        finally:
            delete_namespace_topics(s)


def test_a_real_difference_is_still_reported(stack):
    s = stack.with_namespace(f"trace{secrets.token_hex(4)}")
    try:
        assert ensure_topics(s, _specs(1)).success
        other = [TopicSpec("state.race.t0", 2, "key", "bytes", "delete", None, "race test")]
        r = ensure_topics(s, other, settle_s=1.0)
        assert not r.success
        why = r.mismatched[other[0].name(s.namespace)]
        assert any(w.startswith("partitions: expected 2, found 4") for w in why), why
        assert "cleanup.policy: expected delete, found compact" in why
    finally:
        delete_namespace_topics(s)
