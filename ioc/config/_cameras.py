"""Settings of camera capture, camera health and per-camera analytics.

Capture values (fps, size, JPEG quality) have a section-wide default that each camera
may override; ``CamerasSettings.effective(camera_id)`` resolves them. A camera id is the
Kafka key of its frames and the ``<id>`` of its wall tile ``camera:<id>``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from vision.config import AnalyticsConfig

from ._base import Section

__all__ = [
    "CameraHealthSettings",
    "CameraSource",
    "CamerasSettings",
    "EffectiveCamera",
    "ReconnectSettings",
]

_ID = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class ReconnectSettings(Section):
    """Exponential backoff with jitter between attempts to (re)open a source."""

    initial_s: float = Field(0.5, gt=0, le=60, description="first wait after a failure")
    max_s: float = Field(30.0, gt=0, le=3600, description="longest wait between attempts")
    multiplier: float = Field(2.0, ge=1.0, le=10, description="growth of the wait per failure")
    jitter: float = Field(
        0.2, ge=0, le=1, description="each wait is shortened by a random share up to this"
    )

    @model_validator(mode="after")
    def _order(self) -> ReconnectSettings:
        if self.max_s < self.initial_s:
            raise ValueError(f"max_s ({self.max_s}) must be >= initial_s ({self.initial_s})")
        return self


class CameraHealthSettings(Section):
    """When a camera counts as offline or degraded (evaluated in the stream worker)."""

    offline_after_s: float = Field(
        10.0, ge=0.5, le=3600, description="no frame arrived for this long: offline"
    )
    fps_window_s: float = Field(
        10.0, ge=1, le=600, description="window over which the received fps is measured"
    )
    fps_drop_ratio: float = Field(
        0.5, gt=0, lt=1, description="received fps below this share of the target: degraded"
    )
    fps_recover_ratio: float = Field(
        0.8, gt=0, le=1, description="received fps back above this share of the target: online"
    )
    check_interval_s: float = Field(
        1.0, ge=0.1, le=60, description="how often the worker checks for silent cameras"
    )

    @model_validator(mode="after")
    def _hysteresis(self) -> CameraHealthSettings:
        if self.fps_recover_ratio < self.fps_drop_ratio:
            raise ValueError(
                f"fps_recover_ratio ({self.fps_recover_ratio}) must be >= "
                f"fps_drop_ratio ({self.fps_drop_ratio})"
            )
        return self


class CameraSource(Section):
    """One camera: where its video comes from, and optional overrides of the defaults."""

    id: str = Field(pattern=_ID, description="camera id: Kafka key and tile id camera:<id>")
    url: str = Field(
        min_length=1,
        description="rtsp://..., http(s)://... (MJPEG), or a video file path",
    )
    loop: bool = Field(False, description="file sources only: start again at the end")
    enabled: bool = Field(True, description="captured by 'ioc camera run' without --camera")
    fps: float | None = Field(None, gt=0, le=60, description="override of cameras.fps")
    width: int | None = Field(None, ge=16, le=4096, description="override of cameras.width")
    height: int | None = Field(None, ge=16, le=4096, description="override of cameras.height")
    jpeg_quality: int | None = Field(None, ge=10, le=100, description="override")
    analytics: AnalyticsConfig | None = Field(
        None, description="override of cameras.analytics (zones and lines are per camera)"
    )

    @property
    def kind(self) -> Literal["rtsp", "http", "file"]:
        """Source type, from the URL scheme."""
        low = self.url.lower()
        if low.startswith(("rtsp://", "rtsps://")):
            return "rtsp"
        if low.startswith(("http://", "https://")):
            return "http"
        return "file"

    @model_validator(mode="after")
    def _loop_only_for_files(self) -> CameraSource:
        if self.loop and self.kind != "file":
            raise ValueError(f"loop is for file sources; {self.kind} source {self.url!r}")
        return self

    def redacted_url(self) -> str:
        """The URL without a password (for logs): rtsp://user:***@host/..."""
        from urllib.parse import urlsplit, urlunsplit

        if self.kind == "file":
            return self.url
        parts = urlsplit(self.url)
        if parts.password is None:
            return self.url
        netloc = f"{parts.username}:***@{parts.hostname}"
        if parts.port:
            netloc += f":{parts.port}"
        return urlunsplit(parts._replace(netloc=netloc))


