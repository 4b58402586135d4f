"""CPU per event of the aggregate+kpis+rules stage's own work, without Kafka.

    .venv/bin/python bench/bench_stage_cpu.py [--events 100000] [--batch 1000] [--repeat 3]

Builds the combined ``aggregate+kpis+rules`` stage exactly as the worker does (the agents'
``make_stages``, ``streams.engine.combine``: each batch decoded once for the three), then
feeds it the events of ``bench_events.make_events`` as ``<ns>.events`` records in
batches, with its tick after each batch and its state changelogs written every 10
batches (as the 1 s commit would). No broker: the records, outboxes and changelog records
stay in memory, so the figure is the stage's Python work alone, the part that bounds a
worker process.

Baseline in the same run: decoding the same records (``decode_event``), the least any
stage reading ``<ns>.events`` does per event. Also measured: the same three stages run
one after the other on each batch, each decoding for itself (what ``combine`` saves).
Each is measured ``--repeat`` times, on new stages each time, interleaved (which of the
two goes first alternates); printed: CPU
µs per event of each run and the best, the ratio of the best to the best decode, and
output records per event. The garbage collector is tuned as in the worker
(``ioc._runtime.tune_gc``).
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_events import make_events  # noqa: E402

from ioc._runtime import tune_gc  # noqa: E402
from ioc.config import load_settings  # noqa: E402
from ioc.events import Event, decode_event, encode_event  # noqa: E402
from streams.aggregate import AGGREGATE  # noqa: E402
from streams.engine import Outbox, Record, Stage, combine, key_partition  # noqa: E402
from streams.kpis import KPIS  # noqa: E402
from streams.rules import RULES  # noqa: E402


def build_stages() -> list[Stage]:
    s = load_settings()
    stages = [st for spec in (AGGREGATE, KPIS, RULES) for st in spec.make_stages(s)]
    for st in stages:
        for t in st.tables:
            t.topic = f"bench.state.{t.name}"
    return stages


def run(stages: list[Stage], records: list[Record], batch: int) -> tuple[float, int]:
    """CPU seconds and output records of ``stages`` over ``records``, a batch at a time;
    each stage's tick after a batch once its ``tick_every_s`` passed (as the runner does)."""
    tables = [t for st in stages for t in st.tables]
    due = [0.0] * len(stages)
    out, outputs = Outbox(), 0
    c0 = time.process_time()
    for k, i in enumerate(range(0, len(records), batch)):
        for j, st in enumerate(stages):
            st.process(records[i:i + batch], out)
            if st.tick is not None and (mono := time.monotonic()) >= due[j]:
                due[j] = mono + st.tick_every_s
                st.tick(time.time(), out)
        if k % 10 == 9:
            for t in tables:
                t.write_changes(out)
        outputs += len(out)
        out.records.clear()
    return time.process_time() - c0, outputs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=100_000, help="events fed to the stage")
    ap.add_argument("--batch", type=int, default=1000, help="records per batch")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each measurement")
    a = ap.parse_args()
    n = a.events
    records = []
    for i, e in enumerate(make_events(n, "cpu")):
        ev = Event(**e)
        records.append(Record("bench.events", key_partition(ev.entity.encode(), 4), i,
                              ev.entity.encode(), encode_event(ev),
                              [("ioc.raw", b"0:%d:%d" % (i // 1000, i % 1000))]))
    tune_gc()
    base: list[float] = []
    fused: list[tuple[float, int]] = []
    alone: list[tuple[float, int]] = []
    name = ""
    for k in range(a.repeat):
        c0 = time.process_time()
        for r in records:
            decode_event(r.value)  # type: ignore[arg-type]
        base.append(time.process_time() - c0)
        name = combine(build_stages()).name
        # alternate which goes first: the second runs with a larger heap behind it
        for mode in ("fused", "alone") if k % 2 == 0 else ("alone", "fused"):
            if mode == "fused":
                fused.append(run([combine(build_stages())], records, a.batch))
            else:
                alone.append(run(build_stages(), records, a.batch))
            gc.collect()

    def us(t: float) -> str:
        return f"{t / n * 1e6:7.2f}"

    b = min(base)
    print(f"events: {n:,} in batches of {a.batch:,}; stage {name}; best of {a.repeat}")
    print(f"baseline decode_event:        {us(b)} µs/event  (runs: "
          f"{', '.join(us(t).strip() for t in base)})")
    for label, got in (("stage process+tick+changelog", fused),
                       ("the three alone, each decodes", alone)):
        w = min(t for t, _ in got)
        print(f"{label + ':':30}{us(w)} µs/event  (ratio {w / b:.1f}x the decode; "
              f"{got[0][1] / n:.3f} output records/event; runs: "
              f"{', '.join(us(t).strip() for t, _ in got)})")
    print(f"combined / alone: {min(t for t, _ in fused) / min(t for t, _ in alone):.3f}")


if __name__ == "__main__":
    main()
