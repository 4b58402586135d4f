"""StateTable bookkeeping without a broker: changed states reach the outbox at commit."""

from __future__ import annotations

from dataclasses import dataclass

from streams.engine import Outbox, StateTable


@dataclass
class Counter:
    entity: str
    n: int = 0

    def to_bytes(self) -> bytes:
        return f"{self.entity}={self.n}".encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> Counter:
        entity, n = raw.decode().split("=")
        return cls(entity, int(n))


def table() -> StateTable:
    t = StateTable("counts", "ns.events", 4)
    t.topic = "ns.state.app.counts"
    return t


def test_changes_are_written_once_per_key_at_commit_with_the_latest_state():
    t = table()
    for _batch in range(3):  # three batches change the same two keys
        for key in (b"a", b"b"):
            c = t.get(key, Counter.from_bytes, Counter, key.decode())
            c.n += 1
            t.change(key, c, partition=1 if key == b"a" else 2)
    assert t.data == {}  # nothing written before the commit
    out = Outbox()
    assert t.write_changes(out) == 2
    assert out.records == [("ns.state.app.counts", b"a", b"a=3", 1, None),
                           ("ns.state.app.counts", b"b", b"b=3", 2, None)]
    assert t.data == {b"a": b"a=3", b"b": b"b=3"} and t.where == {b"a": 1, b"b": 2}
    assert t.write_changes(Outbox()) == 0  # nothing changed since


def test_get_returns_the_changed_object_then_the_written_one_without_decoding():
    t = table()
    c = t.get(b"a", Counter.from_bytes, Counter, "a")
    c.n = 5
    t.change(b"a", c, 0)
    assert t.get(b"a", Counter.from_bytes, Counter, "a") is c
    t.write_changes(Outbox())
    assert t.get(b"a", Counter.from_bytes, Counter, "a") is c  # cached with its bytes
    t.data[b"a"] = b"a=9"  # a restore brings new bytes: decoded again
    assert t.get(b"a", Counter.from_bytes, Counter, "a") == Counter("a", 9)


def test_raw_byte_changes_and_state_keys():
    t = table()
    t.data[b"old"], t.where[b"old"] = b"old=1", 0
    t.change(b"new", b"new=2", 3)
    assert t.state_keys() == [b"old", b"new"]
    assert t.get(b"new", Counter.from_bytes, Counter, "new") == Counter("new", 2)
    out = Outbox()
    assert t.write_changes(out) == 1 and out.records[0][1:4] == (b"new", b"new=2", 3)


def test_drop_forgets_unwritten_changes_of_the_partitions():
    t = table()
    t.change(b"a", Counter("a", 1), 0)
    t.change(b"b", Counter("b", 1), 1)
    assert t.drop([0]) == 1
    out = Outbox()
    assert t.write_changes(out) == 1 and [r[1] for r in out.records] == [b"b"]


def test_put_writes_at_once_and_supersedes_an_unwritten_change():
    t = table()
    t.change(b"a", Counter("a", 1), 0)
    out = Outbox()
    t.put(b"a", b"a=7", 0, out)
    assert out.records == [("ns.state.app.counts", b"a", b"a=7", 0, None)]
    assert t.write_changes(Outbox()) == 0 and t.data[b"a"] == b"a=7"
