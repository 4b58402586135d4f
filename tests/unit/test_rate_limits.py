"""Rate limits and batch-stage plumbing without I/O: UpdateThrottle, TileCoalescer.offer_lazy,
streams.engine.combine and streams.engine.key_partition."""

from __future__ import annotations

from typing import Any

import pytest
from aiokafka.partitioner import DefaultPartitioner

import streams.engine.stage as batch
from ioc.aggregate import UpdateThrottle
from ioc.tilegen import TileCoalescer
from ioc.tiles import Tile
from streams.engine import Outbox, Stage, StateTable, combine, key_partition

# --- UpdateThrottle ------------------------------------------------------------------------


def exhaust(t: UpdateThrottle[Any], now: float) -> None:
    """Spend the whole rate budget at ``now`` with filler keys, then forget them."""
    fillers: list[str] = []
    while True:
        key = f"filler-{len(fillers)}"
        fillers.append(key)
        if t.offer(key, key, now) is None:
            break
        assert len(fillers) <= 10 * (t.max_per_s or 0), "the rate budget is never exhausted"
    for key in fillers:
        t.forget(key)
    assert not t.pending


def test_per_key_min_interval_keeps_the_latest_item():
    t: UpdateThrottle[str] = UpdateThrottle(min_interval_s=0.2)
    assert t.offer("w1", "a0", 0.0) == "a0"
    assert t.offer("w1", "a1", 0.05) is None
    assert t.offer("w1", "a2", 0.10) is None
    assert t.offer("w1", "a3", 0.15) is None
    assert t.coalesced == 2
    assert t.offer("w2", "b0", 0.15) == "b0"  # another key has its own interval
    assert t.due(0.19) == []  # w1 too soon, w2 has nothing pending
    assert t.due(0.20) == ["a3"]
    assert t.due(0.30) == []  # released once, not again
    assert t.offer("w1", "a4", 0.30) is None  # interval counts from the release at 0.20
    assert t.offer("w1", "a5", 0.40) == "a5"  # an item that may go replaces the pending one
    assert t.due(10.0) == [] and not t.pending
    assert t.budget_held == 0 and t.overflow == 0


def test_total_budget_holds_items_and_due_releases_them_oldest_first():
    t: UpdateThrottle[str] = UpdateThrottle(min_interval_s=0.1, max_per_s=2)
    exhaust(t, 0.0)
    held0, coalesced0 = t.budget_held, t.coalesced
    for i, key in enumerate("abcde"):
        assert t.offer(key, f"{key}1", i * 0.01) is None, key
    assert t.offer("b", "b2", 0.05) is None  # still no budget: latest wins
    assert t.budget_held - held0 == 6
    assert t.coalesced - coalesced0 == 1
    assert t.due(0.25) == []  # 0.5 token refilled: not enough for one item
    assert t.due(0.50) == ["a1"]
    assert t.due(1.00) == ["b2"]  # b kept its place in the queue, with its latest item
    assert t.due(2.00) == ["c1", "d1"]
    assert t.due(2.10) == []
    assert t.due(2.50) == ["e1"]
    assert not t.pending


def test_total_budget_bounds_the_rate_over_many_keys_and_loses_nothing():
    n_per_s, keys, step = 50, [f"k{i:03d}" for i in range(200)], 1 / 16
    t: UpdateThrottle[tuple[str, int]] = UpdateThrottle(min_interval_s=0.25, max_per_s=n_per_s)
    per_second = [0] * 16
    latest: dict[str, tuple[str, int]] = {}
    last_out: dict[str, tuple[str, int]] = {}

    def emit(item: tuple[str, int], now: float) -> None:
        per_second[int(now)] += 1
        last_out[item[0]] = item

    for s in range(10 * 16):  # 10 s: 60 keys change every 1/16 s, rotating over 200 keys
        now = s * step
        for j in range(60):
            key = keys[(s * 37 + j) % len(keys)]
            latest[key] = (key, s)
            if (out := t.offer(key, latest[key], now)) is not None:
                emit(out, now)
        for out in t.due(now):  # the stage's tick
            emit(out, now)
    assert t.budget_held > 1000 and t.coalesced > 1000 and t.overflow == 0
    # The first second also spends the initial bucket; after it, the rate is the budget.
    assert all(n_per_s - 1 <= n <= n_per_s + 1 for n in per_second[1:10]), per_second
    # Nothing lost: once the changes stop, every key's latest item comes out.
    s = 10 * 16
    while t.pending:
        for out in t.due(s * step):
            emit(out, s * step)
        s += 1
        assert s < 16 * 16, f"{len(t.pending)} item(s) still pending after 6 s"
    assert last_out == latest
    assert all(n <= n_per_s + 1 for n in per_second[10:]), per_second


