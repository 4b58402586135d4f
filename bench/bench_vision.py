"""Vision analytics figures: accuracy on the real clips, and throughput per core.

Usage::

    .venv/bin/python bench/bench_vision.py [--quick] [--data ../shared/data]

(a) Accuracy: people count MAE, precision/recall of person boxes at IoU 0.5 (PETS 2009
    S2.L1, TUD-Campus), motion precision/recall/F1 (CDnet highway, temporal ROI and ROI
    mask), with the time per frame of each.
    Line counting: vehicles per direction across two lines on CDnet highway at 5 and
    30 fps against tests/fixtures/highway_crossings.json (from the per-pixel masks),
    with the analyzer's time per frame next to a raw decode + MOG2 loop; walkers per
    direction across two lines on PETS S2.L1 (people on) against
    tests/fixtures/walker_crossings.py (from the MOT boxes).
(a2) Tamper: every case of tests/fixtures/tamper_cases.json (tampering with known onsets
    on real clips) at 5 fps and at the clip's own rate: detected or not, delay after the
    tamper is complete, wrong kinds, raises before the onset, clear delay; negatives
    must raise nothing.
(b) Throughput on one core (``cv2.setNumThreads(1)``) at 640x360, 5 fps: cameras per
    core for motion + tamper + thumbnails (one zone, one counting line), next to the
    same run's raw OpenCV loop (JPEG decode + MOG2 on the same frames), and the ratio;
    and the analyzers as they were before issue 14 (bench/_vision_legacy.py) in the same
    run, with the tamper detectors alone.
    People detection is reported separately. CPU time of this process is measured
    (``time.process_time``), so other load on the machine inflates it less than wall time;
    the methods are interleaved and each one's best of the rounds is kept.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._vision_legacy import (  # noqa: E402
    LegacyAnalyzer,
    LegacyTamperConfig,
    LegacyTamperDetector,
)
from tests.fixtures.tamper_cases import load_cases, run_case  # noqa: E402
from tests.fixtures.walker_crossings import LINES as WALKER_LINES  # noqa: E402
from tests.fixtures.walker_crossings import truth as walker_truth  # noqa: E402
from vision import AnalyticsConfig, CameraAnalyzer  # noqa: E402
from vision.frames import fit_width  # noqa: E402
from vision.geometry import SceneRasters  # noqa: E402
from vision.motion import MotionDetector  # noqa: E402
from vision.tamper import TamperDetector  # noqa: E402

FPS = 5.0


def frames_of(path: Path, *, step: int = 1, limit: int | None = None) -> list[tuple[int, Any]]:
    """(1-based number, BGR frame) of every ``step``-th frame."""
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise SystemExit(f"cannot open {path}")
    out: list[tuple[int, Any]] = []
    n = 0
    while limit is None or len(out) < limit:
        ok, f = cap.read()
        if not ok:
            break
        n += 1
        if (n - 1) % step == 0:
            out.append((n, f))
    return out


def mot_boxes(gt: Path) -> dict[int, list[tuple[float, float, float, float]]]:
    """MOT ground truth: frame -> [(x, y, w, h)]."""
    out: dict[int, list[tuple[float, float, float, float]]] = defaultdict(list)
    for line in gt.read_text().splitlines():
        p = line.split(",")
        if len(p) >= 6:
            out[int(p[0])].append((float(p[2]), float(p[3]), float(p[4]), float(p[5])))
    return out


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def people_accuracy(name: str, video: Path, gt: Path, src_fps: float, interval_s: float,
                    hog: dict[str, Any] | None = None) -> None:
    """Count MAE and box precision/recall (greedy matching at IoU >= 0.5) of the analyzer
    with default settings (``hog`` overrides), the clip sampled at 5 fps (motion on every
    sample, people every ``interval_s``); the HOG time per run next to a raw decode +
    MOG2 loop on the same samples."""
    cfg = AnalyticsConfig.model_validate({
        "tamper": {"enabled": False}, "thumbnail": {"enabled": False},
        "people": {"enabled": True, "interval_s": interval_s, "hog": hog or {}}})
    an = CameraAnalyzer(name, cfg)
    truth = mot_boxes(gt)
    errs, tp, fp, fn, secs, runs = [], 0, 0, 0, 0.0, 0
    samples = []
    cap = cv2.VideoCapture(str(video))
    n, taken = 0, -1
    while True:
        ok, f = cap.read()
        if not ok:
            break
        n += 1
        if int((n - 1) * FPS / src_fps) != taken:
            taken = int((n - 1) * FPS / src_fps)
            samples.append((n, f))
    for n, f in samples:
        h, w = f.shape[:2]
        t0 = time.process_time()
        r = an.process(f, (n - 1) / src_fps)
        dt = time.process_time() - t0
        if r.people is None or not r.people.fresh:
            continue
        secs += dt
        runs += 1
        found = [(b.x * w, b.y * h, b.w * w, b.h * h) for b in r.people.boxes]
        g = truth.get(n, [])
        errs.append(abs(len(found) - len(g)))
        used: set[int] = set()
        for b in sorted(found, key=lambda b: -b[2] * b[3]):
            cands = [(iou(b, x), j) for j, x in enumerate(g) if j not in used]
            best = max(cands, default=(0.0, -1))
            if best[0] >= 0.5:
                tp += 1
                used.add(best[1])
            else:
                fp += 1
        fn += len(g) - len(used)
    mog = cv2.createBackgroundSubtractorMOG2()
    jpgs = [cv2.imencode(".jpg", f, [cv2.IMWRITE_JPEG_QUALITY, 80])[1].tobytes()
            for _, f in samples]
    t0 = time.process_time()
    for data_i in jpgs:
        mog.apply(_imdecode(data_i, cv2.IMREAD_COLOR))
    raw = (time.process_time() - t0) / len(jpgs)
    det = an.people
    up = getattr(det, "upscale", 1.0)
    print(f"  {name:22s} 5 fps, {runs:3d} runs (every {interval_s:g} s) count MAE "
          f"{np.mean(errs):.3f}  P {tp / max(1, tp + fp):.3f} R {tp / max(1, tp + fn):.3f}"
          f"  {secs / max(1, runs) * 1000:.0f} ms/run at {w}x{h} (upscale {up:.2f}); raw "
          f"decode+MOG2 {raw * 1000:.1f} ms/frame; hog {hog or 'defaults'}")


def motion_accuracy(data: Path) -> None:
    """Motion P/R/F1 on CDnet highway with the default motion settings."""
    d = data / "video/cdnet_highway"
    first, last = (int(v) for v in (d / "temporalROI.txt").read_text().split())
    roi_img = cv2.imread(str(d / "ROI.bmp"), cv2.IMREAD_GRAYSCALE)
    if roi_img is None:
        raise SystemExit(f"cannot read {d / 'ROI.bmp'}")
    roi = roi_img > 0
    cfg = AnalyticsConfig()
    md = MotionDetector(cfg.motion)
    scene = None
    tp = fp = fn = 0
    secs = 0.0
    for i in range(1, last + 1):
        f = cv2.imread(str(d / f"input/in{i:06d}.jpg"), cv2.IMREAD_COLOR)
        if f is None:
            raise SystemExit(f"cannot read input frame {i} in {d}")
        if scene is None:
            scene = SceneRasters.build(cfg, f.shape[1], f.shape[0])
        t0 = time.process_time()
        out = md.detect(f, scene, i / 30)  # CDnet highway: 30 fps
        secs += time.process_time() - t0
        if i < first:
            continue
        gt = cv2.imread(str(d / f"groundtruth/gt{i:06d}.png"), cv2.IMREAD_GRAYSCALE)
        if gt is None:
            raise SystemExit(f"cannot read ground truth {i} in {d}")
        ok = roi & (gt != 170) & (gt != 85)
        pred, pos = out.mask > 0, gt == 255
        tp += int(np.count_nonzero(pred & pos & ok))
        fp += int(np.count_nonzero(pred & ~pos & ok))
        fn += int(np.count_nonzero(~pred & pos & ok))
    p, r = tp / (tp + fp), tp / (tp + fn)
    print(f"  {'CDnet highway motion':22s} frames {last} (scored {first}-{last})"
          f"  P {p:.3f} R {r:.3f} F1 {2 * p * r / (p + r):.3f}"
          f"  {secs / last * 1000:.2f} ms/frame at 320x240")


def line_counting(data: Path) -> None:
    """Vehicles per direction across the two lines of tests/fixtures/highway_crossings.json
    (truth built from CDnet's per-pixel masks), at 5 fps and at the native 30 fps, with
    the analyzer's CPU time per frame next to the raw decode + MOG2 loop on the same
    frames (JPEG files decoded in both)."""
    d = data / "video/cdnet_highway"
    truth = json.loads((ROOT / "tests/fixtures/highway_crossings.json").read_text())
    first, last = truth["frames"]
    lines = [{"name": k, **v} for k, v in truth["lines"].items()]
    want = {k: (v["in"], v["out"]) for k, v in truth["crossings"].items()}
    paths = [str(d / f"input/in{i:06d}.jpg") for i in range(1, last + 1)]
    for step, label in ((6, "5 fps"), (1, "30 fps")):
        cfg = AnalyticsConfig.model_validate({"lines": lines, "tamper": {"enabled": False},
                                              "thumbnail": {"enabled": False}})
        an = CameraAnalyzer("highway", cfg)
        got = {k: [0, 0] for k in want}
        secs = 0.0
        n = 0
        for i in range(1, last + 1, step):
            data_i = Path(paths[i - 1]).read_bytes()
            t0 = time.process_time()
            r = an.process_jpeg(data_i, i / truth["native_fps"])
            secs += time.process_time() - t0
            n += 1
            if i >= first:
                for k, c in r.crossings.items():
                    got[k][0] += c.in_
                    got[k][1] += c.out
        mog = cv2.createBackgroundSubtractorMOG2()
        t0 = time.process_time()
        for i in range(1, last + 1, step):
            mog.apply(_imdecode(Path(paths[i - 1]).read_bytes(), cv2.IMREAD_COLOR))
        raw = time.process_time() - t0
        errs = "  ".join(
            f"{k} in {g[0]}/{want[k][0]} ({(g[0] - want[k][0]) / max(1, want[k][0]):+.0%}) "
            f"out {g[1]}/{want[k][1]}" for k, g in got.items())
        print(f"  {'CDnet highway lines':22s} {label:6s} {errs}  (got/truth, frames "
              f"{first}-{last}); {secs / n * 1000:.2f} ms/frame, raw decode+MOG2 "
              f"{raw / n * 1000:.2f} ms (x{secs / raw:.2f})")


def people_line_counting(data: Path, quick: bool = False) -> None:
    """Walkers per direction across two lines on PETS 2009 S2.L1, at 5 fps and the native
    7 fps (``quick``: 5 fps only), with people detection on (default settings otherwise:
    HOG every 1 s); truth from the MOT boxes' foot paths
    (tests/fixtures/walker_crossings.py). Printed: the people counts (tracks of the
    detector's boxes), the blob counts (what the vehicle counter sees), and the CPU
    time per frame."""
    d = data / "video/pets09_s2l1"
    want = walker_truth(d / "gt.txt")
    frames = frames_of(d / "vtest.avi")
    for label, rate in (("5 fps", FPS),) if quick else (("5 fps", FPS), ("7 fps", 7.0)):
        cfg = AnalyticsConfig.model_validate({
            "lines": [{"name": k, "a": a, "b": b} for k, (a, b) in WALKER_LINES.items()],
            "people": {"enabled": True},
            "tamper": {"enabled": False}, "thumbnail": {"enabled": False}})
        an = CameraAnalyzer("pets", cfg)
        taken, secs, n = -1, 0.0, 0
        for i, f in frames:
            if int((i - 1) * rate / 7.0) == taken:
                continue
            taken = int((i - 1) * rate / 7.0)
            t0 = time.process_time()
            an.process(f, (i - 1) / 7.0)
            secs += time.process_time() - t0
            n += 1
        assert an.counter is not None and an.people_counter is not None
        got = {k: (v.in_, v.out) for k, v in an.people_counter.totals.items()}
        blobs = {k: (v.in_, v.out) for k, v in an.counter.totals.items()}
        print(f"  {'PETS09 walkers lines':22s} {label:6s} people "
              + "  ".join(f"{k} in {got[k][0]}/{want[k][0]} out {got[k][1]}/{want[k][1]}"
                          for k in WALKER_LINES)
              + "  (got/truth); blobs "
              + "  ".join(f"{k} {blobs[k][0]}/{blobs[k][1]}" for k in WALKER_LINES)
              + f"; {secs / n * 1000:.0f} ms/frame ({an.stats.people_runs} HOG runs)")


# --- throughput -------------------------------------------------------------------------


def camera_jpegs(data: Path, per_camera: int) -> list[list[bytes]]:
    """640x360 JPEGs (quality 80, as capture sends them) of three clips = three cameras."""
    clips = [("video/pets09_s2l1/vtest.avi", 1),
             ("video/cdnet_highway/highway_bgslibrary_video03.avi", 3),
             ("video/traffic_cctv/motorway_bgslibrary_video02.avi", 2)]
    out = []
    for rel, step in clips:
        jpgs = []
        for _, f in frames_of(data / rel, step=step, limit=per_camera):
            f = cv2.resize(f, (640, 360), interpolation=cv2.INTER_AREA)
            _, buf = cv2.imencode(".jpg", f, [cv2.IMWRITE_JPEG_QUALITY, 80])
            jpgs.append(buf.tobytes())
        out.append(jpgs)
    return out


def _interleaved(cams: list[list[bytes]]) -> list[tuple[int, bytes]]:
    n = min(len(c) for c in cams)
    return [(ci, cams[ci][i]) for i in range(n) for ci in range(len(cams))]


def _imdecode(data: bytes, flag: int) -> np.ndarray:
    img = cv2.imdecode(np.frombuffer(data, np.uint8), flag)
    if img is None:
        raise SystemExit("a benchmark JPEG did not decode")
    return img


def run_raw_full(cams: list[list[bytes]]) -> tuple[float, int]:
    """Raw loop as the issue defines it: full JPEG decode + default MOG2 on that frame."""
    mogs = [cv2.createBackgroundSubtractorMOG2() for _ in cams]
    seq = _interleaved(cams)
    t0 = time.process_time()
    for ci, data in seq:
        mogs[ci].apply(_imdecode(data, cv2.IMREAD_COLOR))
    return time.process_time() - t0, len(seq)


def run_raw_same_size(cams: list[list[bytes]]) -> tuple[float, int]:
    """Raw loop doing the analytics' own core: decode at 1/2 (320x180) + MOG2 there."""
    mogs = [cv2.createBackgroundSubtractorMOG2(history=300) for _ in cams]
    seq = _interleaved(cams)
    t0 = time.process_time()
    for ci, data in seq:
        mogs[ci].apply(_imdecode(data, cv2.IMREAD_REDUCED_COLOR_2))
    return time.process_time() - t0, len(seq)


def analytics_cfg(people: bool = False) -> AnalyticsConfig:
    """One zone, one counting line, motion + tracking + tamper + thumbnails (every 5th)."""
    return AnalyticsConfig.model_validate({
        "zones": [{"name": "road", "polygon": [[0, 0.4], [1, 0.4], [1, 1], [0, 1]]}],
        "lines": [{"name": "gate", "a": [0, 0.7], "b": [1, 0.7]}],
        "people": {"enabled": people, "interval_s": 1.0},
    })


def run_analytics(cams: list[list[bytes]], cfg: AnalyticsConfig, *,
                  legacy: bool = False) -> tuple[float, int]:
    """CameraAnalyzer.process_jpeg (``legacy``: the analyzers before issue 14), one
    analyzer per camera, frames stamped at FPS (warm-ups and confirmations are in seconds)."""
    ans: list[Any] = [LegacyAnalyzer(f"cam{i}", cfg) if legacy else CameraAnalyzer(f"cam{i}", cfg)
                      for i in range(len(cams))]
    seq = _interleaved(cams)
    t0 = time.process_time()
    for k, (ci, data) in enumerate(seq):
        r = ans[ci].process_jpeg(data, (k // len(cams)) / FPS)
        if r.skipped:
            raise SystemExit(f"frame skipped: {r.skipped}")
    return time.process_time() - t0, len(seq)


def run_tamper_alone(cams: list[list[bytes]], legacy: bool) -> tuple[float, int]:
    """The tamper detector alone on the frames the analyzer hands it (old: gray at 160 px,
    new: BGR at tamper.width), decoding excluded."""
    cfg = AnalyticsConfig()
    frames = []
    for ci, data in _interleaved(cams):
        small = fit_width(_imdecode(data, cv2.IMREAD_REDUCED_COLOR_2), cfg.motion.width)
        if legacy:
            frames.append((ci, fit_width(cv2.cvtColor(small, cv2.COLOR_BGR2GRAY), 160)))
        else:
            frames.append((ci, fit_width(small, cfg.tamper.width)))
    dets: list[Any] = [LegacyTamperDetector(LegacyTamperConfig()) if legacy
                       else TamperDetector(cfg.tamper) for _ in cams]
    t0 = time.process_time()
    for k, (ci, f) in enumerate(frames):
        dets[ci].detect(f, (k // len(cams)) / FPS)
    return time.process_time() - t0, len(frames)


def throughput(data: Path, per_camera: int, rounds: int) -> None:
    """Print per-frame cost, cameras per core at 5 fps and the ratio to the raw loops."""
    cams = camera_jpegs(data, per_camera)
    methods = {
        "raw loop: decode 640x360 + MOG2": run_raw_full,
        "raw loop: decode 1/2 + MOG2 (same size)": run_raw_same_size,
        "analytics: motion+tamper+thumbnails": lambda c: run_analytics(c, analytics_cfg()),
        "old analytics (before issue 14)": lambda c: run_analytics(c, analytics_cfg(),
                                                                   legacy=True),
        "tamper alone, new": lambda c: run_tamper_alone(c, False),
        "tamper alone, old": lambda c: run_tamper_alone(c, True),
    }
    best: dict[str, float] = {}
    for _ in range(rounds):
        for name, fn in methods.items():
            secs, n = fn(cams)
            best[name] = min(best.get(name, 1e9), secs / n)
    base = best["raw loop: decode 640x360 + MOG2"]
    same = best["raw loop: decode 1/2 + MOG2 (same size)"]
    for name, per in best.items():
        print(f"  {name:42s} {per * 1000:6.2f} ms/frame  {1 / per / FPS:6.1f} cameras/core"
              f"  x{per / base:.2f} of raw loop")
    ana = best["analytics: motion+tamper+thumbnails"]
    print(f"  ratio analytics / raw loop (decode 640x360 + MOG2): {ana / base:.2f}"
          f"  (target <= 1.30)")
    print(f"  ratio analytics / raw loop at the same size:        {ana / same:.2f}")
    print(f"  cameras per core (motion+tamper+thumbnails, 5 fps): {1 / ana / FPS:.1f}"
          f"  (target >= 30)")
    old = best["old analytics (before issue 14)"]
    print(f"  cameras per core, new / old analyzers (same run):   {1 / ana / FPS:.1f} / "
          f"{1 / old / FPS:.1f} = {old / ana:.2f} (target >= 0.85: cost within 15%)")
    tn, to = best["tamper alone, new"], best["tamper alone, old"]
    print(f"  tamper alone: new {tn * 1000:.2f} ms/frame, old {to * 1000:.2f} ms/frame"
          f" (x{tn / to:.2f}); the rest of the difference is motion, tracking and lines")
    short = [c[: max(10, per_camera // 4)] for c in cams]
    secs, n = run_analytics(short, analytics_cfg(people=True))
    print(f"  with HOG people every 1 s (defaults, learnt scale): {secs / n * 1000:6.2f} ms/frame"
          f"  {n / secs / FPS:.1f} cameras/core")


def tamper_accuracy(data: Path, quick: bool) -> None:
    """Every case of tests/fixtures/tamper_cases.json at 5 fps and at the clip's rate."""
    cases = load_cases()
    if quick:
        cases = cases[::3]
    rows = []
    for case in cases:
        for fps in (FPS, None):
            cfg = AnalyticsConfig.model_validate({"thumbnail": {"enabled": False}})
            an = CameraAnalyzer(case.name, cfg)
            o = run_case(case, data, lambda f, t, an=an: an.process(f, t).tamper, fps=fps)
            rows.append(o)
            raises = [(round(t - case.onset_s, 1), k) for t, k, a in o.events if a]
            if case.expect is None:
                verdict = "ok (no raise)" if o.ok else f"FALSE RAISE {raises}"
                print(f"  {case.name:28s} {o.fps:4.0f} fps  negative          {verdict}")
                continue
            delay = "-" if o.delay_s is None else f"{o.delay_s:+.2f} s"
            clear = "-" if o.clear_delay_s is None else f"{o.clear_delay_s:.2f} s"
            print(f"  {case.name:28s} {o.fps:4.0f} fps  {case.expect:9s} "
                  f"{'detected' if o.detected else 'MISSED  '} delay {delay:8s} "
                  f"wrong kinds {list(o.wrong) or '-'}  early raises {o.early}  "
                  f"dropped {o.dropped}  cleared {clear}")
    pos = [o for o in rows if o.case.expect is not None]
    neg = [o for o in rows if o.case.expect is None]
    delays = [o.delay_s for o in pos if o.detected and o.delay_s is not None]
    print(f"  tamper: {sum(o.ok for o in pos)}/{len(pos)} tampers met (kind within 2 s of "
          f"completion, cleared after restoration), {sum(o.ok for o in neg)}/{len(neg)} "
          f"negatives without a raise; delay after completion max "
          f"{max(delays, default=float('nan')):.2f} s, mean "
          f"{float(np.mean(delays)) if delays else float('nan'):.2f} s")


def main() -> None:
    """Parse arguments and print both parts."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer frames (the tests' sampling)")
    ap.add_argument("--data", type=Path,
                    default=Path(os.environ.get("IOC_DATA_DIR") or ROOT.parent / "shared/data"))
    ap.add_argument("--skip-accuracy", action="store_true")
    ap.add_argument("--skip-tamper", action="store_true", help="skip the tamper cases (a2)")
    args = ap.parse_args()
    cv2.setNumThreads(1)
    data: Path = args.data
    print(f"OpenCV {cv2.__version__}, numpy {np.__version__}, cv2 threads 1, "
          f"{'quick' if args.quick else 'full'} run")
    if not args.skip_accuracy:
        print("(a) accuracy")
        pets = data / "video/pets09_s2l1"
        tud = data / "video/tud/TUD-Campus"
        people_accuracy("PETS09 S2.L1 people", pets / "vtest.avi", pets / "gt.txt", 7.0,
                        3.5 if args.quick else 1.0)
        people_accuracy("TUD-Campus people", tud / "TUD-Campus.mp4", tud / "gt.txt", 25.0, 0.0)
        # The settings of before issue 14, at the same sampling, for comparison.
        people_accuracy("PETS09 upscale 1.5 ms .6", pets / "vtest.avi", pets / "gt.txt", 7.0,
                        3.5 if args.quick else 1.0, {"upscale": 1.5, "min_score": 0.6})
        people_accuracy("TUD upscale 1.5 ms .6", tud / "TUD-Campus.mp4", tud / "gt.txt",
                        25.0, 0.0, {"upscale": 1.5, "min_score": 0.6})
        motion_accuracy(data)
        line_counting(data)
        people_line_counting(data, args.quick)
    if not args.skip_tamper:
        print("(a2) tamper on real footage (tests/fixtures/tamper_cases.json), defaults")
        tamper_accuracy(data, args.quick)
    print("(b) throughput, one core, 640x360 JPEG q80, 5 fps per camera, 3 cameras interleaved")
    throughput(data, 60 if args.quick else 200, 2 if args.quick else 3)


if __name__ == "__main__":
    main()
