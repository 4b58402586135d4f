"""Settings of the Faust stream workers (windows, KPIs and rules join here)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from ._base import Section

__all__ = ["StreamsSettings"]


class StreamsSettings(Section):
    """The Faust workers."""

    app_id: str | None = Field(None, description="consumer group id; default '<namespace>-streams'")
    web_enabled: bool = Field(False, description="Faust's own web server (127.0.0.1 only)")
    web_port: int = Field(6066, ge=1, le=65535)
    data_dir: Path | None = Field(None, description="Faust's data folder; default in the state dir")
    log_level: str = Field("WARNING", pattern=r"^(DEBUG|INFO|WARNING|ERROR)$")
