"""Aggregation through a real `ioc worker` process, killed with kill -9 mid-stream."""

from __future__ import annotations

import time

import pytest

from ioc.aggregate import EntityWindows
from ioc.events import Event
from tests.integration.pipeline_fixtures import ClosedWindows, publish, read_topic, wait_for

SIZES = [10, 60, 3600]
LATENESS = 30.0
T0 = 1_700_000_000.0


def make_events(n_entities: int = 20, per_entity: int = 400) -> list[Event]:
    """Interleaved sensor events, 1 per 2 s per entity, every 200th 120 s late; then an end
    marker per entity two hours on, which closes every earlier window."""
    out = []
    for i in range(per_entity):
        for k in range(n_entities):
            t = T0 + 2 * i + k * 0.01
            if i % 200 == 199:
                t -= 120  # beyond the allowed lateness
            out.append(Event(id=f"e{k}-{i}", source="test", type="air.quality", entity=f"air-{k:02d}",
                             time=t, values={"pm25": float((i * 7 + k) % 97), "no2": float(i % 13)}))
    for k in range(n_entities):
        out.append(Event(id=f"end{k}", source="test", type="air.quality", entity=f"air-{k:02d}",
                         time=T0 + 2 * per_entity + 7200, values={"pm25": 0.0}))
    return out


def expected(events: list[Event]) -> tuple[dict[str, tuple[int, float, float, float]], int]:
    """Closed windows (count, sum, min, max) and the late count, by the pure core."""
    states: dict[str, EntityWindows] = {}
    closed: dict[str, tuple[int, float, float, float]] = {}
    late = 0
    for e in events:
        st = states.setdefault(e.entity, EntityWindows(e.entity))
        if st.add(e.time, e.values, SIZES, LATENESS) is None:
            late += 1
        for r in st.close_due(LATENESS):
            closed[r.key] = (r.agg.count, r.agg.sum, r.agg.min, r.agg.max)
    return closed, late


@pytest.mark.timeout(240)
def test_kill9_mid_stream_and_restart_gives_the_same_totals(fresh_namespace, spawn):
    s = fresh_namespace("agg")
    events = make_events()
    want, want_late = expected(events)
    assert want_late == 2 * 20 and len(want) > 400
    n, secs = publish(s, events)
    print(f"published {n} events in {secs:.2f} s ({n / secs:,.0f}/s)")

    env = {"IOC_STREAMS__AGGREGATE__WINDOW_SIZES_S": "[10, 60, 3600]",
           "IOC_STREAMS__AGGREGATE__ALLOWED_LATENESS_S": str(LATENESS)}
    closed = ClosedWindows(s)
    got, conflicts, collect = closed.got, closed.conflicts, closed.collect

    w1 = spawn(["worker", "--agents", "aggregate"], settings=s, env=env, name="worker1")
    # kill -9 once a part (not all) of the windows is closed
    seen = wait_for(lambda: (c := collect()) > 100 and c, timeout=120, every=0.1,
                    alive=w1.alive, what="first closed rollups")
    w1.kill9()
    assert seen < len(want), f"the worker finished ({seen} closed) before it was killed"
    t_kill = time.monotonic()
    w2 = spawn(["worker", "--agents", "aggregate"], settings=s, env=env, name="worker2")
    wait_for(lambda: collect() >= len(want), timeout=150, every=0.5, alive=w2.alive,
             what=f"all {len(want)} windows closed")
    closed.tail.close()
    print(f"killed after {seen} closed windows; restart caught up in {time.monotonic() - t_kill:.1f} s")
    assert conflicts == [], conflicts[:3]
    assert set(got) == set(want), sorted(set(got) ^ set(want))[:5]
    bad = [(k, got[k], want[k]) for k in want if got[k][0] != want[k][0] or
           abs(got[k][1] - want[k][1]) > 1e-6 or got[k][2:] != want[k][2:]]
    assert bad == [], f"{len(bad)} windows differ (key, got, expected): {bad[:3]}"
    assert sum(v[0] for k, v in got.items() if "|pm25|10|" in k) == len(events) - 20 - want_late

    late = set()
    for r in read_topic(s, "dlq"):
        h = dict(r.headers)
        if h.get("dlq.reason") == b"late":
            late.add((h["dlq.partition"], h["dlq.offset"]))
    assert len(late) == want_late, f"expected {want_late} late events dead-lettered, got {len(late)}"
