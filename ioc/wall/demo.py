"""Demo tiles for a screen layout: plausible camera thumbnails, KPIs, series, alerts, text.

Pure generators (no Kafka): :class:`DemoTiles` builds :class:`~ioc.tiles.Tile` objects for
the tiles placed on a layout; ``ioc wall demo-tiles`` produces them to the tiles topic.
"""

from __future__ import annotations

import math
import random
import time
from collections import deque

from ..config._wall import ScreenLayout, TilePlacement
from ..tiles import Tile

__all__ = ["DemoTiles", "camera_thumbnail"]

_UNITS = {
    "traffic_flow": ("veh/h", 1450, 350), "air_quality": ("µg/m³", 18, 9),
    "dossiers_received": ("", 312, 40), "noise": ("dB(A)", 61, 6),
    "documents_signed": ("", 845, 60), "postal_returns": ("", 127, 25),
    "response_time": ("min", 7.4, 2.0),
}
_ALERTS = [  # severity, entity, message, rule (the alert's kind)
    ("critical", "sensor:river-01", "River level above warning threshold (3.2 m)", "river_level_high"),
    ("warning", "camera:central-station", "Crowd density high on platform 2", "crowd_density"),
    ("warning", "sensor:park-03", "PM2.5 above 35 µg/m³ for 30 min", "pm25_high"),
    ("info", "gateway:egov", "Postal service batch delayed 12 min", "postal_delay"),
    ("warning", "camera:river-bridge", "Camera view partially obstructed", "camera_tamper"),
    ("info", "sensor:ring-road", "Traffic counter 14 back online", "sensor_back"),
]


def camera_thumbnail(name: str, t: float, *, width: int = 640, height: int = 360,
                     quality: int = 70) -> tuple[bytes, dict[str, int]]:
    """A JPEG street-scene thumbnail with detection boxes drawn in, and its counts."""
    import cv2
    import numpy as np

    rng = random.Random(f"{name}:{int(t * 2)}")
    seed = sum(map(ord, name))
    img = np.zeros((height, width, 3), np.uint8)
    horizon = int(height * (0.35 + (seed % 7) / 50))
    sky = np.linspace(70, 25, horizon, dtype=np.uint8)[:, None]
    img[:horizon, :, 0] = sky + 20
    img[:horizon, :, 1] = sky
    img[:horizon, :, 2] = sky // 2
    img[horizon:] = (46, 48, 50)
    for i in range(6):  # buildings
        x = (seed * 37 + i * 131) % width
        w, h = 50 + (seed + i * 17) % 70, 40 + (seed * 3 + i * 29) % 90
        cv2.rectangle(img, (x, horizon - h), (x + w, horizon), (58 + i * 4, 56, 52), -1)
        for wy in range(horizon - h + 8, horizon - 6, 14):
            for wx in range(x + 6, x + w - 6, 12):
                if (wx + wy + seed) % 3:
                    cv2.rectangle(img, (wx, wy), (wx + 5, wy + 7), (90, 170, 200), -1)
    cv2.line(img, (0, height - 40), (width, horizon + 10), (200, 200, 200), 2)
    counts = {"vehicles": 0, "people": 0}
    for i in range(3 + seed % 4):  # cars moving along the road
        phase = (t * (18 + i * 7) + i * 160 + seed) % (width + 120) - 60
        y = int(horizon + 30 + i * (height - horizon - 70) / 5)
        cv2.rectangle(img, (int(phase), y), (int(phase) + 52, y + 24), (40 + i * 40, 60, 170), -1)
        cv2.rectangle(img, (int(phase) - 4, y - 4), (int(phase) + 56, y + 28), (0, 220, 255), 2)
        counts["vehicles"] += 1
    for i in range(rng.randint(1, 5)):  # people
        x = int((t * 6 * (1 + i % 2) + i * 97 + seed) % width)
        y = height - 30 - (i * 23) % 60
        cv2.rectangle(img, (x, y - 34), (x + 12, y), (170, 150, 120), -1)
        cv2.rectangle(img, (x - 4, y - 38), (x + 16, y + 4), (90, 255, 90), 2)
        counts["people"] += 1
    stamp = time.strftime("%H:%M:%S", time.localtime(t))
    cv2.putText(img, stamp, (width - 98, height - 12), cv2.FONT_HERSHEY_SIMPLEX, 0.55,
                (255, 255, 255), 1, cv2.LINE_AA)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:  # pragma: no cover - cv2 encodes any uint8 image
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes(), counts


