"""Record and replay against the real broker and database, through the real `ioc` CLI."""

from __future__ import annotations

import itertools
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from ioc.config import Settings
from ioc.kafka import admin_client, kafka_python_kwargs
from ioc.replay.recording import open_recording
from tests.conftest import settings_env


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def ioc(args: list[str], s: Settings, *, ok: bool = True, env: dict[str, str] | None = None) -> Result:
    """Run ``ioc ARGS`` in this process (the real CLI code, minus ~3 s of interpreter and
    import start-up per call), with the environment that selects ``s``'s settings."""
    from click.testing import CliRunner

    from ioc.cli import main

    e = {k: v for k, v in settings_env(s).items() if k.startswith("IOC_")}
    e.update(env or {})
    r = CliRunner().invoke(main, args, env=e, catch_exceptions=True)
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        raise r.exception
    res = Result(r.exit_code, r.stdout, r.stderr)
    if ok:
        assert res.returncode == 0, f"ioc {' '.join(args)} exited {res.returncode}:\n{res.stdout}\n{res.stderr}"
    return res


def produce_mixed(s: Settings, n_events: int = 3000, n_frames: int = 40, *, t0_ms: int | None = None) -> None:
    """Events with headers and several keys, a tombstone, binary keys; JPEG-like frames."""
    p = KafkaProducer(acks="all", linger_ms=5, **kafka_python_kwargs(s.kafka))
    t0_ms = t0_ms or int(time.time() * 1000) - 60_000
    for i in range(n_events):
        ts = t0_ms + i * 10 - (i % 7) * 3  # not monotonic inside a partition
        value = None if i == 17 else b'{"id": "%d", "time": %.3f, "v": %d}' % (i, ts / 1000, i % 97)
        key = bytes([0xFF, i % 5]) if i % 50 == 0 else b"entity-%d" % (i % 23)
        p.send(f"{s.namespace}.events", key=key, value=value, timestamp_ms=ts,
               headers=[("trace", b"t%d" % i), ("bin", bytes([i % 256, 0xFE]))])
    for i in range(n_frames):
        jpeg = b"\xff\xd8\xff\xe0" + bytes([i % 256]) * 20_000 + b"\xff\xd9"
        p.send(f"{s.namespace}.camera.frames", key=b"cam-%d" % (i % 3), value=jpeg,
               timestamp_ms=t0_ms + i * 100, headers=[("seq", b"%d" % i), ("event_time", b"%.3f" % ((t0_ms + i * 100) / 1000))])
    p.flush()
    p.close()


def topic_dump(s: Settings, suffix: str) -> dict[int, list[tuple]]:
    """Per partition, in offset order: (key, value, headers, timestamp)."""
    topic = f"{s.namespace}.{suffix}"
    c = KafkaConsumer(enable_auto_commit=False, **kafka_python_kwargs(s.kafka))
    try:
        tps = [TopicPartition(topic, p) for p in sorted(c.partitions_for_topic(topic) or ())]
        c.assign(tps)
        c.seek_to_beginning(*tps)
        ends = c.end_offsets(tps)
        out: dict[int, list[tuple]] = {tp.partition: [] for tp in tps}
        deadline = time.monotonic() + 30
        while any(c.position(tp) < ends[tp] for tp in tps):
            assert time.monotonic() < deadline, f"reading {topic} timed out"
            for tp, recs in c.poll(timeout_ms=300, max_records=10_000).items():
                out[tp.partition] += [(r.key, r.value, tuple(r.headers), r.timestamp) for r in recs]
        return out
    finally:
        c.close()


@pytest.fixture(scope="module")
def recorded(stack: Settings, tmp_path_factory) -> Iterator[tuple[Settings, Path]]:
    """A namespace of its own with mixed traffic, recorded over a closed time range.

    Not the session namespace: other tests write camera frames and events there, which
    would change what a byte-exact comparison of whole topics sees.
    """
    from ioc.kafka import delete_namespace_topics, ensure_topics
    from ioc.storage import drop_schema, migrate

    settings = stack.with_namespace(f"trec{secrets.token_hex(4)}")
    assert ensure_topics(settings).success
    migrate(settings)
    t_from = time.time() - 120
    produce_mixed(settings)
    f = tmp_path_factory.mktemp("rec") / "mixed.mcap"
    r = ioc(["record", str(f), "-t", "events", "-t", "camera.frames", "--from", f"{t_from:.3f}",
             "--to", "now", "--no-progress"], settings,
            env={"IOC_REPLAY__CHUNK_SIZE_BYTES": "65536"})  # many chunks: damage tests cut one
    assert "3040 messages" in r.stdout, r.stdout + r.stderr
    yield settings, f
    delete_namespace_topics(settings)
    drop_schema(settings)


