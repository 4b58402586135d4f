"""Sustained events/s of 1, 2 and 3 identical workers (and the pipeline split), with
CPU per event, next to the raw produce+consume baseline of the same run.

    .venv/bin/python bench/bench_scale.py [--workers 1,2,3] [--split] [--repeat 2]
                                          [--start 2000] [--step 1.4] [--seconds 30]

For each layout, in a fresh namespace of its own (topics deleted at the end):

    layout  N identical ``ioc worker --agents validate,aggregate,kpis,rules,tiles``
            processes (each stage group shares the partitions among the N), or with
            ``--split`` also the three-process pipeline split of earlier sessions
            (validate | aggregate,kpis,rules | tiles, ``SPLIT``), removed on
            2026-12-02 and kept here to measure that decision again;
    ladder  rates R = start, start*step, ...: at each, R*T events are published on
            bench_events.py's schedule while the lag of every stage group is sampled,
            then until every group is at lag 0; R is judged by bench_events.py's
            SUSTAINED criterion (``report_rate``, its full report in the log folder).
            The ladder stops at the first rate not sustained, then tries the midpoint
            between it and the last sustained one. The workers keep running across the
            rates of one layout (the backlog of a failed rate is drained before the next).

The sink does not run: the figure is the workers'. Before the ladder, every stage group
must be stable with its expected members (N each for identical workers, 1 for the split)
and at lag 0 after a warm-up event.

Per layout it prints the highest sustained rate (and the lowest that was not), that
rate over the baseline, the CPU µs per event of the workers (each and summed) and of
the broker (the process listening on the first bootstrap port, from /proc) at that
rate, and the 1-minute load average before and after each rate. Baseline (before each
layout's ladder, same machine, same run, so the ratio compares figures taken minutes
apart on a machine whose load changes): ``bench_events.kafka_baseline``, aiokafka
producing one record per event (acks=all) and consuming them back. Every other repeat
runs the layouts in the reverse order.

The topics have the catalogue's partitions (``<ns>.events.raw`` and ``<ns>.events``: 4;
the stage state changelogs follow ``<ns>.events``), so 3 workers split the events 2/1/1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_engine import broker_cpu  # noqa: E402
from bench_events import (  # noqa: E402
    DRAIN_TIMEOUT_S,
    STAGE_GROUPS,
    STAGES,
    LagProbe,
    Layout,
    Procs,
    RateRun,
    check_alive,
    cpu_seconds,
    kafka_baseline,
    layout,
    make_events,
    rate_step,
    report_rate,
    settle,
    stages_running,
)

from ioc.config import Settings, load_settings  # noqa: E402
from ioc.events import Event, encode_event  # noqa: E402
from ioc.kafka import delete_namespace_topics, ensure_topics  # noqa: E402
from ioc.publish import Publisher  # noqa: E402

BASELINE_EVENTS = 60_000
SPLIT: Layout = {"worker validate": STAGES[:1], "worker aggregate+kpis+rules": STAGES[1:4],
                 "worker tiles": STAGES[4:]}
READY_TIMEOUT_S = 120.0


@dataclass
class Step:
    rate: float
    sustained: bool
    why: str
    cpu: dict[str, float]  # CPU seconds by process (workers, broker) during the step
    n: int
    load: tuple[float, float]  # 1-minute load average before and after
    wall: float  # seconds from the first publish to every group at lag 0


@dataclass
class Ladder:
    name: str
    steps: list[Step] = field(default_factory=list)

    @property
    def best(self) -> Step | None:
        ok = [s for s in self.steps if s.sustained]
        return max(ok, key=lambda s: s.rate) if ok else None

    @property
    def first_fail(self) -> Step | None:
        bad = [s for s in self.steps if not s.sustained]
        return min(bad, key=lambda s: s.rate) if bad else None


def group_members(s: Settings) -> dict[str, tuple[str, int]]:
    """Stage group (without ``<ns>-``) -> (state, number of members)."""
    from ioc.kafka.clients import admin_client

    ids = [f"{s.namespace}-{g}" for g in sorted(STAGE_GROUPS)]
    admin = admin_client(s.kafka)
    try:
        got = admin.describe_groups(ids)
    finally:
        admin.close()
    return {g.removeprefix(f"{s.namespace}-"): (str(d.get("group_state")), len(d.get("members") or ()))
            for g, d in got.items()}


def wait_ready(s: Settings, procs: Procs, logdir: Path, members: int) -> None:
    """Every stage group Stable with ``members`` members."""
    end = time.monotonic() + READY_TIMEOUT_S
    while True:
        check_alive(procs, logdir, "a worker died before the ladder")
        got = group_members(s)
        if all(st == "Stable" and m == members for st, m in got.values()) and len(got) == len(STAGE_GROUPS):
            return
        if time.monotonic() > end:
            raise SystemExit(f"stage groups not stable with {members} member(s) each after "
                             f"{READY_TIMEOUT_S:.0f} s: {got}; see {logdir}")
        time.sleep(0.5)


def cpu_of(procs: Procs) -> dict[str, float]:
    return {**{name: cpu_seconds(p.pid) for name, p in procs.items()}, "broker": broker_cpu()}


def run_layout(base: Settings, name: str, workers: int, split: Layout | None, rates: list[float],
               a: argparse.Namespace, logdir: Path) -> Ladder:
    """The ladder of one layout in a fresh namespace."""
    s = base.with_namespace(f"scale{secrets.token_hex(3)}")
    out = Ladder(name)
    d = logdir / s.namespace
    d.mkdir(parents=True, exist_ok=True)
    try:
        assert ensure_topics(s).success
        members = workers if split is None else 1
        with stages_running(s, d, workers=workers, agents=split, sink=False) as procs, \
                LagProbe(s, STAGE_GROUPS) as probe, Publisher(s, source="bench") as pub:
            pub.send_many(make_events(1, "warm"))
            wait_ready(s, procs, d, members)
            settle(probe, procs, d, timeout_s=READY_TIMEOUT_S)
            print(f"  {name}: ready (every stage group stable with {members} member(s)), "
                  f"namespace {s.namespace}, logs {d}", flush=True)

            def step(rate: float) -> Step:
                events = make_events(int(rate * a.seconds), secrets.token_hex(3))
                load0 = os.getloadavg()[0]
                report = d / f"rate-{rate:.0f}.txt"
                with open(report, "w") as f, contextlib.redirect_stdout(f):
                    r: RateRun = rate_step(s, events, rate, procs, probe, pub, d,
                                           sample_s=a.sample_s, cpu=cpu_of)
                    fails = report_rate(r, a.sample_s, s.streams.commit_every_s)
                wall = r.t_done if r.t_done is not None else r.t_pub + DRAIN_TIMEOUT_S
                st = Step(rate, not fails, "; ".join(fails), r.cpu, r.n, (load0, os.getloadavg()[0]),
                          wall)
                print(f"  {name}: {rate:>7,.0f} ev/s {'SUSTAINED' if st.sustained else 'not sustained'}"
                      f"  {cpu_line(st)}  load {st.load[0]:.1f} -> {st.load[1]:.1f}"
                      + ("" if st.sustained else f"\n      ({st.why[:300]})"), flush=True)
                return st

            for rate in rates:
                out.steps.append(step(rate))
                if not out.steps[-1].sustained:
                    break
            best, fail = out.best, out.first_fail
            if fail is not None:
                lo = best.rate if best is not None else fail.rate / 2
                out.steps.append(step(round((lo + fail.rate) / 2, -2)))
    finally:
        delete_namespace_topics(s)
    return out


def cpu_line(st: Step) -> str:
    """CPU µs per event of the workers (summed, then each) and the broker; the cores they
    kept busy from the first publish until every group was at lag 0."""
    w = {k: v for k, v in st.cpu.items() if k.startswith("worker")}
    each = " ".join(f"{v / st.n * 1e6:.0f}" for v in w.values())
    return (f"CPU µs/event: workers {sum(w.values()) / st.n * 1e6:.0f}"
            + (f" ({each})" if len(w) > 1 else "") + f", broker {st.cpu['broker'] / st.n * 1e6:.0f}"
            f" (cores busy: workers {sum(w.values()) / st.wall:.2f}, broker "
            f"{st.cpu['broker'] / st.wall:.2f})")


def measure_baseline(base: Settings, label: str) -> float:
    """``bench_events.kafka_baseline`` on BASELINE_EVENTS events in a namespace of its own:
    events/s (printed with its CPU per event and the load)."""
    s = base.with_namespace(f"scaleb{secrets.token_hex(3)}")
    try:
        assert ensure_topics(s).success
        evs = [Event(**e) for e in make_events(BASELINE_EVENTS, secrets.token_hex(3))]
        payloads = [(e.entity.encode(), encode_event(e)) for e in evs]
        load0 = os.getloadavg()[0]
        t, cpu = asyncio.run(kafka_baseline(s, payloads))
    finally:
        delete_namespace_topics(s)
    rate = BASELINE_EVENTS / t
    print(f"{label}: baseline kafka produce+consume (aiokafka, 1 record/event): {rate:,.0f} ev/s; "
          f"CPU µs/event client {cpu['client'] / BASELINE_EVENTS * 1e6:.0f}, broker "
          f"{cpu['broker'] / BASELINE_EVENTS * 1e6:.0f}; load {load0:.1f} -> "
          f"{os.getloadavg()[0]:.1f}", flush=True)
    return rate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workers", default="1,2,3", help="identical worker counts to measure (default 1,2,3)")
    ap.add_argument("--split", action="store_true", help="also the three-process pipeline split")
    ap.add_argument("--repeat", type=int, default=2, help="runs of every layout (default 2)")
    ap.add_argument("--start", type=float, default=2000.0, help="first rate of each ladder (ev/s)")
    ap.add_argument("--step", type=float, default=1.4, help="factor between rates (default 1.4)")
    ap.add_argument("--max-rate", type=float, default=30_000.0, help="last rate of a ladder")
    ap.add_argument("--seconds", type=float, default=30.0, help="seconds of publishing per rate")
    ap.add_argument("--sample-s", type=float, default=2.0, help="seconds between lag samples")
    ap.add_argument("--logdir", default="/tmp/ioc-bench-scale", help="worker logs and full reports")
    a = ap.parse_args()
    counts = [int(x) for x in a.workers.split(",") if x.strip()]
    if not counts or min(counts) < 1 or a.step <= 1 or a.start <= 0 or a.seconds <= 0:
        ap.error("--workers: counts >= 1; --step > 1; --start and --seconds > 0")
    rates, r = [], a.start
    while r <= a.max_rate:
        rates.append(round(r, -2))
        r *= a.step
    logdir = Path(a.logdir)
    base = load_settings()
    layouts: list[tuple[str, int, Layout | None]] = [
        (f"{n} identical worker{'s' if n > 1 else ''}", n, None) for n in counts]
    if a.split:
        layouts.append(("pipeline split (3 processes)", 1, SPLIT))
    print(f"cores: {os.cpu_count()}  load: {os.getloadavg()[0]:.1f}  ladder: "
          + ", ".join(f"{x:,.0f}" for x in rates) + f" ev/s, {a.seconds:g} s each")
    for name, n, split in layouts:
        print(f"layout {name}: " + ", ".join(f"{w} ({','.join(st)})" for w, st in (split or layout(n)).items()))
    results: list[tuple[int, float, Ladder]] = []
    for rep in range(1, a.repeat + 1):
        # every other repeat in the reverse order, so a trend in the machine's load does
        # not always favour the same layout
        for name, n, split in (layouts if rep % 2 else layouts[::-1]):
            baseline = measure_baseline(base, f"run {rep}, before {name}")
            results.append((rep, baseline, run_layout(base, name, n, split, rates, a, logdir)))
    print("\nsummary (sustained = highest rate judged SUSTAINED; 'not' = lowest that was not)")
    print(f"{'run':<4}{'layout':<32}{'sustained':>10}{'not':>9}{'/ kafka':>9}{'x 1 worker':>12}"
          f"   CPU µs/event at the sustained rate; load")
    one = {rep: lad.best.rate for rep, _, lad in results
           if lad.name.startswith("1 identical") and lad.best is not None}
    for rep, baseline, lad in results:
        best, fail = lad.best, lad.first_fail
        rate = best.rate if best else 0.0
        scale = f"{rate / one[rep]:.2f}" if one.get(rep) else "-"
        print(f"{rep:<4}{lad.name:<32}{rate:>10,.0f}{(f'{fail.rate:,.0f}' if fail else '-'):>9}"
              f"{rate / baseline:>9.2f}{scale:>12}   "
              + (f"{cpu_line(best)}; load {best.load[0]:.1f} -> {best.load[1]:.1f}" if best else "-"))


if __name__ == "__main__":
    main()