class EffectiveCamera(Section):
    """A camera with every default resolved (what capture and analytics use)."""

    id: str
    url: str
    kind: Literal["rtsp", "http", "file"]
    loop: bool
    fps: float
    width: int
    height: int | None
    jpeg_quality: int
    analytics: AnalyticsConfig


class CamerasSettings(Section):
    """Camera capture, camera health and analytics."""

    cameras: list[CameraSource] = Field(default_factory=list, description="the cameras")
    fps: float = Field(5.0, gt=0, le=60, description="frames per second sent to Kafka")
    width: int = Field(640, ge=16, le=4096, description="output width in px")
    height: int | None = Field(
        None, ge=16, le=4096, description="output height in px; None keeps the aspect ratio"
    )
    jpeg_quality: int = Field(80, ge=10, le=100, description="JPEG quality of published frames")
    publish_queue: int = Field(
        4, ge=1, le=1000,
        description="frames buffered per camera before publishing; when full the oldest "
        "is dropped (latest wins) and counted",
    )
    open_timeout_s: float = Field(10.0, gt=0, le=120, description="timeout to open a source")
    read_timeout_s: float = Field(10.0, gt=0, le=120, description="timeout of one frame read")
    reconnect: ReconnectSettings = Field(default_factory=ReconnectSettings)
    health: CameraHealthSettings = Field(default_factory=CameraHealthSettings)
    analytics: AnalyticsConfig = Field(
        default_factory=AnalyticsConfig, description="analytics of cameras without an override"
    )
    batch_size: int = Field(
        32, ge=1, le=1000, description="worker: frames taken from Kafka per batch"
    )
    max_lag_s: float | None = Field(
        1.0, gt=0, le=3600,
        description="worker: a frame older than this (worker clock minus capture time) is "
        "skipped as 'stale' when a newer frame of its camera is in the same batch, so a "
        "worker that falls behind sheds load instead of delaying the wall; None: analyse all",
    )
    analysis_threads: int = Field(
        2, ge=1, le=32,
        description="worker: threads analysing cameras in parallel (OpenCV releases the GIL)",
    )
    batch_within_s: float = Field(
        0.02, gt=0, le=10,
        description="worker: how long a batch collects frames (adds up to this to the delay)",
    )

    @field_validator("cameras")
    @classmethod
    def _unique_ids(cls, v: list[CameraSource]) -> list[CameraSource]:
        ids = [c.id for c in v]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise ValueError(f"camera ids must be unique, repeated: {dup}")
        return v

    def get(self, camera_id: str) -> CameraSource | None:
        """The configured camera with this id, or None."""
        for c in self.cameras:
            if c.id == camera_id:
                return c
        return None

    def effective(self, camera_id: str) -> EffectiveCamera:
        """Resolve defaults for ``camera_id``; an unknown id gets the section defaults.

        A worker meets unknown ids when frames come from a capture process with another
        configuration; it analyses them with the default analytics.
        """
        c = self.get(camera_id)
        if c is None:
            return EffectiveCamera(
                id=camera_id, url="", kind="file", loop=False, fps=self.fps, width=self.width,
                height=self.height, jpeg_quality=self.jpeg_quality, analytics=self.analytics,
            )
        return EffectiveCamera(
            id=c.id,
            url=c.url,
            kind=c.kind,
            loop=c.loop,
            fps=c.fps if c.fps is not None else self.fps,
            width=c.width if c.width is not None else self.width,
            height=c.height if c.height is not None else self.height,
            jpeg_quality=c.jpeg_quality if c.jpeg_quality is not None else self.jpeg_quality,
            analytics=c.analytics if c.analytics is not None else self.analytics,
        )