def test_recording_holds_what_the_topics_hold(recorded):
    s, f = recorded
    with open_recording(f) as rec:
        info = rec.info
        assert info.verified and info.damage is None
        assert len(info.chunks) >= 5
        assert info.per_topic() == {f"{s.namespace}.events": 3000, f"{s.namespace}.camera.frames": 40}
        assert info.partitions == {f"{s.namespace}.events": 4, f"{s.namespace}.camera.frames": 4}
        meta = info.metadata["ioc.recording"]
        assert meta["namespace"] == s.namespace and meta["tool"].startswith("ioc-streams")
    r = ioc(["replay", "info", str(f)], s)
    assert "foxglove.CompressedImage" in r.stdout and "verified" in r.stdout


def test_replay_at_max_speed_is_byte_exact(recorded, fresh_namespace):
    s, f = recorded
    target = fresh_namespace("rx")
    r = ioc(["replay", str(f), "--into", target.namespace, "--speed", "max", "--no-progress"], s)
    assert "3040 messages" in r.stdout, r.stdout + r.stderr
    for suffix in ("events", "camera.frames"):
        src, dst = topic_dump(s, suffix), topic_dump(target, suffix)
        assert sum(map(len, dst.values())) == sum(map(len, src.values())) > 0
        for p in src:  # same keys, values, headers, timestamps, in the same order per partition
            assert dst[p] == src[p], f"{suffix} partition {p} differs"


def test_replay_at_1x_keeps_the_gaps(settings, fresh_namespace, tmp_path):
    src = fresh_namespace("g1")
    p = KafkaProducer(acks="all", **kafka_python_kwargs(src.kafka))
    t0 = int(time.time() * 1000) - 30_000
    for i, dt in enumerate([0, 400, 1200, 1300, 2000]):
        p.send(f"{src.namespace}.events", key=b"k", value=b'{"i": %d}' % i, timestamp_ms=t0 + dt)
    p.flush()
    p.close()
    f = tmp_path / "gaps.mcap"
    ioc(["record", str(f), "-t", "events", "--from", f"{(t0 - 1000) / 1000:.3f}", "--to", "now",
         "--no-progress"], src)
    target = fresh_namespace("g2")
    t_start = time.monotonic()
    ioc(["replay", str(f), "--into", target.namespace, "--speed", "1", "--timestamps", "now",
         "--no-progress"], src)
    took = time.monotonic() - t_start
    got = [r for part in topic_dump(target, "events").values() for r in part]
    ts = [r[3] for r in got]
    gaps = [b - a for a, b in itertools.pairwise(ts)]
    # broker timestamps of "now" records: the 400/800/100/700 ms gaps, within scheduling noise
    assert [round(g / 100) for g in gaps] == [4, 8, 1, 7], gaps
    assert took >= 2.0


def test_live_recording_stops_cleanly_on_sigterm(fresh_namespace, spawn, tmp_path):
    s = fresh_namespace("live")
    f = tmp_path / "live.mcap"
    proc = spawn(["record", str(f), "-t", "events", "--no-progress"], settings=s, name="rec")
    deadline = time.monotonic() + 30
    while "recording 1 topic(s)" not in proc.output():
        assert proc.alive() and time.monotonic() < deadline, proc.output()
        time.sleep(0.2)
    produce_mixed(s, n_events=500, n_frames=0, t0_ms=int(time.time() * 1000))
    time.sleep(2.0)
    assert proc.stop() == 0, proc.output()
    with open_recording(f) as rec:
        assert rec.info.damage is None and rec.info.mode == "indexed"
        assert rec.info.message_count == 500
        assert rec.info.metadata["ioc.recording.end"]["reason"] == "stopped"


def test_damaged_recording_is_refused_then_salvaged(recorded, fresh_namespace, tmp_path):
    s, f = recorded
    data = f.read_bytes()
    cut = tmp_path / "cut.mcap"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    target = fresh_namespace("dmg")
    r = ioc(["replay", str(cut), "--into", target.namespace, "--speed", "max", "--no-progress"], s, ok=False)
    assert r.returncode == 1
    assert "damaged at byte" in r.stderr and "message(s) before it are intact" in r.stderr, r.stderr
    with open_recording(cut) as rec:
        before = rec.info.damage.messages_before  # type: ignore[union-attr]
    assert before > 0
    r = ioc(["replay", str(cut), "--into", target.namespace, "--speed", "max", "--salvage",
             "--no-progress"], s, ok=False)
    assert r.returncode == 3, r.stdout + r.stderr
    got = sum(len(v) for sfx in ("events", "camera.frames") for v in topic_dump(target, sfx).values())
    assert got == before
    # what was salvaged is exactly the start of each source partition
    src, dst = topic_dump(s, "events"), topic_dump(target, "events")
    for p in dst:
        assert dst[p] == src[p][: len(dst[p])]


