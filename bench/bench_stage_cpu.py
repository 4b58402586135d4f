"""CPU per event of the aggregate+kpis+rules stage's own work, without Kafka.

    .venv/bin/python bench/bench_stage_cpu.py [--events 100000] [--batch 1000]

Builds the combined ``aggregate+kpis+rules`` stage exactly as the worker does (the agents'
register functions, ``streams.engine.combine``), then feeds it the events of
``bench_events.make_events`` as ``<ns>.events`` records in batches, with its tick after
each batch and its state changelogs written every 10 batches (as the 1 s commit would).
No broker: the records, outboxes and changelog records stay in memory, so the figure is
the stage's Python work alone, the part that bounds a worker process.

Baseline in the same run: decoding the same records (``decode_event``), the least any
stage reading ``<ns>.events`` does per event. Printed: CPU µs per event of both, the
ratio, and output records per event. The garbage collector is tuned as in the worker
(``ioc._runtime.tune_gc``).
"""

from __future__ import annotations

import argparse
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


def build_stage() -> Stage:
    s = load_settings()
    # the stages as `ioc worker --agents aggregate,kpis,rules` fuses them; no app, no broker
    stage = combine([st for spec in (AGGREGATE, KPIS, RULES) for st in spec.make_stages(s)])
    for t in stage.tables:
        t.topic = f"bench.state.{t.name}"
    return stage


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=100_000, help="events fed to the stage")
    ap.add_argument("--batch", type=int, default=1000, help="records per batch")
    a = ap.parse_args()
    n = a.events
    records = []
    for i, e in enumerate(make_events(n, "cpu")):
        ev = Event(**e)
        records.append(Record("bench.events", key_partition(ev.entity.encode(), 4), i,
                              ev.entity.encode(), encode_event(ev),
                              [("ioc.raw", b"0:%d:%d" % (i // 1000, i % 1000))]))
    stage = build_stage()
    tune_gc()

    c0 = time.process_time()
    for r in records:
        decode_event(r.value)  # type: ignore[arg-type]
    base = time.process_time() - c0

    out, outputs = Outbox(), 0
    c0 = time.process_time()
    for k, i in enumerate(range(0, n, a.batch)):
        stage.process(records[i:i + a.batch], out)
        if stage.tick is not None:
            stage.tick(time.time(), out)
        if k % 10 == 9:
            for t in stage.tables:
                t.write_changes(out)
        outputs += len(out)
        out.records.clear()
    work = time.process_time() - c0
    print(f"events: {n:,} in batches of {a.batch:,}; stage {stage.name}")
    print(f"baseline decode_event:        {base / n * 1e6:7.2f} µs/event")
    print(f"stage process+tick+changelog: {work / n * 1e6:7.2f} µs/event  "
          f"(ratio {work / base:.1f}x the decode; {outputs / n:.3f} output records/event)")


if __name__ == "__main__":
    main()
