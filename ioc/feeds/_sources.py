"""Demo series for the feed simulator: real recordings from the shared data folder, or
synthetic series with the same entities when the folder is absent.

Each ``Series`` is one sensor: an entity, an event type and points
``(recorded unix time, {metric: value})`` in time order. Missing readings (-200 in the
UCI air file, empty cells) are left out of a point, never sent as numbers.
"""

from __future__ import annotations

import csv
import math
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

__all__ = ["Series", "data_dir", "load_series", "synthetic_series"]


@dataclass
class Series:
    entity: str
    type: str
    points: list[tuple[float, dict[str, float]]] = field(default_factory=list)
    origin: str = ""

    @property
    def span_s(self) -> float:
        return self.points[-1][0] - self.points[0][0] if len(self.points) > 1 else 0.0


def data_dir(root: Path | None = None) -> Path:
    """``$IOC_DATA_DIR``, else ``../shared/data`` next to the repository."""
    if env := os.environ.get("IOC_DATA_DIR"):
        return Path(env)
    root = root or Path(__file__).resolve().parents[2]
    return root.parent / "shared" / "data"


def _ts(text: str, fmt: str) -> float:
    return datetime.strptime(text.strip(), fmt).replace(tzinfo=UTC).timestamp()


def _num(text: str | None, missing: float | None = None) -> float | None:
    if text is None or not text.strip():
        return None
    try:
        v = float(text)
    except ValueError:
        return None
    if (missing is not None and v == missing) or not math.isfinite(v):
        return None
    return v


def _rows(path: Path) -> Iterator[dict[str, str]]:
    with path.open(newline="", encoding="utf-8", errors="replace") as fh:
        for row in csv.DictReader(fh):
            yield {(k or "").strip(): v for k, v in row.items()}


def _air_uci(path: Path) -> Series:
    cols = {"CO_GT": "co", "NO2_GT": "no2", "NOx_GT": "nox", "C6H6_GT": "benzene",
            "T": "temperature", "RH": "humidity"}
    s = Series("air-uci-1", "air.quality", origin=str(path))
    for row in _rows(path):
        if not row.get("Date"):
            continue
        vals = {m: v for c, m in cols.items() if (v := _num(row.get(c), -200.0)) is not None}
        if vals:
            s.points.append((_ts(f"{row['Date']} {row['Time']}", "%d/%m/%Y %H:%M:%S"), vals))
    return s


def _air_prsa(path: Path) -> Series:
    s = Series("air-beijing-1", "air.quality", origin=str(path))
    for row in _rows(path):
        t = datetime(int(row["year"]), int(row["month"]), int(row["day"]), int(row["hour"]),
                     tzinfo=UTC).timestamp()
        vals = {m: v for c, m in (("pm2.5", "pm25"), ("TEMP", "temperature"))
                if (v := _num(row.get(c))) is not None}
        if "pm25" in vals:
            s.points.append((t, vals))
    return s


def _nab(path: Path, metric: str) -> tuple[str, list[tuple[float, dict[str, float]]]]:
    sensor = path.stem.split("_", 1)[1]
    pts = [(_ts(r["timestamp"], "%Y-%m-%d %H:%M:%S"), {metric: v}) for r in _rows(path)
           if (v := _num(r.get("value"))) is not None]
    return f"road-{sensor}", pts


def _noise(path: Path) -> Series:
    s = Series("noise-1", "noise.level", origin=str(path))
    for row in _rows(path):
        col = next((k for k in row if k.upper().startswith("LEQ")), None)
        v = _num(row.get(col)) if col else None
        if v is not None:
            s.points.append((_ts(row["datetime"], "%Y-%m-%d %H:%M:%S"), {"laeq": v}))
    return s


def load_series(root: Path) -> list[Series]:
    """Every demo series found under ``root`` (``sensors/air``, ``sensors/nab``, ``sensors/noise``)."""
    out: list[Series] = []
    air = root / "sensors" / "air"
    if (p := air / "AirQualityUCI.csv").exists():
        out.append(_air_uci(p))
    if (p := air / "PRSA_data_2010.1.1-2014.12.31.csv").exists():
        out.append(_air_prsa(p))
    roads: dict[str, Series] = {}
    for pattern, metric in (("speed_*.csv", "speed"), ("occupancy_*.csv", "occupancy")):
        for p in sorted((root / "sensors" / "nab").glob(pattern)):
            entity, pts = _nab(p, metric)
            s = roads.setdefault(entity, Series(entity, "traffic.flow", origin=str(p)))
            s.points.extend(pts)
    for s in roads.values():
        merged: dict[float, dict[str, float]] = {}
        for t, vals in s.points:  # speed and occupancy of one sensor at one time: one event
            merged.setdefault(t, {}).update(vals)
        s.points = sorted(merged.items())
        out.append(s)
    if (p := root / "sensors" / "noise" / "test_data_laeq1m.csv").exists():
        out.append(_noise(p))
    return [s for s in out if s.points]


def synthetic_series(*, hours: int = 48, seed: int = 1) -> list[Series]:
    """Plausible daily-cycle series for the same kinds of sensors (no data folder needed)."""
    rnd = random.Random(seed)
    t0 = 1_600_000_000.0
    specs = [("air-synth-1", "air.quality", "pm25", 35, 25, 3600),
             ("air-synth-2", "air.quality", "no2", 40, 20, 3600),
             ("road-synth-1", "traffic.flow", "speed", 70, 20, 300),
             ("noise-synth-1", "noise.level", "laeq", 55, 10, 60)]
    out = []
    for entity, typ, metric, base, amp, step in specs:
        s = Series(entity, typ, origin="synthetic")
        for i in range(int(hours * 3600 / step)):
            t = t0 + i * step
            day = math.sin(2 * math.pi * ((t % 86400) / 86400 - 0.3))
            s.points.append((t, {metric: round(base + amp * day + rnd.gauss(0, amp / 6), 2)}))
        out.append(s)
    return out
