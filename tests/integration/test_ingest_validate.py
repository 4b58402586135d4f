"""Validate agent against the real broker: every raw event ends valid or dead-lettered."""

from __future__ import annotations

import time

import orjson
import pytest

from ioc.events import decode_event
from ioc.kafka import kafka_python_kwargs
from ioc.publish import Publisher
from ioc.topics import topic_name
from tests.fixtures.events import read_topic


def _good(i: int, now: float) -> dict:
    return {"id": f"g{i}", "source": "sensors", "type": "air.quality", "entity": f"s{i % 7}",
            "time": now - i, "values": {"pm25": float(i)}, "attributes": {"unit": "ugm3"}}


@pytest.mark.timeout(150)
def test_every_raw_event_is_valid_or_dead_lettered(fresh_namespace, spawn):
    s = fresh_namespace("val")
    now = time.time()
    worker = spawn(["worker", "--agents", "validate"], settings=s, name="validate")
    # 1) 3,000 good events through the Publisher (batch records of up to 1,000).
    with Publisher(s, source="sensors") as pub:
        res = pub.send_many([_good(i, now) for i in range(3000)])
    assert len(res.accepted) == 3000 and not res.rejected
    # 2) raw records from a "foreign" Kafka publisher: singles, a mixed batch, garbage.
    from kafka import KafkaProducer

    mixed = [_good(10_000 + i, now) for i in range(5)]
    mixed[1]["values"] = {"pm25": "high"}  # wrong_type
    mixed[3].pop("entity")  # missing_field
    bad_singles = [
        b"not json at all",  # not_json
        orjson.dumps({**_good(20_000, now), "time": "2024-01-01T00:00:00"}),  # bad_time (no zone)
        orjson.dumps({**_good(20_001, now), "type": "egov.dossier"}),  # bad_attribute
        b"[1, 2]",  # two non-objects in a batch
    ]
    good_single = orjson.dumps({**_good(20_002, now), "time": "2025-06-01T12:00:00+02:00"})
    prod = KafkaProducer(acks="all", **kafka_python_kwargs(s.kafka))
    raw = topic_name(s.namespace, "events.raw")
    sent = [prod.send(raw, key=b"foreign", value=v, headers=[("origin", b"test")])
            for v in [*bad_singles, good_single, orjson.dumps(mixed)]]
    prod.flush()
    metas = [f.get(10) for f in sent]
    prod.close()
    want_valid = 3000 + 1 + 3
    want_dead = 3 + 2 + 2
    valid = read_topic(s, "events", expect=want_valid, timeout=90)
    dead = read_topic(s, "dlq", expect=want_dead, timeout=10)
    assert worker.alive(), worker.output()[-3000:]
    assert len(valid) == want_valid, (len(valid), worker.output()[-2000:])
    assert len(dead) == want_dead, [(d.value, d.headers) for d in dead]
    ids = {decode_event(r.value).id for r in valid}
    assert ids == {f"g{i}" for i in range(3000)} | {"g20002", "g10000", "g10002", "g10004"}
    assert all(r.key == decode_event(r.value).entity.encode() for r in valid)
    # Dead letters: original bytes and where they came from.
    by_reason: dict[str, list] = {}
    for d in dead:
        h = dict(d.headers)
        assert h["origin"] == b"test"  # the original headers are kept
        by_reason.setdefault(h["dlq.reason"].decode(), []).append((d, h))
        assert h["dlq.topic"].decode() == raw
        assert h["dlq.message"]
    assert sorted(by_reason) == ["bad_attribute", "bad_time", "missing_field", "not_json",
                                 "not_object", "wrong_type"]
    assert len(by_reason["not_object"]) == 2
    (d, h), = by_reason["not_json"]
    assert d.value == b"not json at all"
    assert (int(h["dlq.partition"]), int(h["dlq.offset"])) == (metas[0].partition,
                                                                metas[0].offset)
    (d, h), = by_reason["wrong_type"]
    assert h["dlq.field"] == b"values.pm25" and h["dlq.index"] == b"1"
    assert orjson.loads(d.value) == mixed[1]
    assert int(h["dlq.offset"]) == metas[-1].offset
