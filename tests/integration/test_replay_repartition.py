"""`ioc replay kafka` into a namespace with another partition count (topics.partitions):
the way to change a namespace's counts (docs/operations.md, Partition counts). Each
record goes to its key's partition of the target, and every key keeps its order."""

from __future__ import annotations

import secrets
import time
from collections import defaultdict

import pytest

from ioc.config import Settings
from ioc.kafka import delete_namespace_topics, ensure_topics, partition_for
from ioc.storage import drop_schema
from tests.integration.test_replay_kafka import ioc, produce_mixed, topic_dump

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(180)]


def test_replay_kafka_into_six_partitions_puts_each_key_in_its_partition(stack: Settings):
    src = stack.with_namespace(f"trps{secrets.token_hex(4)}")
    dst = stack.with_namespace(f"trpd{secrets.token_hex(4)}")
    try:
        assert ensure_topics(src).success
        t_from = time.time() - 120
        produce_mixed(src, n_events=2000, n_frames=0)
        ioc(["replay", "kafka", "--source", src.namespace, "--from", f"{t_from:.3f}",
             "--into", dst.namespace, "--speed", "max", "--no-progress"], src,
            env={"IOC_TOPICS__PARTITIONS__EVENTS": "6"})
        before, after = topic_dump(src, "events"), topic_dump(dst, "events")
        assert sorted(before) == [0, 1, 2, 3] and sorted(after) == [0, 1, 2, 3, 4, 5]
        assert sum(map(len, after.values())) == sum(map(len, before.values())) == 2000
        assert all(partition_for(r[0], 6) == p for p, recs in after.items() for r in recs)
        assert all(after[p] for p in range(6))  # 23 + 5 keys: every partition gets some

        def by_key(dump: dict[int, list[tuple]]) -> dict[bytes, list[tuple]]:
            out: dict[bytes, list[tuple]] = defaultdict(list)
            for recs in dump.values():
                for r in recs:
                    out[r[0]].append(r)
            return out

        assert by_key(after) == by_key(before)  # same records, same order per key
        # the source's own partition count did not move
        assert ensure_topics(src, create=False).success
    finally:
        for s in (src, dst):
            delete_namespace_topics(s)
            drop_schema(s)
