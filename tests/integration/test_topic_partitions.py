"""A namespace whose event-path topics have 6 partitions (topics.partitions) instead of
the catalogue's 4: `ioc topics ensure` creates them so, a real `ioc worker --agents
validate,aggregate` uses all of them (its state changelog too) and computes what the pure
core computes; the same namespace checked with the default counts is reported as a
mismatch that names the way out."""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter

import pytest
from kafka import KafkaConsumer

from ioc.config import Settings
from ioc.events import Event, decode_event
from ioc.kafka import delete_namespace_topics, kafka_python_kwargs, partition_for
from ioc.publish import Publisher
from ioc.topics import topic_name
from tests.conftest import ROOT, settings_env
from tests.integration.pipeline_fixtures import ClosedWindows, read_topic, wait_for
from tests.integration.test_pipeline_aggregate import LATENESS, T0, expected

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(240)]

SIX = {"events.raw": 6, "events": 6, "rollups": 6}
N_ENTITIES, PER_ENTITY = 24, 150
CONFIG = f"""
topics:
  partitions: {{events.raw: 6, events: 6, rollups: 6}}
streams:
  aggregate: {{window_sizes_s: [10, 60, 3600], allowed_lateness_s: {LATENESS}}}
"""


def make_events() -> list[Event]:
    """One source per entity (an entity's raw events stay in one raw partition, in
    order), 1 event per 2 s each, every 100th 120 s late; then an end marker per entity
    two hours on, which closes every earlier window."""
    out = []
    for i in range(PER_ENTITY):
        for k in range(N_ENTITIES):
            t = T0 + 2 * i + k * 0.01 - (120 if i % 100 == 99 else 0)
            out.append(Event(id=f"e{k}-{i}", source=f"feed-{k}", type="air.quality",
                             entity=f"air-{k:02d}", time=t,
                             values={"pm25": float((i * 7 + k) % 97), "no2": float(i % 13)}))
    out += [Event(id=f"end{k}", source=f"feed-{k}", type="air.quality", entity=f"air-{k:02d}",
                  time=T0 + 2 * PER_ENTITY + 7200, values={"pm25": 0.0})
            for k in range(N_ENTITIES)]
    return out


def partitions_of(s: Settings, topic: str) -> int:
    c = KafkaConsumer(enable_auto_commit=False, **kafka_python_kwargs(s.kafka))
    try:
        return len(c.partitions_for_topic(topic) or ())
    finally:
        c.close()


def test_six_partitions_of_the_event_path_are_created_used_and_computed_right(
        stack, spawn, tmp_path):
    from ioc.kafka import ensure_topics

    ns = f"tparts{int(time.time()) % 100000}"
    s = Settings.model_validate({**stack.model_dump(), "namespace": ns,
                                 "topics": {"partitions": SIX}})
    cfg = tmp_path / "ioc.yaml"
    cfg.write_text(CONFIG)
    try:
        report = ensure_topics(s)
        assert report.success, report.lines()
        for suffix in ("events.raw", "events", "rollups", "kpis", "dlq"):
            assert partitions_of(s, topic_name(ns, suffix)) == s.topics.spec(suffix).partitions
        assert partitions_of(s, topic_name(ns, "events")) == 6

        # the same namespace with the catalogue's counts: a mismatch that says why and what to do
        r = subprocess.run([sys.executable, "-m", "ioc", "topics", "ensure", "--check-only"],
                           env=settings_env(stack.with_namespace(ns)), cwd=ROOT,
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 1, r.stdout + r.stderr
        bad = [ln for ln in r.stdout.splitlines() if ln.startswith("MISMATCH")]
        assert sorted(ln.split()[1].rstrip(":") for ln in bad) == sorted(
            topic_name(ns, t) for t in SIX), r.stdout
        assert all("partitions: expected 4, found 6 (expected: topics.partitions" in ln
                   and "cannot be changed in place" in ln for ln in bad), bad

        events = make_events()
        want, want_late = expected(events)
        assert want_late == N_ENTITIES and len(want) > 500
        worker = spawn(["worker", "--agents", "validate,aggregate"], settings=s,
                       env={"IOC_CONFIG": str(cfg)}, name="worker")
        closed = ClosedWindows(s)
        try:
            with Publisher(s) as pub:
                for i in range(0, len(events), 500):
                    res = pub.send_many(events[i:i + 500])
                    assert len(res.accepted) == len(events[i:i + 500]), res.rejected[:3]
            wait_for(lambda: closed.collect() >= len(want), timeout=120, every=0.3,
                     alive=lambda: worker.alive() or pytest.fail(worker.output()[-3000:]),
                     what=f"all {len(want)} windows closed")
            time.sleep(1.0)
            closed.collect()
        finally:
            closed.tail.close()

        # validate wrote each event once, to its entity's partition of 6 (all of them used)
        valid = read_topic(s, "events", timeout=30)
        ids = Counter(decode_event(r.value).id for r in valid)
        assert set(ids) == {e.id for e in events} and max(ids.values()) == 1
        assert all(r.partition == partition_for(r.key, 6) for r in valid)
        assert {r.partition for r in valid} == set(range(6))
        # aggregate: every closed window as the pure core computes it; rollups on 6 partitions
        assert closed.conflicts == []
        assert set(closed.got) == set(want)
        assert all(closed.got[k][0] == want[k][0] and abs(closed.got[k][1] - want[k][1]) < 1e-6
                   and closed.got[k][2:] == want[k][2:] for k in want)
        rollups = read_topic(s, "rollups", timeout=30)
        assert {r.partition for r in rollups} == set(range(6))
        late = [r for r in read_topic(s, "dlq") if dict(r.headers).get("dlq.reason") == b"late"]
        assert len(late) == want_late
        # the state changelog follows its source topic: 6 partitions
        app_id = s.streams.app_id or f"{ns}-streams"
        c = KafkaConsumer(**kafka_python_kwargs(s.kafka))
        try:
            state = [t for t in c.topics() if t.startswith(f"{ns}.") and "agg-windows" in t]
        finally:
            c.close()
        assert state, f"no changelog of agg-windows in {ns} (app {app_id})"
        assert [partitions_of(s, t) for t in state] == [6] * len(state)
    finally:
        delete_namespace_topics(s)
