"""Routing of raw records to canonical events or dead letters (no broker)."""

from __future__ import annotations

import orjson

from ioc.events import decode_event
from ioc.events._route import RouteCounts, route_raw

NOW = 1_750_000_000.0


def _ev(i: int, **kw):
    return {"id": f"e{i}", "source": "s", "type": "flood.level", "entity": f"gauge{i}",
            "time": NOW - 10, "values": {"level_cm": 12.0}, **kw}


def test_mixed_batch_is_split_into_valid_and_dead_with_headers():
    rec = orjson.dumps([_ev(0), _ev(1, values={"level_cm": None}), _ev(2)])
    out = route_raw(rec, b"s", [("trace", b"1")], topic="ns.events.raw", partition=3,
                    offset=42, now=NOW)
    assert [r.suffix for r in out] == ["events", "dlq", "events"]
    assert out[0].key == b"gauge0" and decode_event(out[0].value).id == "e0"
    dead = out[1]
    assert orjson.loads(dead.value) == _ev(1, values={"level_cm": None})
    h = dict(dead.headers)
    assert h["trace"] == b"1" and h["dlq.reason"] == b"wrong_type"
    assert (h["dlq.topic"], h["dlq.partition"], h["dlq.offset"], h["dlq.index"]) == (
        b"ns.events.raw", b"3", b"42", b"1")
    assert h["dlq.field"] == b"values.level_cm"
    counts = RouteCounts()
    counts.add(out)
    assert (counts.valid, counts.dead, counts.reasons) == (2, 1, {"wrong_type": 1})


def test_unreadable_record_and_tombstone_are_dead_lettered_whole():
    out = route_raw(b"\x00\x01garbage", None, [], topic="t", partition=0, offset=7, now=NOW)
    assert len(out) == 1 and out[0].suffix == "dlq" and out[0].value == b"\x00\x01garbage"
    assert dict(out[0].headers)["dlq.index"] == b""
    out = route_raw(None, b"k", [], topic="t", partition=0, offset=8, now=NOW)
    assert out[0].suffix == "dlq" and dict(out[0].headers)["dlq.reason"] == b"not_json"


def test_single_event_record_has_no_index():
    out = route_raw(orjson.dumps(_ev(0, type="Bad")), b"s", [], topic="t", partition=0,
                    offset=1, now=NOW)
    assert out[0].suffix == "dlq" and dict(out[0].headers)["dlq.index"] == b""


def test_valid_events_carry_their_raw_origin_and_stages_recognise_re_emitted_ones():
    from ioc.aggregate import EntityWindows
    from ioc.events import origin_mark, origin_seen, raw_origin
    from ioc.kpi import KpiCounts
    from streams.engine.applied import Applied, Tracked

    value = orjson.dumps([_ev(0), {"bad": 1}, _ev(2)])
    out = route_raw(value, None, [], topic="t.events.raw", partition=3, offset=41, now=NOW)
    events = [r for r in out if r.suffix == "events"]
    assert [raw_origin(r.headers) for r in events] == [(3, 41, 0), (3, 41, 2)]
    assert raw_origin([("other", b"x")]) is None and raw_origin([("ioc.raw", b"junk")]) is None

    marks: dict[int, tuple[int, int]] = {}
    assert not origin_seen(marks, (3, 41, 0))
    origin_mark(marks, (3, 41, 2))
    assert origin_seen(marks, (3, 41, 0)) and origin_seen(marks, (3, 41, 2))  # re-emitted
    assert origin_seen(marks, (3, 40, 9))  # an earlier raw record of the same partition
    assert not origin_seen(marks, (3, 41, 3)) and not origin_seen(marks, (3, 42, 0))
    assert not origin_seen(marks, (2, 0, 0))  # another raw partition has its own order
    assert not origin_seen(marks, None)  # not via validate (replays, direct producers)

    load_w = Tracked.decoder(EntityWindows.from_dict, "windows")
    load_k = Tracked.decoder(KpiCounts.from_dict, "counts")
    ew = Tracked(EntityWindows("s-1"), Applied(raw=dict(marks)))
    assert load_w(ew.to_bytes()).marks.raw == {3: (41, 2)}
    kc = Tracked(KpiCounts("agency"), Applied(raw=dict(marks)))
    assert load_k(kc.to_bytes()).marks.raw == {3: (41, 2)}
    old = orjson.loads(ew.to_bytes())
    del old["r"]  # state written before origins existed still loads
    assert load_w(orjson.dumps(old)).marks.raw == {}
