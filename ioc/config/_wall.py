"""Settings of the websocket video-wall server and its screen layouts."""

from __future__ import annotations

from pydantic import Field

from ._base import Section

__all__ = ["WallSettings"]


class WallSettings(Section):
    """The websocket video-wall server."""

    host: str = Field("127.0.0.1", description="bind address; beyond loopback only on purpose")
    port: int = Field(8765, ge=1, le=65535)
