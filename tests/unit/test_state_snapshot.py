"""Local state snapshots (streams.engine.snapshot) and StateTable's side of them, without Kafka."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.engine import Outbox, StateTable
from streams.engine.snapshot import (
    MAGIC,
    VERSION,
    Snapshot,
    SnapshotInvalid,
    SnapshotStore,
    SnapshotWriter,
    decode_snapshot,
    encode_snapshot,
)

TOPIC = "ns.state.streams.agg-windows"

_entries = st.lists(st.tuples(st.binary(min_size=1, max_size=20), st.binary(max_size=40)),
                    max_size=30)


def snap(offset: int = 7, entries: list[tuple[bytes, bytes]] | None = None, *,
         partition: int = 3, topic: str = TOPIC) -> Snapshot:
    return Snapshot(VERSION, topic, partition, offset,
                    [(b"k1", b"v1"), (b"k2", b"")] if entries is None else entries)


@settings(max_examples=300, deadline=None)
@given(_entries, st.integers(min_value=1, max_value=2**62), st.integers(0, 10_000))
def test_a_snapshot_decodes_to_what_was_encoded(entries, offset, partition):
    s = snap(offset, entries, partition=partition)
    assert decode_snapshot(encode_snapshot(s)) == s


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_never_decode_to_a_snapshot_nor_raise_anything_else(raw):
    with pytest.raises(SnapshotInvalid) as exc:
        decode_snapshot(raw)
    assert exc.value.reason in {"magic", "checksum"}


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_any_body_with_a_right_checksum_decodes_or_is_refused(body):
    """A body with a valid checksum but arbitrary content (another version, garbage):
    a SnapshotInvalid, or a snapshot whose fields have the version-1 types."""
    import hashlib

    raw = MAGIC + hashlib.blake2b(body, digest_size=16).digest() + body
    try:
        s = decode_snapshot(raw)
    except SnapshotInvalid as exc:
        assert exc.reason in {"undecodable", "version", "offset"}
    else:
        assert s.version == VERSION and s.offset >= 0 and s.partition >= 0
        assert all(isinstance(k, bytes) and isinstance(v, bytes) for k, v in s.entries)


@settings(max_examples=300, deadline=None)
@given(_entries.filter(bool), st.data())
def test_a_truncated_or_flipped_snapshot_is_refused(entries, data):
    raw = encode_snapshot(snap(9, entries))
    cut = data.draw(st.integers(0, len(raw) - 1), label="cut")
    with pytest.raises(SnapshotInvalid):
        decode_snapshot(raw[:cut])
    i = data.draw(st.integers(0, len(raw) - 1), label="flip")
    bit = data.draw(st.integers(0, 7), label="bit")
    flipped = bytearray(raw)
    flipped[i] ^= 1 << bit
    with pytest.raises(SnapshotInvalid):
        decode_snapshot(bytes(flipped))


def test_entries_at_offset_zero_and_other_versions_are_refused():
    with pytest.raises(SnapshotInvalid, match="offset 0") as exc:
        decode_snapshot(encode_snapshot(snap(0)))
    assert exc.value.reason == "offset"
    assert decode_snapshot(encode_snapshot(snap(0, []))).entries == []
    with pytest.raises(SnapshotInvalid, match="expected version 1, got 2"):
        decode_snapshot(encode_snapshot(Snapshot(2, TOPIC, 0, 5, [])))


def _exited_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def test_the_store_writes_atomically_and_loads_only_the_right_partition(tmp_path: Path):
    store = SnapshotStore(tmp_path)
    assert store.load(TOPIC, 3) == (None, "missing")
    size = store.write(snap(7))
    path = store.path(TOPIC, 3)
    assert path == tmp_path / TOPIC / "3.snap" and path.stat().st_size == size
    assert store.load(TOPIC, 3) == (snap(7), "")
    store.write(snap(11, [(b"k", b"new")]))
    assert store.load(TOPIC, 3)[0] == snap(11, [(b"k", b"new")])
    assert sorted(p.name for p in path.parent.iterdir()) == ["3.snap"]  # no tmp left
    # a tmp file of a process killed mid-write goes at the next write; a live one stays
    path.with_name(f"3.snap.{_exited_pid()}.tmp").write_bytes(b"half")
    path.with_name(f"3.snap.{os.getppid()}.tmp").write_bytes(b"being written")
    store.write(snap(12))
    assert sorted(p.name for p in path.parent.iterdir()) == [
        "3.snap", f"3.snap.{os.getppid()}.tmp"]
    path.with_name(f"3.snap.{os.getppid()}.tmp").unlink()
    # a file copied to another partition's (or topic's) name is not loaded there
    os.replace(path, store.path(TOPIC, 4))
    got, why = store.load(TOPIC, 4)
    assert got is None and f"expected {TOPIC}[4], the file holds {TOPIC}[3]" in why
    store.remove(TOPIC, 4)
    store.remove(TOPIC, 4)  # gone already: no error
    assert store.load(TOPIC, 4) == (None, "missing")


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_the_store_never_raises_on_a_damaged_file(tmp_path_factory, raw):
    store = SnapshotStore(tmp_path_factory.mktemp("snaps"))
    store.path(TOPIC, 0).parent.mkdir(parents=True)
    store.path(TOPIC, 0).write_bytes(raw)
    got, why = store.load(TOPIC, 0)
    assert got is None and str(store.path(TOPIC, 0)) in why


def test_an_unwritable_place_raises_oserror_and_keeps_the_old_snapshot(tmp_path: Path):
    store = SnapshotStore(tmp_path)
    store.write(snap(7))
    # the tmp file's name taken by a directory: the write fails before the rename
    store.path(TOPIC, 3).with_name(f"3.snap.{os.getpid()}.tmp").mkdir()
    with pytest.raises(OSError):
        store.write(snap(9))
    assert store.load(TOPIC, 3)[0] == snap(7)
    # the topic's directory is a file: mkdir fails
    (tmp_path / "other").write_bytes(b"x")
    with pytest.raises(OSError):
        store.write(snap(9, topic="other"))


def test_the_writer_writes_in_its_thread_latest_wins_and_counts_failures(tmp_path: Path):
    store = SnapshotStore(tmp_path)
    w = SnapshotWriter(store)
    gate = threading.Event()
    real = store.write

    def slow(s: Snapshot) -> int:
        gate.wait(10)
        return real(s)

    store.write = slow  # type: ignore[method-assign,assignment]
    w.submit(snap(1, [], partition=0))  # taken by the thread, waits at the gate
    time.sleep(0.2)
    w.submit(snap(2, [], partition=1))
    w.submit(snap(3, [(b"k", b"v")], partition=1))  # replaces offset 2, never written
    assert not w.wait(0.2)
    gate.set()
    assert w.wait(10)
    assert (w.written, w.superseded, w.errors) == (2, 1, 0)
    assert store.load(TOPIC, 1)[0] == snap(3, [(b"k", b"v")], partition=1)
    (tmp_path / "other").write_bytes(b"a file where a directory must go")
    w.submit(snap(4, topic="other"))
    assert w.close(10) and w.errors == 1 and w.written == 2
    w.submit(snap(5, partition=2))  # usable after close: a new thread
    assert w.close(10) and w.written == 3


# --- StateTable.snapshot: what it writes, and when --------------------------------------

def table(tmp_path: Path) -> tuple[StateTable, SnapshotStore]:
    t = StateTable("agg-windows", "ns.events", 4)
    t.topic = TOPIC
    return t, SnapshotStore(tmp_path)


def test_a_table_snapshots_each_partition_written_since_with_the_changelog_end(tmp_path: Path):
    t, store = table(tmp_path)
    ends = {0: 105, 1: 50, 2: 9}
    asked: list[int] = []

    def high(p: int) -> int:
        asked.append(p)
        return ends[p]

    out = Outbox()
    for i in range(10):
        t.put(b"k%d" % i, b"v%d" % i, i % 2, out)
    # only restored partitions have a known changelog offset: nothing to snapshot yet
    assert t.snapshot(store.write, high=high) == 0 and asked == []
    t.offsets.update({0: 100, 1: 60})
    assert t.snapshot(store.write, high=high) == 2 and sorted(asked) == [0, 1]
    assert t.offsets == {0: 105, 1: 60}  # a lagging watermark never moves an offset back
    s0, s1 = store.load(TOPIC, 0)[0], store.load(TOPIC, 1)[0]
    assert s0 is not None and s1 is not None
    assert (s0.offset, sorted(s0.entries)) == (105, sorted((b"k%d" % i, b"v%d" % i)
                                                           for i in range(0, 10, 2)))
    assert (s1.offset, len(s1.entries)) == (60, 5)
    # nothing written since: no watermark asked, nothing rewritten
    asked.clear()
    assert t.snapshot(store.write, high=high) == 0 and asked == []
    t.change(b"k1", b"w1", 1)
    t.write_changes(out)
    ends[1] = 61
    assert t.snapshot(store.write, [0, 1, 3], high=high) == 1 and asked == [1]
    s1 = store.load(TOPIC, 1)[0]
    assert s1 is not None and s1.offset == 61 and (b"k1", b"w1") in s1.entries


def test_a_partition_with_changes_not_yet_written_is_not_snapshot(tmp_path: Path):
    t, store = table(tmp_path)
    t.offsets.update({0: 3, 1: 3})
    t.data[b"a"], t.where[b"a"] = b"1", 0
    t.data[b"b"], t.where[b"b"] = b"1", 1
    t.change(b"a", b"2", 0)  # in memory only: not in the changelog yet
    assert t.snapshot(store.write, high=lambda p: 3) == 1
    assert store.load(TOPIC, 0) == (None, "missing")
    s1 = store.load(TOPIC, 1)[0]
    assert s1 is not None and s1.entries == [(b"b", b"1")] and s1.offset == 3
    t.write_changes(Outbox())
    assert t.snapshot(store.write, high=lambda p: 4) == 1
    s0 = store.load(TOPIC, 0)[0]
    assert s0 is not None and s0.entries == [(b"a", b"2")] and s0.offset == 4


def test_dropping_a_partition_forgets_its_offsets(tmp_path: Path):
    t, _store = table(tmp_path)
    t.offsets.update({0: 3, 1: 3})
    t.snapshot_offsets[0] = 3
    t.drop([0])
    assert t.offsets == {1: 3} and t.snapshot_offsets == {}


def test_the_runner_keeps_snapshots_in_streams_state_dir_else_in_the_data_dir(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from ioc.config import Settings
    from streams.engine import Stage, StageRunner

    stage = Stage("x", ["ns.in"], lambda _r, _o: None)
    mine = StageRunner(Settings(namespace="ns", streams={"state_dir": str(tmp_path)}),
                       "ns-app", stage)
    assert mine.snapshots.directory == tmp_path
    monkeypatch.setenv("IOC_STATE_DIR", str(tmp_path / "st"))
    monkeypatch.delenv("IOC_STREAMS__STATE_DIR", raising=False)
    default = StageRunner(Settings(namespace="ns"), "ns-app", stage)
    assert default.snapshots.directory == tmp_path / "st" / "faust" / "ns-app" / "snapshots"
    data = StageRunner(Settings(namespace="ns", streams={"data_dir": str(tmp_path / "d")}),
                       "ns-app", stage)
    assert data.snapshots.directory == tmp_path / "d" / "snapshots"


def test_the_runner_snapshots_at_most_every_streams_snapshot_every_s(tmp_path: Path):
    from ioc.config import Settings
    from streams.engine import Stage, StageRunner

    stage = Stage("x", ["ns.in"], lambda _r, _o: None)
    default = StageRunner(Settings(namespace="ns", streams={"state_dir": str(tmp_path)}),
                          "ns-app", stage)
    assert default.snapshot_every_s == 30.0
    five = StageRunner(Settings(namespace="ns", streams={"state_dir": str(tmp_path),
                                                         "snapshot_every_s": 5}),
                       "ns-app", stage)
    assert five.snapshot_every_s == 5.0