def test_max_pending_lets_items_through_and_counts_them():
    t: UpdateThrottle[str] = UpdateThrottle(min_interval_s=1.0, max_pending=2)
    for key in "abc":
        assert t.offer(key, f"{key}0", 0.0) == f"{key}0"
    assert t.offer("a", "a1", 0.1) is None and t.offer("b", "b1", 0.1) is None
    assert t.offer("c", "c1", 0.1) == "c1"  # pending is full: through at once, not dropped
    assert t.offer("a", "a2", 0.2) is None  # a key already pending is replaced, not counted
    assert t.overflow == 1 and t.coalesced == 1
    assert t.due(1.0) == ["a2", "b1"]

    budget: UpdateThrottle[str] = UpdateThrottle(min_interval_s=0.0, max_pending=2, max_per_s=1)
    exhaust(budget, 0.0)
    assert budget.offer("x", "x0", 0.0) is None and budget.offer("y", "y0", 0.0) is None
    assert budget.offer("z", "z0", 0.0) == "z0"  # over max_pending: past the budget too
    assert budget.overflow == 1 and list(budget.pending) == ["x", "y"]


def test_forget_drops_the_pending_item_and_the_timer():
    t: UpdateThrottle[str] = UpdateThrottle(min_interval_s=1.0)
    assert t.offer("w", "0", 0.0) == "0"
    assert t.offer("w", "1", 0.1) is None
    t.forget("w")
    assert t.due(5.0) == []
    assert t.offer("w", "2", 0.2) == "2"  # no interval left to wait for


# --- TileCoalescer.offer_lazy ---------------------------------------------------------------


class Builder:
    """A tile builder that counts its calls."""

    def __init__(self, tid: str, version: int, *, empty: bool = False) -> None:
        self.tid, self.version, self.empty, self.calls = tid, version, empty, 0

    def __call__(self) -> Tile | None:
        self.calls += 1
        return None if self.empty else Tile(self.tid, "text", self.version, 0.0)


def test_offer_lazy_builds_once_per_release_with_the_latest_builder():
    c = TileCoalescer(min_interval_s=1.0)
    builders = [Builder("kpi:a", v) for v in range(100)]
    for b in builders:
        assert c.offer_lazy("kpi:a", b)
    assert sum(b.calls for b in builders) == 0  # nothing built before the release
    assert [t.version for t in c.due(0.0)] == [99]
    assert builders[-1].calls == 1 and sum(b.calls for b in builders) == 1
    assert c.coalesced == 99 and c.released == 1
    late = Builder("kpi:a", 100)
    c.offer_lazy("kpi:a", late)
    assert c.due(0.5) == [] and late.calls == 0  # too soon: not built either
    assert [t.version for t in c.due(1.0)] == [100] and late.calls == 1
    assert c.due(5.0) == [] and late.calls == 1


def test_offer_lazy_builder_returning_none_sends_nothing():
    c = TileCoalescer(min_interval_s=0.0)
    empty = Builder("alerts:x", 1, empty=True)
    c.offer_lazy("alerts:x", empty)
    c.offer_lazy("kpi:b", Builder("kpi:b", 7))
    assert [t.id for t in c.due(0.0)] == ["kpi:b"]
    assert empty.calls == 1 and c.released == 1 and not c.pending


