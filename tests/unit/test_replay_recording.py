"""Recording files on local disk: round trip, seeking, damage and refusal (no Kafka)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from mcap.writer import Writer

from ioc.config import Settings
from ioc.replay.engine import check_recording, choose_target
from ioc.replay.exceptions import RecordingDamaged, RecordingMismatch
from ioc.replay.format import KafkaRecord, decode_message
from ioc.replay.recording import RecordingWriter, open_recording

S_MS = 1_700_000_000_000


def make_records(n: int, seed: int = 1) -> list[KafkaRecord]:
    """Events over 4 partitions (timestamps jitter backwards inside a partition) and frames."""
    rnd = random.Random(seed)
    out, offsets = [], [0] * 8
    for i in range(n):
        if i % 10 == 9:
            p = rnd.randrange(4)
            out.append(KafkaRecord("ioc.camera.frames", p, offsets[4 + p], S_MS + i * 10,
                                   b"cam%d" % p, rnd.randbytes(3000), (("seq", b"%d" % i),)))
            offsets[4 + p] += 1
        else:
            p = rnd.randrange(4)
            ts = S_MS + i * 10 - rnd.randrange(0, 30)  # producers' clocks: not monotonic
            out.append(KafkaRecord("ioc.events", p, offsets[p], ts, b"e%d" % rnd.randrange(20),
                                   b'{"time": %d, "v": %d}' % (ts // 1000, i), (("h", b"x"),)))
            offsets[p] += 1
    return out


def write(path: Path, recs: list[KafkaRecord], *, chunk_size: int = 16 * 1024,
          partitions: dict[str, int] | None = None, compression: str = "zstd") -> None:
    parts = partitions or {"ioc.events": 4, "ioc.camera.frames": 4}
    with RecordingWriter(path, namespace="ioc", partitions=parts, chunk_size=chunk_size,
                         compression=compression) as w:
        for r in recs:
            w.write(r)


def read_all(path: Path, **kw) -> list[KafkaRecord]:
    with open_recording(path) as rec:
        return [decode_message(m.data, topic=m.topic, schema=m.schema) for m in rec.messages(**kw)]


def per_partition(recs: list[KafkaRecord]) -> dict[tuple[str, int], list[int]]:
    out: dict[tuple[str, int], list[int]] = {}
    for r in recs:
        out.setdefault((r.topic, r.partition), []).append(r.offset)
    return out


@pytest.mark.parametrize("compression", ["zstd", "lz4", "none"])
def test_round_trip_keeps_everything_and_partition_order(tmp_path, compression):
    recs = make_records(3000)
    f = tmp_path / "a.mcap"
    write(f, recs, compression=compression)
    with open_recording(f) as rec:
        info = rec.info
        assert info.mode == "indexed" and info.verified and info.damage is None
        assert info.message_count == 3000 and len(info.chunks) > 5
        assert info.partitions == {"ioc.events": 4, "ioc.camera.frames": 4}
        assert info.metadata["ioc.recording"]["format"] == "ioc-recording/1"
        assert info.metadata["ioc.recording.end"]["messages"] == "3000"
    back = read_all(f)
    assert sorted(back, key=lambda r: (r.topic, r.partition, r.offset)) == \
        sorted(recs, key=lambda r: (r.topic, r.partition, r.offset))
    assert per_partition(back) == per_partition(recs)  # order inside each partition kept


def test_time_range_seeks_with_the_index(tmp_path):
    recs = make_records(3000)
    f = tmp_path / "a.mcap"
    write(f, recs)
    lo, hi = (S_MS + 10_000) * 1_000_000, (S_MS + 20_000) * 1_000_000
    with open_recording(f, verify=False) as rec:
        loaded = []
        orig = rec._load
        rec._load = lambda ref: (loaded.append(ref), orig(ref))[1]  # type: ignore[method-assign]
        got = list(rec.messages(start_ns=lo, end_ns=hi))
        assert got and all(lo <= m.log_time_ns < hi for m in got)
        assert len(loaded) < len(rec.info.chunks) / 2  # chunks outside the range never read
    expected = {(r.topic, r.partition, r.offset) for r in recs}
    assert {(r.topic, r.partition, r.offset) for r in read_all(f, start_ns=lo, end_ns=hi)} <= expected


@pytest.mark.parametrize("fraction", [0.2, 0.5, 0.8, 0.97, 0.9999])
def test_truncated_file_reports_the_place_and_keeps_what_is_before(tmp_path, fraction):
    recs = make_records(3000)
    f = tmp_path / "a.mcap"
    write(f, recs)
    data = f.read_bytes()
    cut = int(len(data) * fraction)
    g = tmp_path / "cut.mcap"
    g.write_bytes(data[:cut])
    with open_recording(g) as rec:
        d = rec.info.damage
        assert isinstance(d, RecordingDamaged)
        assert rec.info.mode == "scanned"
        assert 8 <= d.offset <= cut
        assert f"damaged at byte {d.offset} (record #{d.record_index})" in str(d)
        assert "truncated" in d.reason or "without a footer" in d.reason
        salvaged = [decode_message(m.data, topic=m.topic, schema=m.schema) for m in rec.messages()]
    assert len(salvaged) == d.messages_before == rec.info.message_count
    # everything before the damage, and in the same order per partition
    first = recs[:len(salvaged)]
    assert sorted(salvaged, key=lambda r: (r.topic, r.partition, r.offset)) == \
        sorted(first, key=lambda r: (r.topic, r.partition, r.offset))
    if fraction >= 0.5:
        assert len(salvaged) > 1000


def test_flipped_byte_in_a_chunk_is_found_with_its_offset(tmp_path):
    recs = make_records(3000)
    f = tmp_path / "a.mcap"
    write(f, recs)
    with open_recording(f) as rec:
        chunks = rec.info.chunks
    victim = chunks[len(chunks) // 2]
    data = bytearray(f.read_bytes())
    data[victim.offset + victim.length // 2] ^= 0x5A
    g = tmp_path / "flip.mcap"
    g.write_bytes(bytes(data))
    with open_recording(g) as rec:
        d = rec.info.damage
        assert d is not None and d.offset == victim.offset, d
        assert "CHUNK record" in d.reason
        n = len(list(rec.messages()))
    assert n == d.messages_before > 0


def test_flipped_bytes_elsewhere_never_pass_silently(tmp_path):
    recs = make_records(1500)
    f = tmp_path / "a.mcap"
    write(f, recs)
    data = f.read_bytes()
    rnd = random.Random(7)
    for _ in range(40):
        pos = rnd.randrange(len(data))
        bad = bytearray(data)
        bad[pos] ^= 1 << rnd.randrange(8)
        g = tmp_path / "x.mcap"
        g.write_bytes(bytes(bad))
        try:
            with open_recording(g) as rec:
                got = [decode_message(m.data, topic=m.topic, schema=m.schema) for m in rec.messages()]
                damage = rec.info.damage
        except RecordingDamaged as exc:  # the very start of the file: nothing to keep
            assert exc.offset == 0 and pos < 8, (pos, exc)
            continue
        # whatever is read back is exact: a flip is either found or changed nothing we read
        by_id = {(r.topic, r.partition, r.offset): r for r in recs}
        assert all(by_id[(r.topic, r.partition, r.offset)] == r for r in got), pos
        if damage is None:
            assert len(got) == len(recs), pos  # a flip in the index or padding only
        else:
            assert len(got) == damage.messages_before, pos


def test_not_a_recording_is_refused_at_byte_zero(tmp_path):
    g = tmp_path / "x.mcap"
    g.write_bytes(b"hello, this is not mcap" * 10)
    with pytest.raises(RecordingDamaged, match=r"damaged at byte 0 .*MCAP magic"):
        open_recording(g)


def test_partition_count_mismatch_is_refused(tmp_path):
    f = tmp_path / "a.mcap"
    write(f, [KafkaRecord("ioc.events", 0, 0, S_MS, b"k", b"v")], partitions={"ioc.events": 3})
    with open_recording(f) as rec, pytest.raises(RecordingMismatch) as ei:
        check_recording(rec.info, "rtest")
    assert "ioc.events: recorded with 3 partition(s), target rtest.events has 4" in str(ei.value)


def test_unknown_topic_and_foreign_schema_are_refused(tmp_path):
    f = tmp_path / "foreign.mcap"
    with open(f, "wb") as fh:
        w = Writer(fh)
        w.start()
        sid = w.register_schema("sensor_msgs/Image", "ros2msg", b"uint8[] data")
        w.add_metadata("ioc.recording", {"format": "ioc-recording/1", "namespace": "ioc"})
        c1 = w.register_channel("ioc.events", "cdr", sid, {"kafka.partitions": "4"})
        c2 = w.register_channel("ioc.weather", "json", 0, {"kafka.partitions": "1"})
        w.add_message(c1, log_time=1, data=b"x", publish_time=1)
        w.add_message(c2, log_time=2, data=b"{}", publish_time=2)
        w.finish()
    with open_recording(f) as rec, pytest.raises(RecordingMismatch) as ei:
        check_recording(rec.info, "rtest")
    msg = str(ei.value)
    assert "ioc.events: schema expected 'ioc.KafkaRecord', found 'sensor_msgs/Image'" in msg
    assert "ioc.events: message encoding expected 'json', found 'cdr'" in msg
    assert "ioc.weather: suffix 'weather' is not in the topic catalogue" in msg


def test_target_namespace_choice():
    live = Settings()
    t = choose_target(live, into=None, into_live=False, now=1_700_000_000)
    assert t.namespace == "r20231114221320"
    assert choose_target(live, into="rx", into_live=False).namespace == "rx"
    assert choose_target(live, into=None, into_live=True).namespace == "ioc"
    with pytest.raises(RecordingMismatch, match="is the live namespace; replaying into it needs --into-live"):
        choose_target(live, into="ioc", into_live=False)
