"""Cameras end to end on the real broker and database, with real processes.

One `ioc worker` (vision + camera_health agents) serves the module; `ioc camera run`
processes capture a looped clip from ../shared/data, a truncated copy of it, and a
"slow" camera (captured at 1 fps while the worker expects 5). A background consumer
collects everything the worker publishes. Health thresholds are short (offline after
3 s) so the module stays around a minute and a half.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import orjson
import pytest
import yaml

from ioc.config import Settings
from ioc.storage import connect
from ioc.tiles import decode_tile
from streams.camera_health_agent import partition_for
from tests.conftest import ROOT, Proc, settings_env

pytestmark = [pytest.mark.kafka, pytest.mark.db, pytest.mark.timeout(300)]

CLIP = "video/traffic_cctv/motorway_bgslibrary_video02.avi"
OFFLINE_AFTER = 3.0
CHECK_EVERY = 0.5


class Collector(threading.Thread):
    """Reads detections, camera.health and wall.tiles from the start, in the background."""

    def __init__(self, s: Settings) -> None:
        super().__init__(daemon=True)
        from kafka import KafkaConsumer

        ns = s.namespace
        self.topics = {f"{ns}.detections": "det", f"{ns}.camera.health": "health",
                       f"{ns}.wall.tiles": "tile", f"{ns}.camera.frames": "frame"}
        self.consumer = KafkaConsumer(*self.topics, bootstrap_servers=s.kafka.bootstrap_servers,
                                      auto_offset_reset="earliest", enable_auto_commit=False)
        self.got: dict[str, list[tuple[float, Any]]] = {k: [] for k in self.topics.values()}
        self.lock = threading.Lock()
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            for tp, msgs in self.consumer.poll(200).items():
                kind = self.topics[tp.topic]
                for m in msgs:
                    if kind == "frame":
                        item: Any = (m.key, m.partition)
                    elif kind == "tile":
                        item = decode_tile(m.value)
                    else:
                        item = orjson.loads(m.value)
                    with self.lock:
                        self.got[kind].append((time.time(), item))
        self.consumer.close()

    def items(self, kind: str) -> list[tuple[float, Any]]:
        with self.lock:
            return list(self.got[kind])

    def wait(self, kind: str, pred: Callable[[Any], bool], timeout: float,
             procs: list[Proc] = ()) -> tuple[float, Any]:  # type: ignore[assignment]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for t, item in self.items(kind):
                if pred(item):
                    return t, item
            for p in procs:
                assert p.alive(), f"{p.log.name} died:\n{p.output()[-3000:]}"
            time.sleep(0.1)
        seen = [i for _, i in self.items(kind)][-8:]
        raise AssertionError(f"no matching {kind} message within {timeout}s; last seen: {seen}")


def _cameras_env(cameras: list[dict[str, Any]]) -> dict[str, str]:
    return {
        "IOC_CAMERAS__CAMERAS": yaml.safe_dump(cameras, default_flow_style=True),
        "IOC_CAMERAS__HEALTH": yaml.safe_dump({"offline_after_s": OFFLINE_AFTER,
                                               "fps_window_s": 4,
                                               "check_interval_s": CHECK_EVERY},
                                              default_flow_style=True),
        # People detection is the heavy analyzer; these tests are about the plumbing.
        "IOC_CAMERAS__ANALYTICS": "{people: {enabled: false}, thumbnail: {interval_s: 0.4}}",
    }


class Env:
    def __init__(self, s: Settings, tmp: Path, clip: Path, cut: Path) -> None:
        self.s = s
        self.tmp = tmp
        self.procs: list[Proc] = []
        self.worker_cams = [
            {"id": "cam-a", "url": str(clip), "loop": True},
            {"id": "cam-cut", "url": str(cut), "loop": True},
            {"id": "cam-slow", "url": str(clip), "loop": True},  # worker expects 5 fps
            {"id": "cam-never", "url": str(tmp / "missing.avi")},  # configured, never sends
        ]

    def spawn(self, args: list[str], name: str, cams: list[dict[str, Any]]) -> Proc:
        env = settings_env(self.s)
        env.update(_cameras_env(cams))
        log = self.tmp / f"{name}-{len(self.procs)}.log"
        fh = open(log, "wb")  # noqa: SIM115 - closed with the process
        p = subprocess.Popen([sys.executable, "-m", "ioc", *args], env=env, stdout=fh,
                             stderr=subprocess.STDOUT, cwd=ROOT)
        proc = Proc(p, log)
        self.procs.append(proc)
        return proc

    def capture(self, ids: list[str], name: str, *, verbose: bool = False, **override: Any) -> Proc:
        cams = [dict(c, **override) if c["id"] in ids else c for c in self.worker_cams]
        args = ["-v", "camera", "run", "--stats-every", "1"] if verbose else ["camera", "run"]
        for i in ids:
            args += ["--camera", i]
        return self.spawn(args, name, cams)


@pytest.fixture(scope="module")
def env(settings: Settings, shared_data: Path, tmp_path_factory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("cameras")
    clip = shared_data / CLIP
    cut = tmp / "cut.avi"
    data = clip.read_bytes()
    cut.write_bytes(data[: len(data) // 8])  # cut mid-stream: ~90 frames, then garbage end
    e = Env(settings, tmp, clip, cut)
    collector = Collector(settings)
    collector.start()
    e.collector = collector  # type: ignore[attr-defined]
    e.worker = e.spawn(["worker", "--agents", "vision,camera_health"], "worker",  # type: ignore[attr-defined]
                       e.worker_cams)
    e.cap = e.capture(["cam-a", "cam-cut"], "capture")  # type: ignore[attr-defined]
    e.slow = e.capture(["cam-slow"], "capture-slow", fps=1)  # type: ignore[attr-defined]
    yield e
    for p in reversed(e.procs):
        p.stop()
    collector.done.set()
    collector.join(5)


def test_frames_flow_to_detections_and_thumbnail_tiles(env):
    c = env.collector
    _, det = c.wait("det", lambda d: d["camera"] == "cam-a" and d["skipped"] is None
                    and not d["warming_up"] and d["motion"]["ratio"] > 0, 120, [env.worker, env.cap])
    assert det["width"] == 320 and det["height"] == 240 and det["seq"] >= 0
    _, tile = c.wait("tile", lambda t: t.id == "camera:cam-a" and t.image, 30, [env.worker])
    assert tile.kind == "camera"
    img = cv2.imdecode(np.frombuffer(tile.image, np.uint8), cv2.IMREAD_COLOR)
    assert img is not None and img.shape[1] == 320, "the tile image must be a decodable JPEG"
    assert tile.payload["camera"] == "cam-a" and tile.payload["health"] in ("online", "degraded")
    assert 0 <= tile.payload["motion"] <= 1
    # Versions grow per tile id, and a tile's time is its frame's capture time.
    versions = [t.version for _, t in c.items("tile") if t.id == "camera:cam-a"]
    assert versions == sorted(versions) and len(set(versions)) == len(versions)
    dets = [d for _, d in c.items("det") if d["camera"] == "cam-a"]
    assert any(abs(tile.time - d["ts"]) < 1e-6 for d in dets)
    # Frames were keyed where the health agent expects them (murmur2, like Kafka's).
    frames = [i for _, i in c.items("frame")]
    assert frames and all(p == partition_for(k.decode(), 4) for k, p in frames if k)


def _decodable_frames(path: Path) -> int:
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    n = 0
    while cap.grab():
        n += 1
    cap.release()
    return n


def test_truncated_file_source_keeps_flowing(env):
    c = env.collector
    per_pass = _decodable_frames(env.tmp / "cut.avi")
    assert 20 < per_pass < 300, per_pass
    # 25 fps sampled to 5: one pass of the cut file publishes ~per_pass/5 frames; a seq
    # well beyond that proves the capture reached the cut, survived it and looped.
    want = per_pass // 5 + 5
    c.wait("det", lambda d: d["camera"] == "cam-cut" and d["skipped"] is None
           and d["seq"] >= want, 90, [env.worker, env.cap])


def test_bad_frames_are_skipped_with_reason_and_worker_survives(env):
    from kafka import KafkaProducer

    c = env.collector
    c.wait("det", lambda d: d["camera"] == "cam-a", 120, [env.worker])  # worker is up
    good = cv2.imencode(".jpg", np.full((240, 320, 3), 90, np.uint8))[1].tobytes()
    tiny = cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))[1].tobytes()
    rng = np.random.default_rng(7)
    bad = [
        (b"\xff\xd8" + rng.bytes(5000) + b"\xff\xd9", "corrupt_jpeg"),
        (rng.bytes(3000), "not_jpeg"),
        (b"", "empty"),
        (good[: len(good) // 2], "truncated"),
        (tiny, "bad_size"),
    ]
    prod = KafkaProducer(bootstrap_servers=env.s.kafka.bootstrap_servers)
    topic = f"{env.s.namespace}.camera.frames"
    t0 = time.time()
    for i, (data, _) in enumerate(bad):
        prod.send(topic, key=b"cam-bad", value=data,
                  headers=[("seq", str(i).encode()), ("ts", repr(t0 + i * 0.1).encode())])
    prod.send(topic, key=None, value=rng.bytes(100))  # no key: counted as bad_key
    prod.send(topic, key=b"cam-bad", value=good,
              headers=[("seq", b"99"), ("ts", repr(t0 + 1).encode()), ("width", b"320")])
    prod.flush()
    prod.close()
    c.wait("det", lambda d: d["camera"] == "cam-bad" and d["seq"] == 99, 60, [env.worker])
    got = {d["seq"]: d["skipped"] for _, d in c.items("det") if d["camera"] == "cam-bad"}
    assert got == {**{i: reason for i, (_, reason) in enumerate(bad)}, 99: None}
    assert env.worker.alive()


def test_backlog_of_old_frames_is_shed_as_stale(env):
    """A backlog (frames 10 s old, as after a stall) is thinned; the newest is analysed."""
    from kafka import KafkaProducer

    c = env.collector
    c.wait("det", lambda d: d["camera"] == "cam-a", 120, [env.worker])
    good = cv2.imencode(".jpg", np.full((240, 320, 3), 60, np.uint8))[1].tobytes()
    prod = KafkaProducer(bootstrap_servers=env.s.kafka.bootstrap_servers, linger_ms=50)
    topic = f"{env.s.namespace}.camera.frames"
    old = time.time() - 10
    for i in range(20):
        prod.send(topic, key=b"cam-lag", value=good,
                  headers=[("seq", str(i).encode()), ("ts", repr(old + i * 0.01).encode())])
    prod.flush()
    prod.close()
    c.wait("det", lambda d: d["camera"] == "cam-lag" and d["seq"] == 19, 60, [env.worker])
    got = {d["seq"]: d["skipped"] for _, d in c.items("det") if d["camera"] == "cam-lag"}
    assert sorted(got) == list(range(20)), "every frame is accounted for, analysed or stale"
    assert got[19] is None, "the newest frame is analysed"
    assert sum(1 for v in got.values() if v == "stale") >= 10, got


def test_health_offline_on_kill9_online_on_restart(env):
    c = env.collector
    c.wait("health", lambda h: h["camera"] == "cam-a" and h["state"] == "online", 120,
           [env.worker, env.cap])
    c.wait("det", lambda d: d["camera"] == "cam-a", 60, [env.cap])
    n_before = len(c.items("health"))
    env.cap.kill9()
    killed = time.time()
    t_off, off = c.wait("health", lambda h: h["camera"] == "cam-a" and h["state"] == "offline"
                        and h["time"] > killed - 1, 30, [env.worker])
    # Offline within its configured time (+ one check interval + delivery slack).
    assert t_off - killed <= OFFLINE_AFTER + CHECK_EVERY + 2.5, (t_off - killed, off)
    assert off["previous"] in ("online", "degraded") and "no frame for" in off["reason"]
    _, tile = c.wait("tile", lambda t: t.id == "camera:cam-a" and t.payload["health"] == "offline",
                     10)
    assert tile.image, "an offline camera keeps its last thumbnail"
    assert "tamper" in tile.payload, "and its last tamper flags (the drill-in shows them)"
    env.cap = env.capture(["cam-a", "cam-cut"], "capture-restart")
    c.wait("health", lambda h: h["camera"] == "cam-a" and h["state"] == "online"
           and h["previous"] == "offline", 60, [env.worker, env.cap])
    assert len(c.items("health")) > n_before


def test_fps_drop_and_never_seen_camera_reported(env):
    c = env.collector
    _, deg = c.wait("health", lambda h: h["camera"] == "cam-slow" and h["state"] == "degraded",
                    120, [env.worker, env.slow])
    assert deg["target_fps"] == 5 and deg["fps"] < 2.5, deg
    _, never = c.wait("health", lambda h: h["camera"] == "cam-never", 60, [env.worker])
    assert never["state"] == "offline" and never["previous"] is None


def test_sink_stores_detections_and_health(env):
    """Last: `ioc sink` writes what the tests above produced; a second run adds nothing."""
    c = env.collector
    c.wait("health", lambda h: h["camera"] == "cam-slow" and h["state"] == "degraded", 120)
    c.wait("det", lambda d: d["camera"] == "cam-bad" and d["seq"] == 99, 60)
    ns = env.s.namespace

    def counts() -> dict[str, Any]:
        with connect(env.s.database, autocommit=True) as conn:
            return {
                "det": conn.execute(f'select count(*) from "{ns}".detections').fetchone()[0],
                "skipped": dict(conn.execute(
                    f"select skipped, count(*) from \"{ns}\".detections where camera = 'cam-bad' "
                    "group by 1").fetchall()),
                "states": {r[0] for r in conn.execute(
                    f'select state from "{ns}".camera_health').fetchall()},
            }

    sink = env.spawn(["sink", "--tables", "detections,camera_health", "--linger", "0.2"], "sink",
                     env.worker_cams)
    deadline = time.monotonic() + 60
    want = {"online", "offline", "degraded"}
    while time.monotonic() < deadline:
        got = counts()
        if got["states"] >= want and len(got["skipped"]) >= 6:
            break
        assert sink.alive(), sink.output()[-3000:]
        time.sleep(0.5)
    assert got["states"] >= want, got
    assert got["skipped"] == {"corrupt_jpeg": 1, "not_jpeg": 1, "empty": 1, "truncated": 1,
                              "bad_size": 1, None: 1}, got
    assert got["det"] > 20
    assert sink.stop() in (0, -15), sink.output()[-2000:]
    # Idempotent: writing stored results again adds no row.
    from ioc.camera_storage import DETECTIONS_SINK, detection_rows
    from ioc.storage.sink import TableWriter

    rows = [r for _, d in c.items("det") if d["camera"] == "cam-bad"
            for r in detection_rows(b"cam-bad", orjson.dumps(d), [])]
    writer = TableWriter(env.s, DETECTIONS_SINK)
    try:
        assert writer.write(rows) == 0
    finally:
        writer.close()


def test_capture_stops_cleanly_and_reports_stats(env):
    p = env.capture(["cam-a"], "capture-term", verbose=True)
    deadline = time.monotonic() + 60
    while '"published": ' not in p.output() and time.monotonic() < deadline:
        assert p.alive(), p.output()[-2000:]
        time.sleep(0.2)
    time.sleep(1.5)
    assert p.stop() == 0, p.output()[-2000:]
    stats = json.loads(p.output().strip().splitlines()[-1])["cameras"]["cam-a"]
    assert stats["published"] >= 5 and stats["dropped"]["sampled_out"] > stats["published"]
    assert os.path.exists(p.log)
