"""Coverage-guided fuzzing (atheris/libFuzzer) of every decoder that sees outside bytes.

    .venv/bin/pip install -e '.[fuzz]'                      # atheris (not needed by CI)
    .venv/bin/python bench/fuzz_decoders.py --list
    .venv/bin/python bench/fuzz_decoders.py --target raw --seconds 120
    .venv/bin/python bench/fuzz_decoders.py --all --seconds 60     # each target in turn
    .venv/bin/python bench/fuzz_decoders.py --check          # corpus replay, no atheris
    .venv/bin/python bench/fuzz_decoders.py --make-seeds     # (re)write the seed files

A target feeds the fuzzer's bytes to one decoder. An input *crashes* a target when an
exception escapes that is not one of the decoder's documented error types (each target
names them: the ``IOCError`` branch it raises, plus what its docstring lists). Crashes do
not stop the run: each new crash signature (exception type + innermost project frame) is
written once to ``tests/fixtures/fuzz_corpus/<target>/crash-<sha1>`` and printed, and the
fuzzer goes on. ``--check`` replays every file of the corpus (seeds and crash-*) through
its target without atheris and exits 1 when any still escapes: that is how a crash
becomes a regression case once its decoder is fixed.

Seeds (``seed-*``: valid and near-valid records, small) live in the same folders; what
libFuzzer discovers goes to a scratch folder (``--work``, default /tmp), not to git.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CORPUS = ROOT / "tests" / "fixtures" / "fuzz_corpus"


@dataclass
class Target:
    """One decoder under fuzzing: ``run(data)`` and the exceptions it may raise."""

    name: str
    doc: str
    run: Callable[[bytes], Any]
    allowed: tuple[type[BaseException], ...]
    seeds: Callable[[], dict[str, bytes]]
    crashes: dict[str, str] = field(default_factory=dict)  # signature -> file
    execs: int = 0


def _json_or_none(data: bytes) -> Any:
    import orjson

    try:
        return orjson.loads(data)
    except (orjson.JSONDecodeError, RecursionError):
        return None


def _jpeg_oversize(data: bytes, limit: int) -> bool:
    """True when any SOFn marker of ``data`` declares a side larger than ``limit``."""
    for m in range(0xC0, 0xD0):
        if m in (0xC4, 0xC8, 0xCC):
            continue
        i = data.find(bytes([0xFF, m]))
        while i >= 0:
            if i + 9 <= len(data):
                h, w = int.from_bytes(data[i + 5:i + 7], "big"), int.from_bytes(data[i + 7:i + 9], "big")
                if h > limit or w > limit:
                    return True
            i = data.find(bytes([0xFF, m]), i + 2)
    return False


def build_targets() -> dict[str, Target]:
    """The targets, importing the project (under atheris instrumentation when fuzzing)."""
    import orjson

    from ioc.aggregate._window import Agg, EntityWindows, Rollup
    from ioc.errors import IOCError
    from ioc.events import (
        Event,
        decode_event,
        encode_event,
        encode_events,
        split_raw,
        validate_event,
    )
    from ioc.events._ngsi import ngsi_to_event
    from ioc.events._route import route_raw
    from ioc.kpi._ratio import KpiCounts, KpiValue
    from ioc.replay.format import (
        IMAGE_SCHEMA,
        RECORD_SCHEMA,
        KafkaRecord,
        decode_message,
        encode_message,
    )
    from ioc.replay.recording import open_recording
    from ioc.rules._engine import Alert, EntityRules
    from ioc.tiles import Tile, decode_tile, encode_tile
    from ioc.wall.protocol import (
        encode_image_frame,
        parse_client_message,
        parse_hello,
        parse_image_frame,
    )
    from vision.frames import MAX_SIDE, decode_jpeg

    now = 1_750_000_000.0
    ev = Event(id="e1", source="loops", type="traffic.flow", entity="loop-1", time=now - 5,
               values={"speed": 42.5, "intensity": 10.0}, attributes={"district": "d1"})
    ev_dict = {"id": "e1", "source": "loops", "type": "traffic.flow", "entity": "loop-1",
               "time": "2025-06-15T10:00:00+02:00", "values": {"speed": 42.5}}

    def raw(data: bytes) -> None:
        for item in split_raw(data):
            validate_event(item, now=now)

    def route(data: bytes) -> None:
        # The validate stage's whole handling of a record: must never raise.
        route_raw(data, b"k", [("h", b"v")], topic="fz.events.raw", partition=0, offset=7, now=now)

    def envelope(data: bytes) -> None:
        validate_event(data, now=now)
        obj = _json_or_none(data)
        if isinstance(obj, dict):
            validate_event(obj, now=now)

    def canonical(data: bytes) -> None:
        decode_event(data)

    def ngsi(data: bytes) -> None:
        obj = _json_or_none(data)
        if obj is None:
            return
        for entity in obj if isinstance(obj, list) else [obj]:
            validate_event(ngsi_to_event(entity, source="ngsi"), now=now)

    def tile(data: bytes) -> None:
        decode_tile(data)

    def wall(data: bytes) -> None:
        if data[:1] == b"\x00":  # binary frames: image frames (client side of the protocol)
            with contextlib.suppress(ValueError):  # documented: "ValueError on another shape"
                parse_image_frame(data[1:])
            return
        msg = parse_client_message(data.decode("utf-8", "replace"))
        if msg.get("type") == "hello":
            parse_hello(msg)

    from streams.engine.applied import Tracked

    # the changelog decoders the stages use (domain state + exactly-once marks)
    loaders: list[Callable[[bytes], Any]] = [
        Rollup.from_bytes, Tracked.decoder(EntityWindows.from_dict, "windows"),
        KpiValue.from_bytes, Tracked.decoder(KpiCounts.from_dict, "counts"),
        Alert.from_bytes, EntityRules.from_bytes]

    def state(data: bytes) -> None:
        # The first byte picks the loader; the rest is the record value.
        if data:
            loaders[data[0] % len(loaders)](data[1:])

    skip_bombs = os.environ.get("IOC_FUZZ_SKIP_FRAME_BOMBS") == "1"

    def frame(data: bytes) -> None:
        # A JPEG whose frame header claims a huge size makes libjpeg allocate and decode
        # for tens of seconds (timeout-* in the corpus); to fuzz past that known finding,
        # IOC_FUZZ_SKIP_FRAME_BOMBS=1 skips inputs whose SOF says more than MAX_SIDE.
        if skip_bombs and _jpeg_oversize(data, MAX_SIDE):
            return
        decode_jpeg(data)

    def replay_message(data: bytes) -> None:
        schema = IMAGE_SCHEMA if data[:1] == b"\x01" else RECORD_SCHEMA
        decode_message(data[1:], topic="fz.events", schema=schema, where="fuzz")

    scratch = Path(tempfile.gettempdir()) / f"ioc-fuzz-{os.getpid()}.mcap"

    def recording(data: bytes) -> None:
        scratch.write_bytes(data)
        with open_recording(scratch) as rec:
            for _ in rec.messages():
                pass

    # ---- seeds: valid and near-valid records of each target --------------------------
    def seeds_raw() -> dict[str, bytes]:
        one = encode_event(ev)
        many = encode_events([ev, ev])
        return {"one": one, "array": many, "dict-time": orjson.dumps(ev_dict),
                "empty-array": b"[]", "bad-item": b"[" + one + b",{\"id\":1}]",
                "truncated": one[:-3], "nested": b"[[" + one + b"]]"}

    def seeds_canonical() -> dict[str, bytes]:
        one = encode_event(ev)
        return {"one": one, "no-attrs": one.replace(b'"attributes":{"district":"d1"}', b'"attributes":{}'),
                "bad-time": one.replace(str(ev.time).encode(), b"1e300"), "truncated": one[:20]}

    def seeds_ngsi() -> dict[str, bytes]:
        tf = {"id": "urn:ngsi-ld:TrafficFlowObserved:1", "type": "TrafficFlowObserved",
              "dateObserved": {"type": "Property", "value": "2025-06-15T10:00:00Z"},
              "intensity": {"type": "Property", "value": 12},
              "averageVehicleSpeed": {"type": "Property", "value": 48.5}}
        aq = {"id": "urn:ngsi-ld:AirQualityObserved:s1", "type": "AirQualityObserved",
              "dateObserved": "2025-06-15T10:00:00+02:00", "pm25": 12.5, "no2": {"value": 30}}
        return {"traffic": orjson.dumps(tf), "air": orjson.dumps(aq),
                "batch": orjson.dumps([tf, aq]), "type-list": orjson.dumps({**tf, "type": [1]}),
                "no-date": orjson.dumps({k: v for k, v in aq.items() if k != "dateObserved"})}

    def seeds_tile() -> dict[str, bytes]:
        t = Tile(id="kpi:x", kind="kpi", version=3, time=now, payload={"value": 1.5})
        img = Tile(id="camera:c1", kind="camera", version=1, time=now, payload={},
                   image=b"\xff\xd8\xff\xd9", image_type="image/jpeg")
        good = encode_tile(t)
        return {"kpi": good, "image": encode_tile(img), "short": good[:12],
                "bad-len": good[:4] + b"\x00\x00\xff\xff" + good[8:]}

    def seeds_wall() -> dict[str, bytes]:
        hello = {"type": "hello", "token": "t", "screen": "main", "layout": "abc",
                 "versions": {"kpi:x": 3}}
        return {"hello": orjson.dumps(hello), "ping": b'{"type":"ping","t":1}',
                "pong": b'{"type":"pong"}', "bad-versions": orjson.dumps({**hello, "versions": [1]}),
                "image": b"\x00" + encode_image_frame("camera:c1", 2, b"\xff\xd8\xff\xd9")}

    def seeds_state() -> dict[str, bytes]:
        r = Rollup("loop-1", "speed", 60, 1_750_000_020, Agg(3, 120.0, 30.0, 50.0, 40.0, now), "closed")
        from streams.engine.applied import Applied, Tracked

        ew = Tracked(EntityWindows("loop-1", now, {("speed", 60, 1_750_000_020): Agg(
            1, 1.0, 1.0, 1.0, 1.0, now)}, 0, 1), Applied(0, 5, {0: (5, 0)}))
        kv = KpiValue("dossiers_online", "all", "day", "2025-06-15", 3.0, 4.0, 75.0, "%")
        kc = Tracked(KpiCounts("all", {("dossiers_online", "day", "2025-06-15"): [3.0, 4.0]}),
                     Applied(0, 9, {0: (9, 1)}))
        seeds: dict[str, bytes] = {}
        states: list[tuple[str, Any]] = [("rollup", r), ("windows", ew), ("kpi", kv), ("counts", kc)]
        for i, (name, obj) in enumerate(states):
            seeds[name] = bytes([i]) + obj.to_bytes()
        seeds["alert"] = bytes([4]) + orjson.dumps({
            "id": "a1", "rule": "pm25_high", "entity": "s1", "metric": "pm25", "severity": "warning",
            "state": "raised", "start": 1_750_000_000, "raised_at": now, "cleared_at": None,
            "value": 60.0, "message": "pm25 high", "scope": "all"})
        seeds["rules"] = bytes([5]) + orjson.dumps({"e": "s1", "p": 0, "s": {
            "pm25_high": [now, True, 1_750_000_000, now, now, 60.0, now, False, 0]}})
        return seeds

    def seeds_frame() -> dict[str, bytes]:
        import cv2
        import numpy as np

        img = np.zeros((48, 64, 3), np.uint8)
        img[10:30, 20:40] = (0, 128, 255)
        ok, jpg = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 60])
        assert ok
        b = jpg.tobytes()
        return {"small": b, "truncated": b[: len(b) // 2], "header-only": b[:200]}

    def seeds_replay_message() -> dict[str, bytes]:
        rec = KafkaRecord("fz.events", 1, 42, 1_750_000_000_000, b"loop-1", encode_event(ev),
                          (("ioc.raw", b"0:1:0"), ("bin", b"\xff\x00")))
        img = KafkaRecord("fz.camera.frames", 0, 3, 1_750_000_000_000, b"c1", b"\xff\xd8\xff\xd9",
                          (("seq", b"3"),))
        return {"record": b"\x00" + encode_message(rec, RECORD_SCHEMA),
                "image": b"\x01" + encode_message(img, IMAGE_SCHEMA),
                "no-kafka": b'\x00{"value":"x"}'}

    def seeds_recording() -> dict[str, bytes]:
        from ioc.replay.writer import RecordingWriter

        path = Path(tempfile.gettempdir()) / f"ioc-fuzz-seed-{os.getpid()}.mcap"
        with RecordingWriter(path, namespace="fz", partitions={"fz.events": 1},
                             compression="none", chunk_size=256) as w:
            for i in range(3):
                w.write(KafkaRecord("fz.events", 0, i, 1_750_000_000_000 + i, b"k",
                                    encode_event(ev), ()))
        data = path.read_bytes()
        path.unlink()
        return {"three": data, "truncated": data[: len(data) * 2 // 3],
                "no-footer": data[:-40]}

    # ---- the newer consumers: scorecards, views, the wall's action log, snapshots ------
    from ioc.scorecard import LeafCount, ScorecardCounts
    from ioc.tilegen import ViewFact
    from ioc.wall.workflow import ActionRecord
    from streams.engine.applied import Applied
    from streams.engine.snapshot import MAGIC as SNAP_MAGIC
    from streams.engine.snapshot import Snapshot, _digest, decode_snapshot, encode_snapshot

    counts_loader = Tracked.decoder(ScorecardCounts.from_dict, "the scorecard counts")

    def scorecard(data: bytes) -> None:
        # First byte even: a <ns>.scorecards value (stage scorecard_tiles, the sink);
        # odd: the scorecards stage's changelog record. What decodes must encode again
        # to the same thing (the sink and the leaderboard read the re-encoded leaf).
        if data[:1] and data[0] % 2:
            counts_loader(data[1:])
            return
        lf = LeafCount.from_bytes(data[1:])
        again = LeafCount.from_bytes(lf.to_bytes())
        assert again == lf, f"the leaf does not survive its own encoding: {lf!r} -> {again!r}"

    def view(data: bytes) -> None:
        fact = ViewFact.from_bytes(data)  # <ns>.views values (views stage, its state)
        again = ViewFact.from_bytes(fact.to_bytes())
        assert (again.partition, again.offset, again.value) == (fact.partition, fact.offset,
                                                                fact.value)

    def action(data: bytes) -> None:
        rec = ActionRecord.from_bytes(data)  # <ns>.alerts.actions (wall replicas, the sink)
        assert ActionRecord.from_bytes(rec.to_bytes()) == rec

    def snapshot(data: bytes) -> None:
        # First byte 0: the file as it is (magic and checksum rarely hold); otherwise the
        # rest is a body with the right magic and checksum, so the msgpack layer is fuzzed.
        if data[:1] == b"\x00":
            decode_snapshot(data[1:], where="fuzz")
        else:
            body = data[1:]
            decode_snapshot(SNAP_MAGIC + _digest(body) + body, where="fuzz")

    def seeds_scorecard() -> dict[str, bytes]:
        lvl = ("province", "admin_level", "agency", "procedure")
        lf = LeafCount("dossiers_online", "year", "2021", ("province", "district", "d1", "all"),
                       400.0, 1000.0, lvl, now)
        sc = Tracked(ScorecardCounts("d1", {("dossiers_online", "month", "2021-02",
                                             ("province", "district", "d1", "p0")): [3.0, 4.0]}),
                     Applied(0, 9, {0: (9, 1)}))
        good = lf.to_bytes()
        return {"leaf": b"\x00" + good, "leaf-no-levels": b"\x00" + orjson.dumps(
                    {"indicator": "i", "period": "month", "period_key": "2021-02",
                     "path": ["p", "d"], "numerator": 1, "denominator": 2}),
                "leaf-text-count": b"\x00" + good.replace(b'"numerator":400.0', b'"numerator":"4"'),
                "leaf-truncated": b"\x00" + good[:30], "counts": b"\x01" + sc.to_bytes(),
                "counts-bad-row": b"\x01" + sc.to_bytes().replace(b"3.0,4.0", b"3.0")}

    def seeds_view() -> dict[str, bytes]:
        kv = KpiValue("dossiers_online", "all", "day", "2025-06-15", 3.0, 4.0, 75.0, "%")
        al = Alert("a1", "pm25_high", "s1", "pm25", "warning", "raised", 1_750_000_000, now,
                   None, 60.0, "pm25 high", "all")
        return {"kpi": ViewFact(kv, kv.to_bytes(), 2, 41).to_bytes(),
                "alert": ViewFact(al, al.to_bytes(), 0, 7).to_bytes(),
                "bad-kind": b"rollup 0 1\n{}", "no-newline": b"kpi 0 1",
                "negative": b"alert -1 3\n" + al.to_bytes()}

    def seeds_action() -> dict[str, bytes]:
        ack = ActionRecord.new("ack", "a1", "op1", at=now, id="x1", screen="main", server="w1")
        com = ActionRecord.new("comment", "a1", "op2", at=now + 1, id="x2", text="on it")
        pre = ActionRecord.new("preset", "main", "op1", at=now, id="x3", preset="flood")
        return {"ack": ack.to_bytes(), "comment": com.to_bytes(), "preset": pre.to_bytes(),
                "bad-action": ack.to_bytes().replace(b'"ack"', b'"nack"'),
                "nan-at": ack.to_bytes().replace(str(now).encode(), b"NaN")}

    def seeds_snapshot() -> dict[str, bytes]:
        snap = Snapshot(1, "fz.state.app.kpi-counts", 3, 120,
                        [(b"all", b'{"g":"all"}'), (b"d1", b"\x00\xff")])
        data = encode_snapshot(snap)
        body = data[len(SNAP_MAGIC) + 16:]
        return {"file": b"\x00" + data, "body": b"\x01" + body,
                "empty": b"\x01" + encode_snapshot(Snapshot(1, "t", 0, 0, []))[24:],
                "file-truncated": b"\x00" + data[:-5],
                "body-v2": b"\x01" + encode_snapshot(Snapshot(2, "t", 0, 5, []))[24:]}

    ev_err = (IOCError,)
    targets = [
        Target("raw", "split_raw + validate_event of each item (events.raw records)", raw,
               ev_err, seeds_raw),
        Target("route", "route_raw: the validate stage's handling of a record (never raises)",
               route, (), seeds_raw),
        Target("envelope", "validate_event of bytes, and of the decoded JSON object", envelope,
               ev_err, seeds_raw),
        Target("canonical", "decode_event (events topic records: sink, aggregate, rules)",
               canonical, ev_err, seeds_canonical),
        Target("ngsi", "ngsi_to_event + validate_event (gateway NGSI-LD bodies)", ngsi, ev_err,
               seeds_ngsi),
        Target("tile", "decode_tile (wall.tiles records: wall server)", tile, ev_err, seeds_tile),
        Target("wall", "parse_client_message + parse_hello; parse_image_frame (first byte 0)",
               wall, ev_err, seeds_wall),
        Target("state", "rollup/windows/kpi/counts/alert/rules loaders (first byte picks)",
               state, ev_err, seeds_state),
        Target("frame", "vision.frames.decode_jpeg (camera.frames records)", frame, ev_err,
               seeds_frame),
        Target("replay-message", "replay decode_message (first byte 1: image schema)",
               replay_message, ev_err, seeds_replay_message),
        Target("recording", "open_recording + messages() of a whole file", recording, ev_err,
               seeds_recording),
        Target("scorecard", "LeafCount.from_bytes (<ns>.scorecards; round trip) or, first byte "
               "odd, the scorecard counts changelog loader", scorecard, ev_err, seeds_scorecard),
        Target("view", "ViewFact.from_bytes (<ns>.views records and the views state)", view,
               ev_err, seeds_view),
        Target("action", "ActionRecord.from_bytes (<ns>.alerts.actions; round trip)", action,
               ev_err, seeds_action),
        Target("snapshot", "decode_snapshot (stage snapshot files); first byte not 0: a body "
               "given the right magic and checksum", snapshot, ev_err, seeds_snapshot),
    ]
    return {t.name: t for t in targets}


def signature(exc: BaseException) -> str:
    """Exception type and the innermost frame in the project (file:line function)."""
    where = "?"
    for fr in traceback.extract_tb(exc.__traceback__):
        f = fr.filename
        if any(f"{os.sep}{pkg}{os.sep}" in f for pkg in ("ioc", "vision", "streams")):
            where = f"{Path(f).relative_to(ROOT) if f.startswith(str(ROOT)) else f}:{fr.lineno} {fr.name}"
    return f"{type(exc).__name__} at {where}"


def one_input(t: Target, data: bytes, *, save: bool = True) -> str | None:
    """Run ``data`` through ``t``; the crash signature when a foreign exception escapes."""
    t.execs += 1
    try:
        t.run(data)
    except t.allowed:
        return None
    except Exception as exc:  # the point of fuzzing: anything else is a finding
        sig = signature(exc)
        if sig not in t.crashes:
            name = f"crash-{hashlib.sha1(data).hexdigest()}"
            path = CORPUS / t.name / name
            if save:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
            t.crashes[sig] = name
            print(f"\n[fuzz] {t.name}: NEW CRASH {sig}: {str(exc)[:160]!r} -> {path if save else name}"
                  f" (input {len(data)} bytes: {data[:60]!r})", flush=True)
        return sig
    return None


def make_seeds(targets: dict[str, Target]) -> None:
    for t in targets.values():
        d = CORPUS / t.name
        d.mkdir(parents=True, exist_ok=True)
        for old in d.glob("seed-*"):
            old.unlink()
        for name, data in t.seeds().items():
            (d / f"seed-{name}").write_bytes(data)
        print(f"{t.name}: {len(list(d.glob('seed-*')))} seeds in {d.relative_to(ROOT)}")


def check(targets: dict[str, Target], names: list[str]) -> int:
    """Replay every corpus file of ``names``; the number that still escape."""
    bad = 0
    for n in names:
        t = targets[n]
        for f in sorted((CORPUS / n).glob("*")):
            sig = one_input(t, f.read_bytes(), save=False)
            if sig:
                bad += 1
                print(f"{n}/{f.name}: {sig}")
        print(f"{n}: {t.execs} corpus file(s), {len(t.crashes)} crash signature(s)")
    return bad


def fuzz(name: str, seconds: float, work: Path, extra: list[str]) -> None:
    """Fuzz one target for ``seconds`` (atheris exits the process when done)."""
    import atheris

    with atheris.instrument_imports(include=["ioc", "vision", "streams"]):
        targets = build_targets()
    t = targets[name]
    wdir = work / name
    wdir.mkdir(parents=True, exist_ok=True)
    seeds = CORPUS / name
    t0 = time.monotonic()

    def report() -> None:
        dt = time.monotonic() - t0
        print(f"\n[fuzz] {name}: {t.execs:,} executions in {dt:.0f} s "
              f"({t.execs / max(dt, 1e-9):,.0f}/s), {len(t.crashes)} crash signature(s)"
              + "".join(f"\n[fuzz]   {s} -> {f}" for s, f in t.crashes.items()), flush=True)

    import atexit

    atexit.register(report)

    def test_one(data: bytes) -> None:
        one_input(t, data)

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 2000))
    atheris.Setup([sys.argv[0], str(wdir), str(seeds), f"-max_total_time={int(seconds)}",
                   "-rss_limit_mb=3072", "-timeout=20", "-max_len=65536", "-print_final_stats=1",
                   *extra], test_one)
    atheris.Fuzz()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--target", action="append", default=[], help="target name (repeatable)")
    ap.add_argument("--all", action="store_true", help="every target in turn (subprocesses)")
    ap.add_argument("--seconds", type=float, default=60.0, help="fuzzing time per target")
    ap.add_argument("--list", action="store_true", help="list the targets")
    ap.add_argument("--check", action="store_true",
                    help="replay the corpus (seeds and crash-*) without atheris; exit 1 on escapes")
    ap.add_argument("--make-seeds", action="store_true", help="(re)write the seed-* files")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "ioc-fuzz-work",
                    help="scratch corpus folder (what libFuzzer finds; not kept in git)")
    ap.add_argument("libfuzzer", nargs="*", help="extra libFuzzer flags after --, e.g. -- -jobs=1")
    a = ap.parse_args()
    if a.list or a.make_seeds or a.check:
        targets = build_targets()
        if a.list:
            for t in targets.values():
                print(f"{t.name:<15} {t.doc}  (documented: "
                      f"{', '.join(e.__name__ for e in t.allowed) or 'nothing may escape'})")
        if a.make_seeds:
            make_seeds(targets)
        if a.check:
            sys.exit(1 if check(targets, a.target or list(targets)) else 0)
        return
    if a.all:
        import subprocess

        names = list(build_targets())
        for n in names:
            print(f"== {n} ({a.seconds:.0f} s)", flush=True)
            subprocess.run([sys.executable, __file__, "--target", n, "--seconds", str(a.seconds),
                            "--work", str(a.work), *(["--", *a.libfuzzer] if a.libfuzzer else [])])
        return
    if len(a.target) != 1:
        ap.error("give one --target (or --all, --list, --check, --make-seeds)")
    fuzz(a.target[0], a.seconds, a.work, a.libfuzzer)


if __name__ == "__main__":
    main()