def test_offer_of_tiles_and_builders_mix_latest_wins():
    c = TileCoalescer(min_interval_s=0.0)
    assert c.offer(Tile("a", "text", 1, 0.0))
    assert [(t.id, t.version) for t in c.due(0.0)] == [("a", 1)]
    b = Builder("a", 2)
    c.offer(Tile("a", "text", 3, 0.0))
    c.offer_lazy("a", b)  # the builder replaces the tile
    assert [t.version for t in c.due(1.0)] == [2] and b.calls == 1
    c.offer_lazy("a", Builder("a", 4))
    c.offer(Tile("a", "text", 5, 0.0))  # and a tile replaces the builder
    assert [t.version for t in c.due(2.0)] == [5]
    assert c.coalesced == 2


def test_offer_lazy_pending_is_bounded_and_counts_drops():
    c = TileCoalescer(min_interval_s=0.0, max_pending=3)
    made = [Builder(f"t{i}", 1) for i in range(5)]
    assert [c.offer_lazy(b.tid, b) for b in made] == [True, True, True, False, False]
    assert c.offer_lazy("t0", Builder("t0", 2))  # a pending id is replaced, not dropped
    assert c.dropped == 2 and c.coalesced == 1
    assert [(t.id, t.version) for t in c.due(0.0)] == [("t0", 2), ("t1", 1), ("t2", 1)]
    assert made[3].calls == made[4].calls == made[0].calls == 0


# --- streams.engine.combine -------------------------------------------------------------------


