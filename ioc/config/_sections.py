"""Settings sections owned by the domain packages (events, gateway, vision, wall, replay).

Each section starts small; the issues that build a domain extend its section here.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from ._base import Section

__all__ = [
    "CamerasSettings",
    "GatewaySettings",
    "ReplaySettings",
    "StreamsSettings",
    "WallSettings",
]


class StreamsSettings(Section):
    """The Faust workers."""

    app_id: str | None = Field(None, description="consumer group id; default '<namespace>-streams'")
    web_enabled: bool = Field(False, description="Faust's own web server (127.0.0.1 only)")
    web_port: int = Field(6066, ge=1, le=65535)
    data_dir: Path | None = Field(None, description="Faust's data folder; default in the state dir")
    log_level: str = Field("WARNING", pattern=r"^(DEBUG|INFO|WARNING|ERROR)$")


class GatewaySettings(Section):
    """The HTTP gateway for systems that cannot speak Kafka."""

    host: str = Field("127.0.0.1", description="bind address; beyond loopback only on purpose")
    port: int = Field(8080, ge=1, le=65535)


class CamerasSettings(Section):
    """Camera capture and analytics."""


class WallSettings(Section):
    """The websocket video-wall server."""

    host: str = Field("127.0.0.1", description="bind address; beyond loopback only on purpose")
    port: int = Field(8765, ge=1, le=65535)


class ReplaySettings(Section):
    """Recording and replay."""
