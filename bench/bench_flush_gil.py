"""How long a librdkafka producer waits for acknowledgements beside busy Python threads.

    .venv/bin/python bench/bench_flush_gil.py [--records 5000] [--rounds 3]

Why this exists: the batch stages of one worker process are threads sharing one GIL
(docs/aggregation.md). Each stage produces a batch and then ``flush()``es (waits until
the broker acknowledged every record) before it commits. This script measures that wait
for the same producer settings as the stages (``ioc.kafka.acked_producer``: idempotent,
``acks=all``) in four situations, one after the other:

    alone                        nothing else runs in this process
    beside 2 busy processes      two CPU-bound processes (the cores are busy, the GIL is not)
    beside 1 busy thread         one CPU-bound Python thread in this process
    beside 1 busy thread, 0.5 ms the same with sys.setswitchinterval(0.0005)

Measured on 2026-11-26 (2-core VM), twice, with different results:

* 13:00-13:20, against a broker up for 1.5 h on which the benches had created and
  deleted many topics (earlier versions of this script): 3-6 ms alone or beside two busy
  processes, 1.7-5.6 s beside one busy Python thread, 0.13 s with a 0.5 ms switch
  interval, and 27 s with a 50 ms one: the wait then scaled with the GIL switch interval.
* 14:05-14:08, after a broker restart: 29-52 ms alone, 16-23 ms beside busy processes,
  24-59 ms beside a busy thread: no effect.

So a stage's flush *can* end up waiting for GIL hand-overs, but what makes it happen
is not understood. Uses a topic of its own (deleted at the end).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import secrets
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

from ioc.config import load_settings  # noqa: E402
from ioc.kafka import acked_producer, rdkafka_conf  # noqa: E402


def spin_forever() -> None:
    while True:
        sum(range(100))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--records", type=int, default=5000, help="records per flush")
    ap.add_argument("--rounds", type=int, default=3, help="flushes per situation")
    a = ap.parse_args()
    s = load_settings()
    admin = AdminClient(rdkafka_conf(s.kafka, "consumer"))
    topic = f"{s.namespace}.bench.flushgil.{secrets.token_hex(3)}"
    admin.create_topics([NewTopic(topic, 4, 1)])[topic].result()
    producer = acked_producer(s.kafka)
    value = b"x" * 176
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            sum(range(100))

    def measure(name: str) -> None:
        total = 0.0
        for _ in range(a.rounds):
            for i in range(a.records):
                producer.produce(topic, value, b"sensor-%d" % (i % 500), i % 4)
            t0 = time.perf_counter()
            left = producer.flush(60)
            total += time.perf_counter() - t0
            assert left == 0, f"{left} records not acknowledged"
        print(f"{name:<32} {1000 * total / a.rounds:9.1f} ms per {a.records:,}-record flush",
              flush=True)

    try:
        for i in range(100):  # connect, learn the partitions
            producer.produce(topic, value, b"warm", i % 4)
        producer.flush(30)
        measure("alone")
        procs = [mp.Process(target=spin_forever, daemon=True) for _ in range(2)]
        for p in procs:
            p.start()
        try:
            measure("beside 2 busy processes")
        finally:
            for p in procs:
                p.terminate()
                p.join()
        for name, interval in (("beside 1 busy thread", 0.005),
                               ("beside 1 busy thread, 0.5 ms", 0.0005)):
            sys.setswitchinterval(interval)
            stop.clear()
            th = threading.Thread(target=spin, daemon=True)
            th.start()
            try:
                measure(name)
            finally:
                stop.set()
                th.join()
        sys.setswitchinterval(0.005)
    finally:
        producer.flush(10)
        admin.delete_topics([topic])


if __name__ == "__main__":
    main()
