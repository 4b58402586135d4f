"""Stage state tables and the outbox against the real Kafka broker (no worker process)."""

from __future__ import annotations

import pytest

from ioc.config import Settings
from ioc.kafka import acked_producer, ensure_topics
from ioc.topics import TopicSpec, topic_name
from streams.engine import Outbox, SendFailed, StateTable, key_partition
from tests.integration.pipeline_fixtures import read_topic

pytestmark = pytest.mark.kafka


def send(settings: Settings, *outboxes: Outbox) -> None:
    """Send each outbox in turn with a producer like the stage runner's."""
    producer = acked_producer(settings.kafka)
    for out in outboxes:
        out.send(producer)
    assert producer.flush(10) == 0


def table_with_topic(settings: Settings, name: str, partitions: int = 2) -> StateTable:
    """A state table whose changelog topic exists, named as the stage runner names it."""
    app_id = f"{settings.namespace}-stagetest"
    t = StateTable(name, topic_name(settings.namespace, "events"), partitions)
    spec = t.topic_spec(settings.namespace, app_id)
    t.topic = spec.name(settings.namespace)
    assert t.topic == f"{settings.namespace}.state.stagetest.{name}"
    report = ensure_topics(settings, [spec])
    assert report.success and report.created == [t.topic], report.lines()
    return t


@pytest.mark.timeout(60)
def test_state_table_restores_the_latest_values_of_the_partitions_asked_for(settings: Settings):
    t = table_with_topic(settings, "roundtrip")
    first, second = Outbox(), Outbox()
    want: dict[bytes, bytes] = {}
    where: dict[bytes, int] = {}
    for i in range(12):
        key, part = f"entity-{i:02d}".encode(), i % 2
        for version in range(3):
            value = f"{key.decode()}@v{version}".encode()
            # the last version of the even keys is in a later outbox than the others
            t.put(key, value, part, second if version == 2 and part == 0 else first)
            want[key], where[key] = value, part
    # a tombstone deletes a key on restore
    t.put(b"gone", b"soon", 1, first)
    second.add(t.topic, b"gone", None, partition=1)
    assert len(first) == 12 * 3 - 6 + 1 and len(second) == 6 + 1
    send(settings, first, second)

    both = StateTable(t.name, t.source, t.partitions)
    both.topic = t.topic
    n = both.restore(settings, [0, 1])
    assert n == 12 * 3 + 2
    assert both.data == want
    assert both.where == where
    assert sorted(both.items_of(0)) == sorted((k, v) for k, v in want.items() if where[k] == 0)

    zero = StateTable(t.name, t.source, t.partitions)
    zero.topic = t.topic
    assert zero.restore(settings, [0]) == 12 * 3 // 2
    assert zero.data == {k: v for k, v in want.items() if where[k] == 0}
    assert set(zero.where.values()) == {0}
    assert zero.restore(settings, []) == 0

    assert both.drop([0]) == 6
    assert both.data == {k: v for k, v in want.items() if where[k] == 1}
    assert set(both.where.values()) == {1}
    assert both.drop([0]) == 0 and both.drop([1]) == 6 and not both.data and not both.where


@pytest.mark.timeout(60)
def test_state_table_restore_of_an_empty_changelog_reads_nothing(settings: Settings):
    t = table_with_topic(settings, "empty")
    t.data[b"stale"], t.where[b"stale"] = b"x", 0
    assert t.restore(settings, [0, 1]) == 0
    assert t.data == {b"stale": b"x"}  # restore adds to the table; the runner drops first


@pytest.mark.timeout(60)
def test_outbox_sends_keyed_records_to_the_murmur2_partition_of_their_key(settings: Settings):
    spec = TopicSpec("test.outbox-parts", 6, "test key", "bytes", "delete", None,
                     "records of test_outbox_sends_keyed_records_to_the_murmur2_partition")
    report = ensure_topics(settings, [spec])
    assert report.success, report.lines()
    topic = spec.name(settings.namespace)
    out = Outbox()
    keys = [f"entity-{i}".encode() for i in range(60)]
    for i, key in enumerate(keys):
        out.add(topic, key, b"v%d" % i)
    out.add(topic, b"pinned", b"p", partition=5, headers=[("h", b"1")])
    out.add(topic, None, b"keyless")
    send(settings, out)

    records = read_topic(settings, spec.suffix, timeout=15)
    got = {r.key: r.partition for r in records}
    assert len(records) == len(keys) + 2
    for key in keys:
        assert got[key] == key_partition(key, 6), key
    assert len(set(got.values())) == 6  # the keys are spread, not all in one partition
    assert got[b"pinned"] == 5
    assert got[None] == 0
    pinned = next(r for r in records if r.key == b"pinned")
    assert list(pinned.headers) == [("h", b"1")]
    by_key = {r.key: r.value for r in records}
    assert [by_key[k] for k in keys] == [b"v%d" % i for i in range(len(keys))]


@pytest.mark.timeout(60)
def test_outbox_send_reports_a_topic_that_does_not_exist(settings: Settings):
    out = Outbox()
    out.add(topic_name(settings.namespace, "no.such.topic"), b"k", b"v")
    with pytest.raises(SendFailed, match=r"no\.such\.topic"):
        out.send(acked_producer(settings.kafka), timeout_s=5)
