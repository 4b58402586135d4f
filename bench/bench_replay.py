"""Replay rate at full speed, next to the same run's baselines.

    .venv/bin/python bench/bench_replay.py [--quick] [--events N] [--frames N]

Two recordings are made (on local disk, with the project's RecordingWriter): city
events (~250-byte canonical JSON, 4 partitions) and camera frames (JPEG 640x360 at
quality 70 encoded with OpenCV from a clip of the shared data set,
``$IOC_DATA_DIR`` or ``../shared/data``). For each, measured in this run:

    read:     open the file (with the CRC verification a replay does) and read and
              decode every record, producing nothing
    produce:  the same records, already decoded in memory, produced with the same
              aiokafka settings (acks=all, idempotent, linger 5 ms, explicit partition)
    replay:   as ``ioc replay FILE --speed max``: open + verify, then ``run_replay``
              into a fresh namespace

Rounds are interleaved (the machine is shared: load swings hit all rows alike); the
best round of each row is compared, replay / min(read, produce), against the target of
70%; medians are printed too. Messages/s and MB/s count key + value + header bytes.
Uses namespaces of its own, deleted at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ioc.config import Settings, load_settings  # noqa: E402
from ioc.kafka import delete_namespace_topics, ensure_topics  # noqa: E402
from ioc.replay.engine import recording_source, run_replay  # noqa: E402
from ioc.replay.format import KafkaRecord, decode_message  # noqa: E402
from ioc.replay.kafka_io import KafkaTarget  # noqa: E402
from ioc.replay.recording import RecordingWriter, open_recording  # noqa: E402
from ioc.replay.timing import ReplayPacer  # noqa: E402
from ioc.topics import spec  # noqa: E402

SRC = "ioc"  # namespace written into the recordings (never touched)


def make_events(n: int) -> list[KafkaRecord]:
    from ioc.events import Event, encode_event

    t0 = time.time() - 3600
    out = []
    for i in range(n):
        ent = f"sensor-{i % 500}"
        e = Event(id=f"b{i}", source="bench", type="air.quality", entity=ent, time=t0 + i * 0.01,
                  values={"pm25": float(i % 97) + 0.5, "no2": float(i % 13)},
                  attributes={"district": f"d{i % 12}"})
        ms = int((t0 + i * 0.01) * 1000)
        out.append(KafkaRecord(f"{SRC}.events", i % 4, i // 4, ms, ent.encode(), encode_event(e),
                               (("trace", b"%08d" % i),)))
    return out


def make_frames(n: int, data_dir: Path) -> list[KafkaRecord]:
    import cv2

    clip = next(iter(sorted(data_dir.glob("video/*/*.avi"))), None)
    if clip is None:
        raise SystemExit(f"no .avi clip under {data_dir}/video (set IOC_DATA_DIR)")
    cap = cv2.VideoCapture(str(clip))
    jpegs = []
    while len(jpegs) < min(n, 200):
        ok, img = cap.read()
        if not ok:
            break
        img = cv2.resize(img, (640, 360))
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 70])
        jpegs.append(buf.tobytes())
    cap.release()
    if not jpegs:
        raise SystemExit(f"could not decode frames from {clip}")
    t0 = time.time() - 3600
    out = []
    for i in range(n):
        cam = i % 4
        ms = int((t0 + i * 0.2) * 1000)
        out.append(KafkaRecord(f"{SRC}.camera.frames", cam, i // 4, ms, b"cam-%d" % cam,
                               jpegs[i % len(jpegs)], (("seq", b"%d" % i),
                                                       ("event_time", b"%.3f" % (ms / 1000)))))
    print(f"frames: {len(jpegs)} distinct JPEGs from {clip.relative_to(data_dir)}, "
          f"mean {sum(map(len, jpegs)) / len(jpegs) / 1024:.1f} KiB")
    return out


def write_recording(path: Path, recs: list[KafkaRecord], topic: str, parts: int) -> None:
    with RecordingWriter(path, namespace=SRC, partitions={topic: parts}) as w:
        for r in recs:
            w.write(r)


def bench_read(path: Path) -> tuple[float, int, int]:
    t0 = time.perf_counter()
    n = size = 0
    with open_recording(path) as rec:
        for m in rec.messages():
            r = decode_message(m.data, topic=m.topic, schema=m.schema)
            n += 1
            size += r.size
    return time.perf_counter() - t0, n, size


async def bench_produce(s: Settings, recs: list[KafkaRecord], topic: str) -> float:
    target = KafkaTarget(s)
    t0 = time.perf_counter()  # producer start included, as in the replay
    await target.start()
    for r in recs:
        await target.send(topic, r)
    await target.close()
    return time.perf_counter() - t0


async def bench_replay(s: Settings, path: Path, topic_map: dict[str, str]) -> float:
    """As ``ioc replay FILE --speed max`` does it: open and verify, then ``run_replay``
    (producer start and final flush included, as in the produce baseline)."""
    t0 = time.perf_counter()
    rec = open_recording(path)
    with rec:
        stats = await run_replay(recording_source(rec), KafkaTarget(s), topic_map,
                                 ReplayPacer(math.inf), progress=False)
    assert stats.messages > 0
    return time.perf_counter() - t0


def row(name: str, times: list[float], n: int, size: int) -> tuple[float, float]:
    best, med = min(times), statistics.median(times)
    print(f"  {name:9} {n:>8} msgs  best {best:6.2f} s {n / best:>9,.0f} msg/s {size / 1e6 / best:7.1f} MB/s"
          f"   (median {n / med:>9,.0f} msg/s {size / 1e6 / med:6.1f} MB/s of {len(times)})")
    return n / best, n / med


def run_case(label: str, recs: list[KafkaRecord], suffix: str, tmp: Path, base: Settings,
             rounds: int) -> bool:
    sp = spec(suffix)
    f = tmp / f"{suffix}.mcap"
    write_recording(f, recs, f"{SRC}.{suffix}", sp.partitions)
    size = sum(r.size for r in recs)
    print(f"{label}: {len(recs)} records, {size / 1e6:.1f} MB of records, file {f.stat().st_size / 1e6:.1f} MB")
    ns_p = base.with_namespace(f"bnp{secrets.token_hex(3)}")
    ns_r = base.with_namespace(f"bnr{secrets.token_hex(3)}")
    times: dict[str, list[float]] = {"read": [], "produce": [], "replay": []}
    try:
        for s in (ns_p, ns_r):
            rep = ensure_topics(s, [sp])
            assert rep.success, rep.lines()
        tmap = {f"{SRC}.{suffix}": sp.name(ns_r.namespace)}
        n = nbytes = 0
        for _ in range(rounds):  # interleaved, so load swings hit every measurement alike
            t, n, nbytes = bench_read(f)
            times["read"].append(t)
            times["produce"].append(asyncio.run(bench_produce(ns_p, recs, sp.name(ns_p.namespace))))
            times["replay"].append(asyncio.run(bench_replay(ns_r, f, tmap)))
        rates = {k: row(k, v, n, nbytes) for k, v in times.items()}
        best = {k: v[0] for k, v in rates.items()}
        med = {k: v[1] for k, v in rates.items()}
        which = "read" if best["read"] < best["produce"] else "produce"
        ratio = best["replay"] / min(best["read"], best["produce"])
        ratio_med = med["replay"] / min(med["read"], med["produce"])
        ok = ratio >= 0.70
        print(f"  replay = {ratio:.0%} of the slower baseline ({which}), best vs best "
              f"(medians: {ratio_med:.0%}); target >= 70%: {'MET' if ok else 'NOT MET'}")
        return ok
    finally:
        for s in (ns_p, ns_r):
            delete_namespace_topics(s)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (CI smoke)")
    ap.add_argument("--events", type=int, help="event records (default 200000, quick 50000)")
    ap.add_argument("--frames", type=int, help="frame records (default 2000, quick 300)")
    ap.add_argument("--only", choices=["events", "frames"], help="run one of the two cases")
    ap.add_argument("--rounds", type=int, help="interleaved rounds, best reported (default 3, quick 2)")
    args = ap.parse_args()
    n_ev = args.events or (50_000 if args.quick else 200_000)
    n_fr = args.frames or (300 if args.quick else 2000)
    rounds = args.rounds or (2 if args.quick else 3)
    base = load_settings()
    data_dir = Path(os.environ.get("IOC_DATA_DIR") or ROOT.parent / "shared" / "data")
    print(f"bench_replay: {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}, "
          f"kafka {','.join(base.kafka.bootstrap_servers)}")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        ok1 = ok2 = True
        if args.only != "frames":
            ok1 = run_case("events", make_events(n_ev), "events", tmp, base, rounds)
        if args.only != "events":
            ok2 = run_case("camera frames", make_frames(n_fr, data_dir), "camera.frames", tmp,
                           base, rounds)
    sys.exit(0 if ok1 and ok2 else 1)


if __name__ == "__main__":
    main()
