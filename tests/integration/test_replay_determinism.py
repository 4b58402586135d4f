"""Determinism: a live run and the replay of its recording give the same results.

Real `ioc worker` processes (faust-streaming) with the real aggregate, KPI and rule
agents: one on a "live" namespace fed by a publisher, one started by `ioc runs start`
on a replay namespace fed by `ioc replay --speed max` of the live recording, and an
`ioc sink` per namespace. Window aggregates, KPI values and alerts must be identical:
latest value per key on the topics, and the rows of the rollups, kpi_values and alerts
tables.
"""

from __future__ import annotations

import math
import time
from typing import Any

import pytest

from ioc.aggregate import EntityWindows
from ioc.events import Event
from ioc.replay.compare import _topic_latest, compare_namespaces, format_report
from ioc.replay.runs import resolve_run
from tests.integration.pipeline_fixtures import publish, wait_for
from tests.integration.test_replay_kafka import ioc

AGENTS = "aggregate,kpis,rules"
SINKS = "events,rollups,kpi_values,alerts"
T0 = 1_700_000_000.0
SIZES, LATENESS = [10, 60, 3600], 30.0


def make_events() -> list[Event]:
    """PM2.5 sensors that cross 55 for > 10 min (pm25_high raises and clears), traffic
    sensors whose speed falls fast (speed_drop), e-government dossiers (KPIs), a few late
    events, and an end marker per sensor that closes every earlier window."""
    out: list[Event] = []
    for i in range(400):  # one event per 5 s per sensor, ~33 min of event time
        t = T0 + 5 * i
        for k in range(6):
            pm = 80.0 if 100 <= i < 260 and k % 2 == 0 else float(10 + (i * 7 + k) % 30)
            tt = t + k * 0.01 - (120 if i % 150 == 149 else 0)  # every 150th is late
            out.append(Event(id=f"pm{k}-{i}", source="det", type="air.quality", entity=f"pm-{k}",
                             time=tt, values={"pm25": pm}))
        for k in range(3):
            speed = 90.0 - (60.0 if i % 40 >= 38 else 0.0) + k
            out.append(Event(id=f"tr{k}-{i}", source="det", type="traffic.flow", entity=f"tr-{k}",
                             time=t + 0.5 + k * 0.01, values={"speed": speed, "count": float(i % 9)}))
        if i % 2 == 0:
            out.append(Event(id=f"d-{i}", source="det", type="egov.dossier", entity=f"agency-{i % 4}",
                             time=t + 1, attributes={"channel": "online" if i % 3 else "counter"}))
    for k in range(6):
        out.append(Event(id=f"pm-end{k}", source="det", type="air.quality", entity=f"pm-{k}",
                         time=T0 + 5 * 400 + 7200, values={"pm25": 1.0}))
    return out


def closed_windows(events: list[Event]) -> int:
    states: dict[str, EntityWindows] = {}
    keys = set()
    for e in events:
        st = states.setdefault(e.entity, EntityWindows(e.entity))
        st.add(e.time, e.values, SIZES, LATENESS)
        keys.update(r.key for r in st.close_due(LATENESS))
    return len(keys)


def snapshot(s: Any) -> dict[str, dict[str, Any]]:
    return {name: _topic_latest(s, f"{s.namespace}.{name}") or {} for name in ("rollups", "kpis", "alerts")}


def settled(s: Any, want_closed: int, alive: Any) -> dict[str, dict[str, Any]]:
    """Wait until every window closed and two snapshots (about a second apart) are equal."""
    last: list[Any] = [None]

    def check() -> Any:
        snap = snapshot(s)
        closed = sum(1 for v in snap["rollups"].values() if v.get("state") == "closed")
        done = closed >= want_closed and snap["kpis"] and snap["alerts"] and snap == last[0]
        last[0] = snap
        return snap if done else None

    return wait_for(check, timeout=120, every=1, alive=alive,
                    what=f"{s.namespace}: {want_closed} closed windows and stable results")  # type: ignore[no-any-return]