def test_recording_that_does_not_fit_the_target_is_refused(recorded, fresh_namespace):
    s, f = recorded
    target = fresh_namespace("mis")
    admin = admin_client(target.kafka)
    from kafka.admin import NewTopic

    admin.delete_topics([f"{target.namespace}.camera.frames"])
    for _ in range(50):
        if f"{target.namespace}.camera.frames" not in admin.list_topics():
            break
        time.sleep(0.2)
    admin.create_topics([NewTopic(f"{target.namespace}.camera.frames", 2, 1)])
    admin.close()
    r = ioc(["replay", str(f), "--into", target.namespace, "--speed", "max", "--no-progress"], s, ok=False)
    assert r.returncode == 1
    assert f"does not fit namespace {target.namespace!r}" in r.stderr
    assert "partitions: expected 4, found 2" in r.stderr, r.stderr
    assert sum(len(v) for v in topic_dump(target, "events").values()) == 0  # nothing produced


def test_replay_from_kafka_time_range(recorded, fresh_namespace):
    s, _ = recorded
    src = topic_dump(s, "events")
    all_ts = sorted(r[3] for part in src.values() for r in part)
    lo, hi = all_ts[1000], all_ts[2000]
    target = fresh_namespace("kr")
    ioc(["replay", "kafka", "--source", s.namespace, "--from", f"{lo / 1000:.3f}",
         "--to", f"{hi / 1000:.3f}", "--into", target.namespace, "--speed", "max", "--no-progress"], s)
    dst = topic_dump(target, "events")
    for p in src:
        # offsets_for_times: first offset with timestamp >= lo, up to the first with >= hi
        ts = [r[3] for r in src[p]]
        a = next((i for i, t in enumerate(ts) if t >= lo), len(ts))
        b = next((i for i, t in enumerate(ts) if t >= hi), len(ts))
        assert dst[p] == src[p][a:b], f"partition {p}: {len(dst[p])} records, expected {b - a}"


def test_replay_from_the_database(fresh_namespace):
    from ioc.events import decode_event
    from ioc.storage import connect

    src = fresh_namespace("db")
    t0 = datetime(2026, 1, 5, 8, 0, tzinfo=UTC).timestamp()
    rows = [(datetime.fromtimestamp(t0 + i, UTC), "sys-a", f"id{i}", "egov.dossier", f"agency-{i % 3}",
             '{"count": 1}', '{"channel": "%s"}' % ("online" if i % 2 else "counter"))
            for i in range(300)]
    with connect(src.database, autocommit=True) as conn, conn.cursor() as cur:
        cur.executemany(f'insert into "{src.namespace}".events (time, source, id, type, entity, '
                        'values, attributes) values (%s, %s, %s, %s, %s, %s::jsonb, %s::jsonb)', rows)
    target = fresh_namespace("dbt")
    r = ioc(["replay", "db", "--source", src.namespace, "--from", f"{t0 + 100}", "--to", f"{t0 + 200}",
             "--into", target.namespace, "--speed", "max", "--timestamps", "now", "--no-progress"], src)
    assert "100 messages" in r.stdout, r.stdout + r.stderr
    dst = topic_dump(target, "events")
    events = [(p, decode_event(v)) for p, recs in dst.items() for (_k, v, _h, _t) in recs]
    assert sorted(e.id for _p, e in events) == sorted(f"id{i}" for i in range(100, 200))
    for _p, e in events:  # keyed by entity, in time order per entity
        assert e.attributes["channel"] in ("online", "counter")
    by_entity: dict[str, list[float]] = {}
    for _p, e in events:
        by_entity.setdefault(e.entity, []).append(e.time)
    assert all(ts == sorted(ts) for ts in by_entity.values())
    assert len({p for p, e in events if e.entity == "agency-0"}) == 1


def test_loop_replays_again_until_sigterm(recorded, fresh_namespace, spawn):
    s, f = recorded
    target = fresh_namespace("loop")
    proc = spawn(["replay", str(f), "--into", target.namespace, "--speed", "max", "--loop",
                  "-t", "events", "--no-progress"], settings=s, name="loop")

    def count() -> int:
        c = KafkaConsumer(enable_auto_commit=False, **kafka_python_kwargs(target.kafka))
        try:
            topic = f"{target.namespace}.events"
            tps = [TopicPartition(topic, p) for p in range(4)]
            return sum(c.end_offsets(tps).values())
        finally:
            c.close()

    deadline = time.monotonic() + 60
    while count() < 2 * 3000 + 1:
        assert proc.alive() and time.monotonic() < deadline, proc.output()[-2000:]
        time.sleep(0.5)
    assert proc.stop() == 0, proc.output()[-2000:]
    out = proc.output()
    loops = int(out.split("loops ")[1].split(",")[0])
    assert loops >= 3 and "stopped" in out, out[-500:]
    # each pass is the recording again, in order: partition 0 repeats its sequence
    p0 = topic_dump(target, "events")[0]
    src0 = topic_dump(s, "events")[0]
    assert p0[: 2 * len(src0)] == src0 + src0
