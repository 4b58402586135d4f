"""Settings of camera capture and analytics."""

from __future__ import annotations

from ._base import Section

__all__ = ["CamerasSettings"]


class CamerasSettings(Section):
    """Camera capture and analytics."""