@pytest.mark.timeout(300)
def test_replay_of_a_live_run_gives_identical_aggregates_kpis_and_alerts(
        settings, fresh_namespace, spawn, tmp_path):
    live, rep, alt = fresh_namespace("dl"), fresh_namespace("dr"), fresh_namespace("da")
    events = make_events()
    want_closed = closed_windows(events)
    assert want_closed > 500

    w_live = spawn(["worker", "--agents", AGENTS], settings=live, name="live-worker")
    sinks = [spawn(["sink", "--tables", SINKS, "--linger", "0.2"], settings=s, name=f"sink-{s.namespace}")
             for s in (live, rep)]
    # the run on the replay namespace, registered in the session namespace's registry
    w_run = spawn(["runs", "start", "--namespace", rep.namespace, "--agents", AGENTS,
                   "--label", "determinism"], settings=settings, name="run-worker")
    # a second run over the same recording with another rule set: PM2.5 threshold 30, no
    # speed_drop rule (rules agent only)
    rules = tmp_path / "rules30.yaml"
    rules.write_text(
        "streams:\n  rules:\n"
        "    - {id: pm25_high, kind: threshold, metric: pm25, op: '>', value: 30, for_s: 600,\n"
        "       severity: critical, message: 'PM2.5 {value:.0f} > 30 for 10 min at {entity}'}\n")
    w_alt = spawn(["runs", "start", "--namespace", alt.namespace, "--config", str(rules),
                   "--agents", "rules", "--label", "pm25 > 30"], settings=settings, name="alt-worker")

    t_from = time.time() - 1
    t_start = time.monotonic()
    n, _ = publish(live, events)
    assert n == len(events)
    live_snap = settled(live, want_closed, w_live.alive)
    print(f"live run settled after {time.monotonic() - t_start:.1f} s")

    f = tmp_path / "live.mcap"
    r = ioc(["record", str(f), "-t", "events", "--from", f"{t_from:.3f}", "--to", "now",
             "--no-progress"], live)
    assert f"{n} messages" in r.stdout, r.stdout + r.stderr
    r = ioc(["replay", str(f), "--into", rep.namespace, "--speed", "max", "--no-progress"], live)
    assert f"{n} messages" in r.stdout, r.stdout + r.stderr
    t_start = time.monotonic()
    rep_snap = settled(rep, want_closed, w_run.alive)
    print(f"replay run settled after {time.monotonic() - t_start:.1f} s")

    def tables_caught_up() -> Any:
        secs = {s.name: s for s in compare_namespaces(settings, live.namespace, rep.namespace)}
        want = {"events": n, "rollups": len(live_snap["rollups"]),
                "kpi_values": len(live_snap["kpis"]), "alerts": len(live_snap["alerts"])}
        ok = all(secs[t].count_a == secs[t].count_b == c for t, c in want.items()
                 if t != "events") and secs["events"].count_a == secs["events"].count_b == n
        return secs if ok and all(sk.alive() for sk in sinks) else None

    # the sinks write the same results into each namespace's tables
    sections = wait_for(tables_caught_up, timeout=60, every=1, what="sink tables caught up")
    report = "\n".join(format_report(live.namespace, rep.namespace, list(sections.values())))
    print(report)
    for name in ("events", "rollups", "kpi_values", "alerts",
                 "rollups@topic", "kpis@topic", "alerts@topic"):
        sec = sections[name]
        assert sec.absent == [] and sec.error == "", report
        assert sec.rows == [], report
        assert sec.count_a == sec.count_b > 0, report
    assert live_snap == rep_snap
    raised = [a for a in rep_snap["alerts"].values() if a.get("rule") == "pm25_high"]
    assert raised and all(math.isfinite(a["start"]) for a in raised)
    assert {a.get("rule") for a in rep_snap["alerts"].values()} >= {"pm25_high", "speed_drop"}

    r = ioc(["runs", "compare", live.namespace, rep.namespace], settings)  # exit 0: all same
    assert "difference" not in r.stdout and "ABSENT" not in r.stdout, r.stdout

    # the other rule set over the same recording: its alerts differ, and compare says how
    r = ioc(["replay", str(f), "--into", alt.namespace, "--speed", "max", "--no-progress"], live)
    assert f"{n} messages" in r.stdout, r.stdout + r.stderr
    last: list[Any] = [None]

    def alt_alerts() -> Any:
        a = _topic_latest(alt, f"{alt.namespace}.alerts") or {}
        done = a and a == last[0]
        last[0] = a
        return a if done else None

    alt_snap = wait_for(alt_alerts, timeout=60, every=1, alive=w_alt.alive, what="alt run alerts")
    assert {a["rule"] for a in alt_snap.values()} == {"pm25_high"}
    r = ioc(["runs", "compare", live.namespace, alt.namespace], settings, ok=False)
    print("\n".join(r.stdout.splitlines()[:12]))
    assert r.returncode == 1
    line = next(x for x in r.stdout.splitlines() if x.startswith("alerts@topic"))
    assert "difference(s)" in line, r.stdout
    rows = {k: (a, b) for k, a, b in next(
        x for x in compare_namespaces(settings, live.namespace, alt.namespace)
        if x.name == "alerts@topic").rows}
    speed_keys = {k for k, a in live_snap["alerts"].items() if a["rule"] == "speed_drop"}
    assert speed_keys and all(k in rows and rows[k][1] is None for k in speed_keys)  # live only
    assert any(b is not None and "> 30 for 10 min" in b["message"] for _a, b in rows.values())
    assert resolve_run(settings, alt.namespace).settings_diff  # the rule change is on record
    w_alt.stop()

    assert w_run.stop() in (0, -15), w_run.output()[-3000:]
    assert resolve_run(settings, rep.namespace).status in ("finished", "failed")
    w_live.stop()
    for sk in sinks:
        sk.stop()
