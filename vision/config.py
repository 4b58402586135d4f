"""Analytics settings of one camera: zones, counting lines, masks and analyzer tuning.

Every geometric value is *normalized*: ``(x, y)`` with ``0 <= x, y <= 1`` relative to
the frame's width and height, so one configuration fits every resolution the capture
side chooses. ``AnalyticsConfig`` is embedded per camera in the cameras settings.

Sides of a counting line are named as seen on screen by someone standing on point
``a`` and looking toward ``b`` (image y grows downwards): for a line drawn left to right,
``right`` is the lower half of the frame.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from ioc.config._base import Section

__all__ = [
    "AnalyticsConfig",
    "CountingLine",
    "DnnPeopleConfig",
    "HogPeopleConfig",
    "Mask",
    "MotionConfig",
    "PeopleConfig",
    "PeopleTrackingConfig",
    "Point",
    "TamperConfig",
    "ThumbnailConfig",
    "TrackingConfig",
    "Zone",
]

Point = tuple[float, float]
_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"


def _check_points(points: tuple[Point, ...], what: str) -> tuple[Point, ...]:
    for i, (x, y) in enumerate(points):
        if not (0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
            raise ValueError(
                f"{what} point {i} must be normalized (0 <= x, y <= 1), got ({x}, {y})"
            )
    return points


def _polygon_area(points: tuple[Point, ...]) -> float:
    s = 0.0
    for (x1, y1), (x2, y2) in zip(points, points[1:] + points[:1], strict=True):
        s += x1 * y2 - x2 * y1
    return abs(s) / 2.0


class Zone(Section):
    """A named area of the image; motion and people are reported per zone."""

    name: str = Field(pattern=_NAME, description="zone name, unique per camera")
    polygon: tuple[Point, ...] = Field(
        min_length=3, max_length=64, description="normalized vertices, in drawing order"
    )

    @field_validator("polygon")
    @classmethod
    def _normalized(cls, v: tuple[Point, ...]) -> tuple[Point, ...]:
        _check_points(v, "polygon")
        if _polygon_area(v) <= 1e-6:
            raise ValueError(f"polygon has no area (vertices {list(v)})")
        return v


class Mask(Section):
    """An area ignored by motion, tracking and people counting (trees, clocks, overlays)."""

    name: str = Field("mask", pattern=_NAME, description="label for logs and thumbnails")
    polygon: tuple[Point, ...] = Field(min_length=3, max_length=64, description="normalized vertices")

    @field_validator("polygon")
    @classmethod
    def _normalized(cls, v: tuple[Point, ...]) -> tuple[Point, ...]:
        return _check_points(v, "mask")


class CountingLine(Section):
    """A line that tracked moving objects (vehicles, blobs) are counted across."""

    name: str = Field(pattern=_NAME, description="line name, unique per camera")
    a: Point = Field(description="normalized start point")
    b: Point = Field(description="normalized end point")
    direction: Literal["left_to_right", "right_to_left"] = Field(
        "left_to_right",
        description="which crossing counts as 'in' (sides as seen from a looking toward b); "
        "the opposite crossing counts as 'out'",
    )

    @model_validator(mode="after")
    def _geometry(self) -> CountingLine:
        _check_points((self.a, self.b), "line")
        if abs(self.a[0] - self.b[0]) + abs(self.a[1] - self.b[1]) < 0.01:
            raise ValueError(f"line endpoints must differ, got a={self.a} b={self.b}")
        return self


class MotionConfig(Section):
    """Background subtraction (MOG2) on a downscaled frame.

    Defaults were chosen on the CDnet highway clip (see docs/performance/vision.md):
    color input and a 5x5 median filter beat gray input with blur and opening by
    about 0.2 F1 there, for about 15% more time. Times are in seconds of frame
    timestamps, so one setting means the same at 2 and at 30 fps.
    """

    renamed_keys = {
        "history": ("history_s", "seconds; MOG2's frame count is derived from the measured "
                    "frame interval"),
        "warmup_frames": ("warmup_s", "seconds of frame timestamps, not frames"),
    }

    enabled: bool = Field(True, description="run motion detection (tracking needs it)")
    width: int = Field(320, ge=64, le=1920, description="processing width in px (aspect kept)")
    color: bool = Field(True, description="model color pixels (False: gray, a bit cheaper)")
    history_s: float = Field(
        10.0, ge=1, le=3600,
        description="MOG2 history in seconds (frames = this / the measured frame interval)",
    )
    var_threshold: float = Field(16.0, gt=0, le=1000, description="MOG2 variance threshold")
    detect_shadows: bool = Field(True, description="classify shadows (not counted as motion)")
    median: int = Field(
        5, ge=0, le=15, description="median filter kernel on the foreground (0 or 1 = none)"
    )
    close_kernel: int = Field(
        0, ge=0, le=15, description="morphological closing kernel filling holes (0 = none)"
    )
    activity_threshold: float = Field(
        0.005, ge=0, le=1, description="a zone is 'active' when its moving-pixel ratio reaches this"
    )
    lighting_ratio: float = Field(
        0.6,
        gt=0,
        le=1,
        description="when this share of the frame changes at once (lights, auto exposure), "
        "the model is relearned and the frame reports no motion",
    )
    warmup_s: float = Field(
        4.0, ge=0, le=600, description="seconds learned before motion is reported"
    )


class HogPeopleConfig(Section):
    """OpenCV's built-in HOG + linear SVM people detector (64x128 window).

    The scale is chosen from the expected person height: ``person_height`` when set,
    else learnt from the camera's own confident, moving detections (docs/vision.md).
    """

    upscale: float | None = Field(
        None,
        ge=0.25,
        le=3.0,
        description="fixed resize factor before detection (>1 finds small people); "
        "null: chosen from the expected person height",
    )
    person_height: tuple[float, float] | None = Field(
        None,
        description="[smallest, tallest] person as fractions of the frame height, where "
        "people are; null: learnt from the scene",
    )
    win_stride: int = Field(8, ge=4, le=32, description="window stride in px")
    padding: int = Field(8, ge=0, le=64, description="padding in px around the image")
    scale: float = Field(1.05, gt=1.0, le=1.5, description="image pyramid scale step")
    hit_threshold: float = Field(0.0, ge=-2, le=5, description="SVM distance threshold")
    min_score: float = Field(
        -0.5, ge=-2, le=10,
        description="drop detections weaker than this (low: the height and motion checks "
        "remove what a low threshold lets in)",
    )
    calibration_score: float = Field(
        1.0, ge=-2, le=10,
        description="moving detections at least this strong teach the expected height",
    )
    nms_iou: float = Field(0.4, gt=0, le=1, description="non-maximum suppression IoU")

    @field_validator("person_height")
    @classmethod
    def _height_range(cls, v: tuple[float, float] | None) -> tuple[float, float] | None:
        if v is not None and not (0 < v[0] <= v[1] <= 1):
            raise ValueError(f"person_height must be 0 < smallest <= tallest <= 1, got {v}")
        return v


class DnnPeopleConfig(Section):
    """An operator-supplied ONNX detector run by cv2.dnn; nothing is downloaded."""

    model: Path = Field(description="path of the ONNX file (must exist at start-up)")
    output: Literal["yolov8", "yolov5", "ssd"] = Field(
        "yolov8",
        description="output layout: yolov8 [1, 4+classes, N]; yolov5 [1, N, 5+classes] "
        "(objectness first); ssd [1, 1, N, 7] normalized corners",
    )
    input_width: int = Field(640, ge=32, le=2048, description="network input width")
    input_height: int = Field(640, ge=32, le=2048, description="network input height")
    score_threshold: float = Field(0.4, gt=0, lt=1, description="minimum person score")
    nms_iou: float = Field(0.45, gt=0, le=1, description="non-maximum suppression IoU")
    person_class: int = Field(0, ge=0, description="class index of 'person' in the model")
    swap_rb: bool = Field(True, description="feed RGB (most exported models) instead of BGR")
    scale: float = Field(1 / 255.0, gt=0, description="pixel scale factor")


class PeopleTrackingConfig(Section):
    """Tracks of the people detector's boxes (by foot point) counted across the lines.

    Motion blobs of walkers merge and split in a group, so people crossings are counted
    from the detector's boxes, on the frames it runs (every ``people.interval_s``);
    vehicles keep the blob tracks. Speeds in frame sizes per second, times in seconds.
    """

    enabled: bool = Field(
        True, description="count people crossings of the lines from tracked detections "
        "(needs people.enabled and at least one line)")
    max_speed: float = Field(
        0.5, gt=0, le=20,
        description="fastest walker, in frame widths (heights, vertically) per second: the "
        "search radius of a new track")
    max_accel: float = Field(
        0.08, gt=0, le=50,
        description="how fast a walker may change speed (frame sizes per second squared)")
    max_missed_s: float = Field(
        2.5, ge=0, le=60,
        description="seconds a track survives undetected: above 2 x people.interval_s "
        "coasts it through one missed run")
    min_age_s: float = Field(
        0.2, ge=0, le=60,
        description="seconds between a track's first and latest detection before it may "
        "count (and at least two detections); a crossing made earlier counts then")
    hysteresis: float = Field(
        0.01, ge=0, le=0.2,
        description="distance from the line (fraction of width) inside which a foot point "
        "keeps its previous side")
    max_tracks: int = Field(64, ge=1, le=1000, description="bound on live tracks; extra dropped")


class PeopleConfig(Section):
    """People detection and counting per zone."""

    renamed_keys = {
        "every_n_frames": ("interval_s", "seconds between detections, not frames"),
    }

    enabled: bool = Field(
        False, description="run the people detector (costly: tens of ms per run, see docs)"
    )
    detector: Literal["hog", "dnn"] = Field("hog", description="which detector")
    interval_s: float = Field(
        1.0,
        ge=0,
        le=3600,
        description="seconds between detections (0: every frame); counts are held in between",
    )
    hog: HogPeopleConfig = Field(default_factory=HogPeopleConfig)
    tracking: PeopleTrackingConfig = Field(default_factory=PeopleTrackingConfig)
    dnn: DnnPeopleConfig | None = Field(None, description="required when detector is 'dnn'")

    @model_validator(mode="after")
    def _dnn_needs_model(self) -> PeopleConfig:
        if self.enabled and self.detector == "dnn" and self.dnn is None:
            raise ValueError("detector 'dnn' needs a 'dnn' section with the ONNX model path")
        return self


class TrackingConfig(Section):
    """Kalman-predicted blob tracking (vehicles, people) and counting across lines.

    Speeds and times are in frame sizes per second and in seconds of frame timestamps,
    so one setting tracks the same at 2 and at 30 fps.
    """

    renamed_keys = {
        "max_distance": ("max_speed", "a speed in frame widths per second replaces the "
                         "per-frame jump (tracks are now predicted, see docs/vision.md)"),
        "max_missed": ("max_missed_s", "seconds a track survives unseen, not frames"),
        "min_hits": ("min_age_s", "seconds a track must be seen before it counts, not frames"),
    }

    enabled: bool = Field(True, description="track blobs and count line crossings")
    min_area: float = Field(
        0.0015, gt=0, le=0.5, description="smallest blob, as a fraction of the frame area"
    )
    min_fill: float = Field(
        0.4,
        ge=0,
        le=1,
        description="share of a blob's box that must be foreground (speckle from leaves "
        "or shimmer spreads thin; a vehicle or a person fills its box)",
    )
    max_speed: float = Field(
        1.0,
        gt=0,
        le=20,
        description="fastest object, in frame widths (heights, vertically) per second: the "
        "search radius of a new track before its velocity is known",
    )
    max_accel: float = Field(
        0.2,
        gt=0,
        le=50,
        description="how fast an object may change speed (frame sizes per second squared): "
        "how much a known track's search region grows with time",
    )
    max_missed_s: float = Field(
        1.0, ge=0, le=60, description="seconds a track survives unseen (coasting on its velocity)"
    )
    min_age_s: float = Field(
        0.2,
        ge=0,
        le=60,
        description="seconds between a track's first and latest sighting before it may "
        "count (and at least two sightings); a crossing made earlier counts then",
    )
    hysteresis: float = Field(
        0.01,
        ge=0,
        le=0.2,
        description="distance from the line (fraction of width) inside which a centroid "
        "keeps its previous side; an object lingering on the line is counted once",
    )
    scene_change_ratio: float = Field(
        0.3,
        gt=0,
        le=1,
        description="when the moving share of the frame grows by this much from one frame "
        "to the next (a cut, a camera moved), tracks are reset instead of counted",
    )
    max_tracks: int = Field(64, ge=1, le=1000, description="bound on live tracks; extra dropped")


class TamperConfig(Section):
    """Lens covered, lost focus, camera moved: measured against a reference view.

    The reference (edges in tiles, sharpness at three scales, colour spread) is built
    during ``warmup_s``, then follows the scene with the time constant
    ``reference_time_constant_s`` while nothing is pending, and is frozen while
    anything is pending or raised, so a gradual blur is not absorbed. Times are in
    seconds of frame timestamps (the same at 2, 5, 15 and 30 fps). What each kind
    measures: docs/vision.md.
    """

    renamed_keys = {
        "confirm_frames": ("confirm_s", "seconds, not frames"),
        "moved_confirm_frames": ("moved_confirm_s", "seconds, not frames"),
        "clear_frames": ("clear_s", "seconds, not frames"),
        "reference_frames": ("warmup_s", "seconds of frames averaged into the first reference"),
        "reference_rate": ("reference_time_constant_s",
                           "a time constant in seconds instead of a rate per frame"),
        "covered_std_max": ("covered_area", "the detector was redesigned (docs/vision.md)"),
        "covered_edge_max": ("covered_area", "the detector was redesigned (docs/vision.md)"),
        "covered_max_similarity": ("lost_match", "the detector was redesigned (docs/vision.md)"),
        "moved_similarity_ratio": ("lost_match", "the detector was redesigned (docs/vision.md)"),
    }

    enabled: bool = Field(True, description="run tamper detection")
    width: int = Field(
        320, ge=128, le=640,
        description="analysis width in px of the finest scale (the next two are 1/2, 1/4)",
    )
    lost_match: float = Field(
        0.5, gt=0, lt=1,
        description="a tile has lost the reference when its edge correlation falls below "
        "this share of its usual value",
    )
    covered_area: float = Field(
        0.7, gt=0, le=1,
        description="share of the textured tiles that must lose the reference for "
        "'covered' or 'moved'",
    )
    defocus_ratio: float = Field(
        0.5, gt=0, lt=1,
        description="fine-scale sharpness under this share of the reference's is 'defocused' "
        "(the view itself still matching at the coarse scale)",
    )
    moved_min_shift: float = Field(
        0.03, gt=0, le=1, description="global shift (fraction of width) that counts as 'moved'"
    )
    confirm_s: float = Field(
        0.6, ge=0, le=60, description="seconds a condition must hold to raise covered/defocused"
    )
    moved_confirm_s: float = Field(
        1.0, ge=0, le=60,
        description="seconds to raise 'moved' (longer: a truck close to the lens hides "
        "most of the view for a moment)",
    )
    clear_s: float = Field(1.0, ge=0, le=600, description="seconds of normal view to clear")
    warmup_s: float = Field(
        2.0, ge=0, le=600,
        description="seconds of frames averaged into the first reference (nothing raised)",
    )
    reference_time_constant_s: float = Field(
        10.0, ge=0, le=86_400,
        description="time constant of the reference following the scene while nothing is "
        "pending (0: never follows)",
    )
    relearn_after_s: float = Field(
        60.0, ge=1, le=86_400,
        description="a change that raised nothing but kept the reference frozen this long "
        "becomes the new reference (a parked truck, a new shop sign)",
    )


class ThumbnailConfig(Section):
    """JPEG thumbnails for the wall, with overlays drawn in."""

    renamed_keys = {
        "every_n_frames": ("interval_s", "seconds of frame timestamps between thumbnails, "
                           "not frames"),
    }

    enabled: bool = Field(True, description="produce thumbnails")
    width: int = Field(320, ge=32, le=1920, description="thumbnail width in px (aspect kept)")
    quality: int = Field(70, ge=10, le=100, description="JPEG quality")
    interval_s: float = Field(
        1.0, ge=0, le=3600,
        description="seconds of frame timestamps between thumbnails (0: every analysed "
        "frame); the same rate at 2, 5 and 30 fps")
    overlays: bool = Field(True, description="draw zones, lines, boxes and counts")


class AnalyticsConfig(Section):
    """Everything the analytics of one camera needs."""

    max_width: int = Field(
        1280, ge=64, le=4096, description="frames wider than this are downscaled first"
    )
    zones: tuple[Zone, ...] = Field((), max_length=32, description="named areas")
    lines: tuple[CountingLine, ...] = Field((), max_length=16, description="counting lines")
    masks: tuple[Mask, ...] = Field((), max_length=32, description="areas to ignore")
    motion: MotionConfig = Field(default_factory=MotionConfig)
    people: PeopleConfig = Field(default_factory=PeopleConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    tamper: TamperConfig = Field(default_factory=TamperConfig)
    thumbnail: ThumbnailConfig = Field(default_factory=ThumbnailConfig)

    @model_validator(mode="after")
    def _unique_names(self) -> AnalyticsConfig:
        for what, names in (("zone", [z.name for z in self.zones]),
                            ("line", [ln.name for ln in self.lines])):
            dup = sorted({n for n in names if names.count(n) > 1})
            if dup:
                raise ValueError(f"{what} names must be unique, repeated: {dup}")
        if self.lines and self.tracking.enabled and not self.motion.enabled:
            raise ValueError("counting lines need motion.enabled (tracking uses its blobs)")
        return self