class DemoTiles:
    """Builds demo tiles for the placements of ``layout`` (clock tiles need none)."""

    def __init__(self, layout: ScreenLayout, *, seed: int = 7, history: int = 60) -> None:
        self.layout = layout
        self.rng = random.Random(seed)
        self._hist: dict[str, deque[list[float]]] = {}
        self._history = history
        self._alerts: list[dict[str, object]] = []

    def placements(self, kind: str) -> list[TilePlacement]:
        return [p for p in self.layout.tiles if p.tile.split(":", 1)[0] == kind and p.view != "clock"]

    def camera(self, p: TilePlacement, now: float) -> Tile:
        name = p.tile.split(":", 1)[1]
        jpeg, counts = camera_thumbnail(name, now)
        health = "degraded" if name.endswith("bridge") and int(now / 60) % 5 == 4 else "online"
        payload = {"camera": name, "width": 640, "height": 360, "counts": counts,
                   "motion": round(0.2 + 0.6 * abs(math.sin(now / 7 + len(name))), 2),
                   "health": health, "fps": 5.0}
        return Tile(p.tile, "camera", int(now * 1000), now, payload, jpeg, produced_at=now)

    def _walk(self, key: str, base: float, spread: float, now: float) -> list[list[float]]:
        hist = self._hist.get(key)
        if hist is None:
            hist = self._hist[key] = deque(maxlen=self._history)
            v = base
            for i in range(self._history, 0, -1):
                v = max(0.0, v + self.rng.gauss(0, spread / 6) + (base - v) * 0.1)
                hist.append([now - i * 10, round(v, 2)])
        last = hist[-1][1]
        v = max(0.0, last + self.rng.gauss(0, spread / 6) + (base - last) * 0.1)
        hist.append([now, round(v, 2)])
        return list(hist)

    def data_tiles(self, now: float) -> list[Tile]:
        """One new version of every data tile on the layout."""
        out: list[Tile] = []
        version = int(now * 1000)
        for p in self.placements("kpi"):
            key = p.tile.split(":")[1]
            unit, base, spread = _UNITS.get(key, ("", 100, 20))
            hist = self._walk(p.tile, base, spread, now)
            value = hist[-1][1]
            out.append(Tile(p.tile, "kpi", version, now, {
                "label": p.title or key, "value": value, "unit": unit, "period": "1h",
                "group": None, "trend": [h[1] for h in hist[-30:]], "ranking": []},
                produced_at=now))
        for p in self.placements("sensor"):
            _, entity, metric = [*p.tile.split(":"), "", ""][:3]
            base, spread, unit = {"level": (2.6, 0.6, "m"), "flow": (1800, 500, "veh/h"),
                                  "pm25": (22, 10, "µg/m³")}.get(metric, (50, 10, ""))
            hist = self._walk(p.tile, base, spread, now)
            out.append(Tile(p.tile, "series", version, now, {
                "label": p.title, "entity": entity, "metric": metric, "unit": unit,
                "value": hist[-1][1], "series": hist}, produced_at=now))
        for p in self.placements("alerts"):
            if not self._alerts or self.rng.random() < 0.15:
                sev, entity, message, rule = _ALERTS[len(self._alerts) % len(_ALERTS)]
                self._alerts.insert(0, {"id": f"a{len(self._alerts) + 1}", "severity": sev,
                                        "entity": entity, "message": message, "rule": rule,
                                        "raised_at": now - self.rng.randint(30, 3000),
                                        "state": "raised"})
                del self._alerts[6:]
            out.append(Tile(p.tile, "alerts", version, now,
                            {"scope": p.tile.split(":", 1)[1], "items": list(self._alerts)},
                            produced_at=now))
        for p in self.placements("text"):
            out.append(Tile(p.tile, "text", version, now, {
                "text": "Road works on the ring road, exit 4, until 18:00. "
                        "Market day: expect crowds around the square."}, produced_at=now))
        return out
