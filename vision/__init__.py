"""OpenCV analytics of camera frames: motion, people, line counting, tamper, thumbnails.

Pure code, no I/O: the Faust agent feeds frames to one ``CameraAnalyzer`` per camera
and publishes each ``FrameResult``. Capture and camera health live in
``vision.capture`` and ``vision.health``. See docs/vision.md.
"""

from __future__ import annotations

# ioc.config embeds AnalyticsConfig in the cameras section (ioc.config._cameras imports
# vision.config): loading it first keeps that cycle in a working order whichever
# package is imported first.
import ioc.config  # noqa: F401

from .config import AnalyticsConfig
from .frames import SKIP_REASONS, check_frame, decode_jpeg
from .pipeline import AnalyzerStats, CameraAnalyzer
from .result import (
    Box,
    FrameResult,
    LineCount,
    MotionResult,
    PeopleResult,
    TamperEvent,
    TamperState,
)

__all__ = [
    "SKIP_REASONS",
    "AnalyticsConfig",
    "AnalyzerStats",
    "Box",
    "CameraAnalyzer",
    "FrameResult",
    "LineCount",
    "MotionResult",
    "PeopleResult",
    "TamperEvent",
    "TamperState",
    "check_frame",
    "decode_jpeg",
]
