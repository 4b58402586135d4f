"""Settings of recording and replay."""

from __future__ import annotations

from ._base import Section

__all__ = ["ReplaySettings"]


class ReplaySettings(Section):
    """Recording and replay."""
