"""What the analytics of one frame produce (``FrameResult``) and its JSON form.

Boxes and centroids are normalized to the analyzed frame (0..1), like the config, so
consumers never need to know the resolution the capture side chose.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Box",
    "FrameResult",
    "LineCount",
    "MotionResult",
    "PeopleResult",
    "TamperEvent",
    "TamperState",
]


def _r(x: float, nd: int = 4) -> float:
    return round(float(x), nd)


@dataclass(frozen=True, slots=True)
class Box:
    """A detection box, normalized ``(x, y, w, h)`` with its detector score."""

    x: float
    y: float
    w: float
    h: float
    score: float = 1.0

    def to_json(self) -> list[float]:
        """``[x, y, w, h, score]`` rounded for the wire."""
        return [_r(self.x), _r(self.y), _r(self.w), _r(self.h), _r(self.score, 3)]


@dataclass(slots=True)
class MotionResult:
    """Share of moving pixels over the whole (unmasked) frame and per zone."""

    ratio: float = 0.0
    zones: dict[str, float] = field(default_factory=dict)
    active: list[str] = field(default_factory=list)


@dataclass(slots=True)
class PeopleResult:
    """People count, per zone (by the box's foot point) and boxes.

    ``fresh`` is False on frames where the detector did not run (``interval_s``):
    the counts are the last detection's, ``age_frames`` frames old.
    """

    total: int = 0
    zones: dict[str, int] = field(default_factory=dict)
    boxes: list[Box] = field(default_factory=list)
    fresh: bool = False
    age_frames: int = 0
    crossings: dict[str, LineCount] = field(default_factory=dict)  # people, this frame
    counts: dict[str, LineCount] = field(default_factory=dict)  # people, since the start


@dataclass(slots=True)
class LineCount:
    """Crossings of one counting line (this frame's increments or the cumulative count)."""

    in_: int = 0
    out: int = 0

    def to_json(self) -> dict[str, int]:
        """``{"in": n, "out": n}``."""
        return {"in": self.in_, "out": self.out}


@dataclass(frozen=True, slots=True)
class TamperEvent:
    """A tamper state change: ``kind`` in covered/defocused/moved, raised or cleared."""

    kind: str
    active: bool
    ts: float
    value: float = 0.0

    def to_json(self) -> dict[str, Any]:
        """JSON form for the detections topic."""
        return {"kind": self.kind, "active": self.active, "ts": self.ts, "value": _r(self.value)}


@dataclass(slots=True)
class TamperState:
    """Current tamper flags plus the changes that happened on this frame."""

    covered: bool = False
    defocused: bool = False
    moved: bool = False
    changed: list[TamperEvent] = field(default_factory=list)
    ready: bool = False

    @property
    def any(self) -> bool:
        """True while any tamper condition is raised."""
        return self.covered or self.defocused or self.moved


@dataclass(slots=True)
class FrameResult:
    """Everything the analytics found on one frame of one camera.

    ``skipped`` is a reason code from ``vision.frames.SKIP_REASONS`` when the frame was
    not analyzed (then the analyzers' fields keep their empty defaults). ``warming_up``
    is True while per-camera state is still being learned (see docs/vision.md).
    """

    camera: str
    ts: float
    seq: int = 0
    width: int = 0
    height: int = 0
    motion: MotionResult = field(default_factory=MotionResult)
    people: PeopleResult | None = None
    crossings: dict[str, LineCount] = field(default_factory=dict)
    counts: dict[str, LineCount] = field(default_factory=dict)
    tracks: int = 0
    tamper: TamperState = field(default_factory=TamperState)
    thumbnail: bytes | None = None
    skipped: str | None = None
    warming_up: bool = False
    elapsed_ms: float = 0.0

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict for the detections topic (never the image bytes)."""
        out: dict[str, Any] = {
            "camera": self.camera,
            "ts": self.ts,
            "seq": self.seq,
            "skipped": self.skipped,
            "elapsed_ms": _r(self.elapsed_ms, 3),
        }
        if self.skipped is not None:
            return out
        out.update(
            {
                "width": self.width,
                "height": self.height,
                "warming_up": self.warming_up,
                "motion": {
                    "ratio": _r(self.motion.ratio),
                    "zones": {k: _r(v) for k, v in self.motion.zones.items()},
                    "active": list(self.motion.active),
                },
                "people": None
                if self.people is None
                else {
                    "total": self.people.total,
                    "zones": dict(self.people.zones),
                    "boxes": [b.to_json() for b in self.people.boxes],
                    "fresh": self.people.fresh,
                    "age_frames": self.people.age_frames,
                    "crossings": {k: v.to_json() for k, v in self.people.crossings.items()},
                    "counts": {k: v.to_json() for k, v in self.people.counts.items()},
                },
                "crossings": {k: v.to_json() for k, v in self.crossings.items()},
                "counts": {k: v.to_json() for k, v in self.counts.items()},
                "tracks": self.tracks,
                "tamper": {
                    "covered": self.tamper.covered,
                    "defocused": self.tamper.defocused,
                    "moved": self.tamper.moved,
                    "ready": self.tamper.ready,
                    "changed": [e.to_json() for e in self.tamper.changed],
                },
                "has_thumbnail": self.thumbnail is not None,
            }
        )
        return out