class FakeTime:
    """Stands in for the ``time`` module of streams.engine: a clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def perf_counter(self) -> float:
        return self.now


def make_stage(name: str, calls: list[tuple[str, Any]], **kw: Any) -> Stage:
    def process(records: list[Any], out: Outbox) -> None:
        calls.append((name, list(records)))
        out.add("out", name.encode(), None)

    def tick(now: float, out: Outbox) -> None:
        calls.append((f"{name}.tick", now))

    return Stage(name, ["ns.events"], process, tick=tick, **kw)


def test_combine_runs_each_stage_on_the_same_records_in_order(monkeypatch: pytest.MonkeyPatch):
    clock = FakeTime()
    monkeypatch.setattr(batch, "time", clock)
    calls: list[tuple[str, Any]] = []
    ta, tb, tc = StateTable("ta", "ns.events", 2), StateTable("tb1", "ns.events", 2), \
        StateTable("tb2", "ns.events", 2)
    a = make_stage("a", calls, tables=[ta], tick_every_s=0.125, batch_max=100, within_s=0.05,
                   commit_every_s=0.5)
    b = make_stage("b", calls, tables=[tb, tc], tick_every_s=0.375, batch_max=300, within_s=0.02,
                   commit_every_s=0.2)
    ab = combine([a, b])
    assert ab.name == "a+b" and ab.topics == ["ns.events"]
    assert ab.tables == [ta, tb, tc]
    assert (ab.batch_max, ab.within_s, ab.commit_every_s, ab.tick_every_s) == (300, 0.02, 0.2, 0.125)

    out = Outbox()
    records = ["r1", "r2", "r3"]
    ab.process(records, out)
    assert calls == [("a", records), ("b", records)]
    assert [key for _, key, *_ in out.records] == [b"a", b"b"]
    assert a.metrics.records == b.metrics.records == 3
    assert a.metrics.batches == b.metrics.batches == 1

    assert ab.tick is not None
    ticks: list[list[str]] = []
    for step in range(10):  # the runner ticks the combination every 0.125 s (exact in binary)
        clock.now = 1000.0 + step * 0.125
        calls.clear()
        ab.tick(5000.0 + step, out)
        ticks.append([name for name, _ in calls])
        assert all(now == 5000.0 + step for _, now in calls)  # wall time passed through
    assert ticks == [
        ["a.tick", "b.tick"], ["a.tick"], ["a.tick"], ["a.tick", "b.tick"], ["a.tick"],
        ["a.tick"], ["a.tick", "b.tick"], ["a.tick"], ["a.tick"], ["a.tick", "b.tick"]]


def test_combine_of_stages_without_ticks_and_of_one_stage():
    calls: list[tuple[str, Any]] = []
    a = make_stage("a", calls)
    assert combine([a]) is a
    quiet = Stage("q", ["ns.events"], lambda records, out: None)
    only_a = combine([quiet, a])
    assert only_a.tick is not None and only_a.tick_every_s == a.tick_every_s
    none = combine([quiet, Stage("r", ["ns.events"], lambda records, out: None)])
    assert none.name == "q+r" and none.tick is None


def test_combine_forwards_assignments_to_every_stage():
    seen: list[tuple[str, set[Any]]] = []
    a = Stage("a", ["t"], lambda r, o: None, on_assigned=lambda tps: seen.append(("a", tps)))
    b = Stage("b", ["t"], lambda r, o: None)
    c = Stage("c", ["t"], lambda r, o: None, on_assigned=lambda tps: seen.append(("c", tps)))
    ab = combine([a, b, c])
    assert ab.on_assigned is not None
    ab.on_assigned({"tp0"})  # type: ignore[arg-type]
    assert seen == [("a", {"tp0"}), ("c", {"tp0"})]


# --- streams.engine.key_partition --------------------------------------------------------------

KEYS = [b"", b"a", b"air-01", b"air-02", b"traffic:junction-17", b"\x00\xff\x10",
        "métro-ligne-4".encode(), bytes(range(256)), b"x" * 1000]


@pytest.mark.parametrize("partitions", [1, 2, 3, 6, 12, 64])
def test_key_partition_matches_aiokafka_default_partitioner(partitions: int):
    default = DefaultPartitioner()
    every = list(range(partitions))
    for key in [*KEYS, *(f"entity-{i}".encode() for i in range(200))]:
        assert key_partition(key, partitions) == default(key, every, every), key


def test_key_partition_spreads_keys_and_sends_keyless_records_to_0():
    assert {key_partition(f"entity-{i}".encode(), 6) for i in range(200)} == set(range(6))
    assert key_partition(None, 6) == 0 and key_partition(None, 1) == 0


def test_update_budget_never_lets_more_than_one_seconds_worth_through_at_once():
    from ioc.aggregate import UpdateThrottle

    t: UpdateThrottle[int] = UpdateThrottle(min_interval_s=0.2, max_per_s=10)
    passed = [k for k in range(30) if t.offer(f"k{k}", k, 0.0) is not None]
    assert len(passed) == 10  # a fresh throttle: one second's worth, not two
    t.due(0.5)
    later = [k for k in range(100, 150) if t.offer(f"k{k}", k, 5.0) is not None]
    assert len(later) <= 10  # after an idle gap the bucket is full, never fuller


def test_tile_budget_caps_releases_per_second_oldest_first_latest_wins():
    c = TileCoalescer(min_interval_s=0.0, max_pending=1000, max_per_s=10)
    for i in range(30):
        c.offer_lazy(f"t{i}", lambda i=i: Tile(id=f"t{i}", kind="text", version=1, time=0.0,
                                                  payload={"v": i}))
    c.offer_lazy("t0", lambda: Tile(id="t0", kind="text", version=2, time=0.0, payload={"v": "new"}))
    first = c.due(0.0)
    assert [t.id for t in first] == [f"t{i}" for i in range(10)]  # one second's worth, oldest first
    assert first[0].payload == {"v": "new"} and c.held == 1
    assert [t.id for t in c.due(0.5)] == [f"t{i}" for i in range(10, 15)]  # refilled half
    assert len(c.due(10.0)) == 10 and len(c.due(20.0)) == 5 and not c.pending  # nothing lost


def test_held_updates_of_revoked_partitions_can_be_dropped():
    t: UpdateThrottle[tuple[str, int]] = UpdateThrottle(min_interval_s=1.0)
    for key, part in (("a", 0), ("b", 1), ("c", 0)):
        assert t.offer(key, (key, part), 0.0) is not None  # first goes at once
        assert t.offer(key, (key + "2", part), 0.1) is None  # held
    assert t.drop_where(lambda item: item[1] == 0) == 2
    assert t.due(5.0) == [("b2", 1)]
